"""The twistls exception hierarchy.

Every failure twistls reports is one of these types.  They carry structured
data (``str()`` is for people, the attributes are the API) and say whose fault
the failure is:

* :class:`ConfigurationError` and :class:`EngineStateError` are *local*: the
  caller configured or drove twistls wrongly.  They are raised at once, at
  construction or call time.
* :class:`TLSError` and its subclasses are *remote* or negotiation failures.
  They reach applications as ``connectionLost(Failure(TLSError...))`` or as the
  failure of a Deferred, never as an exception escaping a reactor callback.

``str()`` of every error is escaped with :func:`twistls._info.printable`
(control characters, line separators and bidi controls as ``\\xNN`` /
``\\uNNNN``), because messages quote certificate fields and names chosen by
a possibly hostile peer and end up in terminals and log lines.  The
attributes (``reason``, ``subject``, ``names``, ``hostname``...) keep the raw
text.

This module imports nothing from Twisted or M2Crypto, so the sans-IO engine can
use it.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Sequence

from twistls._info import printable

__all__ = [
    "TwistlsError",
    "ConfigurationError",
    "EngineStateError",
    "TLSError",
    "HandshakeTimeoutError",
    "ProtocolVersionError",
    "PeerAlertError",
    "ConnectionTruncatedError",
    "ProtocolViolationError",
    "IdleTimeoutError",
    "VerificationError",
    "UntrustedCertificateError",
    "CertificateExpiredError",
    "CertificateNotYetValidError",
    "ChainTooLongError",
    "CertificateRevokedError",
    "NoPeerCertificateError",
    "HostnameMismatchError",
    "PinMismatchError",
    "NameConstraintsError",
    "CertificatePurposeError",
    "PKIProfileError",
    "verification_error_for_code",
]


class TwistlsError(Exception):
    """Base of every twistls error; never raised directly.

    ``str()`` is the message with peer-controlled characters escaped (the
    attributes, such as :attr:`TLSError.reason`, keep the text as built).
    """

    def __str__(self) -> str:
        return printable(_raw_message(self))


class ConfigurationError(TwistlsError, ValueError):
    """A local configuration mistake: missing file, key not matching its
    certificate, bad option value, verification turned off without the
    ``insecure_*`` keyword.  Raised at construction time."""


class EngineStateError(TwistlsError, RuntimeError):
    """A call-order mistake by the local caller (``startTLS`` twice, sending
    after close)."""


class TLSError(TwistlsError):
    """The TLS connection failed.

    Attributes:
        reason: a one-line human readable reason.
        openssl_errors: the OpenSSL error-queue reason strings seen at the
            failure, oldest first (may be empty).
    """

    def __init__(self, reason: str, *, openssl_errors: Sequence[str] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.openssl_errors = tuple(openssl_errors)


class HandshakeTimeoutError(TLSError):
    """The TLS handshake did not finish within the configured timeout."""


class ProtocolVersionError(TLSError):
    """The peers share no protocol version (for example a TLS 1.1-only peer
    against twistls' TLS 1.2 minimum)."""


class PeerAlertError(TLSError):
    """The peer ended the handshake or connection with a fatal alert.

    Attributes:
        alert: the alert description as OpenSSL names it (``"unknown ca"``,
            ``"bad certificate"``, ...).
    """

    def __init__(self, reason: str, *, alert: str, openssl_errors: Sequence[str] = ()) -> None:
        super().__init__(reason, openssl_errors=openssl_errors)
        self.alert = alert


class ConnectionTruncatedError(TLSError):
    """The transport ended after the handshake without a TLS close_notify:
    the data received may have been cut short by an attacker or a crash.
    Everything received before the end was delivered first."""


class ProtocolViolationError(TLSError):
    """The peer broke the TLS protocol: bytes that are not TLS (random data,
    a plaintext HTTP request), malformed, oversized or empty records, an
    unexpected message, a record that fails authentication, or a flood of
    post-handshake messages (KeyUpdate) without application data.

    .. versionadded:: 0.1
    """


class IdleTimeoutError(TLSError):
    """An established connection carried no data in either direction for
    longer than the wrapping factory's ``idle_timeout``.

    .. versionadded:: 0.1
    """


class VerificationError(TLSError):
    """The peer's certificate was not accepted.

    Attributes:
        verify_code: OpenSSL's ``X509_V_ERR_*`` code, or ``None`` for
            failures found by the twistls Checker.
        verify_message: OpenSSL's text for ``verify_code`` (or a twistls one).
        depth: position in the chain of the failing certificate (0 = the
            peer's own certificate), if known.
        subject: RFC 4514 subject of the failing certificate, if known.
    """

    def __init__(
        self,
        reason: str,
        *,
        verify_code: int | None = None,
        verify_message: str = "",
        depth: int | None = None,
        subject: str | None = None,
        openssl_errors: Sequence[str] = (),
    ) -> None:
        super().__init__(reason, openssl_errors=openssl_errors)
        self.verify_code = verify_code
        self.verify_message = verify_message
        self.depth = depth
        self.subject = subject


class UntrustedCertificateError(VerificationError):
    """The chain does not lead to a trusted root (self-signed, unknown CA,
    missing intermediate, certificate not allowed to sign)."""


class CertificateExpiredError(VerificationError):
    """A certificate in the chain has expired."""


class CertificateNotYetValidError(VerificationError):
    """A certificate in the chain is not valid yet."""


class ChainTooLongError(VerificationError):
    """The chain is longer than the configured verification depth."""


class CertificateRevokedError(VerificationError):
    """A certificate in the chain is revoked by a loaded CRL."""


class NoPeerCertificateError(VerificationError):
    """The peer sent no certificate although one is required."""


class HostnameMismatchError(VerificationError):
    """The certificate is valid but not for the expected host.

    Attributes:
        hostname: the name or IP address the caller asked for.
        names: the identities the certificate actually holds
            (``"DNS:..."``, ``"IP:..."``, ``"CN:..."``).
        errors: service-identity's mismatch objects.
    """

    def __init__(
        self,
        reason: str,
        *,
        hostname: str,
        names: Sequence[str],
        errors: Sequence[object] = (),
        subject: str | None = None,
    ) -> None:
        super().__init__(
            reason,
            verify_message="hostname mismatch",
            depth=0,
            subject=subject,
        )
        self.hostname = hostname
        self.names = tuple(names)
        self.errors = tuple(errors)


class PinMismatchError(VerificationError):
    """No certificate in the peer's chain has a pinned public key.

    Attributes:
        pins: the configured SHA-256 SPKI pins (lower-case hex).
        actual: the SHA-256 SPKI digests found in the chain, leaf first.
    """

    def __init__(self, reason: str, *, pins: Sequence[str], actual: Sequence[str]) -> None:
        super().__init__(reason, verify_message="public key pin mismatch", depth=0)
        self.pins = tuple(pins)
        self.actual = tuple(actual)


class NameConstraintsError(VerificationError):
    """The requested host is outside the name constraints of a CA in the
    verified chain (for example a wildcard certificate under an
    intermediate that excludes that very name).

    Attributes:
        hostname: the name or IP address the caller asked for.
    """

    def __init__(self, reason: str, *, hostname: str, depth: int, subject: str | None = None) -> None:
        super().__init__(reason, verify_message="name constraints violation", depth=depth, subject=subject)
        self.hostname = hostname


class CertificatePurposeError(VerificationError):
    """The peer's certificate has an extendedKeyUsage that does not allow its
    role (serverAuth for a server, clientAuth for a client).

    Attributes:
        purpose: ``"serverAuth"`` or ``"clientAuth"``, the usage required.
    """

    def __init__(self, reason: str, *, purpose: str, subject: str | None = None) -> None:
        super().__init__(reason, verify_message="unsuitable certificate purpose", depth=0, subject=subject)
        self.purpose = purpose


class PKIProfileError(VerificationError):
    """The strict PKI profile refused a chain that OpenSSL's RFC 5280 checks
    let through (or could not build a path at all): a commonName that is not
    one of the subjectAltName values, a leaf without extendedKeyUsage, a
    wildcard on a public suffix, a weak key, a malformed extension...

    The message names the certificate (its subject) and the rule.  The
    opt-out is ``pki_profile="rfc5280"`` (OpenSSL's checks and the Checker
    only).

    Attributes:
        rule: the short name of the rule broken (``"cn-not-in-san"``,
            ``"eku-missing"``, ``"path-validation"``...).
        problems: every problem found in the chain, this one first (each a
            :class:`PKIProfileError`); a live client reports the first.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        reason: str,
        *,
        rule: str,
        subject: str | None = None,
        depth: int | None = None,
        problems: Sequence[PKIProfileError] = (),
    ) -> None:
        super().__init__(reason, verify_message=f"strict PKI profile: {rule}", depth=depth, subject=subject)
        self.rule = rule
        self.problems: tuple[PKIProfileError, ...] = tuple(problems) or (self,)


def _raw_message(error: BaseException) -> str:
    """The message of ``error`` as it was built, without :func:`printable`'s
    escaping: for data (JSON reports), or to escape once when it is written
    together with other text.  ``str()`` for exceptions that are not twistls'."""
    if isinstance(error, TLSError):
        return error.reason if isinstance(error.reason, str) else str(error.reason)
    if isinstance(error, TwistlsError):
        return Exception.__str__(error)
    return str(error)


# OpenSSL X509_V_ERR_* codes (stable across OpenSSL 1.1 and 3.x).
_UNTRUSTED_CODES = frozenset({2, 3, 18, 19, 20, 21, 24, 27, 28, 29, 32})
_EXPIRED_CODES = frozenset({10, 12})
_NOT_YET_VALID_CODES = frozenset({9, 11})
_CHAIN_TOO_LONG_CODES = frozenset({22, 25})
_REVOKED_CODES = frozenset({23})


def verification_error_for_code(code: int) -> type[VerificationError]:
    """Map an OpenSSL ``X509_V_ERR_*`` code to the most specific error type.

    Args:
        code: the verify result.

    Returns:
        A :class:`VerificationError` subclass (``VerificationError`` itself
        for codes without a more specific type).
    """
    if code in _EXPIRED_CODES:
        return CertificateExpiredError
    if code in _NOT_YET_VALID_CODES:
        return CertificateNotYetValidError
    if code in _CHAIN_TOO_LONG_CODES:
        return ChainTooLongError
    if code in _REVOKED_CODES:
        return CertificateRevokedError
    if code in _UNTRUSTED_CODES:
        return UntrustedCertificateError
    return VerificationError
