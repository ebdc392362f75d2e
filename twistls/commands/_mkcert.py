"""``twistls mkcert``: a throwaway development CA and a server certificate.

Everything is made with :mod:`cryptography` (an install requirement of
twistls); no OpenSSL command line is run.  The layout written is::

    ca.pem        the root CA certificate: what clients trust (``cafile=``)
    server.pem    the server certificate followed by the intermediate CA
    server.key    the server's private key (mode 0600)
    client.pem    (with ``client_names``) a client certificate + intermediate
    client.key    its key (mode 0600)

The CA keys are never written: nothing more can be signed with this CA once
the command ends, which is what "throwaway" means.  Every run makes a new CA
with a subject of its own (the run's date and a random tag in the
commonName) and subject/authority key identifiers, so the ``ca.pem`` of
several runs can share one trust file and each still verifies its own
certificates.  ``overwrite`` replaces every file of the layout atomically,
and removes a ``client.pem``/``client.key`` left by an earlier run that the
new one does not make (they chain to a CA that no longer exists).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import tempfile
from dataclasses import dataclass
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_NAMES", "MkcertResult", "make_certificates"]

DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class MkcertResult:
    """Paths of the files written by :func:`make_certificates`."""

    directory: str
    cafile: str
    certificate: str
    private_key: str
    client_certificate: str | None = None
    client_private_key: str | None = None


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "twistls mkcert (throwaway)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_name(name: str) -> x509.GeneralName:
    text = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{name!r} is neither a DNS name nor an IP address")
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        import idna

        text = idna.encode(text, uts46=True).decode("ascii")
    return x509.DNSName(text)


def _base(
    subject: x509.Name,
    issuer: x509.Name,
    public: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
    days: int,
    *,
    ca: bool,
    path_length: int | None = None,
) -> x509.CertificateBuilder:
    """What CA and leaf certificates share: names, key, serial, an hour of
    back-dating, basic constraints and key usage (signing certificates and
    CRLs only for a CA)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _ca(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    path_length: int | None,
    now: datetime.datetime,
    days: int,
) -> x509.Certificate:
    public = key.public_key()
    builder = (
        _base(_name(subject), issuer, public, now, days, ca=True, path_length=path_length)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf(
    names: Sequence[str],
    usage: x509.ObjectIdentifier,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    days: int,
) -> x509.Certificate:
    public = key.public_key()
    return (
        _base(_name(names[0]), issuer.subject, public, now, days, ca=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file beside ``path`` and rename it over ``path``:
    a read-only or symlinked old file is replaced, never written through, and
    a reader sees the old file or the new one, never half of one."""
    directory = os.path.dirname(path) or "."
    # mkstemp creates the file 0600, so a key is never readable by others, even briefly.
    fd, temporary = tempfile.mkstemp(prefix=".mkcert-", dir=directory)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _layout(directory: str, *, with_client: bool, overwrite: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The paths mkcert writes in ``directory`` (created if missing), and
    those of the client files, written only ``with_client``.

    Raises:
        ValueError: any of them exists already, without ``overwrite``.
    """
    os.makedirs(directory, exist_ok=True)
    paths = {
        "ca": os.path.join(directory, "ca.pem"),
        "cert": os.path.join(directory, "server.pem"),
        "key": os.path.join(directory, "server.key"),
    }
    client_paths = {
        "client_cert": os.path.join(directory, "client.pem"),
        "client_key": os.path.join(directory, "client.key"),
    }
    if with_client:
        paths.update(client_paths)
    existing = [p for p in (*paths.values(), *client_paths.values()) if os.path.lexists(p)]
    if existing and not overwrite:
        raise ValueError(f"{', '.join(existing)} already exist(s); pass --force to replace")
    return paths, client_paths


def _remove(paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def make_certificates(
    directory: str,
    names: Sequence[str] = DEFAULT_NAMES,
    *,
    client_names: Sequence[str] = (),
    days: int = 30,
    overwrite: bool = False,
) -> MkcertResult:
    """Write a throwaway root CA, an intermediate and a server leaf for ``names``.

    Args:
        directory: where to write (created if missing).
        names: DNS names and IP addresses for the server certificate's
            subjectAltName (the first is also its commonName).
        client_names: if given, also issue a client certificate (for mutual TLS).
        days: validity of every certificate.
        overwrite: replace existing files instead of refusing (every file
            of the layout, including an earlier run's client files).

    Returns:
        The paths written.

    Raises:
        ValueError: no names, a name that is neither a DNS name nor an IP
            address, or files already present without ``overwrite``.
    """
    if not names:
        raise ValueError("give at least one name for the server certificate")
    for name in (*names, *client_names):
        _general_name(name)  # validate before writing anything
    paths, client_paths = _layout(directory, with_client=bool(client_names), overwrite=overwrite)
    now = datetime.datetime.now(datetime.timezone.utc)
    # A subject of its own per run: OpenSSL finds an issuer by subject name, so two
    # mkcert CAs with one subject in one trust file would shadow each other.
    tag = f"{now:%Y-%m-%d} {secrets.token_hex(4)}"
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(f"twistls throwaway root CA {tag}")
    root = _ca(f"twistls throwaway root CA {tag}", root_key, root_name, root_key, 1, now, days)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _ca(f"twistls throwaway intermediate CA {tag}", inter_key, root.subject, root_key, 0, now, days)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _leaf(names, ExtendedKeyUsageOID.SERVER_AUTH, server_key, inter, inter_key, now, days)

    _write(paths["ca"], _pem(root), 0o644)
    _write(paths["cert"], _pem(server) + _pem(inter), 0o644)
    _write(paths["key"], _key_pem(server_key), 0o600)
    client_cert = client_key = None
    if client_names:
        ckey = ec.generate_private_key(ec.SECP256R1())
        ccert = _leaf(client_names, ExtendedKeyUsageOID.CLIENT_AUTH, ckey, inter, inter_key, now, days)
        client_cert, client_key = paths["client_cert"], paths["client_key"]
        _write(client_cert, _pem(ccert) + _pem(inter), 0o644)
        _write(client_key, _key_pem(ckey), 0o600)
    else:
        _remove(client_paths.values())  # an earlier run's, signed by a CA that is gone
    return MkcertResult(
        directory=os.path.abspath(directory),
        cafile=os.path.abspath(paths["ca"]),
        certificate=os.path.abspath(paths["cert"]),
        private_key=os.path.abspath(paths["key"]),
        client_certificate=None if client_cert is None else os.path.abspath(client_cert),
        client_private_key=None if client_key is None else os.path.abspath(client_key),
    )
