"""Helpers for the hardening tests: hostile peers over 127.0.0.1, a server
that records why each connection ended, and captured twisted.logger events.

Hostile peers are either raw TCP protocols that write chosen bytes, or a
:class:`EngineClient`: a twistls engine driven by hand, so a test can reach
into its ``SSL*`` (renegotiate, KeyUpdate, corrupt a record) through ctypes.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any, Callable

from twisted.internet import defer, protocol, reactor
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from twistls import TLSWrappingFactory
from twistls import _openssl as _ossl
from twistls._engine import HandshakeCompleted, PlaintextReceived, TLSEngine

SSL_key_update = _ossl._fn(_ossl.libssl, "SSL_key_update", ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
SSL_renegotiate = _ossl._fn(_ossl.libssl, "SSL_renegotiate", ctypes.c_int, ctypes.c_void_p)
KEY_UPDATE_REQUESTED = 1


def record(content_type: int, version: int, body: bytes) -> bytes:
    """One TLS record with a plaintext header."""
    return bytes([content_type]) + struct.pack(">HH", version, len(body)) + body


class LogCapture:
    """Collects twisted.logger events until :meth:`stop`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def twistls(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_namespace") == "twistls"]

    def with_failure(self) -> list[dict[str, Any]]:
        """Events that carry a traceback (``log.failure``, Unhandled Error)."""
        return [e for e in self.events if e.get("log_failure") is not None or e.get("isError")]


class Recorder(protocol.Protocol):
    """Server-side echo that records what arrived and why it ended."""

    def connectionMade(self) -> None:
        self.chunks: list[bytes] = []
        self.lost: defer.Deferred[Failure] = defer.Deferred()
        self.factory.instances.append(self)
        self.factory.made.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.factory.echo:
            self.transport.write(data)

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.lost.callback(None)


def listen(testcase: Any, server_cf: Any, *, echo: bool = True, **kw: Any) -> tuple[int, protocol.Factory]:
    factory = protocol.Factory.forProtocol(Recorder)
    factory.instances = []  # type: ignore[attr-defined]
    factory.made = []  # type: ignore[attr-defined]
    factory.echo = echo  # type: ignore[attr-defined]
    port = reactor.listenTCP(0, TLSWrappingFactory(factory, server_cf, **kw), interface="127.0.0.1", backlog=512)
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, factory


class Raw(protocol.Protocol):
    """Writes ``chunks`` on connect, optionally half-closes; ``done`` fires
    with what came back once the connection ends."""

    def __init__(self, chunks: list[bytes] = (), *, close: bool = False) -> None:  # type: ignore[assignment]
        self.chunks = list(chunks)
        self.close = close
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.connected_d: defer.Deferred[Raw] = defer.Deferred()

    def connectionMade(self) -> None:
        for chunk in self.chunks:
            self.transport.write(chunk)
        if self.close:
            self.transport.loseConnection()
        self.connected_d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(self.received)


def connect_raw(port: int, proto: protocol.Protocol) -> defer.Deferred[Any]:
    return protocol.ClientCreator(reactor, lambda: proto).connectTCP("127.0.0.1", port)


class EngineClient(protocol.Protocol):
    """A TLS client whose engine the test drives by hand after the handshake
    (``on_handshake(self)``)."""

    def __init__(self, context_factory: Any, on_handshake: Callable[[EngineClient], None] | None = None) -> None:
        self.engine: TLSEngine = context_factory.create_engine()
        self.on_handshake = on_handshake
        self.received = b""
        self.events: list[Any] = []
        self.done: defer.Deferred[EngineClient] = defer.Deferred()
        self.corrupt_next = False

    def flush(self) -> None:
        out = self.engine.bytes_to_send()
        if out:
            self.transport.write(out)

    def connectionMade(self) -> None:
        self.engine.start()
        self.flush()

    def dataReceived(self, data: bytes) -> None:
        if self.corrupt_next:
            self.corrupt_next = False
            data = data[:-1] + bytes([data[-1] ^ 0x55])
        events = self.engine.receive_bytes(data)
        self.flush()
        for event in events:
            self.events.append(event)
            if isinstance(event, PlaintextReceived):
                self.received += event.data
            elif isinstance(event, HandshakeCompleted) and self.on_handshake is not None:
                self.on_handshake(self)

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.engine.free()
        self.done.callback(self)


def within(d: defer.Deferred[Any], seconds: float, what: str) -> defer.Deferred[Any]:
    """``d``, failed with a readable error after ``seconds``."""

    def expired() -> None:
        if not d.called:
            d.errback(Failure(AssertionError(f"{what}: nothing after {seconds} s")))

    call = reactor.callLater(seconds, expired)

    def done(result: Any) -> Any:
        if call.active():
            call.cancel()
        return result

    return d.addBoth(done)
