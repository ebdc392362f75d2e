"""Helpers for end-to-end tests over real 127.0.0.1 sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.python.failure import Failure

from twistls import TLSWrappingFactory


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Collector(protocol.Protocol):
    """Writes ``payload`` on connect, collects what arrives, closes once
    ``expect`` bytes arrived; ``done`` fires with (data, reason)."""

    def __init__(self, payload: bytes = b"", expect: int = 0) -> None:
        self.payload = payload
        self.expect = expect
        self.chunks: list[bytes] = []
        self.received = 0
        self.done: defer.Deferred[tuple[bytes, Failure]] = defer.Deferred()
        self.made = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)
        if self.payload:
            self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.received += len(data)
        if self.expect and self.received >= self.expect:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback((b"".join(self.chunks), reason))


class ServerRecorder(protocol.Protocol):
    """Server side that records data and the connectionLost reason."""

    instances: list[ServerRecorder]

    def connectionMade(self) -> None:
        self.factory.instances.append(self)
        self.chunks: list[bytes] = []
        self.lost: defer.Deferred[list[Failure]] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.lost.callback([reason])  # wrapped in a list: a bare Failure would errback


def listen_tls(testcase: Any, server_cf: Any, proto: type[protocol.Protocol] = Echo, **kw: Any) -> tuple[int, protocol.Factory]:
    """Listen on 127.0.0.1 with TLS; returns (port, wrapped factory)."""
    factory = protocol.Factory.forProtocol(proto)
    factory.instances = []  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, TLSWrappingFactory(factory, server_cf, **kw), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, factory


def connect_tls(client_cf: Any, port: int, proto: protocol.Protocol, host: str = "127.0.0.1", **kw: Any) -> Any:
    """Connect a protocol instance over TLS; returns the wrapper factory."""
    factory = protocol.ClientFactory.forProtocol(lambda: proto)
    factory.clientConnectionFailed = lambda connector, reason: proto.done.callback((b"", reason))  # type: ignore[method-assign]
    wrapping = TLSWrappingFactory(factory, client_cf, **kw)
    reactor.connectTCP(host, port, wrapping)
    return wrapping
