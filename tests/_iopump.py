"""An in-memory pump between two protocols (the idea of twisted.test.iosim,
written afresh): no sockets, no reactor; a Clock drives the timers."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(ITCPTransport, IConsumer, IPushProducer)
class FakeTransport:
    """One end of an in-memory TCP connection.  ``written`` keeps every byte
    ever written (the wire, for assertions); ``outgoing`` what the pump has
    not yet delivered.  Pausing it (as a producer) stops delivery *to* it."""

    disconnecting = False

    def __init__(self, protocol: Any, host: IPv4Address, peer_address: IPv4Address) -> None:
        self.protocol = protocol
        self.peer: FakeTransport | None = None
        self.host, self.peer_address = host, peer_address
        self.outgoing: list[bytes] = []
        self.written: list[bytes] = []
        self.producer: Any = None
        self.streaming: bool | None = None
        self.reading_paused = False
        self.aborting = False
        self.closed = False
        self.lost_reason: Failure | None = None

    def write(self, data: bytes) -> None:
        if self.disconnecting or self.closed:
            raise RuntimeError("write after loseConnection/abortConnection")
        self.outgoing.append(data)
        self.written.append(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        self.write(b"".join(iovec))

    def loseConnection(self) -> None:
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.disconnecting = self.aborting = True
        self.outgoing.clear()

    def getPeer(self) -> IPv4Address:
        return self.peer_address

    def getHost(self) -> IPv4Address:
        return self.host

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("a producer is already registered")
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self) -> None:
        self.producer = self.streaming = None

    def pauseProducing(self) -> None:
        self.reading_paused = True

    def resumeProducing(self) -> None:
        self.reading_paused = False

    def stopProducing(self) -> None:
        self.loseConnection()

    # ITCPTransport odds and ends
    def getTcpNoDelay(self) -> bool:
        return True

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def getTcpKeepAlive(self) -> bool:
        return False

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    def wire(self) -> bytes:
        """Every byte this end ever wrote."""
        return b"".join(self.written)

    def _lose(self, reason: Failure) -> None:
        if not self.closed:
            self.closed = True
            self.lost_reason = reason
            self.protocol.connectionLost(reason)


class IOPump:
    """Moves bytes between two FakeTransports until nothing moves."""

    def __init__(self, client: FakeTransport, server: FakeTransport, clock: Clock | None = None) -> None:
        self.client, self.server, self.clock = client, server, clock

    def _move(self, source: FakeTransport, target: FakeTransport) -> bool:
        if not source.outgoing or target.closed or target.reading_paused:
            return False
        data = b"".join(source.outgoing)
        source.outgoing.clear()
        target.protocol.dataReceived(data)
        return True

    def _close(self, end: FakeTransport, other: FakeTransport) -> bool:
        if end.closed:
            return False
        if end.aborting:
            end._lose(Failure(ConnectionAborted()))
            other._lose(Failure(ConnectionLost("connection reset by peer")))
            return True
        if end.disconnecting and not end.outgoing and not other.reading_paused:
            end._lose(Failure(ConnectionDone()))
            other._lose(Failure(ConnectionDone()))
            return True
        return False

    def flush(self, rounds: int = 1000) -> None:
        """Pump until quiet (bounded), running zero-delay timers each round."""
        for _ in range(rounds):
            if self.clock is not None:
                self.clock.advance(0)  # aggregated writes go out at the end of a turn
            moved = self._move(self.client, self.server)
            moved = self._move(self.server, self.client) or moved
            moved = self._close(self.client, self.server) or moved
            moved = self._close(self.server, self.client) or moved
            if not moved:
                return
        raise AssertionError("the pump did not settle")


def connect(client_factory: Any, server_factory: Any, clock: Clock | None = None, *, pump: bool = True) -> IOPump:
    """Build a protocol from each factory and connect them (server first);
    with ``pump`` also move bytes until the connection is quiet."""
    client_address = IPv4Address("TCP", "127.0.0.1", 40000)
    server_address = IPv4Address("TCP", "127.0.0.1", 443)
    server_protocol = server_factory.buildProtocol(client_address)
    client_protocol = client_factory.buildProtocol(server_address)
    server = FakeTransport(server_protocol, server_address, client_address)
    client = FakeTransport(client_protocol, client_address, server_address)
    server.peer, client.peer = client, server
    server_protocol.makeConnection(server)
    client_protocol.makeConnection(client)
    result = IOPump(client, server, clock)
    if pump:
        result.flush()
    return result
