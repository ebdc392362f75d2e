"""OpenSSL's reason strings, turned into the most specific twistls error.

OpenSSL reports failures as reason texts on its error queue ("wrong version
number", "tlsv1 alert unknown ca", ...).  :func:`classify` maps them onto the
:mod:`twistls.errors` hierarchy, so the engine itself holds no error text.
"""

from __future__ import annotations

from twistls.errors import (
    NoPeerCertificateError,
    PeerAlertError,
    ProtocolVersionError,
    ProtocolViolationError,
    TLSError,
)

__all__ = ["classify"]


_VERSION_REASONS = (
    "unsupported protocol",
    "no protocols available",
    "protocol version",
    "wrong ssl version",
    "version too low",
    "unknown protocol",
)
# What OpenSSL says when the bytes are not TLS records at all (garbage, plain
# HTTP, SSH): not a version disagreement, so not a ProtocolVersionError.
_NOT_TLS_REASONS = ("wrong version number", "http request", "https proxy request")
# Malformed, oversized, empty or forged records and out-of-order messages.
_VIOLATION_REASONS = (
    "packet length too long",
    "record too small",
    "record overflow",
    "length too long",
    "length mismatch",
    "bad length",
    "excessive message size",
    "unexpected message",
    "unexpected record",
    "bad record mac",
    "decryption failed",
    "too many warn alerts",
    "too many key updates",
    "too many empty",
    "bad packet length",
    "decode error",
    "no renegotiation",
)


def classify(text: str, reasons: list[str]) -> TLSError:
    """Turn OpenSSL reason strings into the most specific TLSError."""
    lowered = text.lower()
    # Only the local reason: the "certificate required" *alert* means the peer
    # wanted our certificate, which is a PeerAlertError on this side.
    if "peer did not return a certificate" in lowered:
        return NoPeerCertificateError(
            f"the peer sent no certificate but one is required ({text})",
            verify_message="no peer certificate",
            openssl_errors=reasons,
        )
    if any(v in lowered for v in _NOT_TLS_REASONS):
        return ProtocolViolationError(f"the peer does not speak TLS ({text})", openssl_errors=reasons)
    if " alert " not in lowered and any(v in lowered for v in _VIOLATION_REASONS):
        return ProtocolViolationError(f"the peer broke the TLS protocol ({text})", openssl_errors=reasons)
    if any(v in lowered for v in _VERSION_REASONS):
        return ProtocolVersionError(f"no TLS protocol version in common with the peer ({text})", openssl_errors=reasons)
    # OpenSSL 3.2+ spells the SSLv3-era alerts "ssl/tls alert ..." (3.0: "sslv3 alert ...").
    for marker in ("ssl/tls alert ", "sslv3 alert ", "tlsv1 alert ", "tlsv13 alert "):
        if marker in lowered:
            alert = lowered.split(marker, 1)[1].split(";")[0].strip()
            hint = ": it requires a client certificate and none was sent" if alert == "certificate required" else ""
            return PeerAlertError(
                f"the peer rejected the connection with alert '{alert}'{hint} ({text})", alert=alert, openssl_errors=reasons
            )
    # TLS 1.0-era alerts OpenSSL names without the word "alert".
    for alert in ("unrecognized name", "bad certificate status response", "certificate unobtainable"):
        if "tlsv1 " + alert in lowered:
            return PeerAlertError(
                f"the peer rejected the connection with alert '{alert}' ({text})", alert=alert, openssl_errors=reasons
            )
    if "unexpected eof" in lowered:
        return TLSError(f"the peer closed the connection during the TLS handshake ({text})", openssl_errors=reasons)
    return TLSError(f"TLS failure: {text}", openssl_errors=reasons)

