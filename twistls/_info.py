"""Plain-data descriptions of certificates, for :meth:`ConnectionInfo.as_dict`
and ``python -m twistls probe``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["describe_certificate", "describe_chain", "san_names"]


def san_names(cert: x509.Certificate, *, uris: bool) -> list[str]:
    """The subjectAltName entries of ``cert`` as ``"DNS:..."`` then ``"IP:..."``
    (then ``"URI:..."`` with ``uris=True``) strings; ``[]`` without the extension."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]
    if uris:
        names += [f"URI:{n}" for n in san.get_values_for_type(x509.UniformResourceIdentifier)]
    return names


def describe_certificate(der: bytes) -> dict[str, object]:
    """Subject, issuer, SHA-256 fingerprint, validity and subjectAltName
    entries (``"DNS:..."``, ``"IP:..."``) of one DER certificate."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    names = san_names(cert, uris=False)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sha256": hashlib.sha256(der).hexdigest(),
        "not_valid_before": cert.not_valid_before_utc.isoformat(),
        "not_valid_after": cert.not_valid_after_utc.isoformat(),
        "san": names,
    }


def describe_chain(chain: Iterable[bytes]) -> list[dict[str, object]]:
    """:func:`describe_certificate` for each certificate, in order."""
    return [describe_certificate(der) for der in chain]
