"""Real ``twistd`` processes on 127.0.0.1: ``twistd twistls echo``/``proxy`` and
``twistd web --listen twistls:...``, reached by Python ``ssl``, ``openssl
s_client`` and twistls clients, then stopped with SIGTERM.  Every wait is bounded."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import clientFromString
from twisted.trial.unittest import SkipTest, TestCase

from tests._e2e import free_port
from tests._pki import pki
from tests.tools.test_cli import _env
from twistls import HostnameMismatchError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def _esc(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"twistd exited with {proc.returncode}:\n{_read(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listening on {port} after {seconds}s:\n{_read(log)}")


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def run_twistd(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a twistd that is expected to exit by itself."""
    return subprocess.run(
        [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_env(),
    )


class TwistdTestCase(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.p = pki()
        self.tmp = tempfile.mkdtemp(prefix="twistls-twistd-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def start(self, name: str, *args: str, port: int) -> subprocess.Popen[bytes]:
        """Start ``twistd -n`` with ``args``; wait until ``port`` accepts; SIGTERM it in cleanup."""
        log = os.path.join(self.tmp, f"{name}.log")
        out = open(log, "wb")
        self.addCleanup(out.close)
        proc = subprocess.Popen(
            [sys.executable, "-c", TWISTD, "-n", "--pidfile=", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
            env=_env(),
        )
        self.addCleanup(self.stop, proc, log)
        proc.log = log  # type: ignore[attr-defined]
        wait_for_port(port, proc, log)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], log: str) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                raise AssertionError(f"twistd did not stop on SIGTERM:\n{_read(log)}")

    def assert_stops_cleanly(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        # twistd shuts down cleanly, then ends itself with the same signal.
        self.assertIn(proc.wait(timeout=20), (0, -signal.SIGTERM), _read(proc.log))  # type: ignore[attr-defined]
        text = _read(proc.log)  # type: ignore[attr-defined]
        self.assertIn("Main loop terminated", text)
        self.assertIn("Server Shut Down", text)
        self.assertNotIn("Traceback", text)

    def ssl_context(self, cafile: str | None = None) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=cafile or self.p.cafile)

    def tls_roundtrip(self, port: int, payload: bytes, *, hostname: str = "localhost", cafile: str | None = None) -> tuple[bytes, str]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with self.ssl_context(cafile).wrap_socket(raw, server_hostname=hostname) as s:
                s.sendall(payload)
                data = b""
                while len(data) < len(payload):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data, str(s.version())

    def openssl(self, port: int, hostname: str) -> tuple[int, bytes]:
        """``openssl s_client`` verifying ``hostname``; returns (status, output)."""
        exe = shutil.which("openssl")
        if exe is None:
            raise SkipTest("openssl command not installed")
        proc = subprocess.Popen(
            [exe, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-CAfile", self.p.cafile,
             "-verify_hostname", hostname, "-verify_return_error", "-quiet"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"ping from openssl\n")
            proc.stdin.flush()
            output = b""
            deadline = time.monotonic() + 20
            while b"ping from openssl" not in output and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    output += chunk
            return (0 if b"ping from openssl" in output else 1), output
        finally:
            proc.kill()
            proc.wait(timeout=10)


class EchoTests(TwistdTestCase):
    """``twistd -n twistls echo``."""

    def start_echo(self) -> tuple[subprocess.Popen[bytes], int, int]:
        tls_port, plain_port = free_port(), free_port()
        proc = self.start(
            "echo",
            "twistls",
            "echo",
            "--certificate", self.p.server.cert,
            "--private-key", self.p.server.key,
            "--interface", "127.0.0.1",
            "--port", str(tls_port),
            "--starttls-port", str(plain_port),
            "--handshake-timeout", "10",
            port=tls_port,
        )
        wait_for_port(plain_port, proc, proc.log)  # type: ignore[attr-defined]
        return proc, tls_port, plain_port

    @defer.inlineCallbacks
    def test_echo_with_three_clients_then_sigterm(self) -> None:
        """Python ssl, openssl s_client and a twistls client are echoed; a wrong name is refused; SIGTERM stops it."""
        proc, tls_port, plain_port = self.start_echo()
        data, version = self.tls_roundtrip(tls_port, b"hello from python ssl")
        self.assertEqual(data, b"hello from python ssl")
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.tls_roundtrip(tls_port, b"x", hostname="wrong.example")
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.tls_roundtrip(tls_port, b"x", cafile=self.p.other_cafile)

        status, output = self.openssl(tls_port, "localhost")
        self.assertEqual(status, 0, output)
        status, output = self.openssl(tls_port, "wrong.example")
        self.assertNotEqual(status, 0, output)

        endpoint = clientFromString(reactor, f"twistls:host=localhost:port={tls_port}:caFile={_esc(self.p.cafile)}")
        client = yield endpoint.connect(protocol.Factory.forProtocol(_Collector))
        client.transport.write(b"hello from twistls")
        data = yield client.until(len(b"hello from twistls"))
        self.assertEqual(data, b"hello from twistls")
        client.transport.loseConnection()
        yield client.lost
        wrong = clientFromString(
            reactor,
            f"twistls:host=wrong.example:port={tls_port}:caFile={_esc(self.p.cafile)}:endpoint=tcp\\:127.0.0.1\\:{tls_port}",
        )
        yield self.assertFailure(wrong.connect(protocol.Factory.forProtocol(_Collector)), HostnameMismatchError)

        # STARTTLS on the plaintext port.
        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as raw:
            raw.sendall(b"HELLO\r\n")
            self.assertTrue(_read_line(raw).startswith(b"ERR"))
            raw.sendall(b"STARTTLS\r\n")
            self.assertEqual(_read_line(raw), b"OK begin TLS\r\n")
            with self.ssl_context().wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"after starttls")
                self.assertEqual(s.recv(100), b"after starttls")

        self.assert_stops_cleanly(proc)


class EchoClientCertificateTests(TwistdTestCase):
    """``twistd -n twistls echo --listen twistls:... --client-ca CA`` requires client certificates on every port."""

    def ssl_context_with(self, leaf: Any) -> ssl.SSLContext:
        context = self.ssl_context()
        if leaf is not None:
            context.load_cert_chain(leaf.cert, leaf.key)
        return context

    def roundtrip(self, port: int, leaf: Any, *, starttls: bool = False) -> bytes:
        """Send b"ping" over TLS (after STARTTLS if asked) with ``leaf``'s certificate or none; return the echo."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            if starttls:
                raw.sendall(b"STARTTLS\r\n")
                self.assertEqual(_read_line(raw), b"OK begin TLS\r\n")
            with self.ssl_context_with(leaf).wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"ping")
                data = b""
                while len(data) < 4:
                    chunk = s.recv(100)
                    if not chunk:
                        break
                    data += chunk
                return data

    def test_listen_and_starttls_ports_require_a_client_certificate(self) -> None:
        """Both the --listen TLS port and the STARTTLS port refuse a client without a certificate and echo to one with it."""
        tls_port, plain_port = free_port(), free_port()
        listen = (
            f"twistls:{tls_port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}"
            ":interface=127.0.0.1"
        )
        proc = self.start(
            "echo-mtls", "twistls", "echo", "--listen", listen, "--client-ca", self.p.cafile,
            "--interface", "127.0.0.1", "--starttls-port", str(plain_port), port=tls_port,
        )
        wait_for_port(plain_port, proc, proc.log)  # type: ignore[attr-defined]
        for starttls, port in ((False, tls_port), (True, plain_port)):
            with self.assertRaises(ssl.SSLError, msg=f"starttls={starttls}") as caught:
                self.roundtrip(port, None, starttls=starttls)
            self.assertIn("CERTIFICATE_REQUIRED", str(caught.exception).upper().replace(" ", "_"))
            self.assertEqual(self.roundtrip(port, self.p.client, starttls=starttls), b"ping")
        self.assert_stops_cleanly(proc)


def _read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


class _Collector(protocol.Protocol):
    def connectionMade(self) -> None:
        self.data = b""
        self.lost: defer.Deferred[Any] = defer.Deferred()
        self._want = 0
        self._waiter: defer.Deferred[bytes] | None = None

    def until(self, size: int) -> defer.Deferred[bytes]:
        self._want = size
        self._waiter = defer.Deferred()
        self._check()
        return self._waiter

    def _check(self) -> None:
        if self._waiter is not None and len(self.data) >= self._want:
            waiter, self._waiter = self._waiter, None
            waiter.callback(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback([reason])


class WebTests(TwistdTestCase):
    """``twistd -n web --listen twistls:...``."""

    def test_web_serves_a_file_to_a_verifying_client(self) -> None:
        """twistd web over a twistls endpoint serves a file to a verifying HTTPS client, and not to a wrong-CA one."""
        root = os.path.join(self.tmp, "site")
        os.mkdir(root)
        with open(os.path.join(root, "hello.txt"), "w") as f:
            f.write("served over twistls\n")
        port = free_port()
        listen = f"twistls:{port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}:interface=127.0.0.1"
        proc = self.start("web", "web", "--path", root, "--listen", listen, port=port)
        url = f"https://localhost:{port}/hello.txt"
        with urllib.request.urlopen(url, context=self.ssl_context(), timeout=15) as response:
            self.assertEqual(response.status, 200)
            self.assertEqual(response.read(), b"served over twistls\n")
        with self.assertRaises(urllib.error.URLError) as caught:
            urllib.request.urlopen(url, context=self.ssl_context(self.p.other_cafile), timeout=15)
        self.assertIsInstance(caught.exception.reason, ssl.SSLCertVerificationError)
        self.assert_stops_cleanly(proc)


class ProxyTests(TwistdTestCase):
    """``twistd -n twistls proxy`` in both directions, chained to an echo server."""

    def test_tls_to_plain_to_tls_chain(self) -> None:
        """client -TLS-> proxy -plain-> reverse proxy -verified TLS-> echo: bytes come back intact."""
        echo_port, plain_port, front_port = free_port(), free_port(), free_port()
        echo = self.start(
            "echo", "twistls", "echo", "--certificate", self.p.server.chain, "--port", str(echo_port), port=echo_port
        )
        reverse = self.start(
            "reverse",
            "twistls",
            "proxy",
            "--listen", f"tcp:{plain_port}:interface=127.0.0.1",
            "--connect", f"twistls:host=localhost:port={echo_port}:caFile={_esc(self.p.cafile)}",
            port=plain_port,
        )
        front = self.start(
            "front",
            "twistls",
            "proxy",
            "--listen",
            f"twistls:{front_port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}:interface=127.0.0.1",
            "--connect", f"tcp:127.0.0.1:{plain_port}",
            "--handshake-timeout", "10",
            port=front_port,
        )
        payload = os.urandom(1 << 20)
        data, _ = self.tls_roundtrip(front_port, payload)
        self.assertEqual(len(data), len(payload))
        self.assertEqual(data, payload)
        for proc in (front, reverse, echo):
            self.assert_stops_cleanly(proc)

    def test_reverse_proxy_refuses_a_wrong_name(self) -> None:
        """A reverse proxy expecting another name closes the plaintext client without a byte and logs why."""
        echo_port, plain_port = free_port(), free_port()
        self.start("echo", "twistls", "echo", "--certificate", self.p.server.chain, "--port", str(echo_port), port=echo_port)
        reverse = self.start(
            "reverse",
            "twistls",
            "proxy",
            "--listen", f"tcp:{plain_port}:interface=127.0.0.1",
            "--connect",
            f"twistls:host=wrong.example:port={echo_port}:caFile={_esc(self.p.cafile)}"
            f":endpoint=tcp\\:127.0.0.1\\:{echo_port}",
            port=plain_port,
        )
        with socket.create_connection(("127.0.0.1", plain_port), timeout=15) as s:
            s.sendall(b"SECRET")
            self.assertEqual(s.recv(100), b"")
        deadline = time.monotonic() + 10
        while "wrong.example" not in _read(reverse.log) and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.1)
        self.assertIn("wrong.example", _read(reverse.log))  # type: ignore[attr-defined]


class BadOptionTests(TwistdTestCase):
    """Bad options end twistd with a one-line error, not a traceback."""

    def test_bad_options(self) -> None:
        """Missing certificate, mismatched key, unknown or repeated keywords, empty pins and conflicting options each end twistd with an error naming them."""
        p = self.p
        cases = [
            (("twistls", "echo", "--certificate", "/no/such/cert.pem"), "/no/such/cert.pem"),
            (("twistls", "echo", "--certificate", p.server.cert, "--private-key", p.client.key), "private key"),
            (("twistls", "proxy", "--listen", f"twistls:0:certificate={_esc(p.server.chain)}:colour=blue",
              "--connect", "tcp:127.0.0.1:1"), "colour"),
            (("twistls", "proxy", "--listen", f"twistls:0:certificate={_esc(p.server.chain)}:handshakeTimeout=5"
              ":handshakeTimeout=none", "--connect", "tcp:127.0.0.1:1"), "handshakeTimeout"),
            (("twistls", "proxy", "--listen", f"twistls:0:certificate={_esc(p.server.chain)}",
              "--connect", f"twistls:host=localhost:port=1:caFile={_esc(p.cafile)}:pins=,"), "pins"),
            (("twistls", "echo", "--listen", f"twistls:0:certificate={_esc(p.server.chain)}",
              "--certificate", p.server.chain), "--certificate"),
            (("web", "--path", ".", "--listen", f"twistls:0:certificate={_esc(p.server.chain)}:caFile={_esc(p.cafile)}"
              ":requireClientCertificate=yes:requireClientCertificate=no"), "requireClientCertificate"),
        ]
        for args, needle in cases:
            result = run_twistd(*args)
            self.assertNotEqual(result.returncode, 0, args)
            output = result.stdout + result.stderr
            if args[0] == "twistls":  # twistd web prints a traceback for any bad --listen; the last line still names it
                self.assertNotIn("Traceback", output)
            last = output.strip().splitlines()[-1]
            self.assertIn(needle, last, args)
