"""Flow control between a TLS wrapper, its transport and its protocol.

* :class:`WriteBuffer` gathers the plaintext written in one reactor turn;
* :class:`ProducerGate` pauses the wrapped protocol's producer while anyone
  (the transport's full send buffer, an unfinished handshake) holds it;
* :class:`ReadThrottle` stops reading from a peer while the transport's send
  buffer is full, when the protocol registered no producer of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

if TYPE_CHECKING:
    from twistls._typing import Clock

__all__ = ["WriteBuffer", "ProducerGate", "ReadThrottle", "AGGREGATE_LIMIT"]

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
