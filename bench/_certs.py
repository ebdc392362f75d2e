"""Throwaway benchmark PKI: one CA per key type, a leaf for localhost/127.0.0.1."""

from __future__ import annotations

import os

import trustme

KEY_TYPES = {"rsa": trustme.KeyType.RSA, "ecdsa": trustme.KeyType.ECDSA}


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def make(directory: str) -> None:
    """Write ``<kind>-ca.pem``, ``<kind>-cert.pem``, ``<kind>-key.pem`` for each key type."""
    for kind, key_type in KEY_TYPES.items():
        ca = trustme.CA(organization_name=f"twistls bench {kind} CA", key_type=key_type)
        leaf = ca.issue_cert("localhost", "127.0.0.1", key_type=key_type)
        _write(os.path.join(directory, f"{kind}-ca.pem"), ca.cert_pem.bytes())
        _write(os.path.join(directory, f"{kind}-cert.pem"), b"".join(b.bytes() for b in leaf.cert_chain_pems))
        _write(os.path.join(directory, f"{kind}-key.pem"), leaf.private_key_pem.bytes())


def paths(directory: str, kind: str) -> tuple[str, str, str]:
    """(ca, cert, key) file paths for ``kind``."""
    return tuple(os.path.join(directory, f"{kind}-{what}.pem") for what in ("ca", "cert", "key"))  # type: ignore[return-value]
