"""Operating a twistls server under real ``twistd`` processes on 127.0.0.1 (issue 15):
busy ports, SIGHUP reloads, encrypted keys, one-line start-up errors, and the
STARTTLS cleartext deadline.  Every wait is bounded; every child is killed in cleanup."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time

from twisted.trial.unittest import TestCase

from tests.test_twistd import TWISTD, TwistdTestCase, _env, _esc, _read, free_port, run_twistd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _busy_port(testcase: TestCase) -> int:
    """A port on 127.0.0.1 held listening until the test ends."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    testcase.addCleanup(holder.close)
    return int(holder.getsockname()[1])


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


class PortInUseTests(TwistdTestCase):
    """``twistd twistls echo|proxy`` on a busy port."""

    def test_echo_and_proxy_exit_at_once_naming_the_port(self) -> None:
        """echo (--port and --listen) and proxy on a busy port exit non-zero at once with one line naming the port."""
        port = _busy_port(self)
        listen = f"twistls:{port}:certificate={_esc(self.p.server.chain)}:interface=127.0.0.1"
        for args in (
            ("twistls", "echo", "--certificate", self.p.server.chain, "--port", str(port)),
            ("twistls", "echo", "--listen", listen),
            ("twistls", "proxy", "--listen", listen, "--connect", "tcp:127.0.0.1:1"),
        ):
            started = time.monotonic()
            result = run_twistd(*args, timeout=30)
            self.assertLess(time.monotonic() - started, 25, args)
            self.assertNotEqual(result.returncode, 0, args)
            errors = [line for line in _lines(result) if "#critical]" in line or "#error]" in line]
            self.assertEqual(len(errors), 1, result.stdout + result.stderr)
            self.assertIn(f"127.0.0.1:{port}", errors[0])
            self.assertIn("in use", errors[0])
            self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_free_port_keeps_serving(self) -> None:
        """The same echo command on a free port keeps running and serving (the twin of the busy-port test)."""
        port = free_port()
        proc = self.start("echo", "twistls", "echo", "--certificate", self.p.server.chain, "--port", str(port), port=port)
        data, _ = self.tls_roundtrip(port, b"still serving")
        self.assertEqual(data, b"still serving")
        self.assertIsNone(proc.poll())
