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
    "reload_on_sighup": "twistls._reload",
    "ConnectionInfo": "twistls._events",
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
    # ``name as name``: an explicit re-export, so that type checkers see the lazy names.
    from twistls._events import (
        ConnectionInfo as ConnectionInfo,
    )
    from twistls.checker import (
        Checker as Checker,
        spki_sha256 as spki_sha256,
    )
    from twistls._reload import (
        reload_on_sighup as reload_on_sighup,
    )
    from twistls.context import (
        ClientContextFactory as ClientContextFactory,
        ServerContextFactory as ServerContextFactory,
    )
    from twistls.endpoints import (
        HTTPSEndpointFactory as HTTPSEndpointFactory,
        wrap_client_tls as wrap_client_tls,
        wrap_server_tls as wrap_server_tls,
    )
    from twistls.errors import (
        CertificateExpiredError as CertificateExpiredError,
        CertificateNotYetValidError as CertificateNotYetValidError,
        CertificatePurposeError as CertificatePurposeError,
        CertificateRevokedError as CertificateRevokedError,
        ChainTooLongError as ChainTooLongError,
        ConfigurationError as ConfigurationError,
        ConnectionTruncatedError as ConnectionTruncatedError,
        EngineStateError as EngineStateError,
        HandshakeTimeoutError as HandshakeTimeoutError,
        HostnameMismatchError as HostnameMismatchError,
        IdleTimeoutError as IdleTimeoutError,
        NameConstraintsError as NameConstraintsError,
        NoPeerCertificateError as NoPeerCertificateError,
        PeerAlertError as PeerAlertError,
        PinMismatchError as PinMismatchError,
        ProtocolVersionError as ProtocolVersionError,
        ProtocolViolationError as ProtocolViolationError,
        TLSError as TLSError,
        TwistlsError as TwistlsError,
        UntrustedCertificateError as UntrustedCertificateError,
        VerificationError as VerificationError,
    )
    from twistls.protocol import (
        TLSProtocolWrapper as TLSProtocolWrapper,
        TLSWrappingFactory as TLSWrappingFactory,
    )
