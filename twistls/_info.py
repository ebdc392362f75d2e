"""Plain-data descriptions of certificates, for :meth:`ConnectionInfo.as_dict`
and ``python -m twistls probe``, and :func:`printable`, the one escaping of
peer-controlled text for terminals and logs.

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import re
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "certificate_status",
    "describe_certificate",
    "describe_chain",
    "san_names",
    "served_certificates",
    "spki_pin",
    "printable",
]

#: A served certificate that expires within this many days is warned about
#: when a server starts listening (and should be on every reload).
EXPIRY_WARNING_DAYS = 14

# What printable() escapes: C0 controls, DEL, C1 controls, U+2028/U+2029
# (line and paragraph separators), the Unicode Bidi_Control characters (ALM,
# LRM, RLM, the embeddings and overrides U+202A-U+202E and the isolates
# U+2066-U+2069: the "Trojan Source" set) and lone surrogates (undecodable
# bytes, which would make a print() fail).
_CONTROLS = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff"
# The escapes printable() writes for them (hex digits in either case).
_H = "[0-9a-fA-F]"
_ESCAPE_FORMS = (
    rf"x(?:[01]{_H}|7[fF]|[89]{_H})"
    rf"|u(?:061[cC]|200[eEfF]|202[89a-eA-E]|206[6-9]|[dD][89a-fA-F]{_H}{{2}})"
)
# A control character, or a backslash that would otherwise be misread: one
# before another backslash, before a control (whose escape starts with one),
# or before text that looks like one of those escapes.
_UNPRINTABLE = re.compile(rf"[{_CONTROLS}]|\\(?=\\|[{_CONTROLS}]|{_ESCAPE_FORMS})")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` safe to write to a terminal or a log line.

    Control characters (C0, DEL, C1: ESC, CR, LF, CSI...) become ``\\xNN``;
    the Unicode line and paragraph separators, the bidi controls (U+061C,
    U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and lone surrogates become
    ``\\uNNNN`` (lower-case hex).  A backslash becomes ``\\\\`` where it could
    otherwise be misread: before another backslash, before an escaped
    character, or before text that looks like one of these escapes (a
    certificate field holding the text ``\\x1b`` prints as ``\\\\x1b``, the
    ESC character as ``\\x1b``).  So the escaping is unambiguous (it can be
    undone), while the backslashes of ordinary text (RFC 4514 ``\\,``, paths,
    ``repr()`` output such as ``\\n``) print unchanged.  Everything else,
    letters of any script included, is unchanged.

    Apply it once, where peer- or certificate-derived text is written for
    people; keep the raw text in data (attributes, JSON).

    .. versionadded:: 0.1
    """
    return _UNPRINTABLE.sub(_escape, text)


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


def spki_pin(der: bytes) -> str:
    """The pin of one DER certificate's key as ``pins=`` takes it, in the
    HPKP form ``"sha256/<base64>"`` (the base64 of the SHA-256 of its
    SubjectPublicKeyInfo; :func:`twistls.checker.spki_sha256` gives the hex)."""
    from twistls.checker import spki_sha256

    return "sha256/" + base64.b64encode(bytes.fromhex(spki_sha256(der))).decode("ascii")


def describe_certificate(der: bytes) -> dict[str, object]:
    """Subject, issuer, SHA-256 fingerprint, the SPKI pin (hex and
    ``sha256/<base64>``), validity and subjectAltName entries
    (``"DNS:..."``, ``"IP:..."``) of one DER certificate."""
    from cryptography import x509

    from twistls.checker import spki_sha256

    cert = x509.load_der_x509_certificate(der)
    names = san_names(cert, uris=False)
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "sha256": hashlib.sha256(der).hexdigest(),
        "spki_sha256": spki_sha256(der),
        "pin": spki_pin(der),
        "not_valid_before": cert.not_valid_before_utc.isoformat(),
        "not_valid_after": cert.not_valid_after_utc.isoformat(),
        "san": names,
    }


def describe_chain(chain: Iterable[bytes]) -> list[dict[str, object]]:
    """:func:`describe_certificate` for each certificate, in order."""
    return [describe_certificate(der) for der in chain]


def served_certificates(factory: object) -> list[tuple[str | None, str]]:
    """``(SNI name or None for the default, certificate file)`` of each
    certificate a :class:`~twistls.context.ServerContextFactory` serves."""
    served: list[tuple[str | None, str]] = []
    default = getattr(factory, "certificate", None)
    if isinstance(default, str):
        served.append((None, default))
    table = getattr(factory, "sni_certificates", None) or {}
    for name, entry in sorted(table.items()):
        path = entry[0] if isinstance(entry, tuple) else entry
        if isinstance(path, str):
            served.append((name, path))
    return served


def certificate_status(path: str, *, now: datetime.datetime | None = None) -> tuple[str, str | None]:
    """What a status line says about the first certificate in the PEM file
    ``path``: ``"subject ..., names ..., notAfter ..."``, and a warning when
    it expired or expires within :data:`EXPIRY_WARNING_DAYS` days (else
    ``None``).  Escaped with :func:`printable`; never raises (an unreadable
    file is described as such, without a warning)."""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        return f"(certificate not described: {type(exc).__name__})", None
    names = ", ".join(san_names(cert, uris=False)) or "none"
    not_after = cert.not_valid_after_utc
    text = printable(f"subject {cert.subject.rfc4514_string()}, names {names}, notAfter {not_after.isoformat()}")
    left = not_after - (now or datetime.datetime.now(datetime.timezone.utc))
    if left.total_seconds() <= 0:
        return text, printable(f"the certificate in {path!r} (names {names}) EXPIRED on {not_after.isoformat()}: renew it, then send SIGHUP")
    if left <= datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        days = left.total_seconds() / 86400
        when = f"in {days:.1f} days" if days >= 1 else f"in {left.total_seconds() / 3600:.1f} hours"
        return text, printable(
            f"the certificate in {path!r} (names {names}) expires {when}, on {not_after.isoformat()}: "
            "renew it, then send SIGHUP"
        )
    return text, None
