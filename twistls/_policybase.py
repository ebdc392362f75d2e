"""What both policy classes share: one ``SSL_CTX``, reused for every
connection, plain-data settings, the default limits, and the refusal of
Twisted's own TLS APIs (:meth:`_ContextFactory.getContext`).

The policies themselves are :class:`twistls.context.ClientContextFactory`
and :class:`twistls._serverpolicy.ServerContextFactory` (public as
``twistls.ServerContextFactory``).
"""

from __future__ import annotations

import logging

from twistls import _openssl as _ossl
from twistls._engine import ContextHandle
from twistls.errors import ConfigurationError

log = logging.getLogger("twistls")

DEFAULT_VERIFY_DEPTH = 9
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: The largest client certificate chain a server accepts (OpenSSL's default
#: is 100 KiB, which lets one client pad every cached session with junk).
DEFAULT_MAX_PEER_CHAIN_SIZE = 32 * 1024
#: What a server's session cache may hold in client chains, at most.
DEFAULT_SESSION_CACHE_MEMORY = 64 * 1024 * 1024


class _ContextFactory:
    """What both roles share: one SSL_CTX, reused, and plain-data settings."""

    client: bool
    _handle: ContextHandle
    #: What :meth:`getContext` says to use instead of Twisted's own TLS.
    _instead_of_twisted_tls: str

    def __init__(self, *, handshake_timeout: float | None) -> None:
        if handshake_timeout is not None and handshake_timeout <= 0:
            raise ConfigurationError(f"handshake_timeout must be > 0 seconds or None, not {handshake_timeout!r}")
        self.handshake_timeout = handshake_timeout

    @property
    def context_address(self) -> int:
        """The ``SSL_CTX *`` as an int (for tests and :mod:`twistls._openssl`)."""
        return self._handle.address

    def options(self) -> int:
        """The ``SSL_OP_*`` bits set on the context."""
        return int(_ossl.SSL_CTX_get_options(self._handle.address))

    def check_usable(self) -> None:
        """Raise :class:`~twistls.errors.ConfigurationError` if no connection
        made from this factory could succeed (a verifying client without a
        hostname); wrapping factories call it when they are made."""

    def getContext(self, *args: object) -> None:
        """Refuse Twisted's own TLS: always raises.

        Twisted calls this on an object that declares none of its TLS
        interfaces, at once: ``reactor.connectSSL``/``listenSSL``,
        ``endpoints.wrapClientTLS``/``wrapServerTLS`` (at ``connect()``/
        ``listen()``), ``transport.startTLS`` on a Twisted transport (as
        ``ESMTPSenderFactory`` does) and, for a client, with ``(hostname,
        port)``, an ``Agent(contextFactory=...)`` on its first ``https://``
        request.

        Raises:
            TypeError: always, naming the twistls API to use instead.

        .. versionadded:: 0.1
        """
        if args and self.client:  # Agent(contextFactory=policy) calls getContext(hostname, port)
            raise TypeError(
                "a twistls.ClientContextFactory is not a Twisted HTTPS policy: use "
                "Agent.usingEndpointFactory(reactor, twistls.HTTPSEndpointFactory(reactor, policy)) "
                "instead of Agent(reactor, contextFactory=policy)"
            )
        raise TypeError(self._instead_of_twisted_tls)
