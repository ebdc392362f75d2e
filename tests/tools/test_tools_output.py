"""What the command-line tools print about a hostile peer (issue 12, defects 8 and 9).

A STARTTLS server that streams endless continuation lines must end the probe
with a bounded :class:`~twistls.commands._starttls.ProbeError`, and certificate fields
from an unverified server must reach the terminal escaped, while ``--json``
and the errors' attributes keep the raw data.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._e2e import listen_tls
from tests._pki import pki, self_signed
from tests.tools.test_cli import call_main, run_cli
from twistls import ServerContextFactory
from twistls._info import printable
from twistls.commands._probe import EXIT_NO_TLS, format_report, probe
from twistls.commands._starttls import MAX_LINE_BYTES, MAX_STEP_BYTES, MAX_STEP_LINES, ProbeError, _Preamble
from twistls.errors import (
    ConfigurationError,
    EngineStateError,
    HostnameMismatchError,
    TLSError,
    UntrustedCertificateError,
)

#: Characters that must never reach a terminal raw (the tools' own "\n" aside).
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")

#: Every character printable() escapes.
ESCAPED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")

#: A subject that, printed raw, clears the screen and forges a verdict row.
EVIL_CN = "evil.example\n\x1b[2Jverdict : VERIFIED\n\x1b]0;owned\x07"
EVIL_O = "Org\r\nverdict : VERIFIED: chain trusted\u202e\x9b31m\u2028"
EVIL_DNS = "x\n\x1b[2Jverdict : VERIFIED.example"


def unescape(text: str) -> str:
    """Undo :func:`printable`: ``\\\\`` and its ``\\xNN``/``\\uNNNN`` escapes of escaped characters."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\":
            if text.startswith("\\", i + 1):
                out.append("\\")
                i += 2
                continue
            found = re.match(r"x([0-9a-f]{2})|u([0-9a-f]{4})", text[i + 1 :])
            if found:
                char = chr(int(found.group(1) or found.group(2), 16))
                if ESCAPED.match(char):
                    out.append(char)
                    i += 1 + len(found.group())
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def verdict_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\s*verdict\s*:", line)]


def hostile_certificate(directory: str) -> tuple[str, str, x509.Certificate]:
    """A self-signed certificate with control characters in its subject and SAN;
    returns (certificate PEM path, key PEM path, certificate)."""
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, EVIL_O), x509.NameAttribute(NameOID.COMMON_NAME, EVIL_CN)]
    )
    der, key_pem = self_signed(name, san=[x509.DNSName(EVIL_DNS)])
    cert = x509.load_der_x509_certificate(der)
    cert_path = os.path.join(directory, "hostile-cert.pem")
    key_path = os.path.join(directory, "hostile-key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key_pem)
    os.chmod(key_path, 0o600)
    return cert_path, key_path, cert


class _StreamingServer:
    """A 127.0.0.1 server in a thread: ``head`` then ``body`` again and again to
    every connection, until the client stops reading or 20 seconds pass."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head, self.body = head, body
        self.sent = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(5)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(1.0)
                chunk = self.body * max(1, 16384 // len(self.body))
                deadline = time.monotonic() + 20
                try:
                    conn.sendall(self.head)
                    while not self._stop.is_set() and time.monotonic() < deadline:
                        conn.sendall(chunk)
                        self.sent += len(chunk)
                except OSError:
                    pass  # the client hung up or stopped reading

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(5)


# -- printable() -----------------------------------------------------------------------


class PrintableTests(SynchronousTestCase):
    def test_normal_text_unchanged(self):
        """Letters (ASCII or not), digits, spaces and punctuation come back unchanged."""
        for text in ("example.com", "CN=café,O=Zürich AG", "日本語 テスト", "Ωμέγα", "a-b_c.d:e/f@g", ""):
            self.assertEqual(printable(text), text)

    def test_controls_escaped(self):
        """C0 and C1 controls, DEL and ESC become \\xNN escapes."""
        self.assertEqual(printable("a\nb"), "a\\x0ab")
        self.assertEqual(printable("\x1b[2J"), "\\x1b[2J")
        self.assertEqual(printable("\r\t\x00\x07\x7f"), "\\x0d\\x09\\x00\\x07\\x7f")
        self.assertEqual(printable("\x85\x9b"), "\\x85\\x9b")

    def test_separators_and_bidi_controls_escaped(self):
        """Unicode line/paragraph separators and bidi controls become \\uNNNN escapes."""
        self.assertEqual(printable("\u2028\u2029"), "\\u2028\\u2029")
        for code in [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]:
            self.assertEqual(printable(f"x{chr(code)}y"), f"x\\u{code:04x}y")

    def test_backslash_escaped_where_it_could_be_misread(self):
        """A backslash before escape-like text, a control or a backslash is doubled: '\\x1b' cannot pass for ESC."""
        self.assertEqual(printable("\\x1b"), "\\\\x1b")
        self.assertEqual(printable("\\u202E"), "\\\\u202E")
        self.assertEqual(printable("\\\x1b"), "\\\\\\x1b")
        self.assertEqual(printable("\\\\"), "\\\\\\")
        self.assertNotEqual(printable("\\x1b"), printable("\x1b"))

    def test_ordinary_backslashes_unchanged(self):
        """RFC 4514 escapes, paths and repr() text keep their single backslashes."""
        for text in ("O=Foo\\, Inc.", "C:\\certs\\ca.pem", "'a\\nb'", "'\\u200b.example'", "a\\"):
            self.assertEqual(printable(text), text)

    def test_escaping_can_be_undone(self):
        """Decoding printable()'s escapes gives back the original text: the escaping is unambiguous."""
        alphabet = ["\\", "x", "u", "1", "b", "0", "2", "e", "E", "d", "f", "\x1b", "\n", "\u202e", "\udcff", "a", "é"]
        rng = random.Random(12)
        samples = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(13))) for _ in range(5000)]
        for text in samples + ["\\x1b", "\\\x1b", "\\\\x1b", "\\u2028\u2028", "\\"]:
            escaped = printable(text)
            self.assertIsNone(RAW_CONTROL.search(escaped))
            self.assertEqual(unescape(escaped), text, (text, escaped))

    def test_lone_surrogate_escaped(self):
        """A lone surrogate (undecodable bytes) is escaped instead of breaking the print."""
        self.assertEqual(printable("a\udcff"), "a\\udcff")

    def test_no_dangerous_character_survives(self):
        """Whatever the input, the result holds no control, separator or bidi control."""
        every = "".join(chr(c) for c in range(0x3000))
        self.assertIsNone(RAW_CONTROL.search(printable(every)))


# -- errors ----------------------------------------------------------------------------


class ErrorTextTests(SynchronousTestCase):
    def test_hostname_mismatch_str_escaped_names_raw(self):
        """str() of a HostnameMismatchError escapes the names while .names, .subject and .hostname stay raw."""
        names = [f"DNS:{EVIL_DNS}", f"CN:{EVIL_CN}"]
        error = HostnameMismatchError(
            f"certificate is not valid for 'h\x1b.example': it holds {', '.join(names)}",
            hostname="h\x1b.example",
            names=names,
            subject=f"CN={EVIL_CN}",
        )
        text = str(error)
        self.assertIsNone(RAW_CONTROL.search(text))
        self.assertNotIn("\n", text)
        self.assertIn("\\x1b[2Jverdict : VERIFIED", text)
        self.assertEqual(error.names, tuple(names))
        self.assertEqual(error.subject, f"CN={EVIL_CN}")
        self.assertEqual(error.hostname, "h\x1b.example")
        self.assertEqual(error.reason, f"certificate is not valid for 'h\x1b.example': it holds {', '.join(names)}")

    def test_every_error_type_str_escaped(self):
        """Local and remote errors alike escape their text in str() and keep it raw in their data."""
        for error in (
            ConfigurationError("bad\nvalue"),
            EngineStateError("bad\nstate"),
            TLSError("bad\npeer", openssl_errors=["x\ny"]),
            UntrustedCertificateError("bad\nchain", subject="CN=a\nb"),
        ):
            self.assertNotIn("\n", str(error), type(error))
            self.assertIn("\\x0a", str(error), type(error))
            self.assertIn("\n", error.args[0], type(error))
        self.assertEqual(UntrustedCertificateError("r", subject="CN=a\nb").subject, "CN=a\nb")

    def test_failure_message_escaped(self):
        """Twisted's Failure text, what log lines are built from, is escaped."""
        failure = Failure(TLSError(f"verify failed ({EVIL_CN})"))
        self.assertIsNone(RAW_CONTROL.search(failure.getErrorMessage()))
        self.assertNotIn("\n", failure.getErrorMessage())

    def test_plain_text_unchanged(self):
        """An error without hostile characters prints exactly as it was built."""
        message = "certificate is not valid for 'café.example'"
        self.assertEqual(str(TLSError(message)), message)


# -- STARTTLS preamble limits (no sockets) ---------------------------------------------


class PreambleLimitTests(SynchronousTestCase):
    def feed(self, protocol: str, *chunks: bytes) -> tuple[_Preamble, list[bytes]]:
        preamble = _Preamble(protocol)
        sent: list[bytes] = []
        for chunk in chunks:
            sent += preamble.receive(chunk)
        return preamble, sent

    def assert_limit(self, protocol: str, chunks: list[bytes], *words: str) -> ProbeError:
        preamble = _Preamble(protocol)
        with self.assertRaises(ProbeError) as caught:
            for chunk in chunks:
                preamble.receive(chunk)
        for word in words:
            self.assertIn(word, str(caught.exception))
        self.assertLessEqual(len(preamble.transcript), 3 * (MAX_STEP_LINES + 1))
        return caught.exception

    def test_every_dialect_bounds_continuation_lines(self):
        """Endless continuation lines end every dialect's preamble with a ProbeError naming the limit and the step."""
        many = MAX_STEP_LINES * 3
        cases = {
            "smtp greeting": ("smtp", [b"220-hi\r\n" * many], "SMTP greeting"),
            "smtp ehlo": ("smtp", [b"220 hi\r\n", b"250-x\r\n" * many], "SMTP reply to 'EHLO twistls-probe'"),
            "smtp starttls": (
                "smtp",
                [b"220 hi\r\n", b"250-x\r\n250 STARTTLS\r\n", b"220-x\r\n" * many],
                "SMTP reply to 'STARTTLS'",
            ),
            "ftp coded": ("ftp", [b"220-hi\r\n" * many], "FTP greeting"),
            "ftp codeless": ("ftp", [b"220-hi\r\n", b"more text\r\n" * many], "FTP greeting"),
            "ftp auth": ("ftp", [b"220 hi\r\n", b"234-x\r\n" * many], "FTP reply to 'AUTH TLS'"),
            "imap tagged": ("imap", [b"* OK hi\r\n", b"* x\r\n" * many], "IMAP reply to 'a001 STARTTLS'"),
        }
        for label, (protocol, chunks, step) in cases.items():
            with self.subTest(label):
                self.assert_limit(protocol, chunks, step, f"{MAX_STEP_LINES} lines")

    def test_every_dialect_bounds_line_length(self):
        """A line that never ends is a ProbeError naming the line limit and the step, in every dialect."""
        endless = [b"x" * 16384] * (MAX_LINE_BYTES // 16384 + 2)
        for protocol, step in (
            ("smtp", "SMTP greeting"),
            ("imap", "IMAP greeting"),
            ("pop3", "POP3 greeting"),
            ("ftp", "FTP greeting"),
            ("plain-line", "plain-line reply to 'STARTTLS'"),
        ):
            with self.subTest(protocol):
                self.assert_limit(protocol, endless, step, f"{MAX_LINE_BYTES} bytes")

    def test_long_line_in_one_chunk_refused(self):
        """A complete line over the line limit is refused even when it arrives at once."""
        line = b"220-" + b"x" * MAX_LINE_BYTES + b"\r\n"
        self.assert_limit("smtp", [line], "SMTP greeting", f"{MAX_LINE_BYTES} bytes")

    def test_reply_bytes_bounded(self):
        """Long lines that stay under the line count still hit the per-reply byte limit."""
        line = b"220-" + b"x" * 2000 + b"\r\n"
        self.assertLess(MAX_STEP_BYTES // len(line), MAX_STEP_LINES)
        chunks = [line * (MAX_STEP_BYTES // len(line) + 2)]
        self.assert_limit("smtp", chunks, "SMTP greeting", f"{MAX_STEP_BYTES // 1024} KiB")

    def test_replies_at_the_limits_accepted(self):
        """A reply of exactly the allowed lines and a greeting per step leads to the upgrade (the success twin)."""
        continuation = b"250-x\r\n" * (MAX_STEP_LINES - 1)
        preamble, sent = self.feed("smtp", b"220-x\r\n" * (MAX_STEP_LINES - 1) + b"220 hi\r\n",
                                   continuation + b"250 STARTTLS\r\n", b"220 go\r\n")
        self.assertEqual(sent, [b"EHLO twistls-probe", b"STARTTLS"])
        self.assertTrue(preamble.upgrade)

    def test_limits_reset_for_each_step(self):
        """Each reply has its own budget: a near-limit greeting does not shrink the next reply's."""
        near = b"220-" + b"x" * 1000 + b"\r\n"
        count = MAX_STEP_BYTES // len(near) - 1
        greeting = near * count + b"220 hi\r\n"
        reply = near.replace(b"220", b"234") * count + b"234 ok\r\n"
        preamble, sent = self.feed("ftp", greeting, reply)
        self.assertTrue(preamble.upgrade)
        self.assertEqual(sent, [b"AUTH TLS"])

    def test_refusal_quotes_the_line_escaped(self):
        """A refusal names the server's line; str() escapes its control characters."""
        with self.assertRaises(ProbeError) as caught:
            self.feed("pop3", b"-ERR \x1b[2Jno\r\n")
        self.assertIn("-ERR \\x1b[2Jno", str(caught.exception))
        self.assertIn("-ERR \x1b[2Jno", caught.exception.reason)

    def test_refusal_quotes_a_long_line_shortened(self):
        """A refusal quotes at most the start of a long line."""
        with self.assertRaises(ProbeError) as caught:
            self.feed("pop3", b"-ERR " + b"y" * 5000 + b"\r\n")
        self.assertLess(len(str(caught.exception)), 400)

    def test_data_after_the_upgrade_ignored(self):
        """Cleartext after the reply that agrees to STARTTLS is not read as more preamble."""
        preamble, sent = self.feed("pop3", b"+OK hi\r\n", b"+OK go\r\n" + b"junk\r\n" * 500)
        self.assertTrue(preamble.upgrade)
        self.assertEqual(sent, [b"STLS"])
        self.assertEqual(preamble.receive(b"more\r\n"), [])


# -- the probe against a flooding server (127.0.0.1) -------------------------------------


class ProbeFloodTests(TestCase):
    timeout = 60

    def streaming(self, head: bytes, body: bytes) -> _StreamingServer:
        server = _StreamingServer(head, body)
        self.addCleanup(server.close)
        return server

    @defer.inlineCallbacks
    def test_endless_smtp_continuation_lines(self):
        """An SMTP greeting of endless '220-' lines ends the probe at once with the line limit, memory bounded."""
        server = self.streaming(b"", b"220-flood " + b"x" * 50 + b"\r\n")
        started = time.monotonic()
        report = yield defer.ensureDeferred(
            probe(reactor, "127.0.0.1", server.port, starttls="smtp", cafile=pki().cafile, timeout=10.0)
        )
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual((report["verdict"], report["error_type"]), ("error", "ProbeError"))
        self.assertIn(f"{MAX_STEP_LINES} lines", report["reason"])
        self.assertIn("SMTP greeting", report["reason"])
        self.assertLessEqual(len(report["preamble"]), MAX_STEP_LINES + 1)
        self.assertLess(sum(map(len, report["preamble"])), MAX_STEP_BYTES + MAX_LINE_BYTES)

    @defer.inlineCallbacks
    def test_endless_line(self):
        """A greeting line that never ends is refused at the line limit, not at the timeout."""
        server = self.streaming(b"220 ", b"A" * 4096)
        report = yield defer.ensureDeferred(
            probe(reactor, "127.0.0.1", server.port, starttls="imap", cafile=pki().cafile, timeout=10.0)
        )
        self.assertEqual((report["verdict"], report["error_type"]), ("error", "ProbeError"))
        self.assertIn(f"{MAX_LINE_BYTES} bytes", report["reason"])
        self.assertIn("IMAP greeting", report["reason"])

    @defer.inlineCallbacks
    def test_cli_exit_status_no_tls(self):
        """``twistls probe --starttls smtp`` against the flood exits 3 (no TLS handshake attempted) naming the limit."""
        server = self.streaming(b"", b"220-flood\r\n")
        out, err, code = yield run_cli(
            "probe", f"127.0.0.1:{server.port}", "--starttls", "smtp", "--cafile", pki().cafile, "--timeout", "10"
        )
        self.assertEqual(code, EXIT_NO_TLS, out + err)
        self.assertIn(f"{MAX_STEP_LINES} lines".encode(), out)
        self.assertEqual(len(verdict_lines(out.decode())), 1)


# -- hostile certificate fields in the tools' output ------------------------------------


class HostileCertificateOutputTests(TestCase):
    timeout = 120

    def setUp(self):
        self.cert_path, key_path, self.cert = hostile_certificate(pki().dir)
        self.port, _ = listen_tls(self, ServerContextFactory(self.cert_path, key_path))

    def assert_clean_text(self, text: str) -> None:
        self.assertIsNone(RAW_CONTROL.search(text), repr(text))
        self.assertEqual(len(verdict_lines(text)), 1, text)

    @defer.inlineCallbacks
    def test_probe_text_escapes_certificate_fields(self):
        """``twistls probe`` prints the hostile subject and names escaped, with exactly one verdict line."""
        out, err, code = yield run_cli(
            "probe", f"127.0.0.1:{self.port}", "--servername", "evil.example", "--cafile", pki().cafile,
            "--no-reconnect",
        )
        text = out.decode("utf-8")
        self.assertEqual(code, 1, text + err.decode("utf-8", "replace"))
        self.assert_clean_text(text)
        self.assertIn("verdict", verdict_lines(text)[0])
        self.assertIn("REJECTED", verdict_lines(text)[0])
        self.assertIn("\\x1b[2Jverdict : VERIFIED", text)  # the subject and the SAN, escaped
        self.assertIn("UntrustedCertificateError", text)

    @defer.inlineCallbacks
    def test_probe_json_keeps_raw_data(self):
        """``twistls probe --json`` escapes nothing itself: json.dumps escapes, the parsed fields are raw."""
        out, err, code = yield run_cli(
            "probe", f"127.0.0.1:{self.port}", "--servername", "evil.example", "--cafile", pki().cafile,
            "--no-reconnect", "--json",
        )
        self.assertEqual(code, 1, out + err)
        self.assertIsNone(RAW_CONTROL.search(out.decode("utf-8")))
        report = json.loads(out)
        self.assertEqual(report["chain"][0]["subject"], self.cert.subject.rfc4514_string())
        self.assertIn(f"DNS:{EVIL_DNS}", report["names"])
        self.assertIn(f"CN:{EVIL_CN}", report["names"])
        self.assertNotIn("\\\\", report["reason"])

    @defer.inlineCallbacks
    def test_probe_report_text_escaped_in_process(self):
        """format_report of a rejected hostile server has one verdict row and no raw control character."""
        report = yield defer.ensureDeferred(
            probe(reactor, "127.0.0.1", self.port, servername="evil.example", cafile=pki().cafile, reconnect=False)
        )
        self.assertEqual(report["verdict"], "rejected")
        self.assertEqual(report["chain"][0]["subject"], self.cert.subject.rfc4514_string())
        self.assert_clean_text(format_report(report))

    def test_verify_text_escapes_certificate_fields(self):
        """``twistls verify`` on the hostile certificate prints escaped fields and one verdict line."""
        code, out = call_main("verify", self.cert_path, "--cafile", pki().cafile, "--host", "evil.example")
        self.assertEqual(code, 1, out)
        self.assert_clean_text(out)
        self.assertIn("\\x1b[2Jverdict : VERIFIED", out)
        self.assertIn("HostnameMismatchError", out)

    def test_verify_json_keeps_raw_data(self):
        """``twistls verify --json`` keeps the subject raw and the problem messages unescaped."""
        code, out = call_main("verify", self.cert_path, "--cafile", pki().cafile, "--host", "evil.example", "--json")
        self.assertEqual(code, 1, out)
        self.assertIsNone(RAW_CONTROL.search(out))
        result = json.loads(out)
        self.assertEqual(result["chain"][0]["subject"], self.cert.subject.rfc4514_string())
        messages = " ".join(p["message"] for p in result["problems"])
        self.assertIn(EVIL_DNS, messages)

    def test_ordinary_certificate_printed_unchanged(self):
        """The twin: an ordinary certificate's subject is printed exactly as RFC 4514 spells it."""
        p = pki()
        code, out = call_main("verify", p.server.cert, "--cafile", p.cafile, "--host", "localhost")
        self.assertEqual(code, 0, out)
        subject = x509.load_pem_x509_certificate(open(p.server.cert, "rb").read()).subject.rfc4514_string()
        self.assertIn(subject, out)
        self.assertEqual(len(verdict_lines(out)), 1)
