"""Worker processes on one port: SO_REUSEPORT listening, the supervisor, draining (issue 16)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import tempfile
import textwrap
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._e2e import bounded, free_port
from twistls._workers import DrainService, ReusePortTCPServerEndpoint, WorkerSupervisor, reuse_port_supported


class _Hello(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(self.factory.tag)
        self.transport.loseConnection()


def _factory(tag: bytes) -> Factory:
    f = Factory.forProtocol(_Hello)
    f.tag = tag  # type: ignore[attr-defined]
    return f


class ReusePortTests(TestCase):
    """Two listeners on one port share its connections."""

    def setUp(self) -> None:
        if not reuse_port_supported():
            raise self.skipTest("SO_REUSEPORT balancing is Linux only")  # type: ignore[misc]

    @defer.inlineCallbacks
    def test_two_listeners_share_a_port(self):
        """Two SO_REUSEPORT listeners bind the same port and the kernel hands connections to both."""
        port = free_port()
        a = yield ReusePortTCPServerEndpoint(reactor, port, interface="127.0.0.1").listen(_factory(b"a"))
        self.addCleanup(a.stopListening)
        b = yield ReusePortTCPServerEndpoint(reactor, port, interface="127.0.0.1").listen(_factory(b"b"))
        self.addCleanup(b.stopListening)
        seen = set()
        for _ in range(64):
            got = yield _fetch(port)
            seen.add(got)
            if seen == {b"a", b"b"}:
                break
        self.assertEqual(seen, {b"a", b"b"})

    def test_port_zero_refused(self):
        """reusePort with port 0 is refused: each process would get a port of its own."""
        with self.assertRaises(ValueError):
            ReusePortTCPServerEndpoint(reactor, 0)

    @defer.inlineCallbacks
    def test_plain_listener_blocks_reuse(self):
        """The twin: a port already taken without SO_REUSEPORT cannot be shared (CannotListenError)."""
        from twisted.internet.error import CannotListenError

        plain = reactor.listenTCP(0, _factory(b"x"), interface="127.0.0.1")
        self.addCleanup(plain.stopListening)
        with self.assertRaises(CannotListenError):
            yield ReusePortTCPServerEndpoint(reactor, plain.getHost().port, interface="127.0.0.1").listen(_factory(b"y"))


def _fetch(port: int) -> defer.Deferred[bytes]:
    from twisted.internet import threads

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            data = b""
            while True:
                chunk = s.recv(16)
                if not chunk:
                    return data
                data += chunk

    return threads.deferToThread(run)


_FAKE_WORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    out = sys.argv[1]
    me = os.path.join(out, "worker-%s-%d" % (os.environ["TWISTLS_WORKER"], os.getpid()))
    open(me, "w").close()
    signal.signal(signal.SIGHUP, lambda *a: open(me + ".hup", "w").close())
    signal.signal(signal.SIGTERM, lambda *a: (open(me + ".term", "w").close(), sys.exit(0)))
    for _ in range(600):
        time.sleep(0.1)
    """
)


class SupervisorTests(TestCase):
    """The supervisor starts, replaces, reloads and stops its workers."""

    timeout = 60

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-workers-")
        script = os.path.join(self.dir, "worker.py")
        with open(script, "w") as f:
            f.write(_FAKE_WORKER)
        self.supervisor = WorkerSupervisor([sys.executable, script, self.dir], 2, restart_delay=0.1, stop_timeout=10)
        self.supervisor.startService()
        self.addCleanup(self._stop)

    def _stop(self) -> defer.Deferred[Any] | None:
        if self.supervisor.running:
            return self.supervisor.stopService()
        return None

    def _files(self, suffix: str = "") -> list[str]:
        return sorted(n for n in os.listdir(self.dir) if n.startswith("worker-") and n.endswith(suffix) and
                      (suffix or "." not in n))

    @defer.inlineCallbacks
    def _until(self, what, condition, seconds: float = 15.0):  # type: ignore[no-untyped-def]
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}")

    @defer.inlineCallbacks
    def test_runs_the_workers(self):
        """Two workers start, numbered 1 and 2."""
        yield self._until("two workers", lambda: len(self._files()) == 2)
        self.assertEqual(sorted(n.split("-")[1] for n in self._files()), ["1", "2"])

    @defer.inlineCallbacks
    def test_killed_worker_is_replaced(self):
        """A worker killed with SIGKILL is replaced by a new process with the same number."""
        yield self._until("two workers", lambda: len(self._files()) == 2)
        victim = self.supervisor.workers[1].pid
        os.kill(victim, signal.SIGKILL)
        yield self._until("a replacement", lambda: len(self._files()) == 3)
        self.assertEqual(self.supervisor.restarted, 1)
        self.assertNotEqual(self.supervisor.workers[1].pid, victim)

    @defer.inlineCallbacks
    def test_reload_reaches_every_worker(self):
        """reload() (SIGHUP) reaches every worker."""
        yield self._until("two workers", lambda: len(self._files()) == 2)
        self.supervisor.reload()
        yield self._until("two reloads", lambda: len(self._files(".hup")) == 2)

    @defer.inlineCallbacks
    def test_stop_terminates_every_worker(self):
        """stopService sends SIGTERM to every worker and fires once they all ended; none is replaced."""
        yield self._until("two workers", lambda: len(self._files()) == 2)
        yield bounded(self.supervisor.stopService(), 15, "supervisor stop")
        self.assertEqual(len(self._files(".term")), 2)
        self.assertEqual(self.supervisor.workers, {})
        self.assertEqual(self.supervisor.restarted, 0)


class DrainTests(SynchronousTestCase):
    """On stop, established connections get the drain time, then close_notify."""

    class _Conn:
        def __init__(self, owner: dict[Any, int]) -> None:
            self.owner = owner
            self.closed = False

        def loseConnection(self) -> None:
            self.closed = True
            self.owner.pop(self, None)

    class _Factory:
        def __init__(self) -> None:
            self.protocols: dict[Any, int] = {}

    def _stopping(self, drain_timeout: float):  # type: ignore[no-untyped-def]
        """A started DrainService over one open connection, told to stop: (clock, factory, conn, stopped)."""
        clock = task.Clock()
        factory = self._Factory()
        conn = self._Conn(factory.protocols)
        factory.protocols[conn] = 1
        drain = DrainService([factory], drain_timeout=drain_timeout, clock=clock)
        drain.startService()
        d = drain.stopService()
        assert d is not None
        return clock, factory, conn, d

    def test_waits_for_connections_to_end(self):
        """stopService waits while connections are open and fires when the last one ends by itself."""
        clock, factory, conn, d = self._stopping(30)
        clock.advance(10)
        self.assertNoResult(d)
        del factory.protocols[conn]
        clock.advance(0.2)
        self.successResultOf(d)
        self.assertFalse(conn.closed)

    def test_closes_what_is_left_after_the_drain_time(self):
        """After the drain time the remaining connections are closed (loseConnection: close_notify first)."""
        clock, _, conn, d = self._stopping(2)
        clock.pump([0.1] * 25)
        self.assertTrue(conn.closed)
        clock.advance(0.2)
        self.successResultOf(d)

    def test_nothing_open_stops_at_once(self):
        """With no connection open, stopping does not wait."""
        drain = DrainService([self._Factory()], drain_timeout=30, clock=task.Clock())
        drain.startService()
        self.assertIsNone(drain.stopService())


class SupervisorGoneTests(TestCase):
    """A worker whose supervisor is gone (killed, say, by SIGKILL or the
    OOM killer) stops, instead of serving on the shared port for ever next
    to the workers of the supervisor started after it."""

    def test_worker_stops_when_the_supervisor_pipe_closes(self):
        from twistls._workers import EndWithSupervisor

        read_end, write_end = os.pipe()
        ended: list[bool] = []
        watcher = EndWithSupervisor(fd=read_end, stop=lambda: ended.append(True), reactor=reactor)
        watcher.startService()
        self.addCleanup(lambda: watcher.running and watcher.stopService())
        self.assertEqual(ended, [])
        os.close(write_end)  # the supervisor is gone: its end of the worker's stdin closes
        return bounded(task.deferLater(reactor, 0.2, lambda: self.assertEqual(ended, [True])), 5, "the watcher")

    def test_nothing_happens_while_the_supervisor_lives(self):
        from twistls._workers import EndWithSupervisor

        read_end, write_end = os.pipe()
        self.addCleanup(os.close, write_end)
        ended: list[bool] = []
        watcher = EndWithSupervisor(fd=read_end, stop=lambda: ended.append(True), reactor=reactor)
        watcher.startService()

        def check() -> None:
            self.assertEqual(ended, [])
            watcher.stopService()

        return task.deferLater(reactor, 0.2, check)

    def test_the_twistd_worker_watches_its_stdin(self):
        """makeService of a worker (TWISTLS_WORKER set, --workers N) adds the watcher."""
        from twistls._workers import WORKER_ENV, EndWithSupervisor
        from twistls.tap import Options, makeService

        from tests._pki import pki

        self.patch(os, "environ", {**os.environ, WORKER_ENV: "1"})
        options = Options()
        options.parseOptions(["echo", "--certificate", pki().server.chain, "--port", str(free_port()), "--workers", "2"])
        top = makeService(options)
        self.assertTrue([s for s in top if isinstance(s, EndWithSupervisor)])
