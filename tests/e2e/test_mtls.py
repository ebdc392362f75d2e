"""End-to-end mutual TLS over real 127.0.0.1 sockets.

A twistls server given ``client_cafile`` requires and verifies client
certificates: it accepts a good one (and shows it to the application through
``transport.getPeerCertificate()``) and rejects a missing, foreign or expired
one with the specific error, then keeps serving good clients.
"""

from __future__ import annotations

import datetime
import functools
import ssl
from typing import Any

from cryptography import x509
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import TestCase

from twistls import (
    CertificateExpiredError,
    ClientContextFactory,
    NoPeerCertificateError,
    PeerAlertError,
    ServerContextFactory,
    UntrustedCertificateError,
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
)
from tests._pki import Leaf, pki

LINE = b"who am I?\n"
REPLY = b"ECHO: who am I?\n"


@functools.lru_cache(maxsize=None)
def foreign_client() -> Leaf:
    """A client certificate issued by a CA the server does not trust."""
    p = pki()
    return p.leaf("client-foreign", p.other_ca, "client.example")


@functools.lru_cache(maxsize=None)
def expired_client() -> Leaf:
    """A client certificate from the trusted CA that expired yesterday."""
    p = pki()
    now = datetime.datetime.now(datetime.timezone.utc)
    return p.leaf(
        "client-expired", p.ca, "client.example",
        not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1),
    )


class PeerRecordingEcho(LineEcho):
    """LineEcho that records the client certificate it saw."""

    def dataReceived(self, data: bytes) -> None:
        self.peer_certificate = self.transport.getPeerCertificate()
        super().dataReceived(data)


class MutualTLSTests(TestCase):
    """A server requiring client certificates."""

    timeout = 60

    def serve(self, **kw: Any) -> tuple[int, Any]:
        p = pki()
        return listen_tls(self, ServerContextFactory(p.server.cert, p.server.key, client_cafile=p.cafile, **kw),
                          proto=PeerRecordingEcho)

    def client(self, leaf: Leaf | None, **kw: Any) -> ClientContextFactory:
        if leaf is not None:
            kw.update(certificate=leaf.cert, private_key=leaf.key)
        return ClientContextFactory("localhost", cafile=pki().cafile, **kw)

    @defer.inlineCallbacks
    def attempt(self, port: int, factory: Any, cf: ClientContextFactory):  # type: ignore[no-untyped-def]
        """One client connection; returns (data, client reason, server protocol)."""
        before = len(factory.instances)
        collector = Collector(LINE, expect=len(REPLY))
        connect_tls(cf, port, collector)
        data, reason = yield bounded(collector.done, 30, "mTLS client")
        self.assertEqual(len(factory.instances), before + 1)
        server = factory.instances[-1]
        yield bounded(server.lost, 10, "mTLS server end")
        return data, reason, server

    @defer.inlineCallbacks
    def assert_accepted(self, port: int, factory: Any, leaf: Leaf, **kw: Any):  # type: ignore[no-untyped-def]
        data, reason, server = yield self.attempt(port, factory, self.client(leaf, **kw))
        self.assertEqual(data, REPLY)
        self.assertTrue(reason.check(ConnectionDone), reason)
        expected = x509.load_der_x509_certificate(leaf.der)
        seen = server.peer_certificate
        self.assertIsInstance(seen, x509.Certificate)
        self.assertEqual(seen, expected)
        self.assertEqual(seen.subject, expected.subject)
        self.assertEqual(seen.subject.rfc4514_string(), expected.subject.rfc4514_string())
        san = seen.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("client.example", san.get_values_for_type(x509.DNSName))
        self.assertTrue(server.info.verified)
        self.assertEqual(server.info.peer_chain_der[0], leaf.der)
        return server

    @defer.inlineCallbacks
    def test_good_client_certificate_accepted_tls13(self):
        """A client certificate from the trusted CA is accepted over TLS 1.3 and the server sees its subject."""
        port, factory = self.serve()
        server = yield self.assert_accepted(port, factory, pki().client)
        self.assertEqual(server.info.version, "TLSv1.3")

    @defer.inlineCallbacks
    def test_good_client_certificate_accepted_tls12(self):
        """A client certificate from the trusted CA is accepted over TLS 1.2 as well."""
        port, factory = self.serve(maximum_version="TLSv1.2")
        server = yield self.assert_accepted(port, factory, pki().client)
        self.assertEqual(server.info.version, "TLSv1.2")

    @defer.inlineCallbacks
    def test_client_chain_through_intermediate_accepted(self):
        """A client certificate issued by an intermediate, sent with it, is accepted."""
        p = pki()
        port, factory = self.serve()
        data, reason, server = yield self.attempt(
            port, factory, self.client(None, certificate=p.chained_server.cert, private_key=p.chained_server.key)
        )
        self.assertEqual(data, REPLY)
        self.assertEqual(server.peer_certificate, x509.load_der_x509_certificate(p.chained_server.der))
        self.assertEqual(len(server.info.peer_chain_der), 2)

    @defer.inlineCallbacks
    def test_no_client_certificate_rejected(self):
        """A client without a certificate is refused: NoPeerCertificateError on the server, PeerAlertError on the client."""
        port, factory = self.serve()
        data, reason, server = yield self.attempt(port, factory, self.client(None))
        self.assertTrue(server.reason.check(NoPeerCertificateError), server.reason)
        self.assertIn("sent no certificate", str(server.reason.value))
        self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual(reason.value.alert, "certificate required")
        self.assertEqual((data, b"".join(server.chunks)), (b"", b""))
        yield self.assert_accepted(port, factory, pki().client)

    @defer.inlineCallbacks
    def test_no_client_certificate_rejected_tls12(self):
        """Over TLS 1.2 a client without a certificate is refused during the handshake: NoPeerCertificateError on the server, PeerAlertError on the client."""
        port, factory = self.serve(maximum_version="TLSv1.2")
        data, reason, server = yield self.attempt(port, factory, self.client(None))
        self.assertTrue(server.reason.check(NoPeerCertificateError), server.reason)
        self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual((data, b"".join(server.chunks)), (b"", b""))
        yield self.assert_accepted(port, factory, pki().client)

    @defer.inlineCallbacks
    def test_foreign_ca_client_rejected(self):
        """A client certificate from another CA is refused with UntrustedCertificateError (depth 0) on the server."""
        port, factory = self.serve()
        data, reason, server = yield self.attempt(port, factory, self.client(foreign_client()))
        self.assertTrue(server.reason.check(UntrustedCertificateError), server.reason)
        self.assertEqual(server.reason.value.depth, 0)
        self.assertIn("unable to get local issuer certificate", str(server.reason.value))
        self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual(reason.value.alert, "unknown ca")
        self.assertEqual((data, b"".join(server.chunks)), (b"", b""))
        yield self.assert_accepted(port, factory, pki().client)

    @defer.inlineCallbacks
    def test_expired_client_rejected(self):
        """An expired client certificate is refused with CertificateExpiredError on the server and the 'certificate expired' alert on the client."""
        port, factory = self.serve()
        data, reason, server = yield self.attempt(port, factory, self.client(expired_client()))
        self.assertTrue(server.reason.check(CertificateExpiredError), server.reason)
        self.assertEqual(server.reason.value.verify_code, 10)
        self.assertIn("certificate has expired", str(server.reason.value))
        self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual(reason.value.alert, "certificate expired")
        self.assertEqual((data, b"".join(server.chunks)), (b"", b""))
        yield self.assert_accepted(port, factory, pki().client)

    @defer.inlineCallbacks
    def test_optional_client_certificate(self):
        """With require_client_certificate=False a client without a certificate is served and the server sees none."""
        port, factory = self.serve(require_client_certificate=False)
        data, reason, server = yield self.attempt(port, factory, self.client(None))
        self.assertEqual(data, REPLY)
        self.assertIsNone(server.peer_certificate)
        yield self.assert_accepted(port, factory, pki().client)

    @defer.inlineCallbacks
    def test_optional_client_certificate_still_verified(self):
        """With require_client_certificate=False a foreign client certificate is still refused with UntrustedCertificateError."""
        port, factory = self.serve(require_client_certificate=False)
        data, reason, server = yield self.attempt(port, factory, self.client(foreign_client()))
        self.assertTrue(server.reason.check(UntrustedCertificateError), server.reason)
        self.assertEqual(data, b"")


class MutualTLSInteropTests(TestCase):
    """Client certificates across TLS stacks: openssl and Python ``ssl`` clients
    against a twistls server, and a twistls client against ``openssl s_server``."""

    timeout = 60

    def serve(self) -> tuple[int, Any]:
        p = pki()
        return listen_tls(self, ServerContextFactory(p.server.cert, p.server.key, client_cafile=p.cafile),
                          proto=PeerRecordingEcho)

    @defer.inlineCallbacks
    def s_client(self, *args: str):  # type: ignore[no-untyped-def]
        port, factory = self.serve()
        run = openssl_client(self, port, "-CAfile", pki().cafile, "-ign_eof", *args, stdin=LINE)
        code = yield bounded(run.ended, 30, "openssl s_client")
        server = factory.instances[0]
        yield bounded(server.lost, 10, "server end")
        return run, code, server

    @defer.inlineCallbacks
    def test_s_client_with_certificate_accepted(self):
        """openssl s_client presenting a good client certificate is served, and the server sees that certificate."""
        p = pki()
        run, code, server = yield self.s_client("-cert", p.client.cert, "-key", p.client.key)
        self.assertEqual(code, 0, run.output)
        self.assertIn(REPLY, run.output)
        self.assertEqual(server.peer_certificate, x509.load_der_x509_certificate(p.client.der))

    @defer.inlineCallbacks
    def test_s_client_without_certificate_rejected(self):
        """openssl s_client without a client certificate is refused with NoPeerCertificateError on the server."""
        run, code, server = yield self.s_client()
        self.assertNotIn(REPLY, run.output)
        self.assertIn(b"certificate required", run.output)
        self.assertTrue(server.reason.check(NoPeerCertificateError), server.reason)
        self.assertEqual(b"".join(server.chunks), b"")

    @defer.inlineCallbacks
    def python_client(self, leaf: Leaf):  # type: ignore[no-untyped-def]
        port, factory = self.serve()
        ctx = ssl.create_default_context(cafile=pki().cafile)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        result = yield bounded(python_ssl_client(ctx, port, LINE), 30, "Python ssl client")
        server = factory.instances[0]
        yield bounded(server.lost, 10, "server end")
        return result, server

    @defer.inlineCallbacks
    def test_python_client_with_certificate_accepted(self):
        """A Python ssl client presenting a good client certificate is served and identified by its subject."""
        p = pki()
        result, server = yield self.python_client(p.client)
        self.assertIsNone(result["error"])
        self.assertEqual(result["received"], REPLY)
        expected = x509.load_der_x509_certificate(p.client.der)
        self.assertEqual(server.peer_certificate.subject, expected.subject)

    @defer.inlineCallbacks
    def test_python_client_with_foreign_certificate_rejected(self):
        """A Python ssl client presenting a certificate from another CA is refused with UntrustedCertificateError."""
        result, server = yield self.python_client(foreign_client())
        self.assertIsNotNone(result["error"])
        self.assertEqual(result["received"], b"")
        self.assertTrue(server.reason.check(UntrustedCertificateError), server.reason)

    @defer.inlineCallbacks
    def twisted_client(self, leaf: Leaf | None):  # type: ignore[no-untyped-def]
        from twisted.internet import protocol, reactor
        from twisted.internet import ssl as tssl

        p = pki()
        port, factory = self.serve()
        with open(p.cafile, "rb") as f:
            trust = tssl.Certificate.loadPEM(f.read())
        client_certificate = None
        if leaf is not None:
            with open(leaf.chain, "rb") as f:
                client_certificate = tssl.PrivateCertificate.loadPEM(f.read())
        options = tssl.optionsForClientTLS("localhost", trustRoot=trust, clientCertificate=client_certificate)
        collector = Collector(LINE)
        reactor.connectSSL("127.0.0.1", port, protocol.ClientFactory.forProtocol(lambda: collector), options)
        data, reason = yield bounded(collector.done, 30, "Twisted TLS client")
        server = factory.instances[0]
        yield bounded(server.lost, 10, "server end")
        return data, reason, server

    @defer.inlineCallbacks
    def test_twisted_client_with_certificate_accepted(self):
        """Twisted's own TLS client presenting a good certificate is served and identified by the twistls server."""
        p = pki()
        data, reason, server = yield self.twisted_client(p.client)
        self.assertEqual(data, REPLY)
        self.assertEqual(server.peer_certificate, x509.load_der_x509_certificate(p.client.der))

    @defer.inlineCallbacks
    def test_twisted_client_without_certificate_rejected(self):
        """Twisted's own TLS client without a certificate is refused with NoPeerCertificateError on the twistls server."""
        data, reason, server = yield self.twisted_client(None)
        self.assertEqual(data, b"")
        self.assertFalse(reason.check(ConnectionDone), reason)
        self.assertTrue(server.reason.check(NoPeerCertificateError), server.reason)

    @defer.inlineCallbacks
    def fetch_from_s_server(self, cf: ClientContextFactory):  # type: ignore[no-untyped-def]
        p = pki()
        port, _run = yield openssl_server(
            self, "-www", "-Verify", "1", "-verify_return_error", "-CAfile", p.cafile, cert=p.server.cert, key=p.server.key
        )
        collector = Collector(b"GET / HTTP/1.0\r\n\r\n")
        connect_tls(cf, port, collector)
        result = yield bounded(collector.done, 30, "twistls client against s_server -Verify")
        return result

    @defer.inlineCallbacks
    def test_twistls_client_certificate_accepted_by_s_server(self):
        """s_server -Verify accepts a twistls client's certificate and shows its subject on the status page."""
        p = pki()
        cf = ClientContextFactory("localhost", cafile=p.cafile, certificate=p.client.cert, private_key=p.client.key)
        data, reason = yield self.fetch_from_s_server(cf)
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertIn(b"HTTP/1.0 200 ok", data)
        self.assertIn(b"Client certificate", data)
        subject = x509.load_der_x509_certificate(p.client.der).subject
        ou = subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        self.assertIn(ou.encode(), data)

    @defer.inlineCallbacks
    def test_twistls_client_without_certificate_refused_by_s_server(self):
        """s_server -Verify refuses a twistls client without a certificate, which fails with PeerAlertError."""
        data, reason = yield self.fetch_from_s_server(ClientContextFactory("localhost", cafile=pki().cafile))
        self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual(reason.value.alert, "certificate required")
        self.assertEqual(data, b"")


class ConcurrentMutualTLSTests(TestCase):
    """Good and bad clients at the same time: each gets its own verdict."""

    timeout = 120

    @defer.inlineCallbacks
    def test_interleaved_good_and_bad_clients(self):
        """Twelve good, twelve foreign and twelve certificate-less clients connect at once; each good one is served and each bad one gets its own typed error."""
        p = pki()
        port, factory = listen_tls(
            self, ServerContextFactory(p.server.cert, p.server.key, client_cafile=p.cafile), proto=PeerRecordingEcho
        )
        kinds = {
            "good": ClientContextFactory("localhost", cafile=p.cafile, certificate=p.client.cert, private_key=p.client.key),
            "foreign": ClientContextFactory(
                "localhost", cafile=p.cafile, certificate=foreign_client().cert, private_key=foreign_client().key
            ),
            "none": ClientContextFactory("localhost", cafile=p.cafile),
        }
        attempts = []
        for i in range(12):
            for kind, cf in kinds.items():
                collector = Collector(LINE, expect=len(REPLY))
                connect_tls(cf, port, collector)
                attempts.append((kind, collector))
        results = yield bounded(
            defer.gatherResults([c.done for _, c in attempts]), 90, "concurrent mTLS clients"
        )
        for (kind, _), (data, reason) in zip(attempts, results):
            if kind == "good":
                self.assertEqual(data, REPLY, reason)
            else:
                self.assertEqual(data, b"")
                self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual(len(factory.instances), len(attempts))
        yield bounded(defer.gatherResults([s.lost for s in factory.instances]), 30, "server ends")
        verdicts: dict[str, int] = {}
        for server in factory.instances:
            name = type(server.reason.value).__name__
            verdicts[name] = verdicts.get(name, 0) + 1
            if server.reason.check(ConnectionDone):
                self.assertEqual(server.peer_certificate, x509.load_der_x509_certificate(p.client.der))
                self.assertEqual(b"".join(server.chunks), LINE)
            else:
                self.assertEqual(b"".join(server.chunks), b"")
        self.assertEqual(
            verdicts, {"ConnectionDone": 12, "UntrustedCertificateError": 12, "NoPeerCertificateError": 12}
        )
