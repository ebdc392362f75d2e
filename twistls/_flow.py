"""Flow control between a TLS wrapper, its transport and its protocol.

* :class:`WriteBuffer` gathers the plaintext written in one reactor turn;
* :class:`ProducerGate` pauses the wrapped protocol's producer while anyone
  (the transport's full send buffer, an unfinished handshake) holds it;
* :class:`ReadThrottle` stops reading from a peer while the transport's send
  buffer is full, when the protocol registered no producer of its own;
* :class:`FlowControl` is the wrapper's producer and consumer side, which
  puts them to work (mixed into :class:`~twistls.protocol.TLSProtocolWrapper`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

if TYPE_CHECKING:
    from twistls._typing import Clock, Transport

__all__ = ["WriteBuffer", "ProducerGate", "ReadThrottle", "FlowControl", "AGGREGATE_LIMIT"]

#: Writes are gathered until this many bytes, or the end of the reactor turn.
AGGREGATE_LIMIT = 1 << 16


class _ReadingHolder(Protocol):
    def _hold_reading(self, who: str) -> None: ...

    def _release_reading(self, who: str) -> None: ...


class WriteBuffer:
    """Plaintext written in this reactor turn, sent at its end or at
    AGGREGATE_LIMIT bytes.  A small object of its own: ProtocolWrapper's
    ``__getattr__`` makes every attribute access on the wrapper slow, and
    ``write`` is the call applications make most."""

    __slots__ = ("chunks", "size", "call", "flush", "clock", "held")

    def __init__(self, flush: Callable[[], None], clock: Clock) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.call: Any = None
        self.flush = flush
        self.clock = clock
        self.held = False  # inside dataReceived: the wrapper flushes when it returns

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        if self.size >= AGGREGATE_LIMIT:
            self.flush()
        elif self.call is None and not self.held:
            self.call = self.clock.callLater(0, self.flush)


@implementer(IPushProducer)
class ProducerGate:
    """Stands between the transport and the wrapped protocol's producer.

    The producer runs only while no one holds it paused: the transport
    (its send buffer is full) or the wrapper (the handshake is not done).
    """

    def __init__(self, producer: Any, streaming: bool) -> None:
        self.producer = producer
        self.streaming = streaming
        self._held: set[str] = set()

    def hold(self, who: str) -> None:
        if not self._held and self.streaming:
            self.producer.pauseProducing()
        self._held.add(who)

    def release(self, who: str) -> None:
        if who in self._held:
            self._held.discard(who)
            if not self._held and self.streaming:
                self.producer.resumeProducing()

    # IPushProducer, as the transport sees it.
    def pauseProducing(self) -> None:
        self.hold("transport")

    def resumeProducing(self) -> None:
        if self.streaming:
            self.release("transport")
        else:
            self.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.producer.stopProducing()


@implementer(IPushProducer)
class ReadThrottle:
    """Registered with the transport while the wrapped protocol has no
    producer of its own: when the transport's send buffer fills (a peer that
    sends but does not read, or a protocol writing faster than the peer
    reads), reading stops until the buffer drains, so buffers stay bounded."""

    def __init__(self, wrapper: _ReadingHolder) -> None:
        self.wrapper = wrapper

    def pauseProducing(self) -> None:
        self.wrapper._hold_reading("send-buffer")

    def resumeProducing(self) -> None:
        self.wrapper._release_reading("send-buffer")

    def stopProducing(self) -> None:
        self.wrapper._release_reading("send-buffer")


class _Wrapper(Protocol):
    """What :class:`FlowControl` uses of the wrapper it is mixed into."""

    transport: Transport
    factory: Any
    _lost: bool
    _handshake_done: bool
    _shutdown_pending: bool
    _gate: ProducerGate | None
    _throttle: ReadThrottle | None
    _read_holds: set[str]
    _paused_in_handshake: bool

    @property
    def _engine(self) -> object | None: ...

    @property
    def disconnecting(self) -> bool: ...

    def _set_fast_write(self, on: bool) -> None: ...

    def _flush_writes(self) -> None: ...

    def _begin_shutdown(self) -> None: ...

    def _hold_reading(self, who: str) -> None: ...

    def _release_reading(self, who: str) -> None: ...

    def _attach_throttle(self) -> None: ...

    def _detach_throttle(self) -> None: ...


class FlowControl:
    """The wrapper's producer and consumer side: the wrapped protocol's
    producer goes behind a :class:`ProducerGate` (held during the handshake);
    without one, a server's reads stop behind a :class:`ReadThrottle`; the
    protocol pausing its transport stops reading the socket (after the
    handshake, which needs the peer's bytes)."""

    _gate: ProducerGate | None
    _throttle: ReadThrottle | None
    _read_holds: set[str]

    def registerProducer(self: _Wrapper, producer: Any, streaming: bool) -> None:
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

    def unregisterProducer(self: _Wrapper) -> None:
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

    def pauseProducing(self: _Wrapper) -> None:
        if self._engine is not None and not self._handshake_done and not self._lost:
            # The handshake needs the peer's bytes, and no application data is
            # delivered before it ends: apply the pause then.  (twisted.web's
            # HTTPChannel pauses its transport when its producer is held for
            # the handshake; stopping the socket here would deadlock.)
            self._paused_in_handshake = True
            return
        self._hold_reading("protocol")

    def resumeProducing(self: _Wrapper) -> None:
        self._paused_in_handshake = False
        self._release_reading("protocol")

    def _hold_reading(self: _Wrapper, who: str) -> None:
        if not self._read_holds and not self._lost:
            self.transport.pauseProducing()
        self._read_holds.add(who)

    def _release_reading(self: _Wrapper, who: str) -> None:
        if who in self._read_holds:
            self._read_holds.discard(who)
            if not self._read_holds and not self._lost:
                self.transport.resumeProducing()

    def _attach_throttle(self: _Wrapper) -> None:
        if self._throttle is None and self._gate is None and not self._lost:
            throttle = ReadThrottle(self)
            try:
                self.transport.registerProducer(throttle, True)
            except RuntimeError:  # the transport already has a producer
                return
            self._throttle = throttle

    def _detach_throttle(self: _Wrapper) -> None:
        if self._throttle is not None:
            self._throttle = None
            self._release_reading("send-buffer")
            if not self._lost:
                self.transport.unregisterProducer()

    def stopProducing(self: _Wrapper) -> None:
        self.transport.stopProducing()
