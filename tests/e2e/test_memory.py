"""Bounded memory under a flood: flow control, not buffers, absorbs a peer
that reads slowly or not at all.  The server runs in its own process so its
RSS can be measured."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.interfaces import IPushProducer
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from twistls import ClientContextFactory
from tests._e2e import connect_tls
from tests._hardening import EngineClient, connect_raw, within
from tests._pki import pki

FLOOD = 256 << 20
RSS_BOUND = 64 << 20
SERVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_hardening_server.py")


def start_server(
    testcase: Any, mode: str, *extra: str, cert: str | None = None, key: str | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Run tests/_hardening_server.py; returns (process, port)."""
    p = pki()
    proc = subprocess.Popen(
        [sys.executable, SERVER, mode, cert or p.server.cert, key or p.server.key, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    testcase.addCleanup(stop)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        raise AssertionError("the server process did not start within 30 s")
    line = proc.stdout.readline().decode()  # type: ignore[union-attr]
    if not line.startswith("PORT "):
        raise AssertionError(f"the server process said {line!r}")
    return proc, int(line.split()[1])


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class RSSWatch:
    """Samples a process's RSS every 50 ms; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = self.peak = rss(pid)
        self.loop = task.LoopingCall(self.sample)
        self.loop.start(0.05)

    def sample(self) -> None:
        self.peak = max(self.peak, rss(self.pid))

    def stop(self) -> int:
        if self.loop.running:
            self.loop.stop()
        self.sample()
        return self.peak - self.start


class SlowReader(protocol.Protocol):
    """Reads, but stops reading for 50 ms after every 4 MiB."""

    def __init__(self) -> None:
        self.received = 0
        self.mark = 4 << 20
        self.pauses = 0
        self.done: defer.Deferred[object] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.mark:
            self.mark += 4 << 20
            self.pauses += 1
            self.transport.pauseProducing()
            self.resume = reactor.callLater(0.05, self.transport.resumeProducing)

    def connectionLost(self, reason: object) -> None:
        resume = getattr(self, "resume", None)
        if resume is not None and resume.active():
            resume.cancel()
        self.reason = reason
        self.done.callback(None)


@implementer(IPushProducer)
class Flooder(EngineClient):
    """Sends as fast as the server takes it and never reads."""

    def __init__(self, context_factory: object, total: int) -> None:
        super().__init__(context_factory, self.flood)
        self.total = total
        self.sent = 0
        self.paused = False
        self.chunk = os.urandom(1 << 16)

    def flood(self, _: EngineClient) -> None:
        self.transport.pauseProducing()  # never read again
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < self.total:
            self.engine.send_plaintext(self.chunk)
            self.flush()
            self.sent += len(self.chunk)

    def stopProducing(self) -> None:
        self.paused = True


class FloodTests(TestCase):
    """Server RSS stays bounded while 256 MiB are pushed at a slow or absent reader."""

    timeout = 120

    @defer.inlineCallbacks
    def test_producer_paused_for_a_slow_reader(self):
        """A server protocol pushing 256 MiB through a streaming producer to a
        client that keeps pausing grows the server's RSS by < 64 MiB, and every
        byte arrives."""
        proc, port = start_server(self, "push", str(FLOOD))
        watch = RSSWatch(proc.pid)
        client = SlowReader()
        connect_tls(ClientContextFactory("localhost", cafile=pki().cafile), port, client)
        yield within(client.done, 100, "256 MiB to a slow reader")
        reason = client.reason
        growth = watch.stop()
        print(f"server RSS growth {growth >> 20} MiB, {client.pauses} pauses", file=sys.stderr)
        self.assertEqual(client.received, FLOOD)
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertGreater(client.pauses, 30)
        self.assertLess(growth, RSS_BOUND, f"server RSS grew by {growth >> 20} MiB")

    @defer.inlineCallbacks
    def test_server_stops_reading_from_a_peer_that_does_not_read(self):
        """An echo server facing a client that sends 256 MiB and reads nothing
        stops reading once its send buffer is full: the client stalls and the
        server's RSS grows by < 64 MiB."""
        proc, port = start_server(self, "echo")
        watch = RSSWatch(proc.pid)
        client = Flooder(ClientContextFactory("localhost", cafile=pki().cafile), FLOOD)
        yield connect_raw(port, client)
        last, still_since, began = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - began < 60:
            yield task.deferLater(reactor, 0.1, lambda: None)
            if client.sent != last:
                last, still_since = client.sent, time.monotonic()
            elif client.sent and time.monotonic() - still_since > 1.0:
                break
        growth = watch.stop()
        print(f"server RSS growth {growth >> 20} MiB, client sent {client.sent >> 20} MiB", file=sys.stderr)
        self.assertLess(client.sent, FLOOD, "the server kept reading from a peer that never reads")
        self.assertLess(growth, RSS_BOUND, f"server RSS grew by {growth >> 20} MiB")
        self.assertEqual(proc.poll(), None)
        client.transport.abortConnection()
        yield within(client.done, 10, "client end")


class StuckPeerTests(TestCase):
    """idle_timeout and close_timeout together drop a peer that stopped reading."""

    timeout = 30

    @defer.inlineCallbacks
    def test_idle_timeout_drops_a_peer_that_never_reads(self):
        """A flooding peer the server stopped reading from is cut off by
        idle_timeout (close_notify cannot be delivered, so close_timeout aborts)."""
        from tests._hardening import listen
        from twistls import IdleTimeoutError, ServerContextFactory

        p = pki()
        port, factory = listen(
            self, ServerContextFactory(p.server.cert, p.server.key), idle_timeout=0.5, close_timeout=0.5
        )
        client = Flooder(ClientContextFactory("localhost", cafile=p.cafile), FLOOD)
        yield connect_raw(port, client)
        began = time.monotonic()
        yield within(client.done, 15, "stuck peer dropped")
        self.assertLess(client.sent, FLOOD)
        server = factory.made[0]
        yield within(server.lost, 5, "server end")
        self.assertTrue(server.reason.check(IdleTimeoutError), server.reason)
        self.assertLess(time.monotonic() - began, 10)
