"""ALPN end to end: twisted.web over twistls answers a real HTTP/2 client
(curl with nghttp2) and HTTP/1.1 clients still work."""

from __future__ import annotations

import shutil
import subprocess

from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server

from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory
from tests._e2e import Collector, connect_tls
from tests._pki import pki

CURL = shutil.which("curl")


def curl_has_http2() -> bool:
    if CURL is None:
        return False
    out = subprocess.run([CURL, "--version"], capture_output=True, text=True, timeout=10).stdout
    return "HTTP2" in out


class Hello(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello over " + request.clientproto


def listen_site(testcase, **server_kw):
    """A twisted.web Site over twistls on 127.0.0.1; returns the port."""
    p = pki()
    site = server.Site(Hello())
    wrapped = TLSWrappingFactory(site, ServerContextFactory(p.server.cert, p.server.key, **server_kw))
    port = reactor.listenTCP(0, wrapped, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


class HTTP2Tests(TestCase):
    timeout = 60

    def setUp(self):
        if not curl_has_http2():
            raise SkipTest("curl with HTTP/2 support is not installed")

    @defer.inlineCallbacks
    def curl(self, port, *flags):
        p = pki()
        out, err, code = yield getProcessOutputAndValue(
            CURL,
            ["-sS", "--max-time", "15", "--cacert", p.cafile, "--resolve", f"localhost:{port}:127.0.0.1",
             "-w", "\n%{http_version}", *flags, f"https://localhost:{port}/"],
            env={},
        )
        self.assertEqual(code, 0, err)
        body, _, version = out.rpartition(b"\n")
        return body, version

    @defer.inlineCallbacks
    def test_http2_client_gets_http2(self):
        """curl --http2 negotiates h2 through the Site's acceptableProtocols and gets an HTTP/2 answer."""
        port = listen_site(self)
        body, version = yield self.curl(port, "--http2")
        self.assertEqual(version, b"2")
        self.assertEqual(body, b"hello over HTTP/2")

    @defer.inlineCallbacks
    def test_http11_client_still_works(self):
        """curl --http1.1 gets an HTTP/1.1 answer from the same server."""
        port = listen_site(self)
        body, version = yield self.curl(port, "--http1.1")
        self.assertEqual(version, b"1.1")
        self.assertEqual(body, b"hello over HTTP/1.1")

    @defer.inlineCallbacks
    def test_factory_list_overrides_site(self):
        """A context factory with alpn_protocols=['http/1.1'] keeps even an HTTP/2 client on HTTP/1.1."""
        port = listen_site(self, alpn_protocols=["http/1.1"])
        body, version = yield self.curl(port, "--http2")
        self.assertEqual(version, b"1.1")
        self.assertEqual(body, b"hello over HTTP/1.1")


class NegotiatedProtocolTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def negotiate(self, client_alpn, server_alpn):
        p = pki()
        factory = protocol.Factory.forProtocol(protocol.Protocol)
        server_cf = ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=server_alpn)
        port = reactor.listenTCP(0, TLSWrappingFactory(factory, server_cf), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Collector()
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=client_alpn),
                    port.getHost().port, client)
        yield client.made
        info = yield client.transport.when_handshake_done()
        negotiated = client.transport.negotiatedProtocol
        client.transport.loseConnection()
        yield client.done
        return negotiated, info

    @defer.inlineCallbacks
    def test_negotiated_protocol_on_transport(self):
        """transport.negotiatedProtocol (INegotiated) is the agreed ALPN protocol on the client."""
        negotiated, info = yield self.negotiate(["h2", "http/1.1"], ["http/1.1", "h2"])
        self.assertEqual(negotiated, b"http/1.1")
        self.assertEqual(info.alpn_protocol, "http/1.1")

    @defer.inlineCallbacks
    def test_no_common_protocol_is_none(self):
        """Without a protocol in common the connection works and negotiatedProtocol is None."""
        negotiated, info = yield self.negotiate(["h2"], ["imap"])
        self.assertIsNone(negotiated)
        self.assertIsNone(info.alpn_protocol)


class HTTP2SNITests(TestCase):
    timeout = 60

    def setUp(self):
        if not curl_has_http2():
            raise SkipTest("curl with HTTP/2 support is not installed")

    @defer.inlineCallbacks
    def fetch(self, name):
        from tests.engine.test_features import sni_pki

        p = pki()
        certs = sni_pki()
        tls = ServerContextFactory(certs["default"].chain, sni_certificates={"a.example": certs["a.example"].chain})
        port = reactor.listenTCP(0, TLSWrappingFactory(server.Site(Hello()), tls), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        out, err, code = yield getProcessOutputAndValue(
            CURL,
            ["-sS", "--max-time", "15", "--http2", "--cacert", p.cafile, "--resolve", f"{name}:{number}:127.0.0.1",
             "-w", "\n%{http_version}", f"https://{name}:{number}/"],
            env={},
        )
        return out, err, code

    @defer.inlineCallbacks
    def test_sni_name_served_over_http2(self):
        """curl asking for a.example verifies the a.example certificate and speaks HTTP/2."""
        out, err, code = yield self.fetch("a.example")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, b"hello over HTTP/2\n2")

    @defer.inlineCallbacks
    def test_unknown_name_fails_verification(self):
        """curl asking for b.example gets the default certificate and refuses it."""
        out, err, code = yield self.fetch("b.example")
        self.assertEqual(code, 60, err)  # CURLE_PEER_FAILED_VERIFICATION
