"""twisted.web.client.Agent over twistls (HTTPSEndpointFactory), on 127.0.0.1."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from twistls import (
    ClientContextFactory,
    ConfigurationError,
    HostnameMismatchError,
    HTTPSEndpointFactory,
    ServerContextFactory,
    UntrustedCertificateError,
)
from twistls.endpoints import wrap_server_tls
from twisted.internet.endpoints import TCP4ServerEndpoint
from tests._pki import pki


class AgentTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def serve(self):
        p = pki()
        root = Resource()
        root.putChild(b"hello", Data(b"hello over twistls", "text/plain"))
        endpoint = wrap_server_tls(
            ServerContextFactory(p.server.cert, p.server.key), TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        )
        port = yield endpoint.listen(Site(root))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def agent(self, cafile):
        agent = Agent.usingEndpointFactory(reactor, HTTPSEndpointFactory(reactor, ClientContextFactory(cafile=cafile)))
        self.addCleanup(agent._pool.closeCachedConnections)
        return agent

    @defer.inlineCallbacks
    def test_agent_fetches_https_through_twistls(self):
        """An Agent with HTTPSEndpointFactory fetches a page from a twistls HTTPS server, verified."""
        number = yield self.serve()
        response = yield self.agent(pki().cafile).request(b"GET", f"https://localhost:{number}/hello".encode())
        body = yield readBody(response)
        self.assertEqual((response.code, body), (200, b"hello over twistls"))

    @defer.inlineCallbacks
    def test_agent_refuses_an_untrusted_server(self):
        """The same Agent trusting another CA fails with UntrustedCertificateError."""
        number = yield self.serve()
        d = self.agent(pki().other_cafile).request(b"GET", f"https://localhost:{number}/hello".encode())
        yield self.assertFailure(d, UntrustedCertificateError)

    @defer.inlineCallbacks
    def test_agent_checks_the_uri_host(self):
        """The name checked is the URI's host: a certificate without it fails with HostnameMismatchError."""
        p = pki()
        endpoint = wrap_server_tls(
            ServerContextFactory(p.wrong_name_server.cert, p.wrong_name_server.key),
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
        )
        port = yield endpoint.listen(Site(Resource()))
        self.addCleanup(port.stopListening)
        d = self.agent(p.cafile).request(b"GET", f"https://localhost:{port.getHost().port}/".encode())
        failure = yield self.assertFailure(d, HostnameMismatchError)
        self.assertEqual(failure.hostname, "localhost")

    def test_non_twistls_factory_is_refused(self):
        """A context factory that is not a twistls client factory is a ConfigurationError."""
        self.assertRaises(ConfigurationError, HTTPSEndpointFactory, reactor, object())
