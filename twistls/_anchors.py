"""Trust anchors for the strict PKI profile: the ones OpenSSL uses, loaded for pyca.

:func:`load_trust_anchors` reads a CA file, a CA directory, or the system
store at OpenSSL's default paths into a
:class:`cryptography.x509.verification.Store`, once per (cafile, capath).
Pure: files in, certificates out; no Twisted, no OpenSSL handle.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification as _pyca

from twistls.errors import ConfigurationError

__all__ = ["TrustAnchors", "load_trust_anchors", "read_file", "system_paths"]

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


@dataclass(frozen=True)
class TrustAnchors:
    """The trust anchors of one (cafile, capath), loaded for pyca.

    Attributes:
        store: the pyca store, or ``None`` when no certificate could be
            loaded (every verification then fails).
        certificates: the anchors loaded (distinct certificates).
        skipped: how many PEM blocks could not be parsed.
        source: where they came from, for messages.
    """

    store: _pyca.Store | None
    certificates: tuple[x509.Certificate, ...]
    skipped: int
    source: str
    ders: frozenset[bytes] = frozenset()

    @property
    def count(self) -> int:
        """How many anchors were loaded."""
        return len(self.certificates)


def system_paths() -> tuple[str | None, str | None]:
    """OpenSSL's default CA file and directory, as ``SSL_CTX_set_default_verify_paths``
    uses them (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` win); ``None`` where missing."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile, paths.capath


def _pem_blocks(data: bytes) -> list[bytes]:
    return _PEM_CERT.findall(data)


def read_file(path: str) -> bytes | None:
    """The bytes of ``path``, or ``None`` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


@functools.lru_cache(maxsize=16)
def load_trust_anchors(cafile: str | None = None, capath: str | None = None) -> TrustAnchors:
    """The anchors OpenSSL would use, as a pyca :class:`~cryptography.x509.verification.Store`.

    Loaded once per (cafile, capath) per process.  Certificates pyca cannot
    parse are skipped and counted (OpenSSL may still use them; the strict
    profile then refuses the chains that need them).

    Args:
        cafile: a PEM file of anchors.
        capath: a directory of PEM files (OpenSSL's hashed directory, or any
            directory of PEM files).  Without either: the system store, at
            OpenSSL's default paths.

    Returns:
        The loaded :class:`TrustAnchors`.

    Raises:
        ConfigurationError: a given ``cafile`` cannot be read, or holds no
            certificate pyca can use.
    """
    sources: list[str] = []
    files: list[str] = []
    system = cafile is None and capath is None
    if system:
        cafile, capath = system_paths()
    if cafile is not None:
        files.append(cafile)
        sources.append(f"CA file {cafile}")
    if capath is not None and os.path.isdir(capath):
        sources.append(f"CA directory {capath}")
        for name in sorted(os.listdir(capath)):
            full = os.path.join(capath, name)
            if os.path.isfile(full):
                files.append(full)
    seen: set[bytes] = set()
    certs: list[x509.Certificate] = []
    skipped = 0
    for path in files:
        data = read_file(path)
        if data is None:
            if not system and path == cafile:
                raise ConfigurationError(f"cannot read the CA file {cafile!r}")
            continue
        for block in _pem_blocks(data):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                    cert = x509.load_pem_x509_certificate(block)
                der = cert.public_bytes(serialization.Encoding.DER)
            except ValueError:
                skipped += 1
                continue
            if der not in seen:
                seen.add(der)
                certs.append(cert)
    source = ", ".join(sources) if sources else "no trust store"
    if system:
        source = f"system trust store ({source})"
    if not certs and not system:
        raise ConfigurationError(f"no usable CA certificate in {source} for the strict PKI profile")
    store = _pyca.Store(certs) if certs else None
    return TrustAnchors(store=store, certificates=tuple(certs), skipped=skipped, source=source, ders=frozenset(seen))
