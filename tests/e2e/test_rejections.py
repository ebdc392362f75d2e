"""End-to-end rejections over real 127.0.0.1 sockets.

Each bad connection ends with its specific twistls error and a message a
person can act on, and the same listening server then serves a good client.
The last tests check the security ordering: a secret the client writes in
``connectionMade`` never reaches a server the client rejected.
"""

from __future__ import annotations

import datetime
import os
import ssl
import warnings
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.trial.unittest import SkipTest, TestCase

from twistls import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    ChainTooLongError,
    ClientContextFactory,
    HostnameMismatchError,
    NoPeerCertificateError,
    PeerAlertError,
    PinMismatchError,
    ProtocolVersionError,
    ServerContextFactory,
    TLSError,
    TLSWrappingFactory,
    UntrustedCertificateError,
    spki_sha256,
)
from tests._e2e import Collector, LineEcho, ServerRecorder, bounded, connect_tls, listen_tls, python_ssl_client
from tests._pki import HOSTS, pki, self_signed

LINE = b"hello\n"
REPLY = b"ECHO: hello\n"


def client_cf(host: str = "localhost", **kw: Any) -> ClientContextFactory:
    kw.setdefault("cafile", pki().cafile)
    return ClientContextFactory(host, **kw)


class RejectionTests(TestCase):
    """Each rejection is typed and readable, and the server keeps serving."""

    timeout = 60

    def serve(self, server_cf: ServerContextFactory) -> tuple[int, Any]:
        return listen_tls(self, server_cf, proto=LineEcho)

    @defer.inlineCallbacks
    def attempt(self, port: int, cf: ClientContextFactory, host: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
        """One client connection sending LINE; returns (data, reason)."""
        collector = Collector(LINE, expect=len(REPLY))
        connect_tls(cf, port, collector, host=host)
        result = yield bounded(collector.done, 30, "twistls client")
        return result

    @defer.inlineCallbacks
    def assert_served(self, port: int, cf: ClientContextFactory):  # type: ignore[no-untyped-def]
        """A good client on the same port gets its line echoed."""
        data, reason = yield self.attempt(port, cf)
        self.assertEqual(data, REPLY)
        self.assertTrue(reason.check(ConnectionDone), reason)

    def write_pem(self, name: str, *blobs: bytes) -> str:
        base = self.mktemp()
        os.makedirs(base)
        path = os.path.join(base, name)
        with open(path, "wb") as f:
            f.write(b"".join(blobs))
        return path

    @defer.inlineCallbacks
    def test_wrong_hostname(self):
        """A client expecting another name fails with HostnameMismatchError naming the host and the certificate's names."""
        p = pki()
        port, factory = self.serve(ServerContextFactory(p.server.cert, p.server.key))
        data, reason = yield self.attempt(port, client_cf("wrong.example"))
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        error = reason.value
        self.assertEqual(error.hostname, "wrong.example")
        self.assertIn("DNS:localhost", error.names)
        self.assertIn("IP:127.0.0.1", error.names)
        self.assertIn("certificate is not valid for 'wrong.example'", str(error))
        self.assertEqual(data, b"")
        yield self.assert_served(port, client_cf("localhost"))

    @defer.inlineCallbacks
    def test_wrong_ip_address(self):
        """A client expecting another IP address fails with HostnameMismatchError; the right IP is served."""
        p = pki()
        port, _ = self.serve(ServerContextFactory(p.server.cert, p.server.key))
        data, reason = yield self.attempt(port, client_cf("127.0.0.2"))
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertIn("'127.0.0.2'", str(reason.value))
        self.assertIn("IP:127.0.0.1", str(reason.value))
        yield self.assert_served(port, client_cf("127.0.0.1"))

    @defer.inlineCallbacks
    def test_wrong_ipv6_address(self):
        """Over ::1 a client expecting ::2 fails with HostnameMismatchError, and a client expecting ::1 is served."""
        p = pki()
        factory = protocol.Factory.forProtocol(LineEcho)
        factory.instances = []  # type: ignore[attr-defined]
        try:
            listening = reactor.listenTCP(
                0, TLSWrappingFactory(factory, ServerContextFactory(p.server.cert, p.server.key)), interface="::1"
            )
        except CannotListenError as exc:
            raise SkipTest(f"no IPv6 loopback: {exc}")
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        data, reason = yield self.attempt(port, client_cf("::2"), host="::1")
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertIn("'::2'", str(reason.value))
        self.assertIn("IP:::1", str(reason.value))
        data, reason = yield self.attempt(port, client_cf("[::1]"), host="::1")
        self.assertEqual(data, REPLY)
        self.assertTrue(reason.check(ConnectionDone), reason)

    @defer.inlineCallbacks
    def test_expired_certificate(self):
        """An expired server certificate fails with CertificateExpiredError at depth 0; the same server's valid name is served."""
        p = pki()
        # One server, two certificates chosen by SNI: example.com gets the expired one.
        server = ServerContextFactory(
            p.server.cert, p.server.key, sni_certificates={"example.com": (p.expired_server.cert, p.expired_server.key)}
        )
        port, _ = self.serve(server)
        data, reason = yield self.attempt(port, client_cf("example.com"))
        self.assertTrue(reason.check(CertificateExpiredError), reason)
        error = reason.value
        self.assertEqual(error.verify_code, 10)
        self.assertEqual(error.depth, 0)
        self.assertIn("certificate has expired", str(error))
        self.assertIn("depth 0", str(error))
        self.assertEqual(data, b"")
        yield self.assert_served(port, client_cf("localhost"))

    @defer.inlineCallbacks
    def test_not_yet_valid_certificate(self):
        """A server certificate valid only from tomorrow fails with CertificateNotYetValidError; a valid certificate on the same port is served."""
        p = pki()
        now = datetime.datetime.now(datetime.timezone.utc)
        future = p.leaf(
            "future", p.ca, *HOSTS, not_before=now + datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=30)
        )
        server = ServerContextFactory(p.server.cert, p.server.key, sni_certificates={"example.com": (future.cert, future.key)})
        port, _ = self.serve(server)
        data, reason = yield self.attempt(port, client_cf("example.com"))
        self.assertTrue(reason.check(CertificateNotYetValidError), reason)
        self.assertEqual((reason.value.verify_code, reason.value.depth), (9, 0))
        self.assertIn("certificate is not yet valid", str(reason.value))
        yield self.assert_served(port, client_cf("localhost"))

    @defer.inlineCallbacks
    def test_untrusted_root(self):
        """A chain to an unknown root fails with UntrustedCertificateError; a client trusting that root is served."""
        p = pki()
        port, _ = self.serve(ServerContextFactory(p.untrusted_server.cert, p.untrusted_server.key))
        data, reason = yield self.attempt(port, client_cf())
        self.assertTrue(reason.check(UntrustedCertificateError), reason)
        self.assertEqual(reason.value.verify_code, 20)
        self.assertEqual(reason.value.depth, 0)
        self.assertIn("unable to get local issuer certificate", str(reason.value))
        yield self.assert_served(port, client_cf(cafile=p.other_cafile))

    @defer.inlineCallbacks
    def test_self_signed(self):
        """A self-signed server certificate fails with UntrustedCertificateError; a client that trusts it is served."""
        der, key_pem = self_signed("localhost", san=[x509.DNSName("localhost")])
        cert_pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        cert = self.write_pem("self.pem", cert_pem)
        key = self.write_pem("self-key.pem", key_pem)
        os.chmod(key, 0o600)
        port, _ = self.serve(ServerContextFactory(cert, key))
        data, reason = yield self.attempt(port, client_cf())
        self.assertTrue(reason.check(UntrustedCertificateError), reason)
        self.assertEqual(reason.value.verify_code, 18)
        self.assertIn("self-signed certificate", str(reason.value))
        self.assertIn("localhost", str(reason.value))  # the subject is named
        yield self.assert_served(port, client_cf(cafile=cert))

    @defer.inlineCallbacks
    def test_missing_intermediate(self):
        """A server that leaves out its intermediate fails with UntrustedCertificateError at depth 0; a client holding the intermediate is served."""
        p = pki()
        leaf = p.missing_intermediate_server
        port, _ = self.serve(ServerContextFactory(leaf.cert, leaf.key))
        data, reason = yield self.attempt(port, client_cf())
        self.assertTrue(reason.check(UntrustedCertificateError), reason)
        self.assertEqual(reason.value.depth, 0)
        self.assertEqual(reason.value.verify_code, 20)
        self.assertIn("unable to get local issuer certificate", str(reason.value))
        with_intermediate = self.write_pem("roots.pem", p.ca.cert_pem.bytes(), p.intermediate.cert_pem.bytes())
        yield self.assert_served(port, client_cf(cafile=with_intermediate))

    @defer.inlineCallbacks
    def test_chain_too_long(self):
        """A chain with three intermediates fails with ChainTooLongError under verify_depth=1; the default depth is served."""
        p = pki()
        port, _ = self.serve(ServerContextFactory(p.deep_server.cert, p.deep_server.key))
        data, reason = yield self.attempt(port, client_cf(verify_depth=1))
        self.assertTrue(reason.check(ChainTooLongError), reason)
        self.assertEqual(reason.value.verify_code, 22)
        self.assertIn("certificate chain too long", str(reason.value))
        self.assertIn(f"at depth {reason.value.depth}", str(reason.value))
        self.assertEqual(data, b"")
        yield self.assert_served(port, client_cf())

    @defer.inlineCallbacks
    def test_chain_within_depth_limit(self):
        """The same deep chain is accepted when verify_depth leaves room for its three intermediates."""
        p = pki()
        port, _ = self.serve(ServerContextFactory(p.deep_server.cert, p.deep_server.key))
        yield self.assert_served(port, client_cf(verify_depth=3))

    @defer.inlineCallbacks
    def test_client_certificate_missing(self):
        """A server requiring a client certificate refuses a client without one (NoPeerCertificateError on the server, PeerAlertError on the client)."""
        p = pki()
        port, factory = self.serve(ServerContextFactory(p.server.cert, p.server.key, client_cafile=p.cafile))
        data, reason = yield self.attempt(port, client_cf())
        self.assertTrue(reason.check(TLSError), reason)
        self.assertTrue(reason.check(PeerAlertError), reason)
        self.assertEqual(reason.value.alert, "certificate required")
        self.assertIn("requires a client certificate", str(reason.value))
        self.assertEqual(data, b"")
        server = factory.instances[0]
        yield bounded(server.lost, 10, "server end")
        self.assertTrue(server.reason.check(NoPeerCertificateError), server.reason)
        self.assertIn("sent no certificate", str(server.reason.value))
        self.assertEqual(b"".join(server.chunks), b"")
        yield self.assert_served(port, client_cf(certificate=p.client.cert, private_key=p.client.key))

    @defer.inlineCallbacks
    def test_tls1_1_only_client(self):
        """A Python client offering only TLS 1.1 is refused with ProtocolVersionError on the server; a TLS 1.2 client is served."""
        p = pki()
        port, factory = self.serve(ServerContextFactory(p.server.cert, p.server.key))
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(p.cafile)
        old.set_ciphers("DEFAULT@SECLEVEL=0")
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        result = yield bounded(python_ssl_client(old, port, LINE), 30, "TLS 1.1 client")
        self.assertIsInstance(result["error"], ssl.SSLError)
        self.assertEqual(result["received"], b"")
        server = factory.instances[0]
        yield bounded(server.lost, 10, "server end")
        self.assertTrue(server.reason.check(ProtocolVersionError), server.reason)
        self.assertIn("no TLS protocol version in common", str(server.reason.value))
        # The same client allowed TLS 1.2 (still with the legacy cipher string) is served.
        new = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        new.load_verify_locations(p.cafile)
        new.set_ciphers("DEFAULT@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            new.minimum_version = ssl.TLSVersion.TLSv1_1
        new.maximum_version = ssl.TLSVersion.TLSv1_2
        result = yield bounded(python_ssl_client(new, port, LINE), 30, "TLS 1.2 client")
        self.assertIsNone(result["error"])
        self.assertEqual((result["version"], result["received"]), ("TLSv1.2", REPLY))


class SecurityOrderingTests(TestCase):
    """A rejected server never receives what the client wrote in connectionMade."""

    timeout = 60

    @defer.inlineCallbacks
    def secret_to(self, server_cf: ServerContextFactory, client: ClientContextFactory, *, version: str | None = None):  # type: ignore[no-untyped-def]
        port, factory = listen_tls(self, server_cf, proto=ServerRecorder)
        collector = Collector(b"SECRET password=hunter2\n")
        connect_tls(client, port, collector)
        data, reason = yield bounded(collector.done, 30, "client")
        self.assertEqual(len(factory.instances), 1)
        server = factory.instances[0]
        yield bounded(server.lost, 10, "server end")
        self.assertEqual(b"".join(server.chunks), b"")
        self.assertEqual(data, b"")
        return reason, server

    def server_cf(self, **kw: Any) -> ServerContextFactory:
        p = pki()
        return ServerContextFactory(p.server.cert, p.server.key, **kw)

    @defer.inlineCallbacks
    def test_secret_not_sent_to_wrong_name_tls13(self):
        """Over TLS 1.3 a server failing the hostname check never receives the secret, and the client sees HostnameMismatchError."""
        reason, server = yield self.secret_to(self.server_cf(maximum_version="TLSv1.3"), client_cf("evil.example"))
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertFalse(server.reason.check(ConnectionDone), server.reason)

    @defer.inlineCallbacks
    def test_secret_not_sent_to_wrong_name_tls12(self):
        """Over TLS 1.2 a server failing the hostname check never receives the secret."""
        reason, server = yield self.secret_to(self.server_cf(maximum_version="TLSv1.2"), client_cf("evil.example"))
        self.assertTrue(reason.check(HostnameMismatchError), reason)

    @defer.inlineCallbacks
    def test_secret_not_sent_on_pin_mismatch(self):
        """A server with a valid certificate but an unpinned key never receives the secret (PinMismatchError)."""
        pin = spki_sha256(pki().client.der)  # some other key
        reason, _ = yield self.secret_to(self.server_cf(), client_cf("localhost", pins=[pin]))
        self.assertTrue(reason.check(PinMismatchError), reason)
        self.assertIn(pin, str(reason.value))

    @defer.inlineCallbacks
    def test_secret_sent_to_right_server(self):
        """The same secret does reach a server that passes the Checker (the twin of the tests above)."""
        p = pki()
        port, factory = listen_tls(self, self.server_cf(), proto=ServerRecorder)
        collector = Collector(b"SECRET password=hunter2\n")
        connect_tls(client_cf("localhost", pins=[spki_sha256(p.server.der)]), port, collector)
        yield bounded(collector.made, 10, "client connected")
        server = None
        for _ in range(200):
            if factory.instances and b"".join(factory.instances[0].chunks):
                server = factory.instances[0]
                break
            yield deferLater(0.05)
        self.assertIsNotNone(server)
        self.assertEqual(b"".join(server.chunks), b"SECRET password=hunter2\n")
        collector.transport.loseConnection()
        yield bounded(collector.done, 10, "client end")
        yield bounded(server.lost, 10, "server end")


def deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)
