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

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IHandshakeListener,
    INegotiated,
    IProtocolNegotiationFactory,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITLSTransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import alsoProvides, directlyProvides, implementedBy, implementer, providedBy
from zope.interface.declarations import Provides

from twistls._direct_send import ciphertext_writer
from twistls._flow import ProducerGate, ReadThrottle, WriteBuffer
from twistls._engine import (
    CloseNotifyReceived,
    ConnectionInfo,
    Failed,
    HandshakeCompleted,
    PlaintextReceived,
    TLSEngine,
    Truncated,
)
from twistls._typing import EngineFactory
from twistls.errors import (
    TwistlsError,
    ConfigurationError,
    ConnectionTruncatedError,
    EngineStateError,
    HandshakeTimeoutError,
    IdleTimeoutError,
    ProtocolViolationError,
    TLSError,
)

if TYPE_CHECKING:
    from twistls._typing import Clock, Transport

__all__ = ["TLSProtocolWrapper", "TLSWrappingFactory"]

log = Logger(namespace="twistls")

#: Larger writes are encrypted and handed to the transport in pieces of this size.
_WRITE_CHUNK = 1 << 17
#: The transport's read size (and send-buffer threshold) while TLS is on.
_READ_CHUNK = 1 << 18


#: Seconds without a read or write over 32 KiB before a connection gives its
#: memory BIOs' capacity back (TLSEngine.release_buffers).
_RELEASE_DELAY = 2.0

#: (wrapper class, transport class) -> the wrapper's instance declarations
#: (class + transport's interfaces, and the same + ISSLTransport + INegotiated).
#: zope computes them in ~50 us; made once, they cost a dict look-up.
_provides_cache: dict[tuple[type, type], tuple[Any, Any]] = {}


# ISSLTransport (and INegotiated, which extends it) is provided per connection from the
# moment TLS starts, as Twisted's own startTLS does: ESMTPClient and others treat an
# ISSLTransport as already secure and would skip STARTTLS.
@implementer(ITLSTransport, IPushProducer)
class TLSProtocolWrapper(ProtocolWrapper):
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

    # -- connection set-up ---------------------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        """ProtocolWrapper's, with the instance declaration (the wrapper
        provides what its transport provides) taken from a cache when the
        transport declares nothing of its own."""
        cls, tcls = type(self), type(transport)
        spec = providedBy(transport)
        pair = None
        if spec is implementedBy(tcls):
            pair = _provides_cache.get((cls, tcls))
            if pair is None and len(_provides_cache) < 256:
                pair = _provides_cache[(cls, tcls)] = (
                    Provides(cls, spec),
                    Provides(cls, spec, ISSLTransport, INegotiated),
                )
        if pair is None:
            directlyProvides(self, spec)
        else:
            self.__provides__ = pair[0]
        self._provides_pair = pair
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
        it (the STARTTLS command-injection class, CVE-2011-0411).  RFC 3207
        (SMTP) and RFC 2595 (IMAP, POP3) forbid pipelining past STARTTLS, so
        cleartext still pending at this call is the peer's (or an
        attacker's) protocol violation.  Pending means any of:

        * bytes of the segment being delivered that follow the current line:
          before TLS the wrapper hands the protocol one line at a time (cut
          after its ``delimiter``, else after ``b"\\n"``) and holds the rest,
          so what came behind the STARTTLS line is still here;
        * a non-empty ``_buffer`` of bytes on the wrapped protocol (where
          Twisted's ``LineReceiver`` and ``LineOnlyReceiver``, hence SMTP,
          IMAP4, POP3 and FTP, keep a partial line);
        * without such a ``_buffer``: what the protocol's
          ``clearLineBuffer()`` returns.

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
        pending = self._take_pending_cleartext()
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

    def _start(self, context_factory: Any) -> None:
        seam = _engine_factory(context_factory)
        # The peer address is a client's session-cache key.
        engine = seam.create_engine(peer_address=_peer_address(self.transport) if seam.client else None)
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
        pair = self._provides_pair
        if pair is not None and self.__dict__.get("__provides__") is pair[0]:
            self.__provides__ = pair[1]  # what alsoProvides computes, made once (~50 us a call)
        else:  # something else declared on this instance since makeConnection
            alsoProvides(self, ISSLTransport, INegotiated)
        timeout = seam.handshake_timeout
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
        """The one log line of a connection that ends for ``error``: who
        (``from``/``to`` the peer's address), the SNI name (or ``no SNI``),
        then the error's class and text, all escaped with
        :func:`~twistls._info.printable` (the SNI name and the reason can
        hold peer-chosen text)::

            TLS connection from 203.0.113.7:51514 (SNI "www.example") failed: PeerAlertError: the peer ...
        """
        from twistls._info import printable

        engine = self._engine
        client = engine.client if engine is not None else self.factory.client
        try:
            name = engine.server_name() if engine is not None else None
        except Exception:  # a freed engine: no name to report
            name = None
        emit = log.info if level == "info" else log.warn
        emit(
            "TLS connection {direction} {peer} ({sni}) {outcome}: {error_type}: {reason}",
            direction="to" if client else "from",
            peer=printable(_peer_text(self.transport)),
            sni="no SNI" if not name else f'SNI "{printable(name)}"',
            outcome=outcome,
            error_type=type(error).__name__,
            reason=printable(" ".join(str(error).split())),
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

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self._lost:
            producer.stopProducing()
            return
        gate = ProducerGate(producer, streaming)
        self._detach_throttle()
        self._gate = gate
        self._set_fast_write(False)  # with a producer, every write is flushed at once
        self._flush_writes()
        self.transport.registerProducer(gate, True if streaming else False)
        if self._engine is not None and not self._handshake_done:
            gate.hold("handshake")

    def unregisterProducer(self) -> None:
        if self._gate is None:
            return
        self._gate = None
        self._set_fast_write(self._handshake_done and not self._lost and not self.disconnecting)
        self._flush_writes()
        if not self._lost:
            self.transport.unregisterProducer()
            if not self.disconnecting and not self.factory.client:
                self._attach_throttle()
        if self._shutdown_pending and self.disconnecting:
            self._shutdown_pending = False
            self._begin_shutdown()

    # IPushProducer for the wrapped protocol: pausing stops reading the socket.
    _paused_in_handshake = False

    def pauseProducing(self) -> None:
        if self._engine is not None and not self._handshake_done and not self._lost:
            # The handshake needs the peer's bytes, and no application data is
            # delivered before it ends: apply the pause then.  (twisted.web's
            # HTTPChannel pauses its transport when its producer is held for
            # the handshake; stopping the socket here would deadlock.)
            self._paused_in_handshake = True
            return
        self._hold_reading("protocol")

    def resumeProducing(self) -> None:
        self._paused_in_handshake = False
        self._release_reading("protocol")

    def _hold_reading(self, who: str) -> None:
        if not self._read_holds and not self._lost:
            self.transport.pauseProducing()
        self._read_holds.add(who)

    def _release_reading(self, who: str) -> None:
        if who in self._read_holds:
            self._read_holds.discard(who)
            if not self._read_holds and not self._lost:
                self.transport.resumeProducing()

    def _attach_throttle(self) -> None:
        if self._throttle is None and self._gate is None and not self._lost:
            throttle = ReadThrottle(self)
            try:
                self.transport.registerProducer(throttle, True)
            except RuntimeError:  # the transport already has a producer
                return
            self._throttle = throttle

    def _detach_throttle(self) -> None:
        if self._throttle is not None:
            self._throttle = None
            self._release_reading("send-buffer")
            if not self._lost:
                self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

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
            self._deliver_cleartext(data)
            return
        if self._idle_call is not None:
            self._last_activity = self._clock.seconds()
        self._frame(data)
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

    # TLS record framing of what the peer sent (only the 5-byte headers are
    # read): bytes still owed by the record in progress, and a header cut by
    # the segment end.  Whether the stream ended inside a record tells a cut
    # message from a client's goodbye without close_notify (see _final_reason).
    _record_left = 0
    _record_head = b""

    def _frame(self, data: bytes) -> None:
        left, head = self._record_left, self._record_head
        pos, end = 0, len(data)
        while True:
            if left:
                step = min(left, end - pos)
                pos += step
                left -= step
                if left:
                    break
            if pos >= end:
                break
            take = data[pos : pos + 5 - len(head)]
            head += take
            pos += len(take)
            if len(head) < 5:
                break
            left, head = int.from_bytes(head[3:5], "big"), b""
        self._record_left, self._record_head = left, head

    # The cleartext segment being delivered (before TLS) and where its
    # undelivered rest begins: what start_tls sees as pending.
    _cleartext = b""
    _cleartext_next = 0

    def _deliver_cleartext(self, data: bytes) -> None:
        """Hand bytes received before TLS to the wrapped protocol one line
        at a time (cut after its ``delimiter``, else after ``b"\\n"``), holding
        the rest of the segment here.  A stream protocol must accept its
        bytes cut anywhere, so this changes nothing for it; but when a line
        makes it call ``startTLS``, what came behind that line has not been
        read yet and :meth:`start_tls` sees it (``LineOnlyReceiver``, which
        SMTP's server uses, would otherwise keep those lines in a local
        list no one can see).  After a failure nothing more is delivered."""
        if self._reason is not None:
            return
        protocol = self.wrappedProtocol
        delimiter = getattr(protocol, "delimiter", None)
        if not isinstance(delimiter, bytes) or not delimiter:
            delimiter = b"\n"
        end = len(data)
        cut = data.find(delimiter)
        if cut < 0 or cut + len(delimiter) == end:  # one line, or part of one: no rest to hold
            protocol.dataReceived(data)
            return
        start = 0
        try:
            while start < end:
                stop = end if cut < 0 else cut + len(delimiter)
                self._cleartext, self._cleartext_next = data, stop
                protocol.dataReceived(data[start:stop])
                if self._engine is not None or self.disconnecting or self._lost:
                    # TLS started (so nothing was pending), or the connection is closing:
                    # Twisted's line receivers read no line behind one that closed it.
                    return
                start = stop
                cut = data.find(delimiter, start)
        finally:
            self._cleartext, self._cleartext_next = b"", 0

    def _take_pending_cleartext(self) -> int:
        """Drop the cleartext received but not yet processed (see
        :meth:`start_tls`) and return how many bytes it was."""
        pending = len(self._cleartext) - self._cleartext_next
        self._cleartext, self._cleartext_next = b"", 0
        protocol = self.wrappedProtocol
        buffered = getattr(protocol, "_buffer", None)
        clear = getattr(protocol, "clearLineBuffer", None)
        if isinstance(buffered, (bytes, bytearray)):
            pending += len(buffered)
            if buffered and callable(clear):
                clear()  # LineReceiver: its loop then finds nothing left to read
        elif callable(clear):
            cleared = clear()
            if isinstance(cleared, (bytes, bytearray)):
                pending += len(cleared)
        return pending

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
        self._end(error, graceful=False)

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
            cut = bool(self._record_left or self._record_head)
            if cut or engine.client or not self._answered:
                self._log_end(error, level="info", outcome="failed")
            return Failure(error)
        if engine.error is not None:
            return Failure(engine.error)
        return reason


def _engine_factory(context_factory: object) -> EngineFactory:
    """``context_factory`` as the typed seam, or a ConfigurationError."""
    if not isinstance(context_factory, EngineFactory):
        raise ConfigurationError(
            "twistls needs a twistls.ClientContextFactory or ServerContextFactory, not "
            f"{type(context_factory).__name__}"
        )
    return context_factory


def _peer_address(transport: Any) -> tuple[str, int] | None:
    """The (host, port) of the peer, if the transport is an IP connection."""
    try:
        peer = transport.getPeer()
    except Exception:
        return None
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return (host, port) if isinstance(host, str) and isinstance(port, int) else None


def _peer_text(transport: Any) -> str:
    """``host:port`` of the peer (``[v6]:port``), or a description of it."""
    try:
        peer = transport.getPeer()
    except Exception:
        return "(peer unknown)"
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


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
        close_timeout: seconds ``loseConnection`` waits for the transport to
            flush before aborting it (``None``: forever).
        idle_timeout: seconds an established connection may carry no data
            in either direction before it is closed (close_notify, then the
            transport; the wrapped protocol sees
            :class:`~twistls.errors.IdleTimeoutError`).  ``None`` (the
            default): never.
        clock: the reactor for timers (default: the global reactor).

    Raises:
        ConfigurationError: no context factory and not ``start_tls``.

    .. versionadded:: 0.1
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
        clock: IReactorTime | None = None,
    ) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]  # WrappingFactory.__init__ is unannotated
        if idle_timeout is not None and not idle_timeout > 0:
            raise ConfigurationError(f"idle_timeout must be > 0 seconds or None, not {idle_timeout!r}")
        self.idle_timeout = idle_timeout
        if context_factory is None and not start_tls:
            raise ConfigurationError("TLSWrappingFactory needs a context_factory unless start_tls=True")
        if context_factory is not None:
            _engine_factory(context_factory).check_usable()  # every connection would fail: say so now
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

