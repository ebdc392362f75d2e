"""A twistls policy handed to Twisted's own TLS APIs fails with a TypeError naming what to use.

Twisted treats an object that declares none of its TLS interfaces as a legacy
context factory and calls its ``getContext`` at once (``TLSMemoryBIOFactory``),
or ``getContext(hostname, port)`` for ``Agent(contextFactory=...)``.  The
twistls factories answer that call with a ``TypeError`` that names the twistls
API to use instead.
"""

from __future__ import annotations

import warnings
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import HostnameEndpoint, TCP4ServerEndpoint, wrapClientTLS, wrapServerTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.mail import smtp
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory
from twistls.protocol import TLSProtocolWrapper
from tests._pki import pki
from tests.e2e.test_starttls import send_esmtp, server_cf


def client_policy() -> ClientContextFactory:
    return ClientContextFactory("localhost", cafile=pki().cafile)


def server_policy() -> ServerContextFactory:
    p = pki()
    return ServerContextFactory(p.server.cert, p.server.key)


def quietly(call: Any, *args: Any) -> Any:
    """Call ``call(*args)`` with Twisted's legacy-factory and deprecation warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call(*args)


class TwistedClientAPITests(SynchronousTestCase):
    """Twisted's client-side TLS APIs refuse a twistls ClientContextFactory where they first touch it."""

    def test_connect_ssl_raises_type_error_naming_tls_wrapping_factory(self) -> None:
        """reactor.connectSSL with a twistls policy raises TypeError naming TLSWrappingFactory and twistls.compat, and dials nothing."""
        memory = MemoryReactorClock()
        connect_ssl = type(reactor).connectSSL  # the real reactor's method: builds TLSMemoryBIOFactory
        with self.assertRaises(TypeError) as caught:
            quietly(connect_ssl, memory, "127.0.0.1", 4433, Factory.forProtocol(Protocol), client_policy())
        message = str(caught.exception)
        self.assertIn("reactor.connectSSL", message)
        self.assertIn("TLSWrappingFactory(factory, policy)", message)
        self.assertIn("twistls.compat.connectSSL", message)
        self.assertEqual(memory.tcpClients, [])

    def test_wrap_client_tls_raises_type_error_naming_wrap_client_tls(self) -> None:
        """endpoints.wrapClientTLS with a twistls policy raises TypeError at connect() naming twistls.wrap_client_tls."""
        memory = MemoryReactorClock()
        endpoint = wrapClientTLS(client_policy(), HostnameEndpoint(memory, "localhost", 4433))
        with self.assertRaises(TypeError) as caught:
            quietly(endpoint.connect, Factory.forProtocol(Protocol))
        self.assertIn("twistls.wrap_client_tls(hostname, policy, endpoint)", str(caught.exception))
        self.assertEqual(memory.tcpClients, [])

    def test_agent_request_raises_type_error_naming_https_endpoint_factory(self) -> None:
        """Agent(contextFactory=policy) raises TypeError naming HTTPSEndpointFactory from its first https request."""
        from twisted.web.client import Agent

        memory = MemoryReactorClock()
        agent = quietly(Agent, memory, client_policy())
        with self.assertRaises(TypeError) as caught:
            agent.request(b"GET", b"https://localhost:4433/")
        message = str(caught.exception)
        self.assertIn("Agent.usingEndpointFactory(reactor, twistls.HTTPSEndpointFactory(reactor, policy))", message)
        self.assertEqual(memory.tcpClients, [])

    def test_browser_like_policy_is_not_touched_by_twistls(self) -> None:
        """Twisted's own BrowserLikePolicyForHTTPS with a twistls policy as trust root still fails in Twisted's adaptation, not in twistls."""
        from twisted.web.client import BrowserLikePolicyForHTTPS

        policy = BrowserLikePolicyForHTTPS(trustRoot=client_policy())
        with self.assertRaises(TypeError) as caught:
            policy.creatorForNetloc(b"localhost", 4433)
        self.assertIn("Could not adapt", str(caught.exception))

    def test_twistls_wrapping_factory_still_accepts_the_policy(self) -> None:
        """The refusing getContext does not change twistls's own path: TLSWrappingFactory takes the policy and starts an engine."""
        from tests._iopump import connect

        server = TLSWrappingFactory(Factory.forProtocol(Protocol), server_policy())
        client = TLSWrappingFactory(Factory.forProtocol(Protocol), client_policy())
        pump = connect(client, server)
        wrapper = pump.client.protocol
        self.assertIsInstance(wrapper, TLSProtocolWrapper)
        self.assertTrue(wrapper.tls_started)
        self.assertIsNotNone(wrapper.connection_info())


class TwistedServerAPITests(SynchronousTestCase):
    """Twisted's server-side TLS APIs refuse a twistls ServerContextFactory where they first touch it."""

    def test_listen_ssl_raises_type_error_naming_tls_wrapping_factory(self) -> None:
        """reactor.listenSSL with a twistls server policy raises TypeError naming TLSWrappingFactory and twistls.compat.listenSSL."""
        memory = MemoryReactorClock()
        listen_ssl = type(reactor).listenSSL
        with self.assertRaises(TypeError) as caught:
            quietly(listen_ssl, memory, 0, Factory.forProtocol(Protocol), server_policy())
        message = str(caught.exception)
        self.assertIn("reactor.listenSSL", message)
        self.assertIn("TLSWrappingFactory(factory, policy)", message)
        self.assertIn("twistls.compat.listenSSL", message)
        self.assertEqual(memory.tcpServers, [])

    def test_wrap_server_tls_raises_type_error_naming_wrap_server_tls(self) -> None:
        """endpoints.wrapServerTLS with a twistls server policy raises TypeError at listen() naming twistls.wrap_server_tls."""
        memory = MemoryReactorClock()
        endpoint = wrapServerTLS(server_policy(), TCP4ServerEndpoint(memory, 0, interface="127.0.0.1"))
        with self.assertRaises(TypeError) as caught:
            quietly(endpoint.listen, Factory.forProtocol(Protocol))
        self.assertIn("twistls.wrap_server_tls(policy, endpoint)", str(caught.exception))
        self.assertEqual(memory.tcpServers, [])


class ESMTPSenderTests(TestCase):
    """ESMTPSenderFactory with a twistls policy: refused on a plain Twisted transport, working behind TLSWrappingFactory."""

    timeout = 60

    MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: mixing\r\n\r\nHello.\r\n"

    @defer.inlineCallbacks
    def send(self, *, wrap_client: bool) -> Any:
        """Send MESSAGE over 127.0.0.1 to a twistls STARTTLS ESMTP server; return the sender's outcome."""
        outcome, _, mailbox, _ = yield send_esmtp(self, self.MESSAGE, server_cf(), client_policy(), twistls_client=wrap_client)
        return outcome, mailbox

    @defer.inlineCallbacks
    def test_plain_transport_logs_type_error_naming_start_tls_wrapper(self) -> None:
        """On Twisted's own TCP transport STARTTLS fails with SMTP 451 and the logged TypeError names TLSWrappingFactory(factory, start_tls=True)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcome, mailbox = yield self.send(wrap_client=False)
        self.assertIsInstance(outcome, smtp.SMTPClientError)
        self.assertEqual(outcome.code, 451)
        self.assertEqual(mailbox, [])
        logged = self.flushLoggedErrors(TypeError)
        self.assertEqual(len(logged), 1)
        message = str(logged[0].value)
        self.assertIn("TLSWrappingFactory(factory, start_tls=True)", message)
        self.assertIn("ESMTPSenderFactory", message)

    @defer.inlineCallbacks
    def test_wrapped_sender_delivers_over_starttls(self) -> None:
        """The same sender behind TLSWrappingFactory(..., start_tls=True) upgrades with the twistls policy and delivers."""
        outcome, mailbox = yield self.send(wrap_client=True)
        self.assertEqual(outcome[0], 1)
        self.assertEqual(len(mailbox), 1)
        self.assertIn(b"Hello.", mailbox[0])
