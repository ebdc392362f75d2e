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


# --- helpers for the interop, STARTTLS, rejection and mTLS tests ---------------

import os as _os
import socket as _socket
import ssl as _ssl

from twisted.internet import threads as _threads

OPENSSL = "/usr/bin/openssl"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessRun(protocol.ProcessProtocol):
    """Collects a child's output; ``ready`` fires when ``marker`` shows up in
    stdout or stderr, ``ended`` with the exit code (``None`` if killed)."""

    def __init__(self, marker: bytes | None = None, stdin: bytes = b"") -> None:
        self.marker = marker
        self.stdin = stdin
        self.out: list[bytes] = []
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self.running = True

    @property
    def output(self) -> bytes:
        return b"".join(self.out)

    def connectionMade(self) -> None:
        if self.stdin:
            self.transport.write(self.stdin)
        if self.marker is None:
            self.ready.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)
        if self.marker is not None and not self.ready.called and self.marker in self.output:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        code = getattr(reason.value, "exitCode", None)
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"process ended (exit {code}) before {self.marker!r}: {self.output[-2000:]!r}"))
        self.ended.callback(code)

    def kill(self) -> defer.Deferred[Any]:
        """Kill the child if it still runs; fires once it was reaped."""
        if self.running:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass
        d: defer.Deferred[Any] = defer.Deferred()
        self.ended.addBoth(lambda r: (d.callback(None), r)[1])
        return d


def spawn(testcase: Any, args: list[str], *, marker: bytes | None = None, stdin: bytes = b"",
          close_stdin: bool = False, timeout: float = 20.0) -> ProcessRun:
    """Run ``args``; killed in cleanup and at the latest after ``timeout`` seconds."""
    run = ProcessRun(marker, stdin)
    reactor.spawnProcess(run, args[0], args, env={"PATH": "/usr/bin:/bin", "OPENSSL_CONF": _os.environ.get("OPENSSL_CONF", "/etc/ssl/openssl.cnf")})
    if close_stdin:
        run.transport.closeStdin()
    killer = reactor.callLater(timeout, run.kill)
    run.ended.addBoth(lambda r: (killer.cancel() if killer.active() else None, r)[1])
    testcase.addCleanup(run.kill)
    return run


def bounded(d: defer.Deferred[Any], seconds: float, what: str) -> defer.Deferred[Any]:
    """Fail ``d`` with TimeoutError if it has not fired within ``seconds``."""

    def timed_out(result: Any, timeout: float) -> None:
        raise TimeoutError(f"{what} (waited {timeout:g} s)")

    return d.addTimeout(seconds, reactor, onTimeoutCancel=timed_out)


@defer.inlineCallbacks
def openssl_server(testcase: Any, *extra: str, cert: str, key: str) -> Any:
    """Start ``openssl s_server`` on a free 127.0.0.1 port; returns (port, run)."""
    for _attempt in range(3):
        port = free_port()
        run = spawn(testcase, [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", cert, "-key", key,
                               "-naccept", "1", *extra], marker=b"ACCEPT")
        try:
            yield bounded(run.ready, 15, "openssl s_server did not print ACCEPT")
        except RuntimeError:
            if b"Address already in use" in run.output or b"bind" in run.output:
                continue
            raise
        return port, run
    raise RuntimeError("could not start openssl s_server")


def openssl_client(testcase: Any, port: int, *extra: str, stdin: bytes = b"", timeout: float = 20.0) -> ProcessRun:
    """Run ``openssl s_client`` against 127.0.0.1:port with ``stdin`` (then EOF)."""
    return spawn(testcase, [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", *extra],
                 stdin=stdin, close_stdin=True, timeout=timeout)


def python_ssl_server(testcase: Any, context: _ssl.SSLContext, *, reply: bytes = b"",
                      close_notify: bool = True) -> tuple[int, defer.Deferred[Any]]:
    """A one-connection Python ``ssl`` server in a thread.  It reads a line and
    answers ``reply + line``, then closes (with close_notify unless told not
    to).  The Deferred fires with a dict: ``version``, ``cipher``,
    ``received``, ``error`` (the exception, or ``None``)."""
    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(20)
    port = int(listener.getsockname()[1])
    testcase.addCleanup(listener.close)

    def serve() -> dict[str, Any]:
        result: dict[str, Any] = {"version": None, "cipher": None, "received": b"", "error": None}
        try:
            raw, _ = listener.accept()
        except OSError as exc:
            result["error"] = exc
            return result
        raw.settimeout(20)
        try:
            with context.wrap_socket(raw, server_side=True) as tls:
                result["version"] = tls.version()
                result["cipher"] = tls.cipher()[0]
                data = b""
                while not data.endswith(b"\n"):
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                result["received"] = data
                tls.sendall(reply + data)
                if close_notify:
                    try:
                        tls.unwrap()
                    except (OSError, ValueError):
                        pass
        except Exception as exc:
            result["error"] = exc
        finally:
            raw.close()
        return result

    return port, _threads.deferToThread(serve)


def python_ssl_client(context: _ssl.SSLContext, port: int, payload: bytes, *, server_hostname: str | None = "localhost") -> defer.Deferred[Any]:
    """A Python ``ssl`` client in a thread: send ``payload``, read until the
    server's close_notify (an EOF without one is an ``ssl.SSLEOFError``).
    Fires with a dict: ``version``, ``cipher``, ``received``, ``error``,
    ``peer_cert`` (DER or ``None``)."""

    def run() -> dict[str, Any]:
        result: dict[str, Any] = {"version": None, "cipher": None, "received": b"", "error": None, "peer_cert": None}
        try:
            with _socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
                with context.wrap_socket(raw, server_hostname=server_hostname, suppress_ragged_eofs=False) as tls:
                    result["peer_cert"] = tls.getpeercert(binary_form=True)
                    result["version"] = tls.version()
                    result["cipher"] = tls.cipher()[0]
                    tls.sendall(payload)
                    data = b""
                    while True:
                        try:
                            chunk = tls.recv(65536)
                        except _ssl.SSLZeroReturnError:
                            break
                        if not chunk:
                            break
                        data += chunk
                    result["received"] = data
        except Exception as exc:
            result["error"] = exc
        return result

    return _threads.deferToThread(run)


class LineEcho(protocol.Protocol):
    """Server: answers ``ECHO: <line>`` to the first full line, then closes.
    Records itself in ``factory.instances`` and its end in ``lost``."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.chunks: list[bytes] = []
        self.info: Any = None
        self.lost: defer.Deferred[list[Failure]] = defer.Deferred()
        instances = getattr(self.factory, "instances", None)
        if instances is not None:
            instances.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffer += data
        if b"\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\n")
            info = getattr(self.transport, "connection_info", None)
            self.info = info() if info else None
            self.transport.write(b"ECHO: " + line + b"\n")
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.lost.callback([reason])
