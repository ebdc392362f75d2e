"""End-to-end interoperability over real 127.0.0.1 sockets.

twistls talks to three independent TLS stacks in both roles: the ``openssl``
command line (``s_server`` / ``s_client``), CPython's ``ssl`` module, and
Twisted's own TLS (pyOpenSSL).  Every success has a failure twin that ends
with the specific twistls error type.
"""

from __future__ import annotations

import os
import re
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol, reactor
from twisted.internet import ssl as tssl
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import TestCase

from twistls import (
    CertificateExpiredError,
    ClientContextFactory,
    ConnectionTruncatedError,
    HostnameMismatchError,
    PeerAlertError,
    ProtocolVersionError,
    ServerContextFactory,
    TLSError,
    UntrustedCertificateError,
    VerificationError,
)
from tests._e2e import (
    Collector,
    LineEcho,
    bounded,
    connect_tls,
    listen_tls,
    openssl_client,
    openssl_server,
    python_ssl_client,
    python_ssl_server,
)
from tests._pki import pki, self_signed

#: SSL_OP_NO_EXTENDED_MASTER_SECRET (SSL_OP_BIT(0) in OpenSSL 3.0), for peers that refuse RFC 7627.
NO_EXTENDED_MASTER_SECRET = 1 << 0

#: Ciphers OpenSSL 3 needs to offer TLS 1.0/1.1 at all (they use SHA-1).
LEGACY = ("-cipher", "DEFAULT@SECLEVEL=0")


def server_cf(**kw: object) -> ServerContextFactory:
    p = pki()
    return ServerContextFactory(p.server.cert, p.server.key, **kw)  # type: ignore[arg-type]


def client_cf(host: str = "localhost", **kw: object) -> ClientContextFactory:
    return ClientContextFactory(host, cafile=pki().cafile, **kw)  # type: ignore[arg-type]


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class OpenSSLServerTests(TestCase):
    """twistls client against ``openssl s_server``."""

    timeout = 60

    @defer.inlineCallbacks
    def fetch_status(self, *server_args: str, leaf=None, client=None):  # type: ignore[no-untyped-def]
        """Ask ``s_server -www`` for its status page; returns (page, reason, client)."""
        leaf = leaf or pki().server
        port, run = yield openssl_server(self, "-www", *server_args, cert=leaf.cert, key=leaf.key)
        collector = Collector(b"GET / HTTP/1.0\r\n\r\n")
        connect_tls(client or client_cf(), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against s_server")
        return data, reason, collector

    @defer.inlineCallbacks
    def check_status(self, version: str, *server_args: str):  # type: ignore[no-untyped-def]
        data, reason, collector = yield self.fetch_status(*server_args)
        self.assertTrue(reason.check(ConnectionDone), reason)
        text = data.decode("latin-1")
        self.assertIn("HTTP/1.0 200 ok", text)
        info = collector.transport.connection_info()
        self.assertEqual(info.version, version)
        # s_server reports the session from its side: the same version and cipher.
        self.assertRegex(text, rf"Protocol\s*:\s*{re.escape(version)}\b")
        self.assertRegex(text, rf"Cipher\s*:\s*{re.escape(info.cipher)}\b")
        self.assertTrue(info.verified)
        self.assertEqual(info.server_name, "localhost")

    def test_tls13_status_page_round_trips(self):
        """A twistls client fetches s_server's status page over TLS 1.3 and both agree on version and cipher."""
        return self.check_status("TLSv1.3")

    def test_tls12_status_page_round_trips(self):
        """A twistls client fetches s_server's status page over TLS 1.2 (ECDHE, AEAD) when s_server stops at 1.2."""
        return self.check_status("TLSv1.2", "-tls1_2")

    @defer.inlineCallbacks
    def test_tls1_1_only_server_refused(self):
        """A TLS 1.1-only s_server is refused with ProtocolVersionError while the same s_server at TLS 1.2 is served."""
        data, reason, collector = yield self.fetch_status("-tls1_2", *LEGACY)
        self.assertIn(b"HTTP/1.0 200 ok", data)
        self.assertEqual(collector.transport.connection_info().version, "TLSv1.2")
        data, reason, _ = yield self.fetch_status("-tls1_1", *LEGACY)
        self.assertTrue(reason.check(ProtocolVersionError), reason)
        self.assertIn("protocol version", str(reason.value))
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def sni_server(self, hostname: str):  # type: ignore[no-untyped-def]
        """s_server that serves the good certificate only to SNI 'localhost'
        (an untrusted one otherwise) and logs the SNI it receives."""
        p = pki()
        port, run = yield openssl_server(
            self, "-www", "-servername", "localhost", "-cert2", p.server.cert, "-key2", p.server.key,
            cert=p.untrusted_server.cert, key=p.untrusted_server.key,
        )
        collector = Collector(b"GET / HTTP/1.0\r\n\r\n")
        connect_tls(client_cf(hostname), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against SNI s_server")
        yield bounded(run.ended, 30, "s_server exit")
        return data, reason, run.output

    @defer.inlineCallbacks
    def test_sni_sent_for_hostname(self):
        """The expected hostname goes on the wire as SNI, so s_server picks the matching certificate."""
        data, reason, output = yield self.sni_server("localhost")
        self.assertIn(b'Hostname in TLS extension: "localhost"', output)
        self.assertIn(b"HTTP/1.0 200 ok", data)
        self.assertTrue(reason.check(ConnectionDone), reason)

    @defer.inlineCallbacks
    def test_no_sni_for_ip_literal(self):
        """An IP literal is never sent as SNI: s_server sees none, serves its default certificate, and that fails with UntrustedCertificateError."""
        data, reason, output = yield self.sni_server("127.0.0.1")
        self.assertNotIn(b"Hostname in TLS extension", output)
        self.assertTrue(reason.check(UntrustedCertificateError), reason)
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def test_write_then_close_before_handshake(self):
        """Data written and loseConnection called in connectionMade reach s_server after the handshake, followed by close_notify."""
        p = pki()
        port, run = yield openssl_server(self, cert=p.server.cert, key=p.server.key)

        class WriteAndClose(Collector):
            def connectionMade(self) -> None:
                super().connectionMade()
                self.transport.loseConnection()

        collector = WriteAndClose(b"written before the handshake\n")
        connect_tls(client_cf(), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client write-and-close")
        yield bounded(run.ended, 30, "s_server exit")
        self.assertIn(b"written before the handshake", run.output)
        self.assertIn(b"DONE", run.output)  # s_server saw close_notify (SSL_read returned 0)
        self.assertTrue(reason.check(ConnectionDone), reason)

    @defer.inlineCallbacks
    def test_untrusted_server_rejected(self):
        """An s_server certificate from an unknown CA fails with UntrustedCertificateError and no data flows."""
        data, reason, _ = yield self.fetch_status(leaf=pki().untrusted_server)
        self.assertTrue(reason.check(UntrustedCertificateError), reason)
        self.assertEqual(reason.value.depth, 0)
        self.assertIn("unable to get local issuer certificate", str(reason.value))
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def test_weak_rsa_key_rejected(self):
        """An s_server with a trusted but 1024-bit RSA certificate is rejected by security level 2 with VerificationError 'key too weak'."""
        der, key_pem = self_signed("localhost", san=[x509.DNSName("localhost")], rsa_bits=1024)
        base = self.mktemp()
        os.makedirs(base)
        cert, key = os.path.join(base, "weak.pem"), os.path.join(base, "weak-key.pem")
        with open(cert, "wb") as f:
            f.write(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM))
        with open(key, "wb") as f:
            f.write(key_pem)
        port, run = yield openssl_server(self, "-www", *LEGACY, cert=cert, key=key)
        collector = Collector(b"GET / HTTP/1.0\r\n\r\n")
        connect_tls(ClientContextFactory("localhost", cafile=cert), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against weak-key s_server")
        self.assertTrue(reason.check(VerificationError), reason)
        self.assertEqual((reason.value.verify_code, reason.value.depth), (66, 0))
        self.assertIn("key too weak", str(reason.value))
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def test_wrong_name_server_rejected(self):
        """An s_server certificate for another name fails with HostnameMismatchError naming both."""
        data, reason, _ = yield self.fetch_status(leaf=pki().wrong_name_server)
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertIn("'localhost'", str(reason.value))
        self.assertIn("DNS:other.example", str(reason.value))
        self.assertEqual(data, b"")


class OpenSSLClientTests(TestCase):
    """``openssl s_client`` against a twistls server."""

    timeout = 60

    @defer.inlineCallbacks
    def s_client(self, *args: str, server=None, line: bytes = b"hello from s_client\n"):  # type: ignore[no-untyped-def]
        """Run s_client once against a fresh twistls LineEcho server; returns (run, code, server protocol)."""
        port, factory = listen_tls(self, server or server_cf(), proto=LineEcho)
        run = openssl_client(self, port, *args, stdin=line)
        code = yield bounded(run.ended, 30, "openssl s_client")
        self.assertEqual(len(factory.instances), 1, run.output)
        server_proto = factory.instances[0]
        yield bounded(server_proto.lost, 10, "twistls server connection end")
        return run, code, server_proto

    @defer.inlineCallbacks
    def check_echo(self, version: str, *args: str):  # type: ignore[no-untyped-def]
        p = pki()
        run, code, server_proto = yield self.s_client(
            "-CAfile", p.cafile, "-servername", "localhost", "-verify_hostname", "localhost",
            "-verify_return_error", "-ign_eof", *args,
        )
        out = run.output.decode("latin-1")
        self.assertEqual(code, 0, out)
        self.assertIn("ECHO: hello from s_client", out)
        self.assertIn("Verify return code: 0 (ok)", out)
        info = server_proto.info
        self.assertEqual(info.version, version)
        self.assertIn(f"New, {version}, Cipher is {info.cipher}", out)
        self.assertEqual(info.server_name, "localhost")
        self.assertTrue(server_proto.reason.check(ConnectionDone), server_proto.reason)

    def test_s_client_tls13_round_trips(self):
        """s_client verifies the twistls server, and its line comes back over TLS 1.3."""
        return self.check_echo("TLSv1.3")

    def test_s_client_tls12_round_trips(self):
        """s_client restricted to TLS 1.2 gets its line back over TLS 1.2."""
        return self.check_echo("TLSv1.2", "-tls1_2")

    @defer.inlineCallbacks
    def check_refused(self, flag: str):  # type: ignore[no-untyped-def]
        # Control: the same legacy-cipher client with -tls1_2 is served.
        run, code, server_proto = yield self.s_client("-ign_eof", "-tls1_2", *LEGACY)
        self.assertEqual(code, 0, run.output)
        self.assertIn(b"ECHO: hello from s_client", run.output)
        # The old version is refused by twistls' TLS 1.2 minimum.
        run, code, server_proto = yield self.s_client("-ign_eof", flag, *LEGACY)
        self.assertNotEqual(code, 0, run.output)
        self.assertNotIn(b"ECHO:", run.output)
        self.assertTrue(server_proto.reason.check(ProtocolVersionError), server_proto.reason)
        self.assertIn("protocol version", str(server_proto.reason.value))
        self.assertEqual(b"".join(server_proto.chunks), b"")

    def test_s_client_tls1_1_refused_by_default_server(self):
        """s_client -tls1_1 is refused with ProtocolVersionError on the server while -tls1_2 is served."""
        return self.check_refused("-tls1_1")

    def test_s_client_tls1_0_refused_by_default_server(self):
        """s_client -tls1 is refused with ProtocolVersionError on the server while -tls1_2 is served."""
        return self.check_refused("-tls1")


class PythonSSLServerTests(TestCase):
    """twistls client against a CPython ``ssl`` server (in a thread)."""

    timeout = 60

    def context(self, leaf, maximum=None):  # type: ignore[no-untyped-def]
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        if maximum is not None:
            ctx.maximum_version = maximum
        return ctx

    @defer.inlineCallbacks
    def round_trip(self, leaf, maximum=None):  # type: ignore[no-untyped-def]
        port, served = python_ssl_server(self, self.context(leaf, maximum), reply=b"PY ")
        collector = Collector(b"hello from twistls\n", expect=len(b"PY hello from twistls\n"))
        connect_tls(client_cf(), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against Python ssl")
        result = yield bounded(served, 30, "Python ssl server thread")
        return data, reason, result, collector

    @defer.inlineCallbacks
    def check(self, version: str, maximum=None):  # type: ignore[no-untyped-def]
        data, reason, result, collector = yield self.round_trip(pki().server, maximum)
        self.assertIsNone(result["error"])
        self.assertEqual(result["received"], b"hello from twistls\n")
        self.assertEqual(data, b"PY hello from twistls\n")
        info = collector.transport.connection_info()
        self.assertEqual((info.version, info.cipher), (version, result["cipher"]))
        self.assertEqual(result["version"], version)

    def test_tls13_round_trips(self):
        """A twistls client exchanges a line with a Python ssl server over TLS 1.3."""
        return self.check("TLSv1.3")

    def test_tls12_round_trips(self):
        """A twistls client exchanges a line with a Python ssl server capped at TLS 1.2."""
        return self.check("TLSv1.2", ssl.TLSVersion.TLSv1_2)

    @defer.inlineCallbacks
    def test_close_without_close_notify_is_truncation(self):
        """A Python ssl server that drops the socket without close_notify ends the twistls client with ConnectionTruncatedError, after the data."""
        port, served = python_ssl_server(self, self.context(pki().server), reply=b"PY ", close_notify=False)
        collector = Collector(b"hello from twistls\n")  # reads until the server ends
        connect_tls(client_cf(), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against Python ssl")
        result = yield bounded(served, 30, "Python ssl server thread")
        self.assertIsNone(result["error"])
        self.assertEqual(data, b"PY hello from twistls\n")
        self.assertTrue(reason.check(ConnectionTruncatedError), reason)
        self.assertIn("close_notify", str(reason.value))

    @defer.inlineCallbacks
    def test_tls12_without_extended_master_secret_refused(self):
        """A TLS 1.2 Python ssl server that refuses the extended master secret is rejected with TLSError naming it."""
        ctx = self.context(pki().server, ssl.TLSVersion.TLSv1_2)
        ctx.options |= NO_EXTENDED_MASTER_SECRET
        port, served = python_ssl_server(self, ctx, reply=b"PY ")
        collector = Collector(b"must not be sent\n")
        connect_tls(client_cf(), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against no-EMS server")
        result = yield bounded(served, 30, "Python ssl server thread")
        self.assertTrue(reason.check(TLSError), reason)
        self.assertIn("extended master secret", str(reason.value))
        self.assertEqual((data, result["received"]), (b"", b""))

    @defer.inlineCallbacks
    def test_expired_server_rejected(self):
        """A Python ssl server with an expired certificate is rejected with CertificateExpiredError."""
        data, reason, result, _ = yield self.round_trip(pki().expired_server)
        self.assertTrue(reason.check(CertificateExpiredError), reason)
        self.assertEqual(reason.value.depth, 0)
        self.assertIn("certificate has expired", str(reason.value))
        self.assertEqual(data, b"")
        self.assertEqual(result["received"], b"")


class PythonSSLClientTests(TestCase):
    """A CPython ``ssl`` client (in a thread) against a twistls server."""

    timeout = 60

    @defer.inlineCallbacks
    def run_client(self, ctx):  # type: ignore[no-untyped-def]
        port, factory = listen_tls(self, server_cf(), proto=LineEcho)
        result = yield bounded(python_ssl_client(ctx, port, b"hello from python\n"), 30, "Python ssl client")
        self.assertEqual(len(factory.instances), 1)
        server_proto = factory.instances[0]
        yield bounded(server_proto.lost, 10, "twistls server connection end")
        return result, server_proto

    @defer.inlineCallbacks
    def check(self, version: str, maximum=None):  # type: ignore[no-untyped-def]
        ctx = ssl.create_default_context(cafile=pki().cafile)
        if maximum is not None:
            ctx.maximum_version = maximum
        result, server_proto = yield self.run_client(ctx)
        self.assertIsNone(result["error"])
        self.assertEqual(result["received"], b"ECHO: hello from python\n")
        self.assertEqual(result["version"], version)
        self.assertEqual((server_proto.info.version, server_proto.info.cipher), (version, result["cipher"]))
        self.assertTrue(server_proto.reason.check(ConnectionDone), server_proto.reason)

    def test_tls13_round_trips(self):
        """A verifying Python ssl client gets its line echoed by a twistls server over TLS 1.3."""
        return self.check("TLSv1.3")

    def test_tls12_round_trips(self):
        """A Python ssl client capped at TLS 1.2 gets its line echoed over TLS 1.2."""
        return self.check("TLSv1.2", ssl.TLSVersion.TLSv1_2)

    @defer.inlineCallbacks
    def test_tls12_client_without_extended_master_secret_refused(self):
        """A TLS 1.2 Python client that refuses the extended master secret is cut off by the twistls server with TLSError, before any data."""
        ctx = ssl.create_default_context(cafile=pki().cafile)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.options |= NO_EXTENDED_MASTER_SECRET
        result, server_proto = yield self.run_client(ctx)
        self.assertEqual(result["received"], b"")
        self.assertIsNotNone(result["error"])
        self.assertTrue(server_proto.reason.check(TLSError), server_proto.reason)
        self.assertIn("extended master secret", str(server_proto.reason.value))
        self.assertEqual(b"".join(server_proto.chunks), b"")

    @defer.inlineCallbacks
    def test_client_distrusting_server_alerts_it(self):
        """A Python client that does not trust the server's CA aborts, and the twistls server sees PeerAlertError 'unknown ca'."""
        ctx = ssl.create_default_context(cafile=pki().other_cafile)
        result, server_proto = yield self.run_client(ctx)
        self.assertIsInstance(result["error"], ssl.SSLCertVerificationError)
        self.assertTrue(server_proto.reason.check(PeerAlertError), server_proto.reason)
        self.assertEqual(server_proto.reason.value.alert, "unknown ca")
        self.assertIn("unknown ca", str(server_proto.reason.value))
        self.assertEqual(b"".join(server_proto.chunks), b"")


class TwistedTLSServerTests(TestCase):
    """twistls client against Twisted's own TLS server (pyOpenSSL)."""

    timeout = 60

    @defer.inlineCallbacks
    def exchange(self, hostname: str, payload: bytes = b"hello over pyOpenSSL\n"):  # type: ignore[no-untyped-def]
        from tests._e2e import Echo

        p = pki()
        options = tssl.PrivateCertificate.loadPEM(read(p.server.chain)).options()
        server_protos: list[protocol.Protocol] = []

        class Recording(Echo):
            def connectionMade(self) -> None:
                server_protos.append(self)

        listening = reactor.listenSSL(0, protocol.Factory.forProtocol(Recording), options, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        collector = Collector(payload, expect=len(payload))
        connect_tls(client_cf(hostname), listening.getHost().port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against Twisted TLS")
        return data, reason, collector, server_protos, payload

    @defer.inlineCallbacks
    def test_round_trips(self):
        """A twistls client echoes a line through Twisted's own TLS server, both agreeing on TLS 1.3 and the cipher."""
        data, reason, collector, server_protos, payload = yield self.exchange("localhost")
        self.assertEqual(data, payload)
        self.assertTrue(reason.check(ConnectionDone), reason)
        info = collector.transport.connection_info()
        handle = server_protos[0].transport.getHandle()
        self.assertEqual(info.version, "TLSv1.3")
        self.assertEqual(handle.get_protocol_version_name(), info.version)
        self.assertEqual(handle.get_cipher_name(), info.cipher)

    @defer.inlineCallbacks
    def test_large_echo(self):
        """4 MiB written by a twistls client come back intact from Twisted's TLS echo server."""
        data, reason, collector, _, payload = yield self.exchange("localhost", os.urandom(4 << 20))
        self.assertEqual(len(data), len(payload))
        self.assertEqual(data, payload)
        self.assertTrue(reason.check(ConnectionDone), reason)

    @defer.inlineCallbacks
    def test_wrong_hostname_rejected(self):
        """A twistls client expecting another name rejects Twisted's TLS server with HostnameMismatchError."""
        data, reason, _, _, _ = yield self.exchange("wrong.example")
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertEqual(reason.value.hostname, "wrong.example")
        self.assertIn("DNS:localhost", str(reason.value))
        self.assertEqual(data, b"")


class TwistedTLSClientTests(TestCase):
    """Twisted's own TLS client (``optionsForClientTLS``) against a twistls server."""

    timeout = 60

    @defer.inlineCallbacks
    def exchange(self, cafile: str):  # type: ignore[no-untyped-def]
        port, factory = listen_tls(self, server_cf(), proto=LineEcho)
        options = tssl.optionsForClientTLS("localhost", trustRoot=tssl.Certificate.loadPEM(read(cafile)))
        collector = Collector(b"hello from Twisted TLS\n")
        client_factory = protocol.ClientFactory.forProtocol(lambda: collector)
        reactor.connectSSL("127.0.0.1", port, client_factory, options)
        data, reason = yield bounded(collector.done, 30, "Twisted TLS client against twistls")
        self.assertEqual(len(factory.instances), 1)
        server_proto = factory.instances[0]
        yield bounded(server_proto.lost, 10, "twistls server connection end")
        return data, reason, collector, server_proto

    @defer.inlineCallbacks
    def test_round_trips(self):
        """Twisted's verifying TLS client gets its line echoed by a twistls server, both seeing TLS 1.3 and one cipher."""
        data, reason, collector, server_proto = yield self.exchange(pki().cafile)
        self.assertEqual(data, b"ECHO: hello from Twisted TLS\n")
        self.assertTrue(reason.check(ConnectionDone), reason)
        handle = collector.transport.getHandle()
        self.assertEqual(server_proto.info.version, "TLSv1.3")
        self.assertEqual(handle.get_protocol_version_name(), server_proto.info.version)
        self.assertEqual(handle.get_cipher_name(), server_proto.info.cipher)
        self.assertTrue(server_proto.reason.check(ConnectionDone), server_proto.reason)

    @defer.inlineCallbacks
    def test_large_echo(self):
        """4 MiB written by Twisted's TLS client come back intact from a twistls echo server."""
        from tests._e2e import Echo

        port, _ = listen_tls(self, server_cf(), proto=Echo)
        options = tssl.optionsForClientTLS("localhost", trustRoot=tssl.Certificate.loadPEM(read(pki().cafile)))
        payload = os.urandom(4 << 20)
        collector = Collector(payload, expect=len(payload))
        reactor.connectSSL("127.0.0.1", port, protocol.ClientFactory.forProtocol(lambda: collector), options)
        data, reason = yield bounded(collector.done, 50, "Twisted TLS client large echo")
        self.assertEqual(len(data), len(payload))
        self.assertEqual(data, payload)

    @defer.inlineCallbacks
    def test_client_distrusting_server_alerts_it(self):
        """Twisted's client trusting another CA refuses the server, which sees PeerAlertError 'unknown ca'."""
        data, reason, _, server_proto = yield self.exchange(pki().other_cafile)
        self.assertEqual(data, b"")
        self.assertFalse(reason.check(ConnectionDone), reason)
        self.assertTrue(server_proto.reason.check(PeerAlertError), server_proto.reason)
        self.assertEqual(server_proto.reason.value.alert, "unknown ca")
        self.assertEqual(b"".join(server_proto.chunks), b"")


class CipherPolicyOnTheWireTests(TestCase):
    """twistls' TLS 1.2 cipher and TLS 1.3 group policy, observed against openssl."""

    timeout = 60

    @defer.inlineCallbacks
    def client_against(self, *server_args: str):  # type: ignore[no-untyped-def]
        p = pki()
        port, run = yield openssl_server(self, "-www", *server_args, cert=p.server.cert, key=p.server.key)
        collector = Collector(b"GET / HTTP/1.0\r\n\r\n")
        connect_tls(client_cf(), port, collector)
        data, reason = yield bounded(collector.done, 30, "twistls client against s_server")
        return data, reason, collector

    @defer.inlineCallbacks
    def test_client_accepts_ecdhe_aead_cipher(self):
        """Against an s_server offering only ECDHE-ECDSA-AES128-GCM-SHA256 at TLS 1.2, the client negotiates exactly that."""
        data, reason, collector = yield self.client_against("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        self.assertIn(b"HTTP/1.0 200 ok", data)
        info = collector.transport.connection_info()
        self.assertEqual((info.version, info.cipher), ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"))

    @defer.inlineCallbacks
    def test_client_refuses_cbc_cipher(self):
        """Against an s_server offering only a CBC cipher at TLS 1.2, the client fails with PeerAlertError 'handshake failure'."""
        data, reason, _ = yield self.client_against("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
        self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual(reason.value.alert, "handshake failure")
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def s_client(self, *args: str):  # type: ignore[no-untyped-def]
        port, factory = listen_tls(self, server_cf(), proto=LineEcho)
        run = openssl_client(self, port, "-ign_eof", *args, stdin=b"hello\n")
        code = yield bounded(run.ended, 30, "openssl s_client")
        server_proto = factory.instances[0]
        yield bounded(server_proto.lost, 10, "server end")
        return run, code, server_proto

    @defer.inlineCallbacks
    def test_server_accepts_p256_only_client(self):
        """A TLS 1.3 s_client offering only P-256 is served with that group."""
        run, code, server_proto = yield self.s_client("-groups", "P-256")
        self.assertEqual(code, 0, run.output)
        self.assertIn(b"ECHO: hello", run.output)
        self.assertEqual((server_proto.info.version, server_proto.info.group), ("TLSv1.3", "P-256"))

    @defer.inlineCallbacks
    def test_server_refuses_ffdhe_only_client(self):
        """A TLS 1.3 s_client offering only finite-field groups is refused with TLSError naming the missing key share."""
        run, code, server_proto = yield self.s_client("-groups", "ffdhe2048")
        self.assertNotEqual(code, 0, run.output)
        self.assertTrue(server_proto.reason.check(TLSError), server_proto.reason)
        self.assertIn("key share", str(server_proto.reason.value))
        self.assertEqual(b"".join(server_proto.chunks), b"")

    @defer.inlineCallbacks
    def test_server_refuses_cbc_only_client(self):
        """A TLS 1.2 s_client offering only a CBC cipher is refused with TLSError 'no shared cipher'."""
        run, code, server_proto = yield self.s_client("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
        self.assertNotEqual(code, 0, run.output)
        self.assertTrue(server_proto.reason.check(TLSError), server_proto.reason)
        self.assertIn("no shared cipher", str(server_proto.reason.value))
        self.assertEqual(b"".join(server_proto.chunks), b"")
