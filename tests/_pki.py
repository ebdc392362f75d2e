"""Test certificates, made at test time with trustme and cryptography.

Nothing here is committed key material: every run makes a fresh CA.
:func:`pki` returns one shared :class:`PKI` per test process.
"""

from __future__ import annotations

import datetime
import functools
import os
import tempfile
from dataclasses import dataclass

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HOSTS = ("localhost", "example.com", "127.0.0.1", "::1")


@dataclass
class Leaf:
    """PEM file paths of one certificate: ``chain`` has key + cert + intermediates."""

    cert: str  # certificate (+ intermediates) only
    key: str
    chain: str  # key, certificate and intermediates in one file
    der: bytes


class PKI:
    """A throwaway PKI in a temporary directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-test-pki-")
        self.ca = trustme.CA(organization_name="twistls test CA")
        self.cafile = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.other_ca = trustme.CA(organization_name="an unrelated CA")
        self.other_cafile = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self.server = self.leaf("server", self.ca, *HOSTS)
        self.client = self.leaf("client", self.ca, "client.example")
        self.untrusted_server = self.leaf("untrusted", self.other_ca, *HOSTS)
        now = datetime.datetime.now(datetime.timezone.utc)
        self.expired_server = self.leaf(
            "expired", self.ca, *HOSTS, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
        )
        self.wrong_name_server = self.leaf("wrongname", self.ca, "other.example")
        # intermediate chain: root -> intermediate -> leaf
        self.intermediate = self.ca.create_child_ca()
        self.chained_server = self.leaf("chained", self.intermediate, *HOSTS)
        self.missing_intermediate_server = self.leaf(
            "nointermediate", self.intermediate, *HOSTS, drop_intermediates=True
        )
        # deep chain: root -> 3 intermediates -> leaf
        deep = self.ca
        for _ in range(3):
            deep = deep.create_child_ca()
        self.deep_server = self.leaf("deep", deep, *HOSTS)

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        return path

    def leaf(self, name: str, ca: trustme.CA, *hosts: str, drop_intermediates: bool = False, **kw: object) -> Leaf:
        cert = ca.issue_cert(*hosts, **kw)  # type: ignore[arg-type]
        blobs = cert.cert_chain_pems
        if drop_intermediates:
            blobs = blobs[:1]
        cert_pem = b"".join(b.bytes() for b in blobs)
        key_pem = cert.private_key_pem.bytes()
        der = x509.load_pem_x509_certificate(blobs[0].bytes()).public_bytes(serialization.Encoding.DER)
        return Leaf(
            cert=self._write(f"{name}-cert.pem", cert_pem),
            key=self._write(f"{name}-key.pem", key_pem),
            chain=self._write(f"{name}-chain.pem", key_pem + cert_pem),
            der=der,
        )


@functools.lru_cache(maxsize=None)
def pki() -> PKI:
    """The shared test PKI (made once per process)."""
    return PKI()


def self_signed(
    subject: str | x509.Name, *, san: list[x509.GeneralName] | None = None, rsa_bits: int | None = None
) -> tuple[bytes, bytes]:
    """A self-signed certificate (DER) and key (PEM) with the given SANs and
    subject: a common name, or a whole x509.Name."""
    key = rsa.generate_private_key(65537, rsa_bits) if rsa_bits else ec.generate_private_key(ec.SECP256R1())
    name = subject if isinstance(subject, x509.Name) else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.DER), key_pem
