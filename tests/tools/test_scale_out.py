"""Scale-out over real twistd processes on 127.0.0.1 (issue 16): workers on one
port, shared ticket keys and their rotation, a killed worker replaced, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time

from tests.tools.test_twistd import TWISTD, TwistdTestCase, _env, _esc, _read, free_port
from twistls._ticketkeys import rotate_key_file
from twistls._workers import reuse_port_supported


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry))
    return found


class ScaleOutTests(TwistdTestCase):
    """``twistd twistls echo --workers 2`` with and without a shared ticket-key file."""

    def setUp(self) -> None:
        super().setUp()
        if not reuse_port_supported():
            raise self.skipTest("--workers needs Linux")  # type: ignore[misc]
        self.keys = os.path.join(self.tmp, "tickets.key")
        rotate_key_file(self.keys)

    def serve(self, *extra: str, mode: tuple[str, ...] = ("echo",)) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        listen = f"twistls:{port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}:interface=127.0.0.1"
        proc = self.start("workers", "twistls", *mode, "--listen", listen, "--workers", "2", *extra, port=port)
        self.wait_for(lambda: len(_children(proc.pid)) == 2, "two workers", proc)
        time.sleep(0.5)  # both listening
        return proc, port

    def wait_for(self, condition, what: str, proc: subprocess.Popen[bytes], seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{_read(proc.log)}")  # type: ignore[attr-defined]

    def connect(self, port: int, session: ssl.SSLSession | None = None) -> tuple[bool, ssl.SSLSession | None]:
        """One verified connection that echoes a line; returns (resumed, its session)."""
        context = self.context
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=session) as s:
                s.sendall(b"ping\n")
                got = b""
                while len(got) < 5:
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    got += chunk
                self.assertEqual(got, b"ping\n")
                return s.session_reused, s.session

    def resumption_rate(self, port: int, attempts: int = 20) -> float:
        _, session = self.connect(port)
        resumed = sum(self.connect(port, session)[0] for _ in range(attempts))
        return resumed / attempts

    def setUpContext(self) -> None:
        self.context = self.ssl_context()

    def test_shared_ticket_keys_resume_across_workers(self) -> None:
        """With --ticket-key-file every resumption attempt against two workers resumes."""
        self.setUpContext()
        proc, port = self.serve("--ticket-key-file", self.keys)
        self.assertGreaterEqual(self.resumption_rate(port), 0.95)

    def test_proxy_workers_serve_a_verifying_client_and_resume_across_workers(self) -> None:
        """``twistd twistls proxy --workers 2 --ticket-key-file``: a verifying client reaches the backend
        through either worker and resumes on both."""
        self.setUpContext()

        class Echo(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while data := self.request.recv(4096):
                    self.request.sendall(data)

        backend = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
        backend.daemon_threads = True
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        self.addCleanup(backend.server_close)
        self.addCleanup(backend.shutdown)
        connect = f"tcp:127.0.0.1:{backend.server_address[1]}"
        proc, port = self.serve("--ticket-key-file", self.keys, mode=("proxy", "--connect", connect))
        self.assertGreaterEqual(self.resumption_rate(port), 0.95)
        self.assertEqual(len(_children(proc.pid)), 2)

    def test_without_shared_keys_some_resumptions_fail(self) -> None:
        """The twin: without the file each worker has its own key, and about half the attempts resume."""
        self.setUpContext()
        proc, port = self.serve()
        self.assertLess(self.resumption_rate(port), 0.95)

    def test_rotation_and_sighup_keep_old_tickets(self) -> None:
        """After 'mkticketkey --rotate' and SIGHUP, a ticket under the old key still resumes, and new tickets resume too."""
        self.setUpContext()
        proc, port = self.serve("--ticket-key-file", self.keys)
        _, old_session = self.connect(port)
        rotate_key_file(self.keys)
        proc.send_signal(signal.SIGHUP)
        self.wait_for(lambda: _read(proc.log).count("reloaded") >= 2, "both workers reloading", proc)  # type: ignore[attr-defined]
        self.assertTrue(all(self.connect(port, old_session)[0] for _ in range(6)))
        _, new_session = self.connect(port)
        self.assertTrue(all(self.connect(port, new_session)[0] for _ in range(6)))

    def test_killed_worker_is_replaced(self) -> None:
        """A worker killed with SIGKILL is replaced, and the port keeps serving."""
        self.setUpContext()
        proc, port = self.serve()
        before = _children(proc.pid)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        self.wait_for(lambda: len(_children(proc.pid)) == 2 and victim not in _children(proc.pid), "a replacement", proc)
        time.sleep(1.0)
        for _ in range(6):
            self.connect(port)

    def test_sigterm_drains_then_closes(self) -> None:
        """On SIGTERM an established connection keeps working for the drain time, then gets close_notify; all processes exit."""
        self.setUpContext()
        proc, port = self.serve("--drain-timeout", "2")
        workers = _children(proc.pid)
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        s = self.context.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(s.close)
        s.sendall(b"before\n")
        self.assertEqual(s.recv(64), b"before\n")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        s.sendall(b"during\n")  # still served while draining
        self.assertEqual(s.recv(64), b"during\n")
        self.assertEqual(s.recv(64), b"")  # close_notify after the drain time (ssl raises on truncation)
        self.assertIn(proc.wait(timeout=30), (0, -signal.SIGTERM), _read(proc.log))  # type: ignore[attr-defined]
        for pid in workers:
            self.assertFalse(os.path.exists(f"/proc/{pid}/stat") and _children(proc.pid))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


class RestartStormTests(TwistdTestCase):
    """A supervisor whose workers keep dying gives up with exit status 1 (systemd's on-failure sees it)."""

    def test_gives_up_with_status_1(self) -> None:
        if not reuse_port_supported():
            raise self.skipTest("--workers needs Linux")  # type: ignore[misc]
        blocker = socket.socket()
        self.addCleanup(blocker.close)
        blocker.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: every worker's bind fails
        blocker.listen(1)
        port = blocker.getsockname()[1]
        listen = f"twistls:{port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}:interface=127.0.0.1"
        log = os.path.join(self.tmp, "storm.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "twistls", "echo", "--listen", listen, "--workers", "2"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, env=_env(),
            )
            try:
                status = proc.wait(timeout=90)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        text = _read(log)
        self.assertIn("restarts a minute: stopping", text)
        self.assertEqual(status, 1, text)


class GroupSignalTests(TwistdTestCase):
    """Ctrl-C in a terminal signals the whole process group: the workers stop once, through their supervisor."""

    def test_sigint_to_the_process_group_stops_everything_cleanly(self) -> None:
        if not reuse_port_supported():
            raise self.skipTest("--workers needs Linux")  # type: ignore[misc]
        port = free_port()
        listen = f"twistls:{port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}:interface=127.0.0.1"
        log = os.path.join(self.tmp, "group.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "twistls", "echo", "--listen", listen, "--workers", "2"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.tmp, env=_env(), start_new_session=True,
            )
            try:
                deadline = time.monotonic() + 30
                while len(_children(proc.pid)) < 2 or _read(log).count("serves the default certificate") < 2:
                    self.assertLess(time.monotonic(), deadline, _read(log))
                    time.sleep(0.1)
                os.killpg(proc.pid, signal.SIGINT)
                status = proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        text = _read(log)
        self.assertIn(status, (0, -signal.SIGINT), text)
        self.assertNotIn("Traceback", text)
        self.assertEqual(text.count("Server Shut Down"), 3, text)  # the supervisor and both workers
