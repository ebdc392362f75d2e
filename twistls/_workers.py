"""Several worker processes on one port: the supervisor and the listener.

A Twisted reactor uses one core.  ``twistd twistls proxy|echo --workers N``
makes the twistd process a supervisor (:class:`WorkerSupervisor`) that runs
N copies of the same server as child processes.  Each child listens on the
same port with ``SO_REUSEPORT`` (:class:`ReusePortTCPServerEndpoint`), so the
kernel spreads new connections across them; the supervisor restarts a child
that dies, forwards SIGHUP (reload certificates, ticket keys) to every
child, and on stop sends SIGTERM to every child, which drains (see
:class:`DrainService`) and exits.

Why ``SO_REUSEPORT`` and not one socket adopted by every child: each child
stays an ordinary twistd process that parses its own endpoint strings (any
``twistls:`` server string works unchanged, and the same key lets an
operator start N ``twistd ... --listen twistls:...:reusePort=yes``
processes by hand or from systemd), a child never waits on a socket shared
with a wedged sibling (one accept queue each), and Linux balances new
connections evenly.  The cost: connections still queued in a child's own
accept queue when it dies are reset (an adopted socket would hand them to a
sibling).  Linux only; elsewhere the option is refused.

.. versionadded:: 0.2
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import time
from typing import Any, Sequence, cast

from twisted.application import service
from twisted.internet import abstract, defer, error, fdesc, protocol, tcp
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = [
    "WorkerSupervisor",
    "ReusePortTCPServerEndpoint",
    "DrainService",
    "EndWithSupervisor",
    "reuse_port_supported",
    "WORKER_ENV",
]

log = Logger(namespace="twistls")

#: Set in a worker's environment (to its number) by the supervisor.
WORKER_ENV = "TWISTLS_WORKER"


def _exit_failed() -> None:
    """The last exit handler of a supervisor that gave up: status 1."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream: nothing to flush
            pass
    os._exit(1)


def reuse_port_supported() -> bool:
    """Whether this system balances connections across ``SO_REUSEPORT`` sockets."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class _ReusePortPort(tcp.Port):
    """A listening TCP port that sets ``SO_REUSEPORT`` before it binds."""

    def createInternetSocket(self) -> socket.socket:
        s: socket.socket = super().createInternetSocket()  # type: ignore[no-untyped-call]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return s


class ReusePortTCPServerEndpoint:
    """An ``IStreamServerEndpoint`` listening on TCP with ``SO_REUSEPORT``:
    several processes may listen on the same port, and the kernel spreads
    new connections across them.

    Args:
        reactor: the reactor (it must be a POSIX one: ``tcp.Port``).
        port: the port; it must not be 0 (each process would get another).
        backlog: the listen backlog.
        interface: the address to bind.

    Raises:
        ValueError: port 0, or a system without ``SO_REUSEPORT`` balancing.

    .. versionadded:: 0.2
    """

    def __init__(self, reactor: Any, port: int, backlog: int = 50, interface: str = "") -> None:
        if not reuse_port_supported():
            raise ValueError("reusePort needs Linux (SO_REUSEPORT balancing)")
        if not 0 < port < 65536:
            raise ValueError(f"reusePort needs a fixed port (1-65535), not {port!r}: each process would get its own")
        self._reactor, self._port, self._backlog, self._interface = reactor, port, backlog, interface

    def listen(self, factory: Any) -> defer.Deferred[IListeningPort]:
        """Listen with ``factory``; the Deferred fails with ``CannotListenError``."""
        try:
            port = _ReusePortPort(self._port, factory, self._backlog, self._interface, self._reactor)
            port.startListening()
        except error.CannotListenError:
            return defer.fail()
        return defer.succeed(cast(IListeningPort, port))


class DrainService(service.Service):
    """Lets established connections finish when the process stops.

    On ``stopService`` (SIGTERM under twistd) the listening ports have
    already stopped accepting (their services stop first, as they were
    added after this one); this waits until every connection of the given
    wrapping factories has ended, at most ``drain_timeout`` seconds, then
    closes the rest with close_notify (``loseConnection``) and waits for
    them briefly before the reactor stops.

    Args:
        factories: the ``WrappingFactory`` objects whose connections to drain
            (their ``protocols`` mapping is read).
        drain_timeout: seconds to wait for connections to end by themselves.
        clock: the reactor (for tests, a ``Clock``).

    .. versionadded:: 0.2
    """

    def __init__(self, factories: Sequence[Any], drain_timeout: float = 30.0, clock: Any = None) -> None:
        self.factories = list(factories)
        self.drain_timeout = drain_timeout
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock

    def open_connections(self) -> list[Any]:
        """The connections still open."""
        return [p for f in self.factories for p in list(getattr(f, "protocols", {}))]

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        if not self.open_connections():
            return None
        log.info("twistls: draining {count} connection(s) for up to {seconds:g} s", count=len(self.open_connections()),
                 seconds=self.drain_timeout)
        done: defer.Deferred[None] = defer.Deferred()
        deadline = self._clock.seconds() + self.drain_timeout
        closed_at: list[float] = []

        def poll() -> None:
            left = self.open_connections()
            now = self._clock.seconds()
            if not left or (closed_at and now - closed_at[0] > 5.0):
                done.callback(None)
                return
            if now >= deadline and not closed_at:
                log.info("twistls: closing {count} connection(s) still open after the drain time", count=len(left))
                closed_at.append(now)
                for connection in left:
                    connection.loseConnection()  # close_notify first
            self._clock.callLater(0.1, poll)

        poll()
        return done


class _EndOfFile(abstract.FileDescriptor):
    """Reads (and drops) what comes on a pipe; calls ``gone`` at its end."""

    def __init__(self, fd: int, gone: Any, reactor: Any) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._gone = gone
        fdesc.setNonBlocking(fd)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> Any:
        return fdesc.readFromFD(self._fd, lambda data: None)  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        gone, self._gone = self._gone, None
        if gone is not None:
            gone()


class EndWithSupervisor(service.Service):
    """A worker stops when its supervisor is gone.

    The supervisor holds the write end of a pipe on each worker's stdin and
    never writes to it; when the supervisor dies (SIGKILL, the OOM killer),
    the pipe reaches end of file and the worker stops (draining, as on
    SIGTERM).  Without it an orphaned worker would serve on the shared
    ``SO_REUSEPORT`` port for ever, next to the workers of the next
    supervisor, with the configuration, certificates and ticket keys it
    was started with.

    Args:
        fd: the pipe's read end (the worker's stdin).
        stop: what stops the worker (default: ``reactor.stop``).
        reactor: the reactor.

    .. versionadded:: 0.2
    """

    def __init__(self, fd: int = 0, stop: Any = None, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._fd = fd
        self._stop = stop if stop is not None else reactor.stop
        self._reader: _EndOfFile | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._reader = _EndOfFile(self._fd, self._gone, self._reactor)
        self._reader.startReading()  # type: ignore[no-untyped-call]  # unannotated in Twisted

    def _gone(self) -> None:
        self._reader = None
        if self.running:
            log.warn("twistls: the supervisor is gone (end of file on stdin): this worker stops")
            self._stop()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        reader, self._reader = self._reader, None
        if reader is not None:
            reader._gone = None
            reader.stopReading()  # type: ignore[no-untyped-call]  # unannotated in Twisted


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, number: int) -> None:
        self.supervisor = supervisor
        self.number = number
        self.ended: defer.Deferred[None] = defer.Deferred()
        #: The IProcessTransport spawnProcess returned.
        self.process: Any = None

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)  # forgotten before anyone waiting hears of it
        self.ended.callback(None)


class WorkerSupervisor(service.Service):
    """Runs ``count`` copies of a worker command and keeps them running.

    * a worker that exits while the supervisor runs is started again after
      ``restart_delay`` seconds (at most ``max_restarts`` per minute in all;
      past that the supervisor stops, exit status non-zero);
    * :meth:`reload` (SIGHUP, once :meth:`install_signal_handlers` ran)
      sends SIGHUP to every worker;
    * ``stopService`` (SIGTERM or SIGINT under twistd) sends SIGTERM to every
      worker and waits for them, at most ``stop_timeout`` seconds, then kills
      what is left.

    Args:
        argv: the worker command line (the executable first).
        count: how many workers (>= 1).
        env: the workers' environment (default: this process's); each also
            gets ``TWISTLS_WORKER=<number>``.
        restart_delay: seconds before a dead worker is replaced.
        stop_timeout: seconds to wait for workers on stop before SIGKILL.
        max_restarts: restarts allowed per minute.
        reactor: the reactor.

    .. versionadded:: 0.2
    """

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        env: dict[str, str] | None = None,
        restart_delay: float = 1.0,
        stop_timeout: float = 40.0,
        max_restarts: int = 10,
        reactor: Any = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be >= 1, not {count!r}")
        self.argv = list(argv)
        self.count = count
        self.env = dict(os.environ if env is None else env)
        self.restart_delay = restart_delay
        self.stop_timeout = stop_timeout
        self.max_restarts = max_restarts
        #: Whether it gave up after too many restarts (the process then exits with status 1).
        self.gave_up = False
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._workers: dict[int, _Worker] = {}
        self._restarts: list[float] = []
        self._stopping = False
        self.restarted = 0

    @property
    def workers(self) -> dict[int, Any]:
        """The running workers: number -> IProcessTransport."""
        return {number: worker.process for number, worker in self._workers.items()}

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping = False
        for number in range(1, self.count + 1):
            self._spawn(number)
        log.info("twistls: supervising {count} worker(s): {pids}", count=self.count,
                 pids=" ".join(str(self._workers[n].process.pid) for n in sorted(self._workers)))

    def _spawn(self, number: int) -> None:
        if self._stopping or not self.running:
            return
        worker = _Worker(self, number)
        env = dict(self.env)
        env[WORKER_ENV] = str(number)
        worker.process = self._reactor.spawnProcess(
            worker, self.argv[0], self.argv, env=env, childFDs={0: "w", 1: 1, 2: 2}
        )
        self._workers[number] = worker

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self._workers.get(worker.number) is worker:
            del self._workers[worker.number]
        if self._stopping or not self.running:
            return
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60.0] + [now]
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        how = f"signal {sig}" if sig else f"status {code}"
        if len(self._restarts) > self.max_restarts:
            log.error("twistls: worker {number} ended ({how}); over {limit} restarts a minute: stopping",
                      number=worker.number, how=how, limit=self.max_restarts)
            self._reactor.callLater(0, self._give_up)
            return
        log.warn("twistls: worker {number} ended ({how}); starting a new one in {delay:g} s",
                 number=worker.number, how=how, delay=self.restart_delay)
        self.restarted += 1
        self._reactor.callLater(self.restart_delay, self._spawn, worker.number)

    def _give_up(self) -> None:
        """Stop, and make the process exit with status 1 rather than 0, so
        that a service manager (systemd ``Restart=on-failure``) sees the
        failure: twistd ends with status 0 after a ``reactor.stop()``."""
        self.gave_up = True
        atexit.register(_exit_failed)
        self._reactor.stop()

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every running worker."""
        for worker in list(self._workers.values()):
            try:
                worker.process.signalProcess(signum)
            except error.ProcessExitedAlready:
                pass

    def reload(self) -> None:
        """Ask every worker to reload (SIGHUP)."""
        log.info("twistls: reloading {count} worker(s)", count=len(self._workers))
        self.signal_workers(signal.SIGHUP)

    def install_signal_handlers(self) -> None:
        """Forward SIGHUP to the workers (call from the main thread)."""

        def on_hup(signum: int, frame: Any) -> None:
            self._reactor.callFromThread(self.reload)

        signal.signal(signal.SIGHUP, on_hup)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        waiting = [worker.ended for worker in self._workers.values()]
        self.signal_workers(signal.SIGTERM)
        all_ended = defer.DeferredList(waiting)
        killer = self._reactor.callLater(self.stop_timeout, self.signal_workers, signal.SIGKILL)

        def ended(_: object) -> None:
            if killer.active():
                killer.cancel()

        all_ended.addCallback(ended)
        return all_ended  # type: ignore[return-value]
