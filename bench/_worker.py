"""One benchmark process: a server or a client of one stack, for one workload.

Run by ``bench/run.py``; not meant to be started by hand::

    python bench/_worker.py server|client STACK TEST --certs DIR --key rsa|ecdsa ...

A server prints ``{"port": N}`` once it listens, then serves until killed
(``run.py`` reads its CPU time and RSS from ``/proc``).  A client prints one
JSON line with its measurements (the memory client prints ``{"holding": N}``
first and waits for a line on stdin).  Every loop is bounded by a count and
a deadline.

Workloads, identical at the application layer for every stack:

* ``bulk``: after the handshake both sides send ``--size`` bytes in 64 KiB
  writes through a streaming producer (asyncio: pause/resume_writing) and
  count what they receive; the client stops the clock when it has sent and
  received everything.
* ``hs``: connect, handshake, 1-byte ping/echo, close (close_notify);
  ``--inflight`` connections at once for ``--duration`` seconds.
* ``mem``: ``--count`` connections that handshake, ping, then stay idle.
* ``small``: 100,000 writes of 16 bytes in one reactor turn, then one
  1.6 MB write; wire bytes from TCP_INFO and client CPU for each.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import _certs  # noqa: E402

SUITE = "TLS_AES_128_GCM_SHA256"
#: The same key exchange on every stack: pyOpenSSL's bundled OpenSSL (and twistls on
#: OpenSSL >= 3.5) would otherwise pick the heavier hybrid X25519MLKEM768.
GROUPS = "X25519:P-256:P-384"
CHUNK = 1 << 16
SMALL_COUNT = 100_000
SMALL_SIZE = 16
SMALL_TOTAL = SMALL_COUNT * SMALL_SIZE


def cpu() -> float:
    """This process's CPU seconds (user + system), at nanosecond resolution."""
    return time.process_time()


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def bytes_acked(sock: socket.socket) -> int:
    """tcpi_bytes_acked of a connected TCP socket (Linux >= 4.1)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("Q", info, 120)[0]


# --------------------------------------------------------------------------------------------
# Twisted-based stacks: tcp, twistls, twisted (pyOpenSSL), m2wrapper
# --------------------------------------------------------------------------------------------


def _pyopenssl_pin(context) -> None:
    """SUITE and GROUPS on a pyOpenSSL Context.  pyOpenSSL has no groups
    setter, and older ones (Debian 12's 23.0, used by the twisted-syslibssl
    stack) no TLS 1.3 suite setter either: the libssl call is used instead.
    Where the bindings lack the groups call, the stack keeps its default
    (the reported group shows it)."""
    from OpenSSL._util import lib

    if hasattr(context, "set_tls13_ciphersuites"):
        context.set_tls13_ciphersuites(SUITE.encode())
    elif lib.SSL_CTX_set_ciphersuites(context._context, SUITE.encode()) != 1:
        raise SystemExit(f"pyOpenSSL's libssl refused the suite {SUITE}")
    setter = getattr(lib, "SSL_CTX_set1_curves_list", None)
    if setter is not None and setter(context._context, GROUPS.encode()) != 1:
        raise SystemExit(f"pyOpenSSL's libssl refused the groups {GROUPS}")


def twisted_stack(args: argparse.Namespace) -> None:
    from twisted.internet import reactor
    from twisted.internet.interfaces import IHandshakeListener
    from twisted.internet.protocol import ClientFactory, Factory, Protocol
    from zope.interface import implementer

    ca, cert, key = _certs.paths(args.certs, args.key)
    stack = args.stack
    tls = stack != "tcp"

    def server_wrap(factory):
        if stack == "tcp":
            return factory
        if stack == "twistls":
            from twistls import ServerContextFactory, TLSWrappingFactory

            return TLSWrappingFactory(factory, ServerContextFactory(cert, key, ciphersuites=SUITE, groups=GROUPS))
        if stack == "twisted":
            from twisted.internet import ssl
            from twisted.protocols.tls import TLSMemoryBIOFactory

            with open(cert, "rb") as c, open(key, "rb") as k:
                options = ssl.PrivateCertificate.loadPEM(c.read() + k.read()).options()
            _pyopenssl_pin(options.getContext())
            return TLSMemoryBIOFactory(options, False, factory)
        raise SystemExit(f"unknown stack {stack}")

    def client_connect(factory):
        if stack == "tcp":
            return reactor.connectTCP("127.0.0.1", args.port, factory)
        if stack == "twistls":
            from twistls import ClientContextFactory, TLSWrappingFactory

            cf = client_connect.cf
            if cf is None:
                # Full handshakes unless the resumption test: no client session cache.
                cache = 32 if args.test == "resume" else 0
                cf = client_connect.cf = ClientContextFactory(
                    "localhost", cafile=ca, ciphersuites=SUITE, groups=GROUPS, session_cache_size=cache
                )
            return reactor.connectTCP("127.0.0.1", args.port, TLSWrappingFactory(factory, cf))
        if stack == "twisted":
            from twisted.internet import ssl
            from twisted.protocols.tls import TLSMemoryBIOFactory

            opts = client_connect.cf
            if opts is None:
                with open(ca, "rb") as f:
                    opts = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(f.read()))
                _pyopenssl_pin(opts._createConnection.__self__.getContext())
                client_connect.cf = opts
            return reactor.connectTCP("127.0.0.1", args.port, TLSMemoryBIOFactory(opts, True, factory))
        raise SystemExit(f"unknown stack {stack}")

    client_connect.cf = None

    def cipher_of(transport) -> str | None:
        try:
            if stack == "twistls":
                info = transport.connection_info()
                return f"{info.version} {info.cipher} {info.group}"
            if stack == "twisted":
                from OpenSSL._util import ffi, lib

                conn = transport.getHandle()
                if hasattr(lib, "SSL_get0_group_name"):  # OpenSSL >= 3.2 bindings
                    name = lib.SSL_get0_group_name(conn._ssl)
                    group = ffi.string(name).decode() if name != ffi.NULL else "?"
                else:
                    group = "(group not reported by these bindings)"
                return f"{conn.get_protocol_version_name()} {conn.get_cipher_name()} {group}"
        except Exception as exc:  # reported, not fatal
            return f"? {exc}"
        return None

    def reused_of(transport) -> bool:
        try:
            if stack == "twistls":
                return bool(transport.connection_info().session_reused)
            if stack == "twisted":
                return bool(transport.getHandle().session_reused())
        except Exception:
            pass
        return False

    def raw_socket(transport) -> socket.socket:
        t = transport
        for _ in range(4):  # unwrap the TLS layers down to the TCP transport
            inner = getattr(t, "transport", None)
            if inner is None:
                break
            t = inner
        return t.socket

    class Sender:
        """Streaming producer: 64 KiB writes until paused or done."""

        def __init__(self, transport, total: int, done) -> None:
            self.transport = transport
            self.left = total
            self.done = done
            self.paused = False
            self.chunk = b"\x5a" * CHUNK

        def start(self) -> None:
            self.transport.registerProducer(self, True)
            self.resumeProducing()

        def resumeProducing(self) -> None:
            self.paused = False
            write = self.transport.write
            chunk = self.chunk
            while not self.paused and self.left > 0:
                if self.left >= CHUNK:
                    write(chunk)
                    self.left -= CHUNK
                else:
                    write(chunk[: self.left])
                    self.left = 0
            if self.left <= 0 and self.done is not None:
                done, self.done = self.done, None
                self.transport.unregisterProducer()
                done()

        def pauseProducing(self) -> None:
            self.paused = True

        def stopProducing(self) -> None:
            self.left = 0

    @implementer(IHandshakeListener)
    class Base(Protocol):
        started = False

        def connectionMade(self) -> None:
            if not tls:
                self.go()

        def handshakeCompleted(self) -> None:
            self.go()

        def go(self) -> None:
            if not self.started:
                self.started = True
                self.start()

        def start(self) -> None:
            pass

    # ---- servers -----------------------------------------------------------------------

    class BulkServer(Base):
        received = 0

        def start(self) -> None:
            Sender(self.transport, args.size, None).start()

        def dataReceived(self, data: bytes) -> None:
            self.received += len(data)

    class EchoServer(Base):
        def dataReceived(self, data: bytes) -> None:
            self.transport.write(data)

    class SmallServer(Base):
        received = 0

        def dataReceived(self, data: bytes) -> None:
            before = self.received // SMALL_TOTAL
            self.received += len(data)
            if data[:1] == b"p" and self.received == 1:
                self.transport.write(b"p")
                self.received = 0
                return
            for _ in range(self.received // SMALL_TOTAL - before):
                self.transport.write(b"k")

    if args.role == "server":
        proto = {"bulk": BulkServer, "hs": EchoServer, "resume": EchoServer, "mem": EchoServer, "small": SmallServer}[args.test]
        factory = Factory.forProtocol(proto)
        port = reactor.listenTCP(0, server_wrap(factory), interface="127.0.0.1", backlog=512)
        emit({"port": port.getHost().port})
        reactor.run()
        return

    # ---- clients -----------------------------------------------------------------------
    result: dict = {"stack": stack, "test": args.test, "key": args.key}
    deadline = time.monotonic() + args.timeout

    def finish() -> None:
        if reactor.running:
            reactor.stop()

    def watchdog() -> None:
        if time.monotonic() > deadline:
            result["error"] = f"timed out after {args.timeout}s"
            finish()
        else:
            reactor.callLater(1.0, watchdog)

    class Once(ClientFactory):
        def __init__(self, proto) -> None:
            self.proto = proto

        def buildProtocol(self, addr):
            return self.proto

        def clientConnectionFailed(self, connector, reason) -> None:
            result["error"] = f"connect failed: {reason.getErrorMessage()}"
            finish()

    if args.test == "bulk":

        class BulkClient(Base):
            received = 0
            sent_all = False

            def start(self) -> None:
                self.t0 = time.perf_counter()
                self.c0 = cpu()
                result["cipher"] = cipher_of(self.transport)
                Sender(self.transport, args.size, self.sent).start()

            def sent(self) -> None:
                self.sent_all = True
                self.check()

            def dataReceived(self, data: bytes) -> None:
                self.received += len(data)
                if self.received >= args.size:
                    self.check()

            def check(self) -> None:
                if self.sent_all and self.received >= args.size and "seconds" not in result:
                    result["seconds"] = time.perf_counter() - self.t0
                    result["client_cpu"] = cpu() - self.c0
                    result["bytes"] = 2 * args.size
                    self.transport.loseConnection()

            def connectionLost(self, reason) -> None:
                if "seconds" not in result:
                    result["error"] = f"lost after {self.received} bytes: {reason.getErrorMessage()}"
                finish()

        client_connect(Once(BulkClient()))

    elif args.test in ("hs", "resume", "mem"):
        state = {"started": 0, "done": 0, "inflight": 0, "errors": 0, "reused": 0, "t_last": 0.0}
        limit = args.count
        stop_at = [time.monotonic() + args.duration if args.test != "mem" else deadline]
        holding: list = []

        class Ping(Base):
            got = False

            def start(self) -> None:
                if state["started"] == 1 or "cipher" not in result:
                    result["cipher"] = cipher_of(self.transport)
                if reused_of(self.transport):
                    state["reused"] += 1
                self.transport.write(b"x\n")

            def dataReceived(self, data: bytes) -> None:
                if self.got:
                    return
                self.got = True
                state["done"] += 1
                state["t_last"] = time.perf_counter()
                if args.test != "mem":
                    self.transport.loseConnection()
                else:
                    holding.append(self)
                    state["inflight"] -= 1
                    launch()

            def connectionLost(self, reason) -> None:
                if not self.got:
                    state["errors"] += 1
                    if state["errors"] <= 3:
                        result.setdefault("error_samples", []).append(reason.getErrorMessage())
                if args.test != "mem" or not self.got:
                    state["inflight"] -= 1
                    launch()

        class PingFactory(ClientFactory):
            def buildProtocol(self, addr):
                return Ping()

            def clientConnectionFailed(self, connector, reason) -> None:
                state["errors"] += 1
                state["inflight"] -= 1
                reactor.callLater(0.01, launch)

        ping_factory = PingFactory()

        def launch() -> None:
            while (
                state["inflight"] < args.inflight
                and state["started"] < limit
                and time.monotonic() < stop_at[0]
                and state["errors"] < 100
            ):
                state["started"] += 1
                state["inflight"] += 1
                client_connect(ping_factory)
            if state["inflight"] <= 0:
                if args.test != "mem":
                    elapsed = state["t_last"] - t0
                    result.update(
                        handshakes=state["done"],
                        seconds=elapsed,
                        rate=state["done"] / elapsed if elapsed > 0 else 0.0,
                        errors=state["errors"],
                        reused=state["reused"],
                        client_cpu=cpu() - c0,
                    )
                    finish()
                else:
                    result.update(connections=len(holding), errors=state["errors"])
                    emit({"holding": len(holding)})
                    sys.stdin.readline()  # run.py samples the server, then lets us go
                    finish()

        t0 = time.perf_counter()
        c0 = cpu()
        reactor.callWhenRunning(launch)

    elif args.test == "small":

        class SmallClient(Base):
            phase = "ping"

            def start(self) -> None:
                result["cipher"] = cipher_of(self.transport)
                self.sock = raw_socket(self.transport)
                self.transport.write(b"p")

            def dataReceived(self, data: bytes) -> None:
                for byte in data:
                    self.step()

            def mark(self) -> None:
                self.c0 = cpu()
                self.a0 = bytes_acked(self.sock)
                self.t0 = time.perf_counter()

            def record(self, name: str) -> None:
                result[name] = {
                    "client_cpu": cpu() - self.c0,
                    "seconds": time.perf_counter() - self.t0,
                    "wire_bytes": bytes_acked(self.sock) - self.a0,
                    "payload": SMALL_TOTAL,
                }

            def step(self) -> None:
                if self.phase == "ping":
                    self.phase = "small"
                    self.mark()
                    write = self.transport.write
                    piece = b"s" * SMALL_SIZE
                    for _ in range(SMALL_COUNT):
                        write(piece)
                elif self.phase == "small":
                    self.record("small_writes")
                    self.phase = "big"
                    self.mark()
                    self.transport.write(b"b" * SMALL_TOTAL)
                elif self.phase == "big":
                    self.record("one_write")
                    self.phase = "done"
                    self.transport.loseConnection()

            def connectionLost(self, reason) -> None:
                if self.phase != "done":
                    result["error"] = f"lost in phase {self.phase}: {reason.getErrorMessage()}"
                finish()

        # The cost of the application's own loop, with a no-op write, for reference.
        class Null:
            def write(self, data: bytes) -> None:
                pass

        null = Null()
        c = cpu()
        t = time.perf_counter()
        for _ in range(5):
            w = null.write
            piece = b"s" * SMALL_SIZE
            for _ in range(SMALL_COUNT):
                w(piece)
        result["loop_only"] = {"client_cpu": (cpu() - c) / 5, "seconds": (time.perf_counter() - t) / 5}
        client_connect(Once(SmallClient()))

    reactor.callLater(1.0, watchdog)
    reactor.run()
    emit(result)


# --------------------------------------------------------------------------------------------
# asyncio + ssl (optionally uvloop)
# --------------------------------------------------------------------------------------------


def asyncio_stack(args: argparse.Namespace) -> None:
    import asyncio
    import ssl

    if args.stack == "uvloop":
        import uvloop

        uvloop.install()
    ca, cert, key = _certs.paths(args.certs, args.key)

    class Flow:
        """64 KiB writes while the transport is not paused."""

        def __init__(self, transport, total: int, done) -> None:
            self.transport = transport
            self.left = total
            self.done = done
            self.paused = False
            self.chunk = b"\x5a" * CHUNK

        def run(self) -> None:
            write = self.transport.write
            while not self.paused and self.left > 0:
                n = min(CHUNK, self.left)
                write(self.chunk if n == CHUNK else self.chunk[:n])
                self.left -= n
            if self.left <= 0 and self.done is not None:
                done, self.done = self.done, None
                done()

    class Base(asyncio.Protocol):
        flow: Flow | None = None

        def pause_writing(self) -> None:
            if self.flow:
                self.flow.paused = True

        def resume_writing(self) -> None:
            if self.flow:
                self.flow.paused = False
                self.flow.run()

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    if args.role == "server":
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cert, key)

        class Server(Base):
            received = 0

            def connection_made(self, transport) -> None:
                self.transport = transport
                if args.test == "bulk":
                    self.flow = Flow(transport, args.size, None)
                    self.flow.run()

            def data_received(self, data: bytes) -> None:
                if args.test in ("hs", "mem"):
                    self.transport.write(data)
                elif args.test == "small":
                    before = self.received // SMALL_TOTAL
                    self.received += len(data)
                    if data[:1] == b"p" and self.received == 1:
                        self.transport.write(b"p")
                        self.received = 0
                        return
                    for _ in range(self.received // SMALL_TOTAL - before):
                        self.transport.write(b"k")
                else:
                    self.received += len(data)

        async def serve() -> None:
            server = await loop.create_server(Server, "127.0.0.1", 0, ssl=sctx, backlog=512)
            emit({"port": server.sockets[0].getsockname()[1]})
            await asyncio.Event().wait()

        loop.run_until_complete(serve())
        return

    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(ca)
    result: dict = {"stack": args.stack, "test": args.test, "key": args.key}

    def cipher_of(transport) -> str:
        obj = transport.get_extra_info("ssl_object")
        return f"{obj.version()} {obj.cipher()[0]}" if obj else "?"

    async def connect(factory):
        return await loop.create_connection(factory, "127.0.0.1", args.port, ssl=cctx, server_hostname="localhost")

    async def bulk() -> None:
        done = loop.create_future()

        class Client(Base):
            received = 0
            sent_all = False

            def connection_made(self, transport) -> None:
                self.transport = transport
                self.t0 = time.perf_counter()
                self.c0 = cpu()
                result["cipher"] = cipher_of(transport)
                self.flow = Flow(transport, args.size, self.sent)
                self.flow.run()

            def sent(self) -> None:
                self.sent_all = True
                self.check()

            def data_received(self, data: bytes) -> None:
                self.received += len(data)
                if self.received >= args.size:
                    self.check()

            def check(self) -> None:
                if self.sent_all and self.received >= args.size and not done.done():
                    result["seconds"] = time.perf_counter() - self.t0
                    result["client_cpu"] = cpu() - self.c0
                    result["bytes"] = 2 * args.size
                    done.set_result(None)

            def connection_lost(self, exc) -> None:
                if not done.done():
                    result["error"] = f"lost after {self.received}: {exc}"
                    done.set_result(None)

        transport, _ = await connect(Client)
        await done
        transport.close()

    async def pings() -> None:
        state = {"done": 0, "errors": 0}
        holding = []
        stop_at = time.monotonic() + (args.duration if args.test == "hs" else args.timeout)

        class Ping(asyncio.Protocol):
            def __init__(self) -> None:
                self.got = loop.create_future()

            def connection_made(self, transport) -> None:
                self.transport = transport
                result.setdefault("cipher", cipher_of(transport))
                transport.write(b"x\n")

            def data_received(self, data: bytes) -> None:
                if not self.got.done():
                    self.got.set_result(None)

            def connection_lost(self, exc) -> None:
                if not self.got.done():
                    self.got.set_exception(ConnectionError(str(exc)))

        async def one() -> None:
            transport, proto = await connect(Ping)
            await proto.got
            if args.test == "hs":
                transport.close()
            else:
                holding.append(transport)

        state["started"] = 0

        async def lane() -> None:
            while time.monotonic() < stop_at and state["started"] < args.count and state["errors"] < 100:
                state["started"] += 1
                try:
                    await asyncio.wait_for(one(), 30)
                    state["done"] += 1
                    state["t_last"] = time.perf_counter()
                except Exception as exc:
                    state["errors"] += 1
                    if state["errors"] <= 3:
                        result.setdefault("error_samples", []).append(str(exc))

        t0 = time.perf_counter()
        c0 = cpu()
        await asyncio.gather(*(lane() for _ in range(args.inflight)))
        if args.test == "hs":
            elapsed = state.get("t_last", t0) - t0
            result.update(
                handshakes=state["done"],
                seconds=elapsed,
                rate=state["done"] / elapsed if elapsed > 0 else 0.0,
                errors=state["errors"],
                reused=0,
                client_cpu=cpu() - c0,
            )
        else:
            result.update(connections=len(holding), errors=state["errors"])
            emit({"holding": len(holding)})
            await loop.run_in_executor(None, sys.stdin.readline)

    async def small() -> None:
        waiter: list = []

        class Client(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                self.transport = transport
                result["cipher"] = cipher_of(transport)

            def data_received(self, data: bytes) -> None:
                for _ in data:
                    if waiter:
                        waiter.pop(0).set_result(None)

        # The cost of the application's own loop, with a no-op write, for reference.
        class Null:
            def write(self, data: bytes) -> None:
                pass

        null = Null()
        c0, t0 = cpu(), time.perf_counter()
        for _ in range(5):
            w = null.write
            piece = b"s" * SMALL_SIZE
            for _ in range(SMALL_COUNT):
                w(piece)
        result["loop_only"] = {"client_cpu": (cpu() - c0) / 5, "seconds": (time.perf_counter() - t0) / 5}
        transport, _ = await connect(Client)
        sock = transport.get_extra_info("socket")

        async def round_trip(action) -> dict:
            fut = loop.create_future()
            waiter.append(fut)
            c0, a0, t0 = cpu(), bytes_acked(sock), time.perf_counter()
            action()
            await fut
            return {
                "client_cpu": cpu() - c0,
                "seconds": time.perf_counter() - t0,
                "wire_bytes": bytes_acked(sock) - a0,
                "payload": SMALL_TOTAL,
            }

        await round_trip(lambda: transport.write(b"p"))

        def burst() -> None:
            write = transport.write
            piece = b"s" * SMALL_SIZE
            for _ in range(SMALL_COUNT):
                write(piece)

        result["small_writes"] = await round_trip(burst)
        result["one_write"] = await round_trip(lambda: transport.write(b"b" * SMALL_TOTAL))
        transport.close()

    work = {"bulk": bulk, "hs": pings, "mem": pings, "small": small}[args.test]
    try:
        loop.run_until_complete(asyncio.wait_for(work(), args.timeout))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    emit(result)
    if os.environ.get("TWISTLS_BENCH_PROFILE"):
        sys.exit(0)
    os._exit(0)  # idle connections of the memory test: no orderly teardown needed


# --------------------------------------------------------------------------------------------
# twistls client against `openssl s_server` (sequential handshakes)
# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("stack")
    parser.add_argument("test", choices=["bulk", "hs", "resume", "mem", "small"])
    parser.add_argument("--certs", required=True)
    parser.add_argument("--key", default="rsa")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--size", type=int, default=512 << 20)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except OSError:
            pass
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    except (ImportError, ValueError, OSError):
        pass
    profile_dir = os.environ.get("TWISTLS_BENCH_PROFILE")
    if profile_dir:
        import atexit
        import cProfile
        import signal

        profiler = cProfile.Profile(time.process_time)  # CPU, not the idle wait in epoll
        path = os.path.join(profile_dir, f"{args.stack}-{args.test}-{args.key}-{args.role}-{os.getpid()}.prof")
        atexit.register(lambda: (profiler.disable(), profiler.dump_stats(path)))
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        profiler.enable()
    if args.stack in ("asyncio", "uvloop"):
        asyncio_stack(args)
    else:
        # The s_server comparison uses the twistls client.
        if args.stack == "s_server":
            args.stack = "twistls"
        twisted_stack(args)


if __name__ == "__main__":
    main()
