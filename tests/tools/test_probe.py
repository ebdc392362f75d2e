"""``twistls probe`` as a replacement for ``openssl s_client``: pins and
fingerprints, client-certificate requests and mutual TLS, plaintext ports,
what a server accepts after a handshake failure, and streams as ``--cafile``.

Every server listens on 127.0.0.1; every wait is bounded (``timeout``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import tempfile
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._e2e import listen_tls
from tests._pki import pki
from tests.tools.test_cli import call_main, run_cli
from twistls import ServerContextFactory
from twistls.commands._probe import _regular_file, format_report, probe
from twistls.checker import Checker, spki_sha256
from twistls.errors import ConfigurationError


def _server(**kw: Any) -> ServerContextFactory:
    p = pki()
    return ServerContextFactory(p.server.cert, p.server.key, **kw)


class _Greeter(protocol.Protocol):
    """Sends the factory's greeting on connect and its reply to anything received."""

    def connectionMade(self) -> None:
        self.transport.write(self.factory.greeting)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(self.factory.reply)  # type: ignore[attr-defined]


class ProbeFeatureTests(TestCase):
    """probe() against real twistls and plaintext servers on 127.0.0.1."""

    timeout = 120

    def tls_port(self, **kw: Any) -> int:
        port, _ = listen_tls(self, _server(**kw))
        return port

    def plaintext_port(self, greeting: bytes, reply: bytes) -> int:
        factory = protocol.Factory.forProtocol(_Greeter)
        factory.greeting, factory.reply = greeting, reply  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def probe(self, port: int, **kw: Any) -> defer.Deferred[dict[str, Any]]:
        kw.setdefault("cafile", pki().cafile)
        kw.setdefault("timeout", 10.0)
        kw.setdefault("reconnect", False)
        return defer.ensureDeferred(probe(reactor, "localhost", port, **kw))

    # -- pins and fingerprints -------------------------------------------------

    @defer.inlineCallbacks
    def test_chain_rows_carry_fingerprint_pin_and_san(self) -> Any:
        """Each chain row has the certificate's SHA-256, its SPKI pin in hex and as sha256/<base64>, and its SAN list."""
        report = yield self.probe(self.tls_port())
        self.assertTrue(report["verified"], report)
        der = pki().server.der
        leaf = report["chain"][0]
        self.assertEqual(leaf["sha256"], hashlib.sha256(der).hexdigest())
        self.assertEqual(leaf["spki_sha256"], spki_sha256(der))
        spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.assertEqual(leaf["pin"], "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode())
        self.assertIn("DNS:localhost", leaf["san"])
        self.assertEqual(len({row["pin"] for row in report["chain"]}), len(report["chain"]))
        json.dumps(report)

    @defer.inlineCallbacks
    def test_reported_pin_is_what_pins_accepts(self) -> Any:
        """The reported pin normalises to the same pin as the hex digest, and another certificate's does not."""
        report = yield self.probe(self.tls_port())
        pin = report["chain"][0]["pin"]
        self.assertEqual(Checker(pins=[pin]).pins, Checker(pins=[spki_sha256(pki().server.der)]).pins)
        self.assertNotEqual(Checker(pins=[pin]).pins, Checker(pins=[spki_sha256(pki().client.der)]).pins)

    @defer.inlineCallbacks
    def test_text_report_shows_fingerprint_and_pin_of_every_certificate(self) -> Any:
        """The text report has a SHA-256 and an SPKI pin row for each certificate of the chain."""
        report = yield self.probe(self.tls_port())
        text = format_report(report)
        for i, cert in enumerate(report["chain"]):
            self.assertIn(f"chain [{i}] SHA-256", text)
            self.assertIn(cert["sha256"], text)
            self.assertIn(cert["pin"], text)

    # -- client certificates -----------------------------------------------------

    @defer.inlineCallbacks
    def test_client_certificate_request_names_acceptable_cas(self) -> Any:
        """A server with client CAs is reported as requesting a client certificate, with the CA it accepts."""
        report = yield self.probe(self.tls_port(client_cafile=pki().cafile))
        self.assertTrue(report["client_certificate_requested"])
        self.assertEqual(len(report["client_ca_names"]), 1)
        self.assertIn("twistls test CA", report["client_ca_names"][0])
        text = format_report(report)
        self.assertIn("client certificate requested (acceptable CAs: ", text)
        self.assertIn("none sent", text)

    @defer.inlineCallbacks
    def test_no_client_certificate_request_from_plain_server(self) -> Any:
        """A server without client CAs is reported as not requesting a client certificate."""
        report = yield self.probe(self.tls_port())
        self.assertFalse(report["client_certificate_requested"])
        self.assertEqual(report["client_ca_names"], [])
        self.assertIn("not requested", format_report(report))

    @defer.inlineCallbacks
    def test_mutual_tls_with_certificate_and_private_key(self) -> Any:
        """Against a TLS 1.2 server requiring a client certificate, the probe is rejected without one and verified with one."""
        p = pki()
        port = self.tls_port(client_cafile=p.cafile, maximum_version="TLSv1.2")
        without = yield self.probe(port)
        self.assertEqual(without["verdict"], "rejected")
        self.assertTrue(without["client_certificate_requested"])
        self.assertIsNone(without["server_accepts"])  # a missing certificate is not a handshake mismatch
        report = yield self.probe(port, certificate=p.client.cert, private_key=p.client.key)
        self.assertTrue(report["verified"], report)
        self.assertIn(f"sent {p.client.cert}", format_report(report))

    # -- plaintext ports -------------------------------------------------------------

    @defer.inlineCallbacks
    def test_smtp_port_is_plaintext_and_suggests_starttls_smtp(self) -> Any:
        """An SMTP greeting instead of TLS gives verdict plaintext, quotes the greeting and suggests --starttls smtp."""
        port = self.plaintext_port(b"220 mail.example ESMTP ready\r\n", b"500 what\r\n")
        report = yield self.probe(port)
        self.assertEqual(report["verdict"], "plaintext")
        self.assertEqual(report["suggest_starttls"], "smtp")
        self.assertEqual(report["plaintext"], "220 mail.example ESMTP ready")
        self.assertIn("--starttls smtp", format_report(report))
        self.assertIsNone(report["server_accepts"])

    @defer.inlineCallbacks
    def test_imap_and_pop3_ports_suggest_their_starttls(self) -> Any:
        """IMAP and POP3 greetings suggest --starttls imap and --starttls pop3."""
        for greeting, expected in ((b"* OK IMAP4rev1 ready\r\n", "imap"), (b"+OK POP3 ready\r\n", "pop3")):
            report = yield self.probe(self.plaintext_port(greeting, b""))
            self.assertEqual(report["verdict"], "plaintext", greeting)
            self.assertEqual(report["suggest_starttls"], expected)

    @defer.inlineCallbacks
    def test_http_port_is_plaintext_without_starttls_suggestion(self) -> Any:
        """A plaintext HTTP reply to the ClientHello is named HTTP, with no --starttls to suggest."""
        report = yield self.probe(self.plaintext_port(b"", b"HTTP/1.1 400 Bad Request\r\n\r\n"))
        self.assertEqual(report["verdict"], "plaintext")
        self.assertEqual(report["plaintext_protocol"], "HTTP")
        self.assertIsNone(report["suggest_starttls"])
        self.assertIn("does not speak TLS", report["reason"])

    @defer.inlineCallbacks
    def test_plaintext_exit_status_is_4(self) -> Any:
        """python -m twistls probe exits 4 on a plaintext SMTP port and prints the --starttls to use."""
        port = self.plaintext_port(b"220 mail.example ESMTP ready\r\n", b"500 what\r\n")
        out, err, code = yield run_cli("probe", f"localhost:{port}", "--no-reconnect", "--timeout", "10")
        self.assertEqual(code, 4, out + err)
        self.assertIn(b"PLAINTEXT", out)
        self.assertIn(b"--starttls smtp", out)

    # -- what a server accepts ---------------------------------------------------------

    @defer.inlineCallbacks
    def test_handshake_failure_lists_the_groups_the_server_accepts(self) -> Any:
        """Against a P-521-only server the probe is rejected and reports P-521 as the one group accepted, outside the defaults."""
        report = yield self.probe(self.tls_port(groups="P-521"))
        self.assertEqual(report["verdict"], "rejected")
        accepts = report["server_accepts"]
        self.assertEqual(accepts["versions"], {"TLSv1.3": True, "TLSv1.2": True})
        self.assertEqual([g for g, ok in accepts["groups"].items() if ok], ["P-521"])
        self.assertIn("P-521", accepts["accepted_outside_defaults"])
        self.assertLessEqual(accepts["handshakes"], 24)
        self.assertIn("server accepts groups   : P-521", format_report(report))

    @defer.inlineCallbacks
    def test_handshake_failure_lists_versions_and_suites_the_server_accepts(self) -> Any:
        """Against a TLS 1.3 CCM-only server the report shows TLS 1.2 refused and only TLS_AES_128_CCM_SHA256 accepted."""
        report = yield self.probe(self.tls_port(minimum_version="TLSv1.3", ciphersuites="TLS_AES_128_CCM_SHA256"))
        accepts = report["server_accepts"]
        self.assertEqual(accepts["versions"], {"TLSv1.3": True, "TLSv1.2": False})
        self.assertEqual([s for s, ok in accepts["suites"].items() if ok], ["TLS_AES_128_CCM_SHA256"])
        self.assertEqual(accepts["accepted_outside_defaults"], ["TLS_AES_128_CCM_SHA256"])

    @defer.inlineCallbacks
    def test_no_extra_handshakes_after_success_or_verification_failure(self) -> Any:
        """A verified server and one failing only verification (wrong CA) get no server_accepts section."""
        verified = yield self.probe(self.tls_port())
        self.assertIsNone(verified["server_accepts"])
        untrusted = yield self.probe(self.tls_port(), cafile=pki().other_cafile)
        self.assertEqual(untrusted["verdict"], "rejected")
        self.assertIsNone(untrusted["server_accepts"])

    # -- streams as --cafile -------------------------------------------------------------

    @defer.inlineCallbacks
    def test_cafile_from_dev_fd_pipe_verifies(self) -> Any:
        """python -m twistls probe --cafile /dev/fd/N (a pipe holding the CA) verifies the server."""
        with open(pki().cafile, "rb") as f:
            ca = f.read()
        read_end, write_end = os.pipe()
        os.write(write_end, ca)
        os.close(write_end)
        self.addCleanup(os.close, read_end)
        port = self.tls_port()
        out, err, code = yield _run_with_fd(read_end, "probe", f"localhost:{port}", "--no-reconnect",
                                            "--cafile", f"/dev/fd/{read_end}")
        self.assertEqual(code, 0, out + err)
        self.assertIn(b"VERIFIED", out)


def _run_with_fd(fd: int, *argv: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
    """Run ``python -m twistls ARGV`` with ``fd`` inherited under the same number."""
    import sys

    from twisted.internet import error

    from tests.tools.test_cli import ROOT, _env

    done: defer.Deferred[tuple[bytes, bytes, int]] = defer.Deferred()
    out: list[bytes] = []
    err: list[bytes] = []

    class Collect(protocol.ProcessProtocol):
        def childDataReceived(self, child_fd: int, data: bytes) -> None:
            (out if child_fd == 1 else err).append(data)

        def processEnded(self, reason: Any) -> None:
            code = reason.value.exitCode if isinstance(reason.value, error.ProcessTerminated) else 0
            done.callback((b"".join(out), b"".join(err), code))

    reactor.spawnProcess(
        Collect(), sys.executable, [sys.executable, "-m", "twistls", *argv], env=_env(), path=ROOT,
        childFDs={0: "w", 1: "r", 2: "r", fd: fd},
    )
    return done


class RegularFileTests(SynchronousTestCase):
    """Non-regular --cafile/--certificate/--private-key paths are copied to private regular files."""

    def setUp(self) -> None:
        self.staging = tempfile.mkdtemp(prefix="twistls-test-probe-")
        self.addCleanup(shutil.rmtree, self.staging, True)

    def test_pipe_is_copied_to_a_private_regular_file(self) -> None:
        """A /dev/fd/N pipe is read once into a mode-0600 regular file holding the same bytes."""
        read_end, write_end = os.pipe()
        os.write(write_end, b"-----BEGIN CERTIFICATE-----\n")
        os.close(write_end)
        self.addCleanup(os.close, read_end)
        copy = _regular_file(f"/dev/fd/{read_end}", self.staging, "--cafile")
        assert copy is not None
        self.assertTrue(copy.startswith(self.staging))
        self.assertEqual(stat.S_IMODE(os.stat(copy).st_mode), 0o600)
        with open(copy, "rb") as f:
            self.assertEqual(f.read(), b"-----BEGIN CERTIFICATE-----\n")

    def test_regular_and_missing_files_are_passed_through(self) -> None:
        """A regular file and a missing path come back unchanged (the context factory reports a missing one)."""
        self.assertEqual(_regular_file(pki().cafile, self.staging, "--cafile"), pki().cafile)
        missing = os.path.join(self.staging, "nope.pem")
        self.assertEqual(_regular_file(missing, self.staging, "--cafile"), missing)
        self.assertIsNone(_regular_file(None, self.staging, "--cafile"))
        self.assertEqual(os.listdir(self.staging), [])

    def test_oversized_stream_is_a_configuration_error(self) -> None:
        """A stream longer than MAX_STREAM_BYTES raises ConfigurationError naming the option, and nothing is kept."""
        from twistls.commands import _probe

        self.patch(_probe, "MAX_STREAM_BYTES", 8)
        read_end, write_end = os.pipe()
        os.write(write_end, b"0123456789")
        os.close(write_end)
        self.addCleanup(os.close, read_end)
        with self.assertRaises(ConfigurationError) as caught:
            _regular_file(f"/dev/fd/{read_end}", self.staging, "--certificate")
        self.assertIn("--certificate", str(caught.exception))
        self.assertEqual(os.listdir(self.staging), [])

    def test_private_key_without_certificate_is_a_usage_error(self) -> None:
        """probe --private-key without --certificate exits 2 naming both options."""
        code, out = call_main("probe", "localhost:1", "--private-key", "key.pem")
        self.assertEqual(code, 2)
        self.assertIn("--private-key needs --certificate", out)


def _encrypted_key(directory: str, passphrase: bytes) -> str:
    """The test client key, encrypted with ``passphrase``, as a 0600 file in ``directory``."""
    with open(pki().client.key, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    path = os.path.join(directory, "client-encrypted.key")
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(passphrase),
            )
        )
    os.chmod(path, 0o600)
    return path


class ProbePassphraseFileTests(TestCase):
    """``twistls probe --passphrase-file`` opens an encrypted ``--private-key`` (the real CLI, as a subprocess)."""

    timeout = 120

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-probe-pass-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.key = _encrypted_key(self.dir, b"s3cret")

    def secret(self, name: str, content: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, 0o600)
        return path

    @defer.inlineCallbacks
    def test_encrypted_key_with_passphrase_file_verifies_and_errors_name_the_option(self) -> Any:
        """With the right passphrase file the mutual-TLS probe verifies; a missing, wrong or empty one exits 2 with one line naming --passphrase-file, never the passphrase."""
        p = pki()
        port, _ = listen_tls(self, _server(client_cafile=p.cafile, maximum_version="TLSv1.2"))
        base = ["probe", f"localhost:{port}", "--cafile", p.cafile, "--no-reconnect", "--timeout", "10",
                "--certificate", p.client.cert, "--private-key", self.key]
        out, err, code = yield run_cli(*base, "--passphrase-file", self.secret("pass.txt", b"s3cret\n"))
        self.assertEqual(code, 0, (out, err))
        self.assertIn(b"VERIFIED", out)
        cases = [
            ([], b"--passphrase-file"),  # encrypted, and no passphrase file: say which option opens it
            (["--passphrase-file", os.path.join(self.dir, "nope.txt")], b"no such file"),
            (["--passphrase-file", self.secret("wrong.txt", b"not-it\n")], b"wrong passphrase"),
            (["--passphrase-file", self.secret("empty.txt", b"")], b"empty"),
        ]
        for extra, expected in cases:
            out, err, code = yield run_cli(*base, *extra)
            self.assertEqual(code, 2, (extra, out, err))
            lines = [line for line in err.splitlines() if line.strip()]
            self.assertEqual(len(lines), 1, (extra, err))
            self.assertIn(b"--passphrase-file", lines[0])
            self.assertIn(expected, lines[0])
            self.assertNotIn(b"s3cret", err + out)
            self.assertNotIn(b"not-it", err + out)
        # Never on the command line: the option takes a file, and needs --certificate.
        code, text = call_main("probe", "localhost:1", "--passphrase-file", self.secret("p2.txt", b"x"))
        self.assertEqual(code, 2)
        self.assertIn("--passphrase-file needs --certificate", text)
