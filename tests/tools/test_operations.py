"""Operating a twistls server under real ``twistd`` processes on 127.0.0.1 (issue 15):
busy ports, SIGHUP reloads, encrypted keys, one-line start-up errors, and the
STARTTLS cleartext deadline.  Every wait is bounded; every child is killed in cleanup."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._pki import pki
from tests.tools.test_twistd import TwistdTestCase, _esc, _read, _read_line, free_port, run_twistd



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

    def test_web_listen_string_exits_at_once_naming_the_port(self) -> None:
        """twistd web --listen twistls: on a busy port exits 1 at once with one critical line naming the port, no traceback."""
        port = _busy_port(self)
        listen = f"twistls:{port}:certificate={_esc(self.p.server.chain)}:interface=127.0.0.1"
        started = time.monotonic()
        result = run_twistd("web", "--path", self.tmp, "--listen", listen, timeout=30)
        self.assertLess(time.monotonic() - started, 25)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        errors = [line for line in _lines(result) if "#critical]" in line or "#error]" in line]
        self.assertEqual(len(errors), 1, result.stdout + result.stderr)
        self.assertIn(f"cannot listen on 127.0.0.1:{port}: Address already in use", errors[0])
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_free_port_keeps_serving(self) -> None:
        """The same echo command on a free port keeps running and serving (the twin of the busy-port test)."""
        port = free_port()
        proc = self.start("echo", "twistls", "echo", "--certificate", self.p.server.chain, "--port", str(port), port=port)
        data, _ = self.tls_roundtrip(port, b"still serving")
        self.assertEqual(data, b"still serving")
        self.assertIsNone(proc.poll())


def _peer_der(port: int, server_name: str = "localhost") -> bytes:
    """The DER certificate the server on ``port`` sends for ``server_name`` (not verified: only compared)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _copy(source: str, target: str) -> None:
    with open(source, "rb") as f:
        data = f.read()
    with open(target + ".tmp", "wb") as f:
        f.write(data)
    os.chmod(target + ".tmp", 0o600)
    os.replace(target + ".tmp", target)


def _wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Poll ``predicate`` every 0.1 s for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


class SighupReloadTests(TwistdTestCase):
    """``kill -HUP`` renews the certificate of every ``twistls:`` server, under any twistd plugin."""

    def renew(self, proc: subprocess.Popen[bytes], port: int, live: str, server_name: str = "localhost") -> None:
        """Swap ``live`` for the other.example certificate, SIGHUP, and check it is served and logged;
        then swap in garbage, SIGHUP, and check the old one stays, with one [twistls#error] line."""
        self.assertEqual(_peer_der(port, server_name), self.p.server.der)
        _copy(self.p.wrong_name_server.chain, live)
        proc.send_signal(signal.SIGHUP)
        self.assertTrue(_wait_for(lambda: _peer_der(port, server_name) == self.p.wrong_name_server.der), _read(proc.log))  # type: ignore[attr-defined]
        self.assertTrue(_wait_for(lambda: "notAfter" in _read(proc.log)), _read(proc.log))  # type: ignore[attr-defined]
        (line,) = [line for line in _read(proc.log).splitlines() if "reloaded" in line]  # type: ignore[attr-defined]
        self.assertIn("[twistls#info]", line)
        self.assertIn("DNS:other.example", line)
        self.assertIn("subject", line)

        with open(live, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        proc.send_signal(signal.SIGHUP)
        self.assertTrue(_wait_for(lambda: "reload failed" in _read(proc.log)), _read(proc.log))  # type: ignore[attr-defined]
        text = _read(proc.log)  # type: ignore[attr-defined]
        (failed,) = [line for line in text.splitlines() if "reload failed" in line]
        self.assertIn("[twistls#error]", failed)
        self.assertIn(live, failed)
        self.assertNotIn("[stderr#error]", text)
        self.assertEqual(_peer_der(port, server_name), self.p.wrong_name_server.der)
        self.assertIsNone(proc.poll())
        self.assert_stops_cleanly(proc)

    def test_twistd_web_listen_string_reloads_on_sighup(self) -> None:
        """twistd web --listen twistls:... survives SIGHUP, serves the renewed certificate, and keeps it when the new file is bad."""
        live = os.path.join(self.tmp, "live.pem")
        _copy(self.p.server.chain, live)
        port = free_port()
        listen = f"twistls:{port}:certificate={_esc(live)}:interface=127.0.0.1"
        proc = self.start("web", "web", "--path", self.tmp, "--listen", listen, port=port)
        self.renew(proc, port, live)

    def test_twistd_twistls_echo_certificate_reloads_on_sighup(self) -> None:
        """twistd twistls echo --certificate reloads on SIGHUP through the same handler, logged once per reload."""
        live = os.path.join(self.tmp, "live.pem")
        _copy(self.p.server.chain, live)
        port = free_port()
        proc = self.start("echo", "twistls", "echo", "--certificate", live, "--port", str(port), port=port)
        self.renew(proc, port, live)


def _encrypted_copy(testcase: TwistdTestCase, key_path: str, passphrase: bytes) -> str:
    """A copy of ``key_path`` encrypted with ``passphrase``, in the test's directory."""
    from cryptography.hazmat.primitives import serialization

    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    path = os.path.join(testcase.tmp, "encrypted.key")
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(passphrase),
            )
        )
    os.chmod(path, 0o600)
    return path


def _secret_file(testcase: TwistdTestCase, name: str, content: bytes) -> str:
    path = os.path.join(testcase.tmp, name)
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, 0o600)
    return path


class PassphraseFileTests(TwistdTestCase):
    """Encrypted private keys under twistd: ``passphraseFile=`` and ``--passphrase-file``."""

    SECRET = b"correct horse battery staple"

    def test_encrypted_key_serves_under_web_and_echo(self) -> None:
        """twistd web (passphraseFile=) and twistd twistls echo (--passphrase-file) serve with an encrypted key; the passphrase is never logged."""
        key = _encrypted_copy(self, self.p.server.key, self.SECRET)
        secret = _secret_file(self, "passphrase.txt", self.SECRET + b"\n")
        web_port, echo_port = free_port(), free_port()
        listen = (
            f"twistls:{web_port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(key)}"
            f":passphraseFile={_esc(secret)}:interface=127.0.0.1"
        )
        web = self.start("web", "web", "--path", self.tmp, "--listen", listen, port=web_port)
        echo = self.start(
            "echo", "twistls", "echo", "--certificate", self.p.server.cert, "--private-key", key,
            "--passphrase-file", secret, "--port", str(echo_port), port=echo_port,
        )
        self.assertEqual(_peer_der(web_port), self.p.server.der)
        data, _ = self.tls_roundtrip(echo_port, b"encrypted key")
        self.assertEqual(data, b"encrypted key")
        for proc in (web, echo):
            proc.send_signal(signal.SIGHUP)  # a reload re-reads the passphrase file
            self.assertTrue(_wait_for(lambda: "reloaded" in _read(proc.log)), _read(proc.log))  # type: ignore[attr-defined]
            self.assertNotIn(self.SECRET.decode(), _read(proc.log))  # type: ignore[attr-defined]
            self.assert_stops_cleanly(proc)

    def test_missing_or_wrong_passphrase_is_one_line(self) -> None:
        """Without a passphrase, or with a wrong one, twistd exits with one line naming the setting to fix."""
        key = _encrypted_copy(self, self.p.server.key, self.SECRET)
        wrong = _secret_file(self, "wrong.txt", b"wrong\n")
        cert = self.p.server.cert
        base = f"twistls:0:certificate={_esc(cert)}:privateKey={_esc(key)}:interface=127.0.0.1"
        cases = [
            (("web", "--path", ".", "--listen", base), "passphraseFile=FILE"),
            (("web", "--path", ".", "--listen", f"{base}:passphraseFile={_esc(wrong)}"), f"passphraseFile={wrong!r}"),
            (("twistls", "echo", "--certificate", cert, "--private-key", key), "--passphrase-file FILE"),
            (("twistls", "echo", "--certificate", cert, "--private-key", key, "--passphrase-file", wrong),
             f"--passphrase-file {wrong!r}"),
            (("twistls", "proxy", "--listen", base, "--connect", "tcp:127.0.0.1:1", "--passphrase-file", wrong),
             f"passphraseFile={wrong!r}"),
        ]
        for args, needle in cases:
            result = run_twistd(*args)
            self.assertNotEqual(result.returncode, 0, args)
            lines = _lines(result)
            self.assertEqual(len(lines), 1, result.stdout + result.stderr)
            self.assertIn(needle, lines[0])
            self.assertNotIn(self.SECRET.decode(), lines[0])


class StartupErrorTests(TwistdTestCase):
    """Every configuration error at start-up is one line naming the setting and the file, under every entry point."""

    def test_each_configuration_error_is_one_line(self) -> None:
        """twistd web --listen twistls:... and twistd twistls echo|proxy end with exit 1 and one line naming setting and file."""
        p = self.p
        garbage = _secret_file(self, "not-a-ca.pem", b"not a certificate\n")
        cert, mismatched = p.server.cert, p.client.key
        web = ("web", "--path", ".", "--listen")
        cases = [
            ((*web, "twistls:0:certificate=nope.pem"), ("certificate=", "nope.pem")),
            ((*web, f"twistls:0:certificate={_esc(cert)}:privateKey={_esc(mismatched)}"), ("privateKey=", mismatched)),
            ((*web, f"twistls:0:certificate={_esc(p.server.chain)}:caFile={_esc(garbage)}"), ("caFile=", garbage)),
            ((*web, f"twistls:0:certificate={_esc(p.server.chain)}:colour=blue"), ("colour", "twistls:0")),
            (("twistls", "echo", "--certificate", "nope.pem"), ("--certificate", "nope.pem")),
            (("twistls", "echo", "--certificate", cert, "--private-key", mismatched), ("--private-key", mismatched)),
            (("twistls", "echo", "--certificate", p.server.chain, "--client-ca", garbage), ("--client-ca", garbage)),
            (("twistls", "echo", "--certificate", p.server.chain, "--passphrase-file", "/no/such/file"),
             ("--passphrase-file", "/no/such/file")),
            (("twistls", "proxy", "--listen", f"twistls:0:certificate={_esc(cert)}:privateKey={_esc(mismatched)}",
              "--connect", "tcp:127.0.0.1:1"), ("privateKey=", mismatched)),
            (("twistls", "proxy", "--listen", "tcp:0", "--connect",
              f"twistls:host=localhost:port=1:caFile={_esc(garbage)}"), ("caFile=", garbage)),
        ]
        for args, needles in cases:
            result = run_twistd(*args)
            self.assertEqual(result.returncode, 1, args)
            lines = _lines(result)
            self.assertEqual(len(lines), 1, f"{args}: {result.stdout + result.stderr}")
            for needle in needles:
                self.assertIn(needle, lines[0], args)

    def test_good_configuration_starts(self) -> None:
        """The same entry points with good files start and serve (the twin of the error test)."""
        port = free_port()
        listen = f"twistls:{port}:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}:interface=127.0.0.1"
        proc = self.start("web", "web", "--path", self.tmp, "--listen", listen, port=port)
        self.assertEqual(_peer_der(port), self.p.server.der)
        self.assert_stops_cleanly(proc)


def _read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took (bounded by ``seconds``)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    except ConnectionResetError:  # an aborted connection is closed too
        pass
    return data, time.monotonic() - started


class StartTLSDeadlineTests(TwistdTestCase):
    """The echo server's STARTTLS port bounds the cleartext phase with the handshake timeout."""

    def test_silent_cleartext_client_is_closed_and_a_prompt_one_upgrades(self) -> None:
        """A client that never sends STARTTLS is closed after --handshake-timeout; one that sends it in time upgrades and echoes."""
        tls_port, plain_port = free_port(), free_port()
        proc = self.start(
            "echo", "twistls", "echo", "--certificate", self.p.server.chain, "--port", str(tls_port),
            "--starttls-port", str(plain_port), "--handshake-timeout", "1", port=tls_port,
        )
        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as silent:
            data, waited = _read_until_closed(silent, 15)
        self.assertIn(b"ERR timed out waiting for STARTTLS", data)
        self.assertLess(waited, 10)
        self.assertTrue(_wait_for(lambda: "sent no STARTTLS" in _read(proc.log)), _read(proc.log))  # type: ignore[attr-defined]

        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as raw:
            raw.sendall(b"STARTTLS\r\n")
            line = _read_line(raw)
            self.assertEqual(line, b"OK begin TLS\r\n")
            with self.ssl_context().wrap_socket(raw, server_hostname="localhost") as tls:
                time.sleep(1.5)  # past the cleartext deadline: it no longer applies
                tls.sendall(b"upgraded")
                self.assertEqual(tls.recv(100), b"upgraded")
        self.assert_stops_cleanly(proc)


class _CountingEcho:
    """A plaintext echo backend on 127.0.0.1 in a thread, counting accepted connections."""

    def __init__(self, testcase: TestCase) -> None:
        import threading

        self.accepted = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        testcase.addCleanup(self.stop)

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.settimeout(10)
            try:
                data = conn.recv(65536)
                if data:
                    conn.sendall(data)
            except OSError:
                pass
            finally:
                conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


class ProxyHandshakeFirstTests(TwistdTestCase):
    """``twistd twistls proxy`` dials its backend only after the TLS handshake, on twistls and on Twisted's ssl: listeners."""

    def test_idle_tcp_clients_hold_no_backend_connection(self) -> None:
        """Idle TCP clients of an ssl: or twistls: listener make no backend connection; a TLS client is proxied."""
        for kind in ("ssl", "twistls"):
            backend = _CountingEcho(self)
            port = free_port()
            if kind == "ssl":
                listen = f"ssl:{port}:privateKey={_esc(self.p.server.key)}:certKey={_esc(self.p.server.cert)}:interface=127.0.0.1"
            else:
                listen = f"twistls:{port}:certificate={_esc(self.p.server.chain)}:interface=127.0.0.1"
            proc = self.start(f"proxy-{kind}", "twistls", "proxy", "--listen", listen,
                              "--connect", f"tcp:127.0.0.1:{backend.port}", port=port)
            idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
            try:
                time.sleep(1.0)
                self.assertEqual(backend.accepted, 0, kind)
                data, _ = self.tls_roundtrip(port, b"through the proxy")
                self.assertEqual(data, b"through the proxy", kind)
                self.assertEqual(backend.accepted, 1, kind)
            finally:
                for sock in idle:
                    sock.close()
            self.assert_stops_cleanly(proc)


class SniDirectoryReloadTests(TwistdTestCase):
    """``certificate=`` plus ``sniDirectory=``: SIGHUP re-scans the directory."""

    def test_sighup_drops_removed_names_and_adds_new_ones(self) -> None:
        """After SIGHUP a removed <name>.pem falls back to certificate= and a new one is served for its name."""
        directory = os.path.join(self.tmp, "sni")
        os.mkdir(directory)
        _copy(self.p.wrong_name_server.chain, os.path.join(directory, "other.example.pem"))
        port = free_port()
        listen = f"twistls:{port}:certificate={_esc(self.p.server.chain)}:sniDirectory={_esc(directory)}:interface=127.0.0.1"
        proc = self.start("web", "web", "--path", self.tmp, "--listen", listen, port=port)
        self.assertEqual(_peer_der(port, "other.example"), self.p.wrong_name_server.der)
        self.assertEqual(_peer_der(port, "added.example"), self.p.server.der)
        os.remove(os.path.join(directory, "other.example.pem"))
        _copy(self.p.wrong_name_server.chain, os.path.join(directory, "added.example.pem"))
        proc.send_signal(signal.SIGHUP)
        self.assertTrue(_wait_for(lambda: _peer_der(port, "added.example") == self.p.wrong_name_server.der), _read(proc.log))  # type: ignore[attr-defined]
        self.assertEqual(_peer_der(port, "other.example"), self.p.server.der)
        self.assertIn("(and 1 SNI names)", _read(proc.log))  # type: ignore[attr-defined]
        self.assert_stops_cleanly(proc)


class ReloadIsolationTests(SynchronousTestCase):
    """One factory's failing reload does not stop the others."""

    def test_unexpected_exception_does_not_stop_the_other_factories(self) -> None:
        """A reload raising RuntimeError is logged as one line and the next factory still reloads; a ConfigurationError likewise."""
        import logging

        from twistls.context import ServerContextFactory, _reload_each
        from twistls.errors import ConfigurationError

        reloaded: list[str] = []

        class Broken(ServerContextFactory):
            def _make_handle(self):  # type: ignore[no-untyped-def]
                if reloaded:
                    raise self.failure
                return super()._make_handle()

        p = pki()
        first = Broken(p.server.chain)
        second = ServerContextFactory(p.server.chain)
        original = second.reload

        def record() -> None:
            original()
            reloaded.append("second")

        second.reload = record  # type: ignore[method-assign]
        for failure in (RuntimeError("boom"), ConfigurationError("bad file")):
            first.failure = failure  # type: ignore[attr-defined]
            reloaded[:] = ["armed"]
            with self.assertLogs("twistls", logging.INFO) as logs:
                _reload_each([first, second])
            self.assertEqual(reloaded, ["armed", "second"])
            errors = [line for line in logs.output if line.startswith("ERROR")]
            self.assertEqual(len(errors), 1, logs.output)
            self.assertIn("still serving the previous certificate", errors[0])
            self.assertIn(str(failure), errors[0])


def _v1_header(source: str, source_port: int, port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {source_port} {port}\r\n".encode("ascii")


def _v2_header(source: str, source_port: int, port: int) -> bytes:
    """A PROXY v2 header (PROXY command, TCP over IPv4) as a load balancer writes it."""
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + source_port.to_bytes(2, "big") + port.to_bytes(2, "big")
    return b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11" + len(addresses).to_bytes(2, "big") + addresses


class ProxyProtocolTests(TwistdTestCase):
    """``proxyProtocol=yes`` / ``--proxy-protocol``: a PROXY v1/v2 header before the TLS handshake."""

    def https_get(self, port: int, header: bytes) -> bytes:
        """Send ``header``, then GET /hello.txt over verified TLS; return the response."""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(header)
            with self.ssl_context().wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n")
                response = b""
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    response += chunk
                return response

    def test_web_sees_the_client_named_by_v1_and_v2_headers(self) -> None:
        """twistd web logs the client address of a v1 and a v2 header; no header, or none in time, is refused with one log line."""
        with open(os.path.join(self.tmp, "hello.txt"), "w") as f:
            f.write("behind a load balancer\n")
        port = free_port()
        listen = (
            f"twistls:endpoint=tcp\\:{port}\\:interface=127.0.0.1:certificate={_esc(self.p.server.chain)}"
            ":proxyProtocol=yes:handshakeTimeout=1"
        )
        proc = self.start("web", "web", "--path", self.tmp, "--listen", listen, port=port)
        for header, client in ((_v1_header("203.0.113.7", 56324, port), "203.0.113.7"),
                               (_v2_header("198.51.100.9", 40001, port), "198.51.100.9")):
            response = self.https_get(port, header)
            self.assertIn(b"200", response.split(b"\r\n", 1)[0])
            self.assertTrue(response.endswith(b"behind a load balancer\n"))
            self.assertTrue(_wait_for(lambda: f'"{client}"' in _read(proc.log)), _read(proc.log))  # type: ignore[attr-defined]

        with self.assertRaises((ssl.SSLError, OSError)):
            self.https_get(port, b"")  # a ClientHello where the header belongs
        with socket.create_connection(("127.0.0.1", port), timeout=10) as silent:
            _, waited = _read_until_closed(silent, 15)
        self.assertLess(waited, 10)
        text = _read(proc.log)  # type: ignore[attr-defined]
        refused = [line for line in text.splitlines() if "PROXY protocol" in line]
        self.assertEqual(len(refused), 2, text)
        self.assertIn("no PROXY header", refused[0])
        self.assertIn("no complete PROXY header within 1 s", refused[1])
        self.assert_stops_cleanly(proc)

    def test_echo_proxy_protocol_flag_on_tls_and_starttls_ports(self) -> None:
        """twistd twistls echo --proxy-protocol reads the header on the TLS and the STARTTLS port, and refuses a client without one."""
        tls_port, plain_port = free_port(), free_port()
        proc = self.start(
            "echo", "twistls", "echo", "--certificate", self.p.server.chain, "--port", str(tls_port),
            "--starttls-port", str(plain_port), "--proxy-protocol", port=tls_port,
        )
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
            raw.sendall(_v2_header("192.0.2.1", 1234, tls_port))
            with self.ssl_context().wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"proxied")
                self.assertEqual(tls.recv(100), b"proxied")
        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as raw:
            raw.sendall(_v1_header("192.0.2.2", 4321, plain_port) + b"STARTTLS\r\n")
            self.assertEqual(raw.recv(100), b"OK begin TLS\r\n")
        with socket.create_connection(("127.0.0.1", plain_port), timeout=10) as raw:
            raw.sendall(b"STARTTLS\r\n")
            data, _ = _read_until_closed(raw, 10)
            self.assertEqual(data, b"")
        self.assertTrue(_wait_for(lambda: "no PROXY header" in _read(proc.log)), _read(proc.log))  # type: ignore[attr-defined]
        self.assert_stops_cleanly(proc)


class VersionTests(TwistdTestCase):
    """``twistls --version`` and ``twistd twistls --version``."""

    def test_cli_and_twistd_plugin_print_the_versions(self) -> None:
        """Both print one line with the twistls, Twisted, M2Crypto and OpenSSL versions and exit 0."""
        import sys

        from twistls import __version__

        cli = subprocess.run([sys.executable, "-m", "twistls", "--version"], capture_output=True, text=True, timeout=60)
        plugin = run_twistd("twistls", "--version")
        for result in (cli, plugin):
            self.assertEqual(result.returncode, 0, result.stderr)
            lines = _lines(result)
            self.assertEqual(len(lines), 1, lines)
            self.assertTrue(lines[0].startswith(f"twistls {__version__} (Twisted "), lines)
            self.assertIn("M2Crypto", lines[0])
            self.assertIn("OpenSSL", lines[0])
        self.assertIn("--version", run_twistd("twistls", "--help").stdout)


class StartStatusTests(TwistdTestCase):
    """On start a server logs each certificate it serves and warns of one that expires within 14 days."""

    def soon_leaf(self, days: float) -> str:
        import datetime

        from tests._pki import HOSTS

        now = datetime.datetime.now(datetime.timezone.utc)
        return pki().leaf(f"soon{days:g}", pki().ca, *HOSTS, not_after=now + datetime.timedelta(days=days)).chain

    def wait_log(self, proc: subprocess.Popen[bytes], text: str) -> str:
        self.assertTrue(_wait_for(lambda: text in _read(proc.log)), _read(proc.log))  # type: ignore[attr-defined]
        time.sleep(0.3)
        return _read(proc.log)  # type: ignore[attr-defined]

    def test_echo_logs_status_and_one_expiry_warning(self) -> None:
        """twistd twistls echo with a certificate expiring in 5 days logs its status for both ports and warns once."""
        soon = self.soon_leaf(5)
        port, plain = free_port(), free_port()
        proc = self.start("echo", "twistls", "echo", "--certificate", soon, "--port", str(port),
                          "--starttls-port", str(plain), port=port)
        log = self.wait_log(proc, f"STARTTLS on 127.0.0.1:{plain}")
        status = [line for line in log.splitlines() if "serves the default certificate" in line]
        self.assertEqual(len(status), 2, status)
        self.assertIn(f"TLS on 127.0.0.1:{port} serves the default certificate from {soon!r}", status[0])
        for line in status:
            self.assertIn("[twistls#info]", line)
            self.assertIn("names DNS:localhost", line)
            self.assertIn("notAfter 20", line)
        warnings = [line for line in log.splitlines() if "expires in" in line]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("[twistls#warn]", warnings[0])
        self.assertRegex(warnings[0], r"expires in (4\.9|5\.0) days, on 20")
        self.assertIn("renew it, then send SIGHUP", warnings[0])

    def test_web_logs_status_of_every_sni_certificate_and_no_warning_for_a_far_expiry(self) -> None:
        """twistd web --listen twistls: with sniDirectory= names the default and each SNI certificate; only the near one is warned about."""
        sni = os.path.join(self.tmp, "sni")
        os.mkdir(sni)
        _copy(self.soon_leaf(2), os.path.join(sni, "soon.example.pem"))
        _copy(self.p.server.chain, os.path.join(sni, "far.example.pem"))
        port = free_port()
        listen = (f"twistls:{port}:interface=127.0.0.1:certificate={_esc(self.p.server.chain)}"
                  f":sniDirectory={_esc(sni)}")
        proc = self.start("web", "web", "--path", self.tmp, "--listen", listen, port=port)
        log = self.wait_log(proc, "SNI name soon.example")
        self.assertIn(f"TLS on 127.0.0.1:{port} serves the default certificate from {self.p.server.chain!r}", log)
        self.assertIn("serves SNI name far.example from", log)
        warnings = [line for line in log.splitlines() if "[twistls#warn] twistls: the certificate" in line]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("soon.example.pem", warnings[0])
        self.assertIn("expires in", warnings[0])
