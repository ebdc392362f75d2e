"""The TLS layer of one connection: :class:`TLSProtocolWrapper`.

Its contract is in :mod:`twistls.protocol`, which exports it with the
:class:`~twistls.protocol.TLSWrappingFactory` that makes one per connection.
The parts it delegates have their own modules: flow control
(:mod:`twistls._flow`), the STARTTLS upgrade guard (:mod:`twistls._cleartext`),
the log line of a failed connection (:mod:`twistls._connlog`), the direct
send to Twisted's TCP transports (:mod:`twistls._direct_send`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IPushProducer, ITLSTransport
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from twistls._cleartext import CleartextGuard
from twistls._connlog import log_connection_end, peer_address
from twistls._direct_send import ciphertext_writer
from twistls._flow import FlowControl, ProducerGate, ReadThrottle, WriteBuffer
from twistls._provides import provide_like, provide_tls
from twistls._policybase import _ContextFactory
from twistls._engine import CloseNotifyReceived, ConnectionInfo, Failed, HandshakeCompleted, PlaintextReceived, TLSEngine, Truncated
from twistls._typing import EngineFactory
from twistls.errors import ConfigurationError, ConnectionTruncatedError, EngineStateError, HandshakeTimeoutError
from twistls.errors import IdleTimeoutError, ProtocolViolationError, TLSError, TwistlsError

if TYPE_CHECKING:
    from twistls._typing import Clock, Transport
    from twistls.protocol import TLSWrappingFactory

__all__ = ["TLSProtocolWrapper", "engine_factory"]

#: Larger writes are encrypted and handed to the transport in pieces of this size.
_WRITE_CHUNK = 1 << 17
#: The transport's read size (and send-buffer threshold) while TLS is on.
_READ_CHUNK = 1 << 18
#: Seconds without a read or write over 32 KiB before a connection gives its
#: memory BIOs' capacity back (TLSEngine.release_buffers).
_RELEASE_DELAY = 2.0



# ISSLTransport and INegotiated are provided per connection from the moment TLS starts
# (see twistls._provides).
@implementer(ITLSTransport, IPushProducer)
class TLSProtocolWrapper(FlowControl, ProtocolWrapper):
    """One connection's TLS layer; the wrapped protocol's transport.

    Use it through :class:`TLSWrappingFactory`.  Besides Twisted's transport
    interfaces it offers :meth:`when_handshake_done`, :meth:`connection_info`
    and :meth:`start_tls` (``startTLS``).

    .. versionadded:: 0.1
    """

    factory: TLSWrappingFactory
    # Narrowed from ``ITransport | None``: set by makeConnection before any other call (see twistls._typing).
    transport: Transport  # type: ignore[assignment]
    wrappedProtocol: Any  # any IProtocol provider (a zope interface: opaque to mypy)
    _engine: TLSEngine | None = None
    _provides_pair: tuple[Any, Any] | None = None

    def __init__(self, factory: TLSWrappingFactory, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._clock: Clock = factory.clock
        self._handshake_done = False
        self._handshake_waiters: list[Deferred[ConnectionInfo]] = []
        self._reason: Failure | None = None  # why the connection ends, if not clean
        self._writes = WriteBuffer(self._flush_writes, self._clock)
        self._timeout_call: Any = None
        self._close_call: Any = None
        self._gate: ProducerGate | None = None
        self._throttle: ReadThrottle | None = None
        self._read_holds: set[str] = set()
        self._idle_call: Any = None
        self._release_call: Any = None
        self._release_seen = 0
        self._last_activity = 0.0
        self._shutdown_pending = False
        self._lost = False
        self._truncated = False
        # The wrapped protocol received application data (_got_data), then
        # wrote some (_answered): a server that answered treats a later end
        # without close_notify as the client's normal goodbye in its log.
        self._got_data = False
        self._answered = False
        self._info: ConnectionInfo | None = None
        self._guard = CleartextGuard()  # the STARTTLS upgrade guard

    # -- connection set-up ---------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        """ProtocolWrapper's, with the instance declaration cached (see twistls._provides)."""
        self._provides_pair = provide_like(self, transport)
        cast(Any, Protocol).makeConnection(self, transport)
        cast(Any, self.factory).registerProtocol(self)
        self.wrappedProtocol.makeConnection(self)

    def connectionMade(self) -> None:
        if not self.factory.client:
            # Servers stop reading from a peer that does not read what they
            # send.  Clients do not: two sides that both did could deadlock.
            self._attach_throttle()
        if not self.factory.start_tls:
            context_factory = self.factory.context_factory
            try:
                self._start(context_factory)
            except ConfigurationError as exc:
                self._fail(exc)

    def start_tls(self, context_factory: Any, normal: bool = True) -> None:
        """Switch this connection to TLS now (STARTTLS).

        Nothing received in the clear before the upgrade is delivered after
        it (the STARTTLS command-injection class, CVE-2011-0411): cleartext
        still pending at this call (the rest of the segment being delivered,
        or the wrapped protocol's line buffer; see :mod:`twistls._cleartext`)
        is the peer's (or an attacker's) protocol violation, as RFC 3207 and
        RFC 2595 forbid pipelining past STARTTLS.

        Then TLS does not start: the pending bytes are dropped unprocessed
        (and the protocol's line buffer cleared), the reason is logged once,
        the transport is closed, and the wrapped protocol's ``connectionLost``
        receives a ``Failure`` of :class:`~twistls.errors.ProtocolViolationError`
        (also the failure of :meth:`when_handshake_done`).  This call then
        returns normally rather than raising into the protocol's
        ``lineReceived``: ``disconnecting`` is true from here on, which stops
        Twisted's line receivers from reading the rest of the segment, and
        later writes are discarded.

        Args:
            context_factory: a twistls :class:`~twistls.context.ClientContextFactory`
                (client role) or :class:`~twistls.context.ServerContextFactory`
                (server role).
            normal: accepted for :class:`~twisted.internet.interfaces.ITLSTransport`
                compatibility; the role comes from ``context_factory``.

        Raises:
            EngineStateError: TLS was already started on this connection.
            ConfigurationError: ``context_factory`` is not a twistls factory,
                or cannot make a connection (a client without a hostname).

        .. versionchanged:: 0.1
           Cleartext pending at the call fails the connection with
           :class:`~twistls.errors.ProtocolViolationError`.
        """
        if self._engine is not None:
            raise EngineStateError("TLS was already started on this connection")
        if self._lost or self.disconnecting:
            raise EngineStateError("cannot start TLS on a closing connection")
        pending = self._guard.take_pending(self.wrappedProtocol)
        if pending:
            self._fail(
                ProtocolViolationError(
                    f"the peer sent {pending} bytes in the clear behind STARTTLS, before the TLS "
                    "handshake (pipelining past STARTTLS is forbidden: RFC 3207, RFC 2595); "
                    "they were dropped unread"
                )
            )
            return
        self._start(context_factory)

    startTLS = start_tls

    def _cleartext_stopped(self) -> bool:
        """Whether line-by-line cleartext delivery must stop: TLS started
        (so nothing was pending), or the connection is closing."""
        return self._engine is not None or self.disconnecting or self._lost

    def _start(self, context_factory: Any) -> None:
        seam = engine_factory(context_factory)
        # The peer address is a client's session-cache key.
        engine = seam.create_engine(peer_address=peer_address(self.transport) if seam.client else None)
        if not engine.client and not seam.alpn_protocols:
            offered = self.factory.acceptableProtocols()
            if offered:
                engine.set_alpn_protocols(offered)
        self._engine = engine
        self._send_ciphertext = ciphertext_writer(self.transport)
        # Read the socket in big chunks: fewer reactor turns and engine calls per MB
        # (Twisted's TCP transport reads bufferSize = 64 KiB per doRead).
        if getattr(self.transport, "bufferSize", _READ_CHUNK) < _READ_CHUNK:
            self.transport.bufferSize = _READ_CHUNK
        provide_tls(self, self._provides_pair)
        timeout = self.factory.handshake_timeout_for(seam)
        if timeout:
            self._timeout_call = self._clock.callLater(timeout, self._handshake_timed_out, timeout)
        if self._gate is not None:
            self._gate.hold("handshake")
        if engine.client:
            engine.start()
            self._send_engine_output()

    # -- transport side (what the wrapped protocol calls) ---------------------

    # While the connection is established with no producer and not closing,
    # ``write`` is rebound per instance to ``self._writes.write`` (see
    # _set_fast_write); this method is the full path for every other state.
    def write(self, data: bytes) -> None:
        if self._lost or self.disconnecting:
            return
        engine = self._engine
        if engine is None:
            self.transport.write(data)
            return
        if not data or engine.failed:
            return
        if not self._handshake_done:
            engine.send_plaintext(data)
            return
        if self._idle_call is not None:
            self._last_activity = self._clock.seconds()
        self._writes.write(data)
        gate = self._gate
        if gate is not None and not gate.streaming:
            # A pull producer writes once per resumeProducing, which the
            # transport calls when its buffer empties: hand it over now.
            # A streaming producer's writes gather like any others (one
            # record and one send per turn, up to AGGREGATE_LIMIT).
            self._flush_writes()

    def _set_fast_write(self, on: bool) -> None:
        if on:
            self.__dict__["write"] = self._writes.write
        else:
            self.__dict__.pop("write", None)

    @property  # type: ignore[override]
    def disconnecting(self) -> bool:
        """Whether the connection is closing (``loseConnection`` or a failure)."""
        return self._disconnecting

    @disconnecting.setter
    def disconnecting(self, value: bool) -> None:
        self._disconnecting = value
        if value:
            self._set_fast_write(False)

    _disconnecting = False

    def writeSequence(self, iovec: list[bytes]) -> None:
        self.write(b"".join(iovec))

    def _flush_writes(self) -> None:
        writes = self._writes
        call, writes.call = writes.call, None
        if call is not None and call.active():
            call.cancel()
        buffer = writes.chunks
        if not buffer or self._engine is None:
            return
        if self._idle_call is not None:
            self._last_activity = self._clock.seconds()
        data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        writes.size = 0
        if not data:
            return
        if self._got_data:
            self._answered = True
        send = self._engine.send_plaintext
        try:
            if len(data) <= _WRITE_CHUNK:
                send(data)
            else:  # big writes go out in pieces: small memory BIOs, cache-warm copies
                view = memoryview(data)
                for start in range(0, len(data), _WRITE_CHUNK):
                    send(view[start : start + _WRITE_CHUNK])
                    self._send_engine_output()
        except EngineStateError:
            return
        self._send_engine_output()

    def _send_engine_output(self, last: bool = False) -> None:
        """Hand the engine's ciphertext to the transport.  ``last``: the final
        bytes before the transport is closed (close_notify, an alert); they
        go through Twisted's buffer so that Twisted sends them and closes the
        socket in the same step, leaving the peer no window to answer with a
        reset before we close.  Called after every engine step that reads or
        writes, it also schedules the buffer release after big I/O."""
        engine = self._engine
        if engine is None:
            return
        out = engine.bytes_to_send()
        if self._lost:
            return
        if out:
            if last:
                self.transport.write(out)
            else:
                self._send_ciphertext(out)
        if engine.big_io and self._release_call is None:
            self._schedule_release(engine)

    def loseConnection(self) -> None:
        if self.disconnecting or self._lost:
            return
        self.disconnecting = True
        if self._gate is not None:
            self._shutdown_pending = True  # waits for unregisterProducer, as Twisted does
            return
        self._begin_shutdown()

    def _begin_shutdown(self) -> None:
        engine = self._engine
        if engine is None or engine.failed:
            self.transport.loseConnection()
            return
        if not self._handshake_done:
            self._shutdown_pending = True  # after the handshake (bounded by its timeout)
            return
        self._end(graceful=True)

    def _end(self, error: TwistlsError | None = None, *, graceful: bool, abort: bool = False, level: str = "warn") -> None:
        """The one way this wrapper ends a connection.

        Args:
            error: why, when it is not a clean close: kept for
                ``connectionLost`` and logged once (the first reason wins).
            graceful: send the plaintext still buffered and close_notify
                first (when the engine has not failed).
            abort: drop the transport at once, sending nothing.
            level: the log level of ``error`` (``"warn"`` or ``"info"``).
        """
        if error is not None and self._reason is None:
            self._reason = Failure(error)
            self._log_end(error, level=level, outcome="closed" if level == "info" else "failed")
        self.disconnecting = True
        self._cancel_timeout()
        if abort:
            self.transport.abortConnection()
            return
        engine = self._engine
        if graceful and engine is not None and not engine.failed:
            self._flush_writes()
            engine.close()
        self._send_engine_output(last=True)  # close_notify, or the alert of a failure
        if not self._lost:
            self._close_transport()

    def _log_end(self, error: TwistlsError, *, level: str, outcome: str) -> None:
        """The one log line of this connection (see twistls._connlog)."""
        log_connection_end(
            error, transport=self.transport, engine=self._engine, client=self.factory.client, level=level, outcome=outcome
        )

    def _close_transport(self) -> None:
        self._detach_throttle()
        self.transport.loseConnection()
        timeout = self.factory.close_timeout
        if timeout is not None and self._close_call is None and not self._lost:
            self._close_call = self._clock.callLater(timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._close_call = None
        if not self._lost:
            self.transport.abortConnection()

    def abortConnection(self) -> None:
        if self._lost:
            return
        if self._reason is None:
            self._reason = Failure(ConnectionAborted())
        self._end(graceful=False, abort=True)

    # ISSLTransport / INegotiated / information

    def getPeerCertificate(self) -> Any:
        """The peer's certificate as a :class:`cryptography.x509.Certificate`,
        or ``None`` before the handshake or if it sent none."""
        info = self.connection_info()
        if info is None or not info.peer_chain_der:
            return None
        from cryptography.x509 import load_der_x509_certificate

        return load_der_x509_certificate(info.peer_chain_der[0])

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The ALPN protocol agreed on (``INegotiated``), or ``None``."""
        if self._engine is None or not self._handshake_done:
            return None
        return self._engine.alpn_protocol()

    def connection_info(self) -> ConnectionInfo | None:
        """What was negotiated, or ``None`` before the handshake completed."""
        if self._info is None and self._engine is not None and self._handshake_done:
            self._info = self._engine.info()
        return self._info

    @property
    def tls_started(self) -> bool:
        """Whether TLS is active (or negotiating) on this connection."""
        return self._engine is not None

    def when_handshake_done(self) -> Deferred[ConnectionInfo]:
        """A Deferred that fires with the :class:`~twistls._engine.ConnectionInfo`
        once the handshake is done and the peer approved, or fails with the
        :class:`~twistls.errors.TLSError` (or the connection-lost reason)."""
        d: Deferred[ConnectionInfo] = Deferred()
        info = self.connection_info()
        if info is not None:
            d.callback(info)
        elif self._lost:
            d.errback(self._reason or Failure(ConnectionDone("connection closed before the TLS handshake")))
        else:
            self._handshake_waiters.append(d)
        return d

    # -- protocol side (what the transport calls) -----------------------------

    def dataReceived(self, data: bytes) -> None:
        engine = self._engine
        if engine is None:
            if self._reason is None:  # after a failure nothing more is delivered
                self._guard.deliver(self.wrappedProtocol, data, self._cleartext_stopped)
            return
        if self._idle_call is not None:
            self._last_activity = self._clock.seconds()
        if data:
            self._peer_sent = True
        events = engine.receive_bytes(data)
        if not events or engine.failed:
            self._send_engine_output(last=engine.failed)  # a failure's output is its alert
            if not events:
                return
        # What the protocol writes in answer goes out when it returns (the end
        # of this reactor turn for it), not one reactor iteration later, and in
        # one send with what the engine has to say (the client's Finished, the
        # server's session tickets, a KeyUpdate answer): the peer then reads
        # the handshake's end and the first data in one go, one wake-up fewer.
        writes = self._writes
        writes.held = True
        try:
            self._dispatch(events)
        finally:
            writes.held = False
            if writes.chunks:
                self._flush_writes()  # the engine's output first, then these writes
            self._send_engine_output()  # (also when the writes were empty or refused)

    #: Whether the peer sent any byte over TLS (see _fail).
    _peer_sent = False
    #: Whether the stream ended inside a TLS record (see _final_reason).
    _cut_mid_record = False

    def _dispatch(self, events: list[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is PlaintextReceived:
                # Only what arrived after the handshake and the Checker passed
                # (the engine never emits it earlier; this holds the line).
                if self._handshake_done and self.wrappedProtocol is not None:
                    self._got_data = True
                    self.wrappedProtocol.dataReceived(event.data)
            elif kind is HandshakeCompleted:
                self._on_handshake()
            elif kind is CloseNotifyReceived:
                self._on_close_notify()
            elif kind is Truncated:
                self._truncated = True
                self._cut_mid_record = event.mid_record
            elif kind is Failed:
                self._fail(event.error)

    def _on_handshake(self) -> None:
        self._handshake_done = True
        self._set_fast_write(self._gate is None and not self._lost and not self.disconnecting)
        self._cancel_timeout()
        idle = self.factory.idle_timeout
        if idle is not None:
            self._last_activity = self._clock.seconds()
            self._idle_call = self._clock.callLater(idle, self._idle_check)
        info = self.connection_info()
        waiters, self._handshake_waiters = self._handshake_waiters, []
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()
        for d in waiters:
            d.callback(cast("ConnectionInfo", info))  # not None: the handshake is done
        if self._gate is not None:
            self._gate.release("handshake")
        if self._paused_in_handshake:  # the protocol still wants no data
            self._paused_in_handshake = False
            self._hold_reading("protocol")
        if self._shutdown_pending and self._gate is None:
            self._shutdown_pending = False
            self._begin_shutdown()

    def _on_close_notify(self) -> None:
        if self._engine is not None:
            self._end(graceful=True)  # answer close_notify with ours

    def _fail(self, error: TLSError | ConfigurationError) -> None:
        # A server's peer that closed without sending a byte (a port or
        # load-balancer health check) is logged at info: no TLS was tried.
        silent = not self._peer_sent and self._engine is not None and not self._engine.client
        self._end(error, graceful=False, level="info" if silent else "warn")

    def _schedule_release(self, engine: TLSEngine) -> None:
        self._release_seen = engine.big_io
        self._release_call = self._clock.callLater(_RELEASE_DELAY, self._release_buffers)

    def _release_buffers(self) -> None:
        """Give the engine's memory BIOs back once no big read or write came
        for _RELEASE_DELAY seconds; look again later while they keep coming."""
        self._release_call = None
        engine = self._engine
        if engine is None or self._lost or self.disconnecting or engine.failed or not engine.big_io:
            return
        if engine.big_io != self._release_seen or not engine.release_buffers():
            self._schedule_release(engine)

    def _idle_check(self) -> None:
        self._idle_call = None
        if self._lost or self.disconnecting:
            return
        timeout = self.factory.idle_timeout
        if timeout is None:
            return
        left = self._last_activity + timeout - self._clock.seconds()
        if left > 0:
            self._idle_call = self._clock.callLater(left, self._idle_check)
            return
        self.disconnecting = True
        if self._gate is not None:
            gate, self._gate = self._gate, None
            gate.stopProducing()
            self.transport.unregisterProducer()
        self._end(IdleTimeoutError(f"no data in either direction for {timeout:g} seconds"), graceful=True, level="info")

    def _handshake_timed_out(self, timeout: float) -> None:
        self._timeout_call = None
        if self._handshake_done or self._lost:
            return
        self._end(HandshakeTimeoutError(f"the TLS handshake did not finish within {timeout:g} seconds"), graceful=False, abort=True)

    def _cancel_timeout(self) -> None:
        call, self._timeout_call = self._timeout_call, None
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:  # noqa: B008
        if self._lost:
            return
        self._lost = True
        self._set_fast_write(False)
        self._cancel_timeout()
        flush, self._writes.call = self._writes.call, None
        if flush is not None and flush.active():
            flush.cancel()
        for attr in ("_close_call", "_idle_call", "_release_call"):
            call = getattr(self, attr)
            setattr(self, attr, None)
            if call is not None and call.active():
                call.cancel()
        engine = self._engine
        if engine is not None:
            if not engine.failed:
                self._dispatch(engine.receive_bytes(b""))
            final = self._final_reason(reason, engine)
            engine.free()
        else:
            final = self._reason or reason
        waiters, self._handshake_waiters = self._handshake_waiters, []
        for d in waiters:
            d.errback(final)
        if self._gate is not None:
            gate, self._gate = self._gate, None
            gate.stopProducing()
        ProtocolWrapper.connectionLost(self, final)

    def _final_reason(self, reason: Failure, engine: TLSEngine) -> Failure:
        if self._reason is not None:
            return self._reason
        if engine.peer_closed:
            return Failure(ConnectionDone("TLS connection closed cleanly (close_notify)"))
        if self._truncated and not self.disconnecting:
            if self.factory.allow_truncation:
                return Failure(ConnectionDone("connection closed without TLS close_notify (allowed)"))
            error = ConnectionTruncatedError(
                "the connection ended without a TLS close_notify: the data may be truncated"
            )
            # Not logged when a server's protocol had answered (see _answered)
            # and the stream ended between records: browsers, curl and HTTP/2
            # clients end this way after the response.  info, not warn,
            # otherwise: the protocol decides.
            if self._cut_mid_record or engine.client or not self._answered:
                self._log_end(error, level="info", outcome="failed")
            return Failure(error)
        if engine.error is not None:
            return Failure(engine.error)
        return reason


def engine_factory(context_factory: object) -> EngineFactory:
    """``context_factory`` as the typed seam, or a ConfigurationError.

    twistls' own policies pass by their class (a plain ``isinstance``); any
    other object by the runtime-checked protocol, whose ``isinstance``
    inspects every member and costs about 0.15 ms, once per connection.
    """
    if isinstance(context_factory, _ContextFactory):
        return cast(EngineFactory, context_factory)
    if not isinstance(context_factory, EngineFactory):
        raise ConfigurationError(
            "twistls needs a twistls.ClientContextFactory or ServerContextFactory, not "
            f"{type(context_factory).__name__}"
        )
    return context_factory
