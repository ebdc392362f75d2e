"""Issue 4 features end to end over 127.0.0.1: server SNI, session
resumption (also with openssl s_client), protocol control, CRLs and reload,
each observed from a real peer."""

from __future__ import annotations

import os
import re
import signal
import tempfile

from cryptography import x509
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from twistls import (
    CertificateRevokedError,
    ClientContextFactory,
    HostnameMismatchError,
    ProtocolVersionError,
    ServerContextFactory,
    TLSError,
    TLSWrappingFactory,
)
from twistls.context import reload_on_sighup
from tests._e2e import Collector, connect_tls
from tests._pki import pki
from tests.engine.test_features import make_crl, sni_pki

OPENSSL = "/usr/bin/openssl"


@implementer(IHandshakeListener)
class Closer(protocol.Protocol):
    """Server side for openssl s_client: records the info, says hello, closes."""

    def handshakeCompleted(self):
        self.factory.infos.append(self.transport.connection_info())
        self.transport.write(b"hello\n")
        self.transport.loseConnection()


@implementer(IHandshakeListener)
class Greeter(protocol.Protocol):
    """Server side: records the connection info at handshake, says hello, echoes."""

    def handshakeCompleted(self):
        self.factory.infos.append(self.transport.connection_info())
        self.transport.write(b"hello\n")

    def dataReceived(self, data):
        self.transport.write(data)


def listen(testcase, server_cf, proto=None):
    factory = protocol.Factory.forProtocol(proto or Greeter)
    factory.infos = []
    port = reactor.listenTCP(0, TLSWrappingFactory(factory, server_cf), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port, factory


@defer.inlineCallbacks
def talk(client_cf, port, payload=b"ping"):
    """Connect, get the greeting and an echo, close cleanly; returns (info, peer cert, reason)."""
    client = Collector(payload, expect=len(b"hello\n") + len(payload))
    connect_tls(client_cf, port, client)
    data, reason = yield client.done
    info = client.transport.connection_info() if client.transport is not None else None
    cert = client.transport.getPeerCertificate() if info is not None else None
    return info, cert, reason, data


def dns_names(cert):
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


class SNIWireTests(TestCase):
    timeout = 60

    def server_cf(self):
        certs = sni_pki()
        return ServerContextFactory(
            certs["default"].chain,
            sni_certificates={
                "a.example": certs["a.example"].chain,
                "b.example": certs["b.example"].chain,
                "*.wild.example": certs["*.wild.example"].chain,
            },
        )

    @defer.inlineCallbacks
    def test_each_name_gets_its_certificate(self):
        """Clients asking for a.example, b.example and x.wild.example each verify the certificate they receive."""
        p = pki()
        port, factory = listen(self, self.server_cf())
        for asked, expected in (("a.example", "a.example"), ("b.example", "b.example"), ("x.wild.example", "*.wild.example")):
            info, cert, reason, data = yield talk(ClientContextFactory(asked, cafile=p.cafile), port)
            self.assertTrue(reason.check(ConnectionDone), reason)
            self.assertEqual(dns_names(cert), [expected])
            self.assertEqual(info.server_name, asked)
            self.assertEqual(factory.infos[-1].server_name, asked)
            self.assertEqual(data, b"hello\nping")

    @defer.inlineCallbacks
    def test_unknown_name_gets_default_and_fails(self):
        """A client asking for a name the server lacks receives the default certificate and rejects it."""
        p = pki()
        port, _ = listen(self, self.server_cf())
        info, cert, reason, data = yield talk(ClientContextFactory("c.example", cafile=p.cafile), port)
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertIn("DNS:default.example", str(reason.value))
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def test_openssl_without_sni_gets_default(self):
        """openssl s_client -noservername receives the default certificate."""
        p = pki()
        port, _ = listen(self, self.server_cf())
        out, err, code = yield getProcessOutputAndValue(
            "/usr/bin/timeout",
            ["15", OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-noservername", "-CAfile", p.cafile],
            env={}, stdinBytes=b"",
        )
        pem = re.search(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
        self.assertIsNotNone(pem, out + err)
        self.assertEqual(dns_names(x509.load_pem_x509_certificate(pem.group(0))), ["default.example"])


class ResumptionWireTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def resumes(self, version, **server_kw):
        p = pki()
        port, factory = listen(self, ServerContextFactory(p.server.cert, p.server.key, maximum_version=version, **server_kw))
        client_cf = ClientContextFactory("localhost", cafile=p.cafile)
        first, _, reason, _ = yield talk(client_cf, port)
        self.assertTrue(reason.check(ConnectionDone), reason)
        second, _, reason, data = yield talk(client_cf, port)
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(data, b"hello\nping")
        self.assertEqual(second.version, version)
        return first, second, factory.infos

    @defer.inlineCallbacks
    def test_tls13_second_connection_resumes(self):
        """The second TLS 1.3 connection to the same server resumes (seen by both ends)."""
        first, second, server_infos = yield self.resumes("TLSv1.3")
        self.assertFalse(first.session_reused)
        self.assertTrue(second.session_reused)
        self.assertEqual([i.session_reused for i in server_infos], [False, True])

    @defer.inlineCallbacks
    def test_tls12_second_connection_resumes(self):
        """The second TLS 1.2 connection resumes (session ticket)."""
        first, second, _ = yield self.resumes("TLSv1.2")
        self.assertFalse(first.session_reused)
        self.assertTrue(second.session_reused)

    @defer.inlineCallbacks
    def test_tls12_session_id_resumes(self):
        """With session_tickets=False the TLS 1.2 session-ID cache resumes."""
        _, second, server_infos = yield self.resumes("TLSv1.2", session_tickets=False)
        self.assertTrue(second.session_reused)
        self.assertTrue(server_infos[-1].session_reused)

    @defer.inlineCallbacks
    def test_no_cache_no_resumption(self):
        """A client with session_cache_size=0 does a full handshake every time."""
        p = pki()
        port, _ = listen(self, ServerContextFactory(p.server.cert, p.server.key))
        client_cf = ClientContextFactory("localhost", cafile=p.cafile, session_cache_size=0)
        yield talk(client_cf, port)
        second, _, _, _ = yield talk(client_cf, port)
        self.assertFalse(second.session_reused)

    @defer.inlineCallbacks
    def test_resumed_session_still_checked(self):
        """A session made for one expected host (same address, no SNI) is not offered for another, which fails the Checker."""
        p = pki()
        if not hasattr(p, "ip_only"):
            p.ip_only = p.leaf("ip-only", p.ca, "127.0.0.1")
        port, factory = listen(self, ServerContextFactory(p.ip_only.cert, p.ip_only.key))
        client_cf = ClientContextFactory("127.0.0.1", cafile=p.cafile)
        info, _, reason, _ = yield talk(client_cf, port)
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(len(client_cf._sessions), 1)
        other = client_cf.with_hostname("127.0.0.2")
        engines = []
        create = other.create_engine

        def create_recording(**kw):
            engine = create(**kw)
            engines.append(engine)
            return engine

        other.create_engine = create_recording
        _, _, reason, data = yield talk(other, port)
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertEqual(data, b"")
        self.assertEqual(len(engines), 1)
        self.assertFalse(engines[0].session_reused())  # a full handshake, refused inside it

    @defer.inlineCallbacks
    def s_client(self, port, *args):
        p = pki()
        out, err, code = yield getProcessOutputAndValue(
            "/usr/bin/timeout",
            ["15", OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
             "-CAfile", p.cafile, "-ign_eof", *args],
            env={}, stdinBytes=b"",
        )
        return (out + err).decode("ascii", "replace")

    @defer.inlineCallbacks
    def test_openssl_s_client_resumes(self):
        """openssl s_client -sess_out then -sess_in resumes against a twistls server (TLS 1.3 and 1.2)."""
        p = pki()
        for version, flag in (("TLSv1.3", "-tls1_3"), ("TLSv1.2", "-tls1_2")):
            port, factory = listen(self, ServerContextFactory(p.server.cert, p.server.key), Closer)
            sess = os.path.join(tempfile.mkdtemp(prefix="twistls-sess-"), "sess.pem")
            first = yield self.s_client(port, flag, "-sess_out", sess)
            self.assertIn("New, " + version, first)
            self.assertTrue(os.path.getsize(sess) > 0)
            second = yield self.s_client(port, flag, "-sess_in", sess)
            self.assertIn("Reused, " + version, second)
            self.assertEqual([i.session_reused for i in factory.infos], [False, True])

    @defer.inlineCallbacks
    def test_openssl_s_client_other_server_does_not_resume(self):
        """A session from one twistls server is not resumed by another server with its own keys."""
        p = pki()
        port1, _ = listen(self, ServerContextFactory(p.server.cert, p.server.key), Closer)
        port2, _ = listen(self, ServerContextFactory(p.server.cert, p.server.key), Closer)
        sess = os.path.join(tempfile.mkdtemp(prefix="twistls-sess-"), "sess.pem")
        yield self.s_client(port1, "-sess_out", sess)
        second = yield self.s_client(port2, "-sess_in", sess)
        self.assertIn("New, TLSv1.3", second)


class ProtocolControlWireTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def connect(self, server_kw, client_kw):
        p = pki()
        port, factory = listen(self, ServerContextFactory(p.server.cert, p.server.key, **server_kw))
        info, _, reason, _ = yield talk(ClientContextFactory("localhost", cafile=p.cafile, **client_kw), port)
        return info, reason

    @defer.inlineCallbacks
    def test_version_ceiling_and_floor_disjoint(self):
        """Server max TLS 1.2 against client min TLS 1.3 fails with ProtocolVersionError."""
        info, reason = yield self.connect(dict(maximum_version="TLSv1.2"), dict(minimum_version="TLSv1.3"))
        self.assertTrue(reason.check(ProtocolVersionError), reason)

    @defer.inlineCallbacks
    def test_version_ceiling_respected(self):
        """Server max TLS 1.2 against a default client negotiates TLS 1.2 with the chosen cipher."""
        info, reason = yield self.connect(
            dict(maximum_version="TLSv1.2", ciphers="ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305"), {}
        )
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(info.version, "TLSv1.2")
        self.assertIn("CHACHA20", info.cipher)

    @defer.inlineCallbacks
    def test_ciphersuite_chosen(self):
        """A client restricted to TLS_CHACHA20_POLY1305_SHA256 gets that suite."""
        info, reason = yield self.connect({}, dict(ciphersuites="TLS_CHACHA20_POLY1305_SHA256"))
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(info.cipher, "TLS_CHACHA20_POLY1305_SHA256")

    @defer.inlineCallbacks
    def test_disjoint_ciphersuites_fail(self):
        """Disjoint TLS 1.3 ciphersuites fail the handshake with a TLSError."""
        info, reason = yield self.connect(
            dict(ciphersuites="TLS_AES_256_GCM_SHA384", minimum_version="TLSv1.3"),
            dict(ciphersuites="TLS_CHACHA20_POLY1305_SHA256"),
        )
        self.assertTrue(reason.check(TLSError), reason)

    @defer.inlineCallbacks
    def test_group_observed(self):
        """Client X25519:P-256 against server P-384:P-256 negotiates P-256, seen in the connection info."""
        info, reason = yield self.connect(dict(groups="P-384:P-256"), dict(groups="X25519:P-256"))
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(info.group, "P-256")

    @defer.inlineCallbacks
    def test_disjoint_groups_fail(self):
        """Disjoint groups fail the handshake with a TLSError."""
        info, reason = yield self.connect(dict(groups="P-384"), dict(groups="X25519"))
        self.assertTrue(reason.check(TLSError), reason)


class CRLWireTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_revoked_server_fails(self):
        """A client with the CA's CRL rejects the revoked server certificate with CertificateRevokedError."""
        p = pki()
        port, _ = listen(self, ServerContextFactory(p.server.cert, p.server.key))
        crl = make_crl(p.ca, [p.server.der])
        _, _, reason, data = yield talk(ClientContextFactory("localhost", cafile=p.cafile, crlfile=crl), port)
        self.assertTrue(reason.check(CertificateRevokedError), reason)
        self.assertEqual(data, b"")

    @defer.inlineCallbacks
    def test_unrevoked_server_passes(self):
        """The same client accepts a server whose certificate is not on the CRL."""
        p = pki()
        port, _ = listen(self, ServerContextFactory(p.server.cert, p.server.key))
        crl = make_crl(p.ca, [p.client.der])
        info, _, reason, _ = yield talk(ClientContextFactory("localhost", cafile=p.cafile, crlfile=crl), port)
        self.assertTrue(reason.check(ConnectionDone), reason)


class ReloadWireTests(TestCase):
    timeout = 60

    def setUp(self):
        certs = sni_pki()
        self.certs = certs
        self.path = os.path.join(tempfile.mkdtemp(prefix="twistls-reload-"), "server.pem")
        self.write("a.example")

    def write(self, name):
        with open(self.path, "wb") as f, open(self.certs[name].chain, "rb") as src:
            f.write(src.read())

    @defer.inlineCallbacks
    def test_reload_new_connections_new_certificate(self):
        """After reload() a new connection gets the new certificate while an open one keeps working."""
        p = pki()
        server_cf = ServerContextFactory(self.path)
        port, _ = listen(self, server_cf)
        old = Collector(b"")
        connect_tls(ClientContextFactory("a.example", cafile=p.cafile), port, old)
        yield old.made
        yield old.transport.when_handshake_done()
        self.write("b.example")
        server_cf.reload()
        info, cert, reason, _ = yield talk(ClientContextFactory("b.example", cafile=p.cafile), port)
        self.assertEqual(dns_names(cert), ["b.example"])
        old.expect = len(b"hello\nstill here")
        old.transport.write(b"still here")
        data, reason = yield old.done
        self.assertEqual(data, b"hello\nstill here")
        self.assertEqual(dns_names(old.transport.getPeerCertificate()), ["a.example"])

    @defer.inlineCallbacks
    def test_sighup_reloads(self):
        """reload_on_sighup() reloads on SIGHUP; a bad file then keeps the old certificate."""
        p = pki()
        server_cf = ServerContextFactory(self.path)
        port, _ = listen(self, server_cf)
        self.addCleanup(reload_on_sighup(server_cf, reactor=reactor))
        self.write("b.example")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(50):
            yield deferLater(0.02)
            info, cert, reason, _ = yield talk(ClientContextFactory("b.example", cafile=p.cafile), port)
            if reason.check(ConnectionDone):
                break
        self.assertEqual(dns_names(cert), ["b.example"])
        with open(self.path, "wb") as f:
            f.write(b"not a certificate")
        os.kill(os.getpid(), signal.SIGHUP)
        yield deferLater(0.2)
        info, cert, reason, _ = yield talk(ClientContextFactory("b.example", cafile=p.cafile), port)
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertEqual(dns_names(cert), ["b.example"])
        self.flushLoggedErrors()


def deferLater(seconds):
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


class KeyLogWireTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_server_keylog_matches_openssl(self):
        """A twistls server's key log holds exactly the secrets openssl s_client logged for the same connection."""
        p = pki()
        directory = tempfile.mkdtemp(prefix="twistls-keylog-")
        ours, theirs = os.path.join(directory, "server.log"), os.path.join(directory, "s_client.log")
        server_cf = ServerContextFactory(p.server.cert, p.server.key, keylog_file=ours)
        port, _ = listen(self, server_cf, Closer)
        out, err, code = yield getProcessOutputAndValue(
            "/usr/bin/timeout",
            ["15", OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
             "-CAfile", p.cafile, "-ign_eof", "-keylogfile", theirs],
            env={}, stdinBytes=b"",
        )
        with open(theirs) as f:
            expected = {line.strip() for line in f if line.strip() and not line.startswith("#")}
        with open(ours) as f:
            logged = {line.strip() for line in f if line.strip()}
        self.assertEqual({line.split()[0] for line in logged}, {
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"})
        self.assertEqual(logged, expected)

    @defer.inlineCallbacks
    def test_no_keylog_by_default(self):
        """Without keylog_file or SSLKEYLOGFILE nothing is written for a connection."""
        p = pki()
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "SSLKEYLOGFILE"})
        server_cf = ServerContextFactory(p.server.cert, p.server.key)
        client_cf = ClientContextFactory("localhost", cafile=p.cafile)
        port, _ = listen(self, server_cf)
        info, _, reason, _ = yield talk(client_cf, port)
        self.assertTrue(reason.check(ConnectionDone), reason)
        from twistls import _openssl

        self.assertIsNone(_openssl.ctx_hooks(server_cf.context_address).keylog)
        self.assertIsNone(_openssl.ctx_hooks(client_cf.context_address).keylog)
