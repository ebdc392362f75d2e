"""The command line: ``python -m twistls probe | verify | mkcert | demo``.

Probes run against real 127.0.0.1 servers (twistls, ``openssl s_server``,
small Twisted STARTTLS servers, Twisted's own ESMTP server); ``verify`` is
checked to agree with a live twistls client for every rejection case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from twisted.internet import defer, protocol, reactor, utils
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._e2e import Collector, connect_tls, listen_tls
from tests._pki import pki
from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory
from twistls.commands import cli
from twistls.commands._mkcert import make_certificates
from twistls.commands._probe import probe, split_host_port
from twistls._verify import parse_time, verify_certificate
from twistls.errors import ConfigurationError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*argv: str) -> defer.Deferred:
    """Run ``python -m twistls ARGV`` without blocking the reactor; fires (out, err, code)."""
    return utils.getProcessOutputAndValue(sys.executable, ["-m", "twistls", *argv], env=_env(), path=ROOT)


def call_main(*argv: str) -> tuple[int, str]:
    """Run :func:`twistls.commands.cli.main` in-process (sub-commands that need no reactor)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


# -- argument parsing ------------------------------------------------------------------


class ArgumentTests(SynchronousTestCase):
    def test_split_host_port_forms(self):
        """HOST, HOST:PORT, [v6]:PORT, [v6] and a bare IPv6 address are understood."""
        self.assertEqual(split_host_port("example.com"), ("example.com", None))
        self.assertEqual(split_host_port("example.com:8443"), ("example.com", 8443))
        self.assertEqual(split_host_port("127.0.0.1:25"), ("127.0.0.1", 25))
        self.assertEqual(split_host_port("[::1]:8443"), ("::1", 8443))
        self.assertEqual(split_host_port("[::1]"), ("::1", None))
        self.assertEqual(split_host_port("::1"), ("::1", None))

    def test_split_host_port_rejects_bad_ports(self):
        for bad in ("h:0", "h:65536", "h:x", "[::1", "[::1]8443", ":443"):
            self.assertRaises(ValueError, split_host_port, bad)

    def test_probe_default_ports(self):
        """443 by default, the protocol's usual port with --starttls."""
        parser = cli._parser()
        for extra, port in (([], 443), (["--starttls", "smtp"], 25), (["--starttls", "imap"], 143),
                            (["--starttls", "pop3"], 110), (["--starttls", "ftp"], 21)):
            args = parser.parse_args(["probe", "mail.example", *extra])
            cli._split_target(parser, args)
            self.assertEqual((args.host, args.port), ("mail.example", port))

    def test_plain_line_needs_a_port(self):
        code, out = call_main("probe", "localhost", "--starttls", "plain-line")
        self.assertEqual(code, 2)
        self.assertIn("HOST:PORT", out)

    def test_unknown_starttls_protocol_refused(self):
        code, out = call_main("probe", "localhost:25", "--starttls", "xmpp")
        self.assertEqual(code, 2)
        self.assertIn("invalid choice", out)

    def test_verify_needs_host_or_ip(self):
        code, out = call_main("verify", "cert.pem")
        self.assertEqual(code, 2)
        self.assertIn("--host", out)

    def test_verify_cafile_and_capath_are_exclusive(self):
        code, out = call_main("verify", "cert.pem", "--host", "x", "--cafile", "a", "--capath", "b")
        self.assertEqual(code, 2)
        self.assertIn("not allowed with", out)

    def test_verify_rejects_non_ip_for_ip(self):
        p = pki()
        code, out = call_main("verify", p.server.cert, "--cafile", p.cafile, "--ip", "localhost")
        self.assertEqual(code, 2)
        self.assertIn("not an IP address", out)

    def test_parse_time_iso8601(self):
        self.assertEqual(parse_time("2030-01-02").isoformat(), "2030-01-02T00:00:00+00:00")
        self.assertEqual(parse_time("2030-01-02T03:04:05Z").isoformat(), "2030-01-02T03:04:05+00:00")
        self.assertEqual(parse_time("2030-01-02T03:04:05+02:00").utcoffset().total_seconds(), 7200)
        self.assertEqual(parse_time("@1893456000").isoformat(), "2030-01-01T00:00:00+00:00")
        self.assertRaises(ConfigurationError, parse_time, "next tuesday")

    def test_no_command_prints_help(self):
        code, out = call_main()
        self.assertEqual(code, 2)
        for command in ("probe", "verify", "mkcert", "demo"):
            self.assertIn(command, out)

    def test_help_imports_nothing_heavy(self):
        """Building the parser (what --help needs) imports neither Twisted nor M2Crypto."""
        code = (
            "import sys; from twistls.commands import cli; cli._parser().format_help();"
            "print(sorted(m for m in ('twisted', 'M2Crypto', 'cryptography') if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT
        )
        self.assertEqual(out.stdout.strip(), "[]", out.stderr)

    def test_python_m_twistls_help(self):
        """``python -m twistls --help`` works in a subprocess and lists every sub-command."""
        for argv in (["--help"], ["probe", "--help"], ["verify", "--help"], ["mkcert", "--help"]):
            done = subprocess.run(
                [sys.executable, "-m", "twistls", *argv], capture_output=True, text=True, timeout=60, env=_env(), cwd=ROOT
            )
            self.assertEqual(done.returncode, 0, done.stderr)
            self.assertIn("usage: twistls", done.stdout)
        self.assertIn("--starttls", subprocess.run(
            [sys.executable, "-m", "twistls", "probe", "--help"], capture_output=True, text=True, timeout=60,
            env=_env(), cwd=ROOT).stdout)


# -- mkcert -----------------------------------------------------------------------------


class ProxyHelpExampleTests(SynchronousTestCase):
    """The examples in ``twistd twistls proxy --help`` and the :mod:`twistls.tap` docstring parse as written."""

    def test_every_listen_connect_example_parses(self) -> None:
        """Each --listen/--connect example of the proxy help, its option help and the tap docstring parses, run where its files exist."""
        import re

        from twistls import tap

        work = tempfile.mkdtemp(prefix="twistls-test-proxyhelp-")
        self.addCleanup(shutil.rmtree, work, True)
        made = make_certificates(os.path.join(work, "made"))
        shutil.copy(made.cafile, os.path.join(work, "ca.pem"))
        with open(os.path.join(work, "server.pem"), "wb") as out:
            for path in (made.certificate, made.private_key):
                with open(path, "rb") as f:
                    out.write(f.read())
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(work)
        with open(os.path.join(work, "key.pem"), "wb") as out, open(made.private_key, "rb") as f:
            out.write(f.read())
        examples = []
        # The --help text and the module docstring (whose examples are in ``...``).
        for text in (tap.ProxyOptions.longdesc, tap.__doc__ or ""):
            found = re.findall(r"--listen (\S+) --connect (\S+?)\.?(?:\s|$)", " ".join(text.replace("``", " ").split()))
            self.assertEqual(len(found), 2, found)
            examples += found
        # The e.g. of the --listen and --connect option help, each with the other side of the first example.
        helps = {row[0]: " ".join(row[3].split()) for row in tap.ProxyOptions.optParameters}
        listens = re.findall(r"e\.g\. (\S+) or (\S+?)\.$", helps["listen"])[0]
        connects = re.findall(r"e\.g\. (\S+) or (\S+?)\.$", helps["connect"])[0]
        examples += [(listen, examples[0][1]) for listen in listens] + [(examples[0][0], c) for c in connects]
        for listen, connect in examples:
            options = tap.Options()
            options.parseOptions(["proxy", "--listen", listen, "--connect", connect])
            self.assertEqual(options.subOptions["listen"], listen)
            self.assertEqual(options.subOptions["connect"], connect)



class MkcertTests(SynchronousTestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="twistls-test-mkcert-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def test_files_names_and_modes(self):
        """ca.pem, server.pem (leaf + intermediate) and a 0600 server.key holding the default names."""
        code, out = call_main("mkcert", "--dir", self.dir)
        self.assertEqual(code, 0, out)
        for name in ("ca.pem", "server.pem", "server.key"):
            path = os.path.join(self.dir, name)
            self.assertIn(path, out)
            self.assertTrue(os.path.isfile(path))
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.dir, "server.key")).st_mode), 0o600)
        with open(os.path.join(self.dir, "server.pem"), "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())
        self.assertEqual(len(chain), 2)
        san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertEqual(san.get_values_for_type(x509.DNSName), ["localhost"])
        self.assertEqual([str(a) for a in san.get_values_for_type(x509.IPAddress)], ["127.0.0.1", "::1"])
        self.assertFalse(any(n.endswith(".key") and "ca" in n for n in os.listdir(self.dir)))

    def test_certificate_verifies_for_its_names_only(self):
        result = make_certificates(self.dir, ["svc.test", "10.1.2.3"])
        for host in ("svc.test", "10.1.2.3"):
            self.assertTrue(verify_certificate(result.certificate, hostname=host, cafile=result.cafile).accepted)
        verdict = verify_certificate(result.certificate, hostname="localhost", cafile=result.cafile)
        self.assertEqual([type(p).__name__ for p in verdict.problems], ["HostnameMismatchError"])

    def test_refuses_to_overwrite_without_force(self):
        self.assertEqual(call_main("mkcert", "--dir", self.dir)[0], 0)
        code, out = call_main("mkcert", "--dir", self.dir)
        self.assertEqual(code, 2)
        self.assertIn("--force", out)
        self.assertEqual(call_main("mkcert", "--dir", self.dir, "--force")[0], 0)

    def test_bad_name_refused(self):
        code, out = call_main("mkcert", "--dir", self.dir, "not a name")
        self.assertEqual(code, 2)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "ca.pem")))

    def test_client_certificate_for_mutual_tls(self):
        result = make_certificates(self.dir, client_names=["alice.example"])
        self.assertEqual(stat.S_IMODE(os.stat(result.client_private_key).st_mode), 0o600)
        # a client certificate is not a server certificate (serverAuth purpose)
        verdict = verify_certificate(result.client_certificate, hostname="alice.example", cafile=result.cafile)
        self.assertEqual(verdict.problems[0].verify_code, 26)


# -- probe ------------------------------------------------------------------------------


class _Scripted(LineReceiver):
    """A tiny cleartext server: greeting lines, canned replies, then STARTTLS."""

    delimiter = b"\r\n"

    def connectionMade(self):
        for line in self.factory.greeting:
            self.sendLine(line)

    def lineReceived(self, line):
        replies, upgrade = self.factory.script.get(line, ([b"500 unknown"], False))
        for reply in replies:
            self.sendLine(reply)
        if upgrade:
            self.transport.startTLS(self.factory.tls)
            self.setRawMode()

    def rawDataReceived(self, data):
        self.transport.write(data)


SCRIPTS = {
    "smtp": ([b"220 localhost ESMTP test"],
             {b"EHLO twistls-probe": ([b"250-localhost", b"250-SIZE 1000", b"250 STARTTLS"], False),
              b"STARTTLS": ([b"220 2.0.0 Ready to start TLS"], True)}),
    "imap": ([b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready"],
             {b"a001 STARTTLS": ([b"a001 OK Begin TLS negotiation now"], True)}),
    "pop3": ([b"+OK POP3 ready"], {b"STLS": ([b"+OK Begin TLS"], True)}),
    "ftp": ([b"220-Welcome", b"220 ready"], {b"AUTH TLS": ([b"234 AUTH TLS successful"], True)}),
    "plain-line": ([], {b"STARTTLS": ([b"OK go"], True)}),
}


class ProbeTests(TestCase):
    timeout = 60

    def tls_server(self, leaf=None):
        p = pki()
        leaf = leaf or p.server
        port, _ = listen_tls(self, ServerContextFactory(leaf.cert, leaf.key))
        return port

    def starttls_server(self, greeting, script):
        p = pki()
        factory = protocol.Factory.forProtocol(_Scripted)
        factory.greeting, factory.script = greeting, script
        factory.tls = ServerContextFactory(p.server.cert, p.server.key)
        port = reactor.listenTCP(0, TLSWrappingFactory(factory, None, start_tls=True), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def probe(self, port, host="localhost", **kw):
        kw.setdefault("cafile", pki().cafile)
        kw.setdefault("timeout", 10.0)
        return defer.ensureDeferred(probe(reactor, host, port, **kw))

    @defer.inlineCallbacks
    def test_verified_report(self):
        """Against a twistls server: verified, with names, chain, version and cipher."""
        report = yield self.probe(self.tls_server())
        self.assertTrue(report["verified"])
        self.assertEqual(report["verdict"], "verified")
        self.assertTrue(report["peer_certificate"])
        self.assertIn("DNS:localhost", report["names"])
        self.assertTrue(report["names_match"])
        self.assertEqual(report["address"].rsplit(":", 1)[0], "127.0.0.1")
        self.assertIn(report["protocol_version"], ("TLSv1.2", "TLSv1.3"))
        self.assertGreaterEqual(report["cipher_bits"], 128)
        self.assertIsNone(report["compression"])
        self.assertEqual(report["chain"][0]["subject"], x509.load_der_x509_certificate(pki().server.der).subject.rfc4514_string())
        self.assertIsNotNone(report["session_reused_on_reconnect"])

    @defer.inlineCallbacks
    def test_alpn_and_resumption_reported(self):
        """--alpn offers protocols; the reconnect resumes the session."""
        p = pki()
        port, _ = listen_tls(self, ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=["http/1.1"]))
        report = yield self.probe(port, alpn=("h2", "http/1.1"))
        self.assertTrue(report["verified"], report)
        self.assertEqual(report["alpn"], "http/1.1")
        self.assertIs(report["session_reused"], False)
        self.assertIs(report["session_reused_on_reconnect"], True)
        self.assertIsNotNone(report["group"])

    @defer.inlineCallbacks
    def test_ip_address_over_ipv6(self):
        """[::1]:port checks the IP SAN and sends no SNI."""
        p = pki()
        from twisted.internet.endpoints import TCP6ServerEndpoint

        from twistls.endpoints import wrap_server_tls

        factory = protocol.Factory.forProtocol(protocol.Protocol)
        try:
            port = yield wrap_server_tls(
                ServerContextFactory(p.server.cert, p.server.key), TCP6ServerEndpoint(reactor, 0, interface="::1")
            ).listen(factory)
        except Exception as exc:  # pragma: no cover - hosts without IPv6
            raise self.skipTest(f"no IPv6 loopback: {exc}")
        self.addCleanup(port.stopListening)
        report = yield self.probe(port.getHost().port, host="::1")
        self.assertTrue(report["verified"], report)
        self.assertIsNone(report["sni"])
        self.assertTrue(report["address"].startswith("[::1]:"))

    @defer.inlineCallbacks
    def test_wrong_name_rejected_with_reason_and_labelled_details(self):
        report = yield self.probe(self.tls_server(), host="127.0.0.1", servername="wrong.example")
        self.assertFalse(report["verified"])
        self.assertEqual(report["verdict"], "rejected")
        self.assertEqual(report["error_type"], "HostnameMismatchError")
        self.assertIn("wrong.example", report["reason"])
        self.assertIn("NON-verifying", report["details_from"])
        self.assertIn("DNS:localhost", report["names"])
        self.assertFalse(report["names_match"])

    @defer.inlineCallbacks
    def test_untrusted_rejected(self):
        report = yield self.probe(self.tls_server(pki().untrusted_server))
        self.assertEqual((report["verdict"], report["error_type"]), ("rejected", "UntrustedCertificateError"))
        self.assertTrue(report["names_match"])  # the name was fine; the chain was not

    @defer.inlineCallbacks
    def test_connection_refused_is_an_error_not_a_rejection(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        report = yield self.probe(free)
        self.assertEqual(report["verdict"], "error")
        self.assertFalse(report["verified"])
        self.assertIn("refused", report["reason"].lower())

    @defer.inlineCallbacks
    def test_silent_server_times_out(self):
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        report = yield self.probe(port.getHost().port, starttls="smtp", timeout=0.5)
        self.assertEqual(report["verdict"], "error")
        self.assertIn("timed out", report["reason"])
        self.assertIn("preamble", report["reason"])

    @defer.inlineCallbacks
    def test_every_starttls_protocol(self):
        """smtp, imap, pop3, ftp and plain-line preambles lead to a verified session."""
        for name, (greeting, script) in SCRIPTS.items():
            port = self.starttls_server(greeting, script)
            report = yield self.probe(port, starttls=name, reconnect=False)
            self.assertTrue(report["verified"], (name, report))
            self.assertEqual(report["starttls"], name)
            self.assertTrue(report["preamble"], name) if name != "plain-line" else None

    @defer.inlineCallbacks
    def test_smtp_without_starttls_offer(self):
        greeting, script = SCRIPTS["smtp"]
        script = dict(script)
        script[b"EHLO twistls-probe"] = ([b"250-localhost", b"250 SIZE 1000"], False)
        report = yield self.probe(self.starttls_server(greeting, script), starttls="smtp")
        self.assertEqual(report["verdict"], "error")
        self.assertIn("does not offer STARTTLS", report["reason"])

    @defer.inlineCallbacks
    def test_starttls_refused(self):
        report = yield self.probe(self.starttls_server([b"+OK hi"], {b"STLS": ([b"-ERR no"], False)}), starttls="pop3")
        self.assertEqual(report["verdict"], "error")
        self.assertIn("-ERR no", report["reason"])

    @defer.inlineCallbacks
    def test_twisted_esmtp_server(self):
        """Twisted's own ESMTP server, upgraded through the twistls transport."""
        from twisted.mail import smtp

        p = pki()
        tls = ServerContextFactory(p.server.cert, p.server.key)
        factory = protocol.Factory.forProtocol(lambda: smtp.ESMTP(contextFactory=tls))
        port = reactor.listenTCP(0, TLSWrappingFactory(factory, None, start_tls=True), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        report = yield self.probe(port.getHost().port, starttls="smtp", reconnect=False)
        self.assertTrue(report["verified"], report)


class ProbeCommandTests(TestCase):
    """``python -m twistls probe`` in a subprocess: exit statuses and output."""

    timeout = 120

    def setUp(self):
        p = pki()
        self.port, _ = listen_tls(self, ServerContextFactory(p.server.cert, p.server.key))

    @defer.inlineCallbacks
    def test_verified_exit_0(self):
        out, err, code = yield run_cli("probe", f"localhost:{self.port}", "--cafile", pki().cafile)
        self.assertEqual(code, 0, out + err)
        text = out.decode()
        for label in ("address", "peer certificate", "certificate names", "names match host", "chain [0]",
                      "protocol version", "cipher", "compression", "ALPN", "session reused", "verdict"):
            self.assertIn(label, text)
        self.assertIn("VERIFIED", text)

    @defer.inlineCallbacks
    def test_wrong_name_nonzero_with_reason(self):
        out, err, code = yield run_cli(
            "probe", f"127.0.0.1:{self.port}", "--cafile", pki().cafile, "--servername", "wrong.example"
        )
        self.assertEqual(code, 1, out + err)
        self.assertIn(b"HostnameMismatchError", out)
        self.assertIn(b"wrong.example", out)

    @defer.inlineCallbacks
    def test_json_parses(self):
        out, err, code = yield run_cli(
            "probe", f"[::1]:{self.port}" if False else f"127.0.0.1:{self.port}", "--cafile", pki().cafile,
            "--json", "--servername", "localhost",
        )
        self.assertEqual(code, 0, out + err)
        report = json.loads(out)
        self.assertTrue(report["verified"])
        self.assertEqual(report["expected_name"], "localhost")

    @defer.inlineCallbacks
    def test_system_store_rejects_private_ca(self):
        out, err, code = yield run_cli("probe", f"localhost:{self.port}", "--json", "--no-reconnect")
        self.assertEqual(code, 1, out + err)
        self.assertEqual(json.loads(out)["error_type"], "UntrustedCertificateError")


class OpenSSLServerTests(TestCase):
    """probe against ``openssl s_server``."""

    timeout = 60

    def setUp(self):
        if shutil.which("openssl") is None:
            raise self.skipTest("no openssl command")
        p = pki()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", p.chained_server.cert,
             "-cert_chain", p.chained_server.cert, "-key", p.chained_server.key, "-quiet"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.addCleanup(self._stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("openssl s_server did not start")

    def _stop(self):
        self.server.kill()
        self.server.wait(timeout=10)

    @defer.inlineCallbacks
    def test_verified_exit_0(self):
        out, err, code = yield run_cli(
            "probe", f"localhost:{self.port}", "--cafile", pki().cafile, "--json", "--no-reconnect"
        )
        self.assertEqual(code, 0, out + err)
        report = json.loads(out)
        self.assertTrue(report["verified"], report)
        self.assertGreaterEqual(len(report["chain"]), 2)  # s_server -cert_chain repeats the leaf

    @defer.inlineCallbacks
    def test_wrong_name_exit_1(self):
        out, err, code = yield run_cli(
            "probe", f"127.0.0.1:{self.port}", "--cafile", pki().cafile, "--servername", "nope.example"
        )
        self.assertEqual(code, 1, out + err)
        self.assertIn(b"HostnameMismatchError", out)


# -- verify agrees with a live client ------------------------------------------------------


class VerifyAgreementTests(TestCase):
    """For every rejection case (and acceptance) ``twistls verify`` gives the
    verdict, the error type and the X509 code a live twistls client gets."""

    timeout = 60

    @defer.inlineCallbacks
    def live(self, leaf, hostname, depth):
        p = pki()
        port, _ = listen_tls(self, ServerContextFactory(leaf.cert, leaf.key))
        client = Collector(b"x", expect=1)
        connect_tls(ClientContextFactory(hostname, cafile=p.cafile, verify_depth=depth), port, client)
        _, reason = yield client.done
        return reason.value

    @defer.inlineCallbacks
    def agree(self, leaf, hostname, expected, depth=9):
        p = pki()
        live = yield self.live(leaf, hostname, depth)
        offline = verify_certificate(leaf.cert, hostname=hostname, cafile=p.cafile, depth=depth)
        args = ["verify", leaf.cert, "--cafile", p.cafile, "--depth", str(depth)]
        args += ["--ip", hostname] if hostname[0].isdigit() or ":" in hostname else ["--host", hostname]
        code, out = call_main(*args)
        if expected is None:
            self.assertTrue(offline.accepted, offline.problems)
            self.assertEqual(type(live).__name__, "ConnectionDone", live)
            self.assertEqual(code, 0, out)
            self.assertIn("accepted", out)
            return
        self.assertFalse(offline.accepted)
        self.assertEqual(code, 1, out)
        first = offline.problems[0]
        self.assertEqual(type(first).__name__, expected)
        self.assertEqual(type(live).__name__, expected, live)
        self.assertEqual(first.verify_code, live.verify_code)
        self.assertEqual(first.depth, live.depth)
        self.assertIn(expected, out)

    def test_accepted(self):
        return self.agree(pki().server, "localhost", None)

    def test_accepted_ip_and_intermediate(self):
        return self.agree(pki().chained_server, "127.0.0.1", None)

    def test_wrong_host(self):
        return self.agree(pki().server, "wrong.example", "HostnameMismatchError")

    def test_expired(self):
        return self.agree(pki().expired_server, "localhost", "CertificateExpiredError")

    def test_untrusted_root(self):
        return self.agree(pki().untrusted_server, "localhost", "UntrustedCertificateError")

    def test_missing_intermediate(self):
        return self.agree(pki().missing_intermediate_server, "localhost", "UntrustedCertificateError")

    def test_too_deep(self):
        return self.agree(pki().deep_server, "localhost", "ChainTooLongError", depth=2)

    def test_deep_within_limit(self):
        return self.agree(pki().deep_server, "localhost", None, depth=3)

    @defer.inlineCallbacks
    def test_revoked_with_crlfile(self):
        """--crlfile: a certificate revoked by the CA's CRL is rejected by both."""
        import datetime

        from cryptography.hazmat.primitives import hashes, serialization

        p = pki()
        leaf = p.leaf("revoked", p.ca, "localhost")
        cert = x509.load_der_x509_certificate(leaf.der)
        ca_cert = x509.load_pem_x509_certificate(p.ca.cert_pem.bytes())
        ca_key = serialization.load_pem_private_key(p.ca.private_key_pem.bytes(), None)
        now = datetime.datetime.now(datetime.timezone.utc)
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - datetime.timedelta(minutes=5))
            .next_update(now + datetime.timedelta(days=1))
            .add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build()
            )
            .sign(ca_key, hashes.SHA256())
        )
        crlfile = os.path.join(p.dir, "revoked.crl.pem")
        with open(crlfile, "wb") as f:
            f.write(crl.public_bytes(serialization.Encoding.PEM))
        port, _ = listen_tls(self, ServerContextFactory(leaf.cert, leaf.key))
        client = Collector(b"x", expect=1)
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile, crlfile=crlfile), port, client)
        _, reason = yield client.done
        code, out = call_main("verify", leaf.cert, "--cafile", p.cafile, "--host", "localhost", "--crlfile", crlfile)
        self.assertEqual(code, 1, out)
        self.assertIn("CertificateRevokedError", out)
        self.assertEqual(type(reason.value).__name__, "CertificateRevokedError", reason)
        self.assertEqual(call_main("verify", leaf.cert, "--cafile", p.cafile, "--host", "localhost")[0], 0)


class VerifyCommandTests(SynchronousTestCase):
    def test_every_problem_listed(self):
        """An expired certificate for the wrong name lists both problems."""
        p = pki()
        code, out = call_main("verify", p.expired_server.cert, "--cafile", p.cafile, "--host", "wrong.example")
        self.assertEqual(code, 1)
        self.assertIn("CertificateExpiredError", out)
        self.assertIn("HostnameMismatchError", out)

    def test_at_time(self):
        """--at moves the clock: the expired certificate is accepted in its validity
        period, and a valid one is rejected after it."""
        p = pki()
        cert = x509.load_pem_x509_certificate(open(p.expired_server.cert, "rb").read())
        inside = (cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) / 2)
        code, out = call_main("verify", p.expired_server.cert, "--cafile", p.cafile, "--host", "localhost",
                              "--at", inside.isoformat())
        self.assertEqual(code, 0, out)
        code, out = call_main("verify", p.server.cert, "--cafile", p.cafile, "--host", "localhost",
                              "--at", "3001-01-01T00:00:00Z")  # trustme: valid to 3000
        self.assertEqual(code, 1, out)
        self.assertIn("CertificateExpiredError", out)

    def test_chain_option(self):
        """--chain supplies the intermediate the leaf file lacks."""
        p = pki()
        inter = os.path.join(p.dir, "intermediate.pem")
        with open(inter, "wb") as f:
            f.write(p.intermediate.cert_pem.bytes())
        leaf = p.missing_intermediate_server.cert
        self.assertEqual(call_main("verify", leaf, "--cafile", p.cafile, "--host", "localhost")[0], 1)
        code, out = call_main("verify", leaf, "--chain", inter, "--cafile", p.cafile, "--host", "localhost")
        self.assertEqual(code, 0, out)

    def test_legacy_common_name(self):
        """A certificate without subjectAltName matches its commonName only with --legacy-common-name."""
        from cryptography.hazmat.primitives import serialization

        from tests._pki import self_signed

        der, _key = self_signed("legacy.example")
        path = os.path.join(pki().dir, "legacy.pem")
        with open(path, "wb") as f:
            f.write(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
        code, out = call_main("verify", path, "--cafile", path, "--host", "legacy.example")
        self.assertEqual(code, 1, out)
        self.assertIn("HostnameMismatchError", out)
        code, out = call_main("verify", path, "--cafile", path, "--host", "legacy.example", "--legacy-common-name")
        self.assertEqual(code, 0, out)

    def test_json(self):
        p = pki()
        code, out = call_main("verify", p.server.cert, "--cafile", p.cafile, "--host", "localhost", "--json")
        self.assertEqual(code, 0)
        self.assertTrue(json.loads(out)["accepted"])

    def _depth_zero_pki(self) -> tuple[str, str, str]:
        """A trustme CA file, a leaf it issues itself, and a leaf (with its
        intermediate) issued one level below it."""
        import trustme

        work = tempfile.mkdtemp(prefix="twistls-test-depth-")
        self.addCleanup(shutil.rmtree, work, True)
        ca = trustme.CA()
        direct = ca.issue_cert("direct.example")
        below = ca.create_child_ca().issue_cert("below.example")
        paths = []
        for name, blobs in (("ca.pem", [ca.cert_pem]), ("direct.pem", direct.cert_chain_pems),
                            ("below.pem", below.cert_chain_pems)):
            paths.append(os.path.join(work, name))
            with open(paths[-1], "wb") as f:
                f.write(b"".join(blob.bytes() for blob in blobs))
        return paths[0], paths[1], paths[2]

    def test_depth_zero_accepts_a_leaf_issued_by_the_anchor(self):
        """verify --depth 0 exits 0 for a leaf the trusted CA issued itself."""
        cafile, direct, _below = self._depth_zero_pki()
        code, out = call_main("verify", direct, "--cafile", cafile, "--host", "direct.example", "--depth", "0")
        self.assertEqual(code, 0, out)

    def test_depth_zero_rejects_a_leaf_behind_an_intermediate(self):
        """verify --depth 0 exits 1 for a leaf under an intermediate, which --depth 1 accepts."""
        cafile, _direct, below = self._depth_zero_pki()
        code, out = call_main("verify", below, "--cafile", cafile, "--host", "below.example", "--depth", "0")
        self.assertEqual(code, 1, out)
        code, out = call_main("verify", below, "--cafile", cafile, "--host", "below.example", "--depth", "1")
        self.assertEqual(code, 0, out)

    def test_negative_depth_is_refused(self):
        """verify --depth -1 is a usage error (exit 2) that says depth 0 is the least."""
        cafile, direct, _below = self._depth_zero_pki()
        code, out = call_main("verify", direct, "--cafile", cafile, "--host", "direct.example", "--depth", "-1")
        self.assertEqual(code, 2, out)
        self.assertIn("the depth must be >= 0 (0: a leaf issued by the trust anchor itself)", out)

    def test_missing_file(self):
        code, out = call_main("verify", "/nonexistent.pem", "--host", "localhost")
        self.assertEqual(code, 2)
        self.assertIn("/nonexistent.pem", out)


# -- demo ------------------------------------------------------------------------------


class DemoTests(TestCase):
    timeout = 180

    @defer.inlineCallbacks
    def test_demo_runs_twistd_and_probes(self):
        """``python -m twistls demo`` (the README command): verified, then rejected, server stopped."""
        out, err, code = yield run_cli("demo")
        text = out.decode("utf-8", "replace")
        self.assertEqual(code, 0, text + err.decode("utf-8", "replace"))
        self.assertIn("twistd -n", text)
        self.assertIn("VERIFIED", text)
        self.assertIn("HostnameMismatchError", text)
        self.assertIn("twistd shut down cleanly", text)


# -- editable installs -------------------------------------------------------------------


_EDITABLE_CHECK = """
import site, sys
sys.path.append(sys.argv[2])  # the dependencies, without running their .pth files
site.addsitedir(sys.argv[1])  # what pip does with the editable wheel's .pth
from twisted.application.service import IServiceMaker
from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import getPlugins
import twistls
print(twistls.__file__)
print([p.prefix for p in getPlugins(IStreamClientEndpointStringParserWithReactor) if p.prefix == "twistls"])
print([s.tapname for s in getPlugins(IServiceMaker) if s.tapname == "twistls"])
"""


class PackageListTests(SynchronousTestCase):
    """setup.cfg holds the one package list, and it names every package of the tree."""

    def test_setup_cfg_lists_every_package_and_setup_py_none(self):
        """Every directory under twistls/ with an __init__.py is in setup.cfg's packages, with
        twisted.plugins; setup.py passes no second list; the console script names twistls.commands.cli."""
        import ast
        import configparser

        config = configparser.ConfigParser()
        config.read(os.path.join(ROOT, "setup.cfg"))
        listed = config["options"]["packages"].split()
        found = sorted(
            os.path.relpath(here, ROOT).replace(os.sep, ".")
            for here, dirs, files in os.walk(os.path.join(ROOT, "twistls"))
            if "__init__.py" in files and "__pycache__" not in here
        )
        self.assertEqual(sorted(listed), sorted([*found, "twisted.plugins"]))
        self.assertIn("twistls.commands", listed)
        with open(os.path.join(ROOT, "setup.py")) as f:
            calls = [n for n in ast.walk(ast.parse(f.read())) if isinstance(n, ast.Call)]
        self.assertEqual([k.arg for c in calls for k in c.keywords if k.arg == "packages"], [])
        self.assertIn("twistls = twistls.commands.cli:main", config["options.entry_points"]["console_scripts"])

    def test_old_module_paths_still_import(self):
        """twistls.cli, twistls._mkcert and twistls.tap keep the names code imported from them."""
        from twistls import _mkcert as old_mkcert
        from twistls import cli as old_cli
        from twistls import tap
        from twistls.commands import _mkcert

        self.assertIs(old_cli.main, cli.main)
        self.assertIs(old_cli.version_text, cli.version_text)
        self.assertIs(old_mkcert.make_certificates, _mkcert.make_certificates)
        self.assertTrue(callable(tap.makeService))
        self.assertEqual(tap.__name__, "twistls.tap")


class EditableInstallTests(SynchronousTestCase):
    """``pip install -e .`` keeps the twistd plugin and the ``twistls:`` endpoint strings."""

    def test_editable_wheel_puts_the_checkout_on_sys_path(self) -> None:
        """The editable wheel setuptools builds from a copy of the checkout holds a .pth naming it, and through it Twisted finds both twistls plugins."""
        import sysconfig
        import zipfile

        work = tempfile.mkdtemp(prefix="twistls-test-editable-")
        self.addCleanup(shutil.rmtree, work, True)
        copy = os.path.join(work, "checkout")
        os.makedirs(os.path.join(copy, "twisted"))
        for name in ("setup.py", "setup.cfg", "README.md"):
            shutil.copy(os.path.join(ROOT, name), copy)
        ignore = shutil.ignore_patterns("__pycache__", "dropin.cache")
        shutil.copytree(os.path.join(ROOT, "twistls"), os.path.join(copy, "twistls"), ignore=ignore)
        shutil.copytree(os.path.join(ROOT, "twisted", "plugins"), os.path.join(copy, "twisted", "plugins"), ignore=ignore)
        wheels = os.path.join(work, "wheels")
        build = "import sys; from setuptools import build_meta; print(build_meta.build_editable(sys.argv[1]))"
        done = subprocess.run(
            [sys.executable, "-c", build, wheels], cwd=copy, capture_output=True, text=True, timeout=120
        )
        self.assertEqual(done.returncode, 0, done.stderr[-2000:])
        with zipfile.ZipFile(os.path.join(wheels, done.stdout.split()[-1])) as wheel:
            pths = [n for n in wheel.namelist() if n.endswith(".pth")]
            self.assertEqual(len(pths), 1, wheel.namelist())
            self.assertEqual(wheel.read(pths[0]).decode().split(), [os.path.realpath(copy)])
            self.assertEqual([n for n in wheel.namelist() if n.endswith(".py")], [])  # no import finder
            site_dir = os.path.join(work, "site")
            wheel.extract(pths[0], site_dir)
        checked = subprocess.run(
            [sys.executable, "-S", "-c", _EDITABLE_CHECK, site_dir, sysconfig.get_paths()["purelib"]],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(checked.returncode, 0, checked.stderr[-2000:])
        where, parsers, taps = checked.stdout.splitlines()[-3:]
        self.assertTrue(where.startswith(os.path.realpath(copy)), where)
        self.assertEqual(parsers, "['twistls']")
        self.assertEqual(taps, "['twistls']")
