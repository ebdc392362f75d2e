"""``twistls.compat``: M2Crypto TwistedProtocolWrapper call shapes, secure defaults."""

from __future__ import annotations

from typing import Any

from M2Crypto import SSL, X509
from M2Crypto.SSL.Checker import Checker as M2Checker
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionDone
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._pki import pki
from twistls import (
    ClientContextFactory,
    ConfigurationError,
    HostnameMismatchError,
    ServerContextFactory,
    VerificationError,
)
from twistls import compat


class _Echo(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.instances.append(self)
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.transport.write(data)


class _Client(protocol.Protocol):
    """Writes ``payload`` on connect; ``done`` fires with (data, reason) once closed."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.data = b""
        self.done: defer.Deferred[tuple[bytes, Any]] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= len(self.payload):
            self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.done.callback((self.data, reason))


def _client_factory(proto: _Client) -> protocol.ClientFactory:
    factory = protocol.ClientFactory.forProtocol(lambda: proto)
    factory.clientConnectionFailed = lambda connector, reason: proto.done.callback((b"", reason))  # type: ignore[method-assign]
    return factory


class ArgumentTests(SynchronousTestCase):
    """What the compat functions refuse, at call time."""

    def test_m2crypto_context_is_refused_with_advice(self) -> None:
        """An M2Crypto SSL.Context raises ConfigurationError naming the twistls factory to use."""
        factory = protocol.ClientFactory.forProtocol(protocol.Protocol)
        with self.assertRaises(ConfigurationError) as caught:
            compat.connectSSL("localhost", 443, factory, SSL.Context())
        self.assertIn("ClientContextFactory", str(caught.exception))
        with self.assertRaises(ConfigurationError) as caught:
            compat.listenSSL(0, protocol.Factory.forProtocol(protocol.Protocol), SSL.Context())
        self.assertIn("ServerContextFactory", str(caught.exception))

    def test_none_check_is_refused_for_clients(self) -> None:
        """postConnectionCheck=None, which disabled checking in M2Crypto, raises for clients."""
        cf = ClientContextFactory(cafile=pki().cafile)
        factory = protocol.ClientFactory.forProtocol(protocol.Protocol)
        with self.assertRaises(ConfigurationError) as caught:
            compat.connectSSL("localhost", 443, factory, cf, postConnectionCheck=None)
        self.assertIn("insecure_skip_verify", str(caught.exception))
        with self.assertRaises(ConfigurationError):
            compat.connectTCP("localhost", 443, factory, postConnectionCheck=None)

    def test_wrong_role_factory_is_refused(self) -> None:
        """A server factory for connectSSL (or a client one for listenSSL) raises ConfigurationError."""
        p = pki()
        with self.assertRaises(ConfigurationError):
            compat.connectSSL(
                "localhost", 443, protocol.ClientFactory(), ServerContextFactory(p.server.cert, p.server.key)
            )
        with self.assertRaises(ConfigurationError):
            compat.listenSSL(0, protocol.Factory(), ClientContextFactory(cafile=p.cafile))


class CompatLoopbackTests(TestCase):
    """connectSSL/listenSSL/connectTCP over 127.0.0.1."""

    timeout = 30

    def listen(self, leaf: Any = None, **kw: Any) -> tuple[int, protocol.Factory]:
        p = pki()
        leaf = leaf or p.server
        factory = protocol.Factory.forProtocol(_Echo)
        factory.instances = []  # type: ignore[attr-defined]
        port = compat.listenSSL(0, factory, ServerContextFactory(leaf.cert, leaf.key), interface="127.0.0.1", **kw)
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    @defer.inlineCallbacks
    def test_connect_ssl_echo(self) -> None:
        """connectSSL + listenSSL with twistls factories echo; the close is clean."""
        port, _ = self.listen()
        client = _Client(b"hello")
        compat.connectSSL("localhost", port, _client_factory(client), ClientContextFactory(cafile=pki().cafile))
        data, reason = yield client.done
        self.assertEqual(data, b"hello")
        self.assertTrue(reason.check(ConnectionDone), reason)

    @defer.inlineCallbacks
    def test_name_checked_is_the_one_passed_not_the_dialled_address(self) -> None:
        """A certificate for 'localhost' only is accepted for connectSSL('localhost'),
        although the socket is connected to 127.0.0.1."""
        p = pki()
        leaf = p.leaf("localhost-only", p.ca, "localhost")
        port, _ = self.listen(leaf)
        client = _Client(b"x")
        connector = compat.connectSSL("localhost", port, _client_factory(client), ClientContextFactory(cafile=p.cafile))
        data, reason = yield client.done
        self.assertEqual(data, b"x")
        self.assertEqual(connector.getDestination().host, "localhost")

    @defer.inlineCallbacks
    def test_wrong_name_fails_and_nothing_is_sent(self) -> None:
        """A factory naming another host fails with HostnameMismatchError; the server receives nothing."""
        p = pki()
        port, server = self.listen()
        client = _Client(b"SECRET")
        compat.connectSSL("127.0.0.1", port, _client_factory(client), ClientContextFactory("db.example", cafile=p.cafile))
        data, reason = yield client.done
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertEqual(reason.value.hostname, "db.example")
        for instance in server.instances:
            self.assertEqual(b"".join(instance.chunks), b"")

    @defer.inlineCallbacks
    def test_extra_post_connection_check_gets_m2_cert_and_the_host(self) -> None:
        """A custom postConnectionCheck gets an M2Crypto X509 and the host passed in; True accepts."""
        port, _ = self.listen()
        seen: list[tuple[Any, Any]] = []

        def check(cert: Any, host: Any) -> bool:
            seen.append((cert, host))
            return True

        client = _Client(b"ok")
        compat.connectSSL(
            "localhost", port, _client_factory(client), ClientContextFactory(cafile=pki().cafile), postConnectionCheck=check
        )
        data, _ = yield client.done
        self.assertEqual(data, b"ok")
        ((cert, host),) = seen
        self.assertIsInstance(cert, X509.X509)
        self.assertEqual(host, "localhost")

    @defer.inlineCallbacks
    def test_m2crypto_checker_still_works(self) -> None:
        """An M2Crypto Checker instance may be passed as an extra check."""
        port, _ = self.listen()
        client = _Client(b"m2")
        compat.connectSSL(
            "localhost", port, _client_factory(client), ClientContextFactory(cafile=pki().cafile), postConnectionCheck=M2Checker()
        )
        data, _ = yield client.done
        self.assertEqual(data, b"m2")

    @defer.inlineCallbacks
    def test_rejecting_check_fails_with_verification_error(self) -> None:
        """A postConnectionCheck returning False fails the connection with VerificationError before any data."""
        port, server = self.listen()
        client = _Client(b"SECRET")
        compat.connectSSL(
            "localhost",
            port,
            _client_factory(client),
            ClientContextFactory(cafile=pki().cafile),
            postConnectionCheck=lambda cert, host: False,
        )
        data, reason = yield client.done
        self.assertTrue(reason.check(VerificationError), reason)
        self.assertIn("postConnectionCheck", str(reason.value))
        for instance in server.instances:
            self.assertEqual(b"".join(instance.chunks), b"")

    @defer.inlineCallbacks
    def test_connect_tcp_starttls(self) -> None:
        """connectTCP + listenTCP: plaintext until both call startTLS, then echo over TLS."""
        p = pki()
        server_cf = ServerContextFactory(p.server.cert, p.server.key)

        class Server(LineReceiver):
            def lineReceived(self, line: bytes) -> None:
                if line == b"STARTTLS":
                    self.sendLine(b"OK")
                    self.transport.startTLS(server_cf)
                    self.setRawMode()

            def rawDataReceived(self, data: bytes) -> None:
                self.transport.write(data)

        class Client(LineReceiver):
            def __init__(self) -> None:
                self.done: defer.Deferred[bytes] = defer.Deferred()
                self.data = b""

            def connectionMade(self) -> None:
                self.sendLine(b"STARTTLS")

            def lineReceived(self, line: bytes) -> None:
                if line == b"OK":
                    self.transport.startTLS(ClientContextFactory(cafile=p.cafile))  # hostname from connectTCP
                    self.setRawMode()
                    self.transport.write(b"secure")

            def rawDataReceived(self, data: bytes) -> None:
                self.data += data
                if self.data == b"secure":
                    self.info = self.transport.connection_info()
                    self.transport.loseConnection()

            def connectionLost(self, reason: Any) -> None:
                self.done.callback(self.data)

        port = compat.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = Client()
        compat.connectTCP("localhost", port.getHost().port, protocol.ClientFactory.forProtocol(lambda: client))
        data = yield client.done
        self.assertEqual(data, b"secure")
        self.assertEqual(client.info.server_name, "localhost")
        self.assertTrue(client.info.verified)
