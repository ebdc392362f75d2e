"""twistls: TLS for Twisted that cannot be used wrongly, built on M2Crypto.

The public interface is what this module exports (``__all__``); every other
name is private and may change.  Names are imported lazily, on first use, so
``python -m twistls --help`` and ``twistd twistls --help`` start fast.

.. versionadded:: 0.1
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_ERRORS = (
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
)

_WHERE: dict[str, str] = {
    "Checker": "twistls.checker",
    "spki_sha256": "twistls.checker",
    "ClientContextFactory": "twistls.context",
    "ServerContextFactory": "twistls.context",
    "reload_on_sighup": "twistls.context",
    "ConnectionInfo": "twistls._engine",
    "TLSProtocolWrapper": "twistls.protocol",
    "TLSWrappingFactory": "twistls.protocol",
    "wrap_client_tls": "twistls.endpoints",
    "wrap_server_tls": "twistls.endpoints",
    "HTTPSEndpointFactory": "twistls.endpoints",
    **{name: "twistls.errors" for name in _ERRORS},
}

__all__ = [*_WHERE, "__version__"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'twistls' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from twistls._engine import ConnectionInfo
    from twistls.checker import Checker, spki_sha256
    from twistls.context import ClientContextFactory, ServerContextFactory, reload_on_sighup
    from twistls.errors import (
        CertificateExpiredError,
        CertificateNotYetValidError,
        CertificateRevokedError,
        ChainTooLongError,
        ConfigurationError,
        ConnectionTruncatedError,
        IdleTimeoutError,
        ProtocolViolationError,
        EngineStateError,
        HandshakeTimeoutError,
        HostnameMismatchError,
        NoPeerCertificateError,
        PeerAlertError,
        PinMismatchError,
        NameConstraintsError,
        CertificatePurposeError,
        ProtocolVersionError,
        TLSError,
        TwistlsError,
        UntrustedCertificateError,
        VerificationError,
    )
    from twistls.endpoints import HTTPSEndpointFactory, wrap_client_tls, wrap_server_tls
    from twistls.protocol import TLSProtocolWrapper, TLSWrappingFactory
