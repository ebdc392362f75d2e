"""The Twisted adapter: TLS over any transport, on connect or on STARTTLS.

:class:`TLSWrappingFactory` wraps any protocol factory; each connection gets
a :class:`TLSProtocolWrapper`, which sits between the real transport and the
wrapped protocol and moves bytes through a :class:`twistls._engine.TLSEngine`.
It holds no TLS logic of its own.

Contract:

* With ``start_tls=False`` the handshake starts as soon as the transport
  connects.  With ``start_tls=True`` bytes pass in the clear until the wrapped
  protocol calls ``self.transport.startTLS(context_factory)``
  (:class:`~twisted.internet.interfaces.ITLSTransport`), so Twisted's own
  STARTTLS protocols (SMTP, IMAP4, XMPP, LDAP) work unchanged.
* No application byte reaches the wrapped protocol, and none it writes goes
  on the wire, before the handshake finished and the Checker approved the
  peer.  Writes made earlier are buffered, then sent in order.
* ``loseConnection`` sends buffered data, then close_notify, then closes the
  transport; if the peer does not read, the transport is aborted after
  ``close_timeout`` seconds.  ``abortConnection`` drops at once.
* A failure ends the connection: the wrapped protocol's ``connectionLost``
  receives a ``Failure`` of a :mod:`twistls.errors` type, the reason is
  logged once (one line), and :meth:`TLSProtocolWrapper.when_handshake_done`
  Deferreds fail with it.  A transport that ends after the handshake without
  close_notify is reported as :class:`~twistls.errors.ConnectionTruncatedError`
  unless the factory has ``allow_truncation=True``.  The log gets a line for
  it unless the application protocol had finished: the wrapper was already
  closing (the protocol called ``loseConnection``), or, on a server, the
  protocol had answered (it wrote application data after it received some)
  and the stream ended between two TLS records, which is how curl, browsers
  and HTTP/2 clients end after a response.  The wrapper cannot see the
  application's message boundaries, so this is a per-connection judgement
  (a client that sends a second request and cuts it at a record boundary is
  not logged); the wrapped protocol's ``connectionLost`` still receives the
  error and decides.
* The log line of a failed connection (``twistls`` namespace) names the
  peer, the SNI name and the error's class:
  ``TLS connection from 192.0.2.7:51514 (SNI "www.example") failed:
  PeerAlertError: ...``; peer-chosen text is escaped.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IProtocolNegotiationFactory, IReactorTime
from twisted.protocols.policies import WrappingFactory

from twistls._typing import FROM_CONTEXT, EngineFactory, HandshakeTimeout, check_handshake_timeout, handshake_timeout_of
from twistls._wrapper import TLSProtocolWrapper, engine_factory
from twistls.errors import ConfigurationError

if TYPE_CHECKING:
    from twistls._typing import Clock

__all__ = ["TLSProtocolWrapper", "TLSWrappingFactory"]


class TLSWrappingFactory(WrappingFactory[TLSProtocolWrapper]):
    """Wraps any protocol factory so that its connections speak TLS.

    Args:
        wrappedFactory: the application's protocol factory.
        context_factory: a :class:`~twistls.context.ClientContextFactory`
            (with the expected hostname) or a
            :class:`~twistls.context.ServerContextFactory`.  May be ``None``
            with ``start_tls=True`` (the protocol passes one to ``startTLS``).
        start_tls: pass bytes in the clear until the protocol calls
            ``transport.startTLS``.
        allow_truncation: report a transport that ends without close_notify
            as a clean ``ConnectionDone`` (for protocols that delimit their
            own messages).
        handshake_timeout: seconds the TLS handshake may take before the
            connection is aborted with
            :class:`~twistls.errors.HandshakeTimeoutError` (``None``: no
            limit).  It wins over the context factory's
            ``handshake_timeout``, which applies when this is left at its
            default, :data:`~twistls._typing.FROM_CONTEXT` (also for a
            context factory passed to ``startTLS``).
        close_timeout: seconds ``loseConnection`` waits for the transport to
            flush before aborting it (``None``: forever).
        idle_timeout: seconds an established connection may carry no data
            in either direction before it is closed (close_notify, then the
            transport; the wrapped protocol sees
            :class:`~twistls.errors.IdleTimeoutError`).  ``None`` (the
            default): never.
        clock: the reactor for timers (default: the global reactor).

    Raises:
        ConfigurationError: no context factory and not ``start_tls``; a
            timeout of zero or less.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2
       ``handshake_timeout``: the wrapping factory owns every timeout.
    """

    protocol = TLSProtocolWrapper

    def __init__(
        self,
        wrappedFactory: Any,
        context_factory: Any = None,
        *,
        start_tls: bool = False,
        allow_truncation: bool = False,
        close_timeout: float | None = 5.0,
        idle_timeout: float | None = None,
        handshake_timeout: HandshakeTimeout = FROM_CONTEXT,
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]  # WrappingFactory.__init__ is unannotated
        if idle_timeout is not None and not idle_timeout > 0:
            raise ConfigurationError(f"idle_timeout must be > 0 seconds or None, not {idle_timeout!r}")
        self.idle_timeout = idle_timeout
        check_handshake_timeout(handshake_timeout)
        #: This factory's handshake timeout, or FROM_CONTEXT (see :meth:`handshake_timeout_for`).
        self.handshake_timeout: HandshakeTimeout = handshake_timeout
        if context_factory is None and not start_tls:
            raise ConfigurationError("TLSWrappingFactory needs a context_factory unless start_tls=True")
        if context_factory is not None:
            engine_factory(context_factory).check_usable()  # every connection would fail: say so now
        self.context_factory = context_factory
        #: The role of connections that start TLS at once (servers throttle reads).
        self.client = context_factory is not None and bool(context_factory.client)
        self.start_tls = bool(start_tls)
        self.allow_truncation = bool(allow_truncation)
        self.close_timeout = close_timeout
        if clock is None:
            from twisted.internet import reactor as default_reactor

            clock = default_reactor
        self.clock: Clock = cast("Clock", clock)

    def handshake_timeout_for(self, context_factory: EngineFactory) -> float | None:
        """The handshake timeout of a connection that starts TLS with
        ``context_factory``: this factory's, unless it was given none
        (:data:`~twistls._typing.FROM_CONTEXT`), then the context factory's.

        .. versionadded:: 0.2
        """
        return handshake_timeout_of(self.handshake_timeout, context_factory)

    def buildProtocol(self, addr: Any) -> TLSProtocolWrapper | None:  # type: ignore[override]
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)

    def acceptableProtocols(self) -> list[bytes]:
        """ALPN protocols of the wrapped factory, if it offers them."""
        if IProtocolNegotiationFactory.providedBy(self.wrappedFactory):
            return list(self.wrappedFactory.acceptableProtocols())
        return []

