"""The log an operator reads (issue 15 item 9), from real ``twistd`` processes:
``twistd twistls echo``, ``twistd twistls proxy`` (both directions) and
``twistd web --listen twistls:...``.  Each failed connection gives exactly one
line naming the peer address, the SNI name (or ``no SNI``) and the error class;
a client that closes TCP without close_notify after the server answered, and a
clean close, give none; a proxied connection logs no "Starting factory" /
"Stopping factory" pair.  Every wait is bounded; every child is killed in cleanup."""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from typing import Callable


from tests.tools.test_twistd import TwistdTestCase, _esc, _read, free_port

#: The handshake timeout of the servers under test (seconds).
_TIMEOUT = 2


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class _LogTestCase(TwistdTestCase):
    """Runs each kind of connection against a server and reads its log."""

    def listen_string(self, port: int) -> str:
        return (
            f"twistls:{port}:interface=127.0.0.1:certificate={_esc(self.p.server.cert)}"
            f":privateKey={_esc(self.p.server.key)}:handshakeTimeout={_TIMEOUT}"
        )

    def settle(self, proc: subprocess.Popen[bytes]) -> int:
        """Wait for the start-up probe's line; return the log's length (lines after it are ours)."""
        log = proc.log  # type: ignore[attr-defined]
        self.wait_until(lambda: "failed" in _read(log) or "Starting factory" in _read(log), log)
        time.sleep(0.5)
        return len(_read(log))

    def wait_until(self, predicate: Callable[[], bool], log: str, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        self.fail(f"timed out; log:\n{_read(log)}")

    def lines_about(self, proc: subprocess.Popen[bytes], since: int, client_port: int) -> list[str]:
        text = _read(proc.log)[since:]  # type: ignore[attr-defined]
        return [line for line in text.splitlines() if f"127.0.0.1:{client_port} " in line]

    def expect_one_line(self, proc: subprocess.Popen[bytes], since: int, client_port: int, *parts: str) -> str:
        """Exactly one line about ``client_port`` appears, holding each of ``parts``."""
        self.wait_until(lambda: bool(self.lines_about(proc, since, client_port)), proc.log)  # type: ignore[attr-defined]
        time.sleep(0.3)  # a second line would come at once
        lines = self.lines_about(proc, since, client_port)
        self.assertEqual(len(lines), 1, lines)
        for part in parts:
            self.assertIn(part, lines[0])
        return lines[0]

    def expect_no_line(self, proc: subprocess.Popen[bytes], since: int, client_port: int) -> None:
        time.sleep(0.8)
        self.assertEqual(self.lines_about(proc, since, client_port), [])

    # -- the connections ---------------------------------------------------------

    def wrong_ca(self, port: int) -> int:
        """A client that does not trust the server's CA (it sends the alert)."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            client_port = raw.getsockname()[1]
            with self.assertRaises(ssl.SSLCertVerificationError):
                ssl.create_default_context(cafile=self.p.other_cafile).wrap_socket(raw, server_hostname="localhost")
        return int(client_port)

    def garbage(self, port: int) -> int:
        """Plaintext sent to the TLS port."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            client_port = raw.getsockname()[1]
            raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                raw.recv(100)
            except OSError:
                pass
        return int(client_port)

    def aborted(self, port: int, server_name: str) -> int:
        """A ClientHello naming ``server_name``, then the client goes away."""
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ssl.create_default_context(cafile=self.p.cafile).wrap_bio(incoming, outgoing, server_hostname=server_name)
        with self.assertRaises(ssl.SSLWantReadError):
            tls.do_handshake()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            client_port = raw.getsockname()[1]
            raw.sendall(outgoing.read())
            time.sleep(0.2)
        return int(client_port)

    def silent(self, port: int) -> int:
        """A TCP client that never starts the handshake: timed out."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            client_port = raw.getsockname()[1]
            raw.settimeout(_TIMEOUT + 10)
            try:
                raw.recv(100)  # the server drops it after the timeout
            except OSError:
                pass
        return int(client_port)

    def exchange(self, port: int, request: bytes, *, close_notify: bool, wait_answer: bool = True) -> int:
        """Handshake, send ``request``, read the answer, then close: with
        close_notify, or by closing TCP under the TLS layer."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        client_port = raw.getsockname()[1]
        tls = ssl.create_default_context(cafile=self.p.cafile).wrap_socket(raw, server_hostname="localhost")
        try:
            if request:
                tls.sendall(request)
            if wait_answer:
                self.assertTrue(tls.recv(65536))
            if close_notify:
                tls.unwrap()
        finally:
            socket.socket(fileno=tls.detach()).close()
        return int(client_port)

    def check_every_kind(self, proc: subprocess.Popen[bytes], port: int, request: bytes) -> None:
        since = self.settle(proc)
        self.expect_one_line(proc, since, self.wrong_ca(port), 'SNI "localhost"', "failed: PeerAlertError", "unknown ca")
        self.expect_one_line(proc, since, self.garbage(port), "(no SNI)", "failed: ProtocolViolationError")
        line = self.expect_one_line(proc, since, self.aborted(port, "evil\x1b[2Jname.example"), "failed: TLSError")
        self.assertIn('SNI "evil\\x1b[2Jname.example"', line)  # escaped: no terminal control reaches the log
        self.expect_one_line(proc, since, self.silent(port), "(no SNI)", "failed: HandshakeTimeoutError")
        # Answered, then the TCP connection closed without close_notify: no line.
        self.expect_no_line(proc, since, self.exchange(port, request, close_notify=False))
        # A clean close: no line.
        self.expect_no_line(proc, since, self.exchange(port, request, close_notify=True))
        # Truncated before the server had anything to answer: one info line.
        self.expect_one_line(
            proc, since, self.exchange(port, b"", close_notify=False, wait_answer=False),
            "[twistls#info]", 'SNI "localhost"', "failed: ConnectionTruncatedError",
        )
        text = _read(proc.log)[since:]  # type: ignore[attr-defined]
        self.assertNotIn("Starting factory", text)
        self.assertNotIn("Stopping factory", text)
        self.assertNotIn("Traceback", text)
        self.assertNotIn("Unhandled", text)


class OperatorLogTests(_LogTestCase):
    """One readable line per failed connection, under each twistd entry point."""

    def test_echo_logs_one_line_per_failed_connection(self) -> None:
        """twistd twistls echo logs each failed connection once, with peer, SNI and error class, and is silent about good ones."""
        port = free_port()
        proc = self.start("echo", "twistls", "echo", "--listen", self.listen_string(port), port=port)
        self.check_every_kind(proc, port, b"hello\n")

    def test_web_logs_one_line_per_failed_connection(self) -> None:
        """twistd web --listen twistls: logs each failed connection once and is silent about answered ones."""
        root = os.path.join(self.tmp, "site")
        os.mkdir(root)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write("hi")
        port = free_port()
        proc = self.start("web", "web", "--path", root, "--listen", self.listen_string(port), port=port)
        self.check_every_kind(proc, port, b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")

    def test_curl_http2_without_close_notify_is_not_a_failure(self) -> None:
        """curl over HTTP/2, which closes TCP without close_notify after the response, leaves no failure line."""
        curl = shutil.which("curl")
        if curl is None or "HTTP2" not in subprocess.run([curl, "--version"], capture_output=True, text=True).stdout:
            self.skipTest("needs curl with HTTP/2")
        root = os.path.join(self.tmp, "site")
        os.mkdir(root)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write("hi")
        port = free_port()
        proc = self.start("web", "web", "--path", root, "--listen", self.listen_string(port), port=port)
        since = self.settle(proc)
        for _ in range(3):
            result = subprocess.run(
                [curl, "-sS", "--http2", "--cacert", self.p.cafile, "-o", "-", "-w", "%{http_version}",
                 f"https://localhost:{port}/index.html"],
                capture_output=True, text=True, timeout=30,
            )
            self.assertEqual((result.returncode, result.stdout), (0, "hi2"), result.stderr)
        time.sleep(0.8)
        text = _read(proc.log)[since:]  # type: ignore[attr-defined]
        self.assertEqual(text.count('"GET /index.html HTTP/2" 200'), 3, text)
        self.assertNotIn("failed", text)
        self.assertNotIn("ConnectionTruncatedError", text)

    def test_proxy_logs_one_line_per_failed_connection_and_no_factory_pairs(self) -> None:
        """twistd twistls proxy, both directions: one line per failed connection, no Starting/Stopping factory per connection."""
        backend = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
        backend.daemon_threads = True
        threading.Thread(target=backend.serve_forever, daemon=True).start()
        self.addCleanup(backend.server_close)
        self.addCleanup(backend.shutdown)
        backend_port = backend.server_address[1]
        port = free_port()
        proc = self.start(
            "proxy", "twistls", "proxy", "--listen", self.listen_string(port), "--connect", f"tcp:127.0.0.1:{backend_port}",
            port=port,
        )
        # The reverse proxy: plaintext in, verified twistls out (a wrapping factory per connection).
        plain = free_port()
        reverse = self.start(
            "reverse", "twistls", "proxy", "--listen", f"tcp:{plain}:interface=127.0.0.1",
            "--connect", f"twistls:host=localhost:port={port}:caFile={_esc(self.p.cafile)}",
            port=plain,
        )
        reverse_since = len(_read(reverse.log))  # type: ignore[attr-defined]
        self.check_every_kind(proc, port, b"hello\n")
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", plain), timeout=10) as s:
                s.sendall(b"through both\n")
                self.assertEqual(s.recv(100), b"through both\n")
        time.sleep(0.8)
        text = _read(reverse.log)[reverse_since:]  # type: ignore[attr-defined]
        self.assertNotIn("Starting factory", text)
        self.assertNotIn("Stopping factory", text)
        self.assertNotIn("failed", text)
        # A backend that fails verification: one line, from the backend's TLS layer.
        wrong = free_port()
        mismatch = self.start(
            "mismatch", "twistls", "proxy", "--listen", f"tcp:{wrong}:interface=127.0.0.1",
            "--connect", f"twistls:host=wrong.example:port={port}:caFile={_esc(self.p.cafile)}"
            f":endpoint=tcp\\:127.0.0.1\\:{port}",
            port=wrong,
        )
        # The start-up probe of the port was proxied too: wait for its line first.
        self.wait_until(lambda: "HostnameMismatchError" in _read(mismatch.log), mismatch.log)  # type: ignore[attr-defined]
        time.sleep(0.3)
        mismatch_since = len(_read(mismatch.log))  # type: ignore[attr-defined]
        with socket.create_connection(("127.0.0.1", wrong), timeout=10) as s:
            s.sendall(b"SECRET")
            self.assertEqual(s.recv(100), b"")
        self.wait_until(
            lambda: "HostnameMismatchError" in _read(mismatch.log)[mismatch_since:], mismatch.log  # type: ignore[attr-defined]
        )
        time.sleep(0.5)
        lines = [line for line in _read(mismatch.log)[mismatch_since:].splitlines() if "failed" in line]  # type: ignore[attr-defined]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f'TLS connection to 127.0.0.1:{port} (SNI "wrong.example") failed: HostnameMismatchError', lines[0])
