"""``twistd twistls``: option parsing, service shape, and the proxy in-process."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, clientFromString
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._pki import pki
from twistls import TLSWrappingFactory
from twistls import tap
from twistls.endpoints import TLSClientEndpoint, TLSServerEndpoint


def _esc(path: str) -> str:
    return path.replace("\\", "\\\\").replace(":", "\\:")


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """Parsing ``twistd twistls`` options."""

    def setUp(self) -> None:
        self.p = pki()
        self.listen = f"twistls:0:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}"

    def test_idle_timeout_reaches_every_tls_endpoint(self) -> None:
        """--idle-timeout sets the idle timeout of twistls: strings without one, and of echo's own TLS port."""
        options = parse(
            "proxy", "--idle-timeout", "7", "--listen", self.listen, "--connect", "twistls:host=localhost:port=1"
        )
        self.assertEqual(options.subOptions["listen-endpoint"]._idle_timeout, 7.0)
        self.assertEqual(options.subOptions["connect-endpoint"]._idle_timeout, 7.0)
        options = parse("proxy", "--idle-timeout", "7", "--listen", self.listen + ":idleTimeout=3", "--connect", "tcp:127.0.0.1:1")
        self.assertEqual(options.subOptions["listen-endpoint"]._idle_timeout, 3.0)  # the string's own value wins
        options = parse("echo", "--certificate", self.p.server.chain, "--port", "0", "--idle-timeout", "2.5")
        self.assertEqual(options.subOptions["listen-endpoint"]._idle_timeout, 2.5)
        self.assertIsNone(parse("echo", "--certificate", self.p.server.chain).subOptions["listen-endpoint"]._idle_timeout)
        with self.assertRaises(usage.UsageError) as caught:
            parse("echo", "--certificate", self.p.server.chain, "--idle-timeout", "0")
        self.assertIn("--idle-timeout", str(caught.exception))

    def test_proxy_builds_both_endpoints(self) -> None:
        """proxy --listen twistls:... --connect tcp:... parses both strings at once."""
        options = parse("proxy", "--listen", self.listen, "--connect", "tcp:127.0.0.1:8080")
        sub = options.subOptions
        self.assertIsInstance(sub["listen-endpoint"], TLSServerEndpoint)
        self.assertIsInstance(sub["connect-endpoint"], TCP4ClientEndpoint)

    def test_reverse_proxy(self) -> None:
        """proxy --listen tcp:... --connect twistls:... originates verified TLS."""
        options = parse(
            "proxy",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--connect",
            f"twistls:host=db.example:port=443:caFile={_esc(self.p.cafile)}",
        )
        self.assertIsInstance(options.subOptions["listen-endpoint"], TCP4ServerEndpoint)
        connect = options.subOptions["connect-endpoint"]
        self.assertIsInstance(connect, TLSClientEndpoint)
        self.assertEqual(connect.hostname, "db.example")

    def test_handshake_timeout_applies_to_twistls_strings(self) -> None:
        """--handshake-timeout reaches twistls endpoints that do not set their own."""
        options = parse(
            "proxy",
            "--handshake-timeout",
            "3",
            "--listen",
            self.listen,
            "--connect",
            f"twistls:host=db.example:port=443:caFile={_esc(self.p.cafile)}:handshakeTimeout=9",
        )
        self.assertEqual(options.subOptions["listen-endpoint"].context_factory.handshake_timeout, 3.0)
        self.assertEqual(options.subOptions["connect-endpoint"].context_factory.handshake_timeout, 9.0)

    def test_echo_from_certificate_options(self) -> None:
        """echo --certificate/--private-key/--port/--starttls-port builds a TLS and a plaintext endpoint."""
        options = parse(
            "echo",
            "--certificate",
            self.p.server.cert,
            "--private-key",
            self.p.server.key,
            "--port",
            "0",
            "--starttls-port",
            "0",
            "--handshake-timeout",
            "5",
        )
        sub = options.subOptions
        self.assertIsInstance(sub["listen-endpoint"], TLSServerEndpoint)
        self.assertEqual(sub["listen-endpoint"].wrapped_endpoint._interface, "127.0.0.1")
        self.assertIsInstance(sub["starttls-endpoint"], TCP4ServerEndpoint)
        self.assertEqual(sub["context-factory"].handshake_timeout, 5.0)

    def test_echo_from_listen_string_reuses_its_certificate_for_starttls(self) -> None:
        """echo --listen twistls:... --starttls-port uses the string's certificate for STARTTLS."""
        options = parse("echo", "--listen", self.listen, "--starttls-port", "0")
        sub = options.subOptions
        self.assertIs(sub["context-factory"], sub["listen-endpoint"].context_factory)

    def test_make_service_shapes(self) -> None:
        """makeService gives one listening service for proxy, two for echo with STARTTLS, and a SIGHUP reloader for the TLS certificate."""
        proxy = tap.makeService(parse("proxy", "--listen", self.listen, "--connect", "tcp:127.0.0.1:1"))
        self.assertIsInstance(proxy, MultiService)
        children = [c for c in proxy if isinstance(c, StreamServerEndpointService)]
        self.assertEqual(len(children), 1)
        self.assertIsInstance(children[0].factory, tap._ProxyFactory)
        reloaders = [c for c in proxy if isinstance(c, tap._ReloadOnSighup)]
        self.assertEqual([r.factories for r in reloaders], [[children[0].endpoint.context_factory]])
        echo = tap.makeService(
            parse("echo", "--certificate", self.p.server.chain, "--port", "0", "--starttls-port", "0")
        )
        tls, plain = [c for c in echo if isinstance(c, StreamServerEndpointService)]
        self.assertIsInstance(tls.endpoint, TLSServerEndpoint)
        self.assertIsInstance(plain.factory, TLSWrappingFactory)
        self.assertTrue(plain.factory.start_tls)
        (reloader,) = [c for c in echo if isinstance(c, tap._ReloadOnSighup)]
        self.assertEqual(reloader.factories, [tls.endpoint.context_factory])

    def test_help_explains_every_option(self) -> None:
        """--help of each sub-command documents each of its options."""
        for sub, names in (
            (tap.ProxyOptions, ("listen", "connect", "handshake-timeout")),
            (tap.EchoOptions, ("listen", "certificate", "private-key", "port", "interface", "starttls-port", "handshake-timeout")),
        ):
            text = str(sub())
            for name in names:
                self.assertIn(f"--{name}=", text)
            for row in sub.optParameters:
                self.assertTrue(row[3], row[0])

    def test_bad_options_give_one_line_usage_errors(self) -> None:
        """Missing files, mismatched keys, unknown keywords and prefixes give one-line UsageErrors naming them."""
        p = self.p
        cases = [
            (("echo", "--certificate", "/no/such/cert.pem"), "/no/such/cert.pem"),
            (("echo", "--certificate", p.server.cert, "--private-key", p.client.key), "private key"),
            (("echo",), "--certificate"),
            (("echo", "--private-key", p.server.key), "--certificate"),
            (("echo", "--listen", "tcp:0", "--starttls-port", "0"), "--starttls-port"),
            (("echo", "--certificate", p.server.chain, "--port", "99999"), "--port"),
            (("echo", "--certificate", p.server.chain, "--handshake-timeout", "-1"), "handshake-timeout"),
            (("proxy", "--listen", self.listen + ":bogus=1", "--connect", "tcp:127.0.0.1:1"), "bogus"),
            (("proxy", "--listen", "twistls:0:certificate=/no/cert.pem", "--connect", "tcp:127.0.0.1:1"), "/no/cert.pem"),
            (("proxy", "--listen", self.listen, "--connect", "nope:127.0.0.1:1"), "nope"),
            (("proxy", "--listen", self.listen, "--connect", "twistls:host=x:port=1:caFile=/no/ca.pem"), "caFile"),
            (("proxy", "--listen", self.listen), "--connect"),
            ((), "proxy or echo"),
        ]
        for argv, needle in cases:
            with self.assertRaises(usage.UsageError, msg=argv) as caught:
                parse(*argv)
            message = str(caught.exception)
            self.assertIn(needle, message, argv)
            self.assertNotIn("\n", message, argv)


class _Sink(protocol.Protocol):
    """A backend that counts bytes and can stop reading."""

    def connectionMade(self) -> None:
        self.factory.instances.append(self)
        self.received = 0
        self.lost: defer.Deferred[object] = defer.Deferred()
        if self.factory.paused:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: object) -> None:
        self.lost.callback([reason])


class _Source(_Sink):
    """A backend that writes ``factory.payload`` as soon as it is connected."""

    paused = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.write(self.factory.payload)


def _unsent(transport: object) -> int:
    """Bytes a TCP transport still holds in user space."""
    t = transport
    return len(t.dataBuffer) - t.offset + t._tempDataLen  # type: ignore[attr-defined]


class _Reader(protocol.Protocol):
    def connectionMade(self) -> None:
        self.received = 0
        self.lost: defer.Deferred[object] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: object) -> None:
        self.lost.callback([reason])


class ProxyTests(TestCase):
    """The proxy service in-process, over 127.0.0.1."""

    timeout = 60
    SIZE = 24 << 20
    LIMIT = 2 << 20  # what the proxy may hold in user space while one side is stalled

    @defer.inlineCallbacks
    def start(self, backend_protocol: type[protocol.Protocol], **attrs: object):  # type: ignore[no-untyped-def]
        p = pki()
        backend = protocol.Factory.forProtocol(backend_protocol)
        backend.instances = []  # type: ignore[attr-defined]
        for key, value in attrs.items():
            setattr(backend, key, value)
        backend_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(backend)
        self.addCleanup(backend_port.stopListening)
        options = parse(
            "proxy",
            "--listen",
            f"twistls:0:certificate={_esc(p.server.cert)}:privateKey={_esc(p.server.key)}:interface=127.0.0.1",
            "--connect",
            f"tcp:127.0.0.1:{backend_port.getHost().port}",
        )
        svc = list(tap.makeService(options))[0]
        self.proxies: list[Any] = []
        build = svc.factory.buildProtocol

        def record(addr: Any) -> Any:
            proxy = build(addr)
            self.proxies.append(proxy)
            return proxy

        svc.factory.buildProtocol = record
        port = yield svc.endpoint.listen(svc.factory)
        self.addCleanup(port.stopListening)
        client_endpoint = clientFromString(
            reactor, f"twistls:host=localhost:port={port.getHost().port}:caFile={_esc(p.cafile)}"
        )
        return backend, client_endpoint

    @defer.inlineCallbacks
    def wait_for(self, condition, seconds: float = 20.0):  # type: ignore[no-untyped-def]
        for _ in range(int(seconds / 0.05)):
            if condition():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail("condition not reached in time")

    @defer.inlineCallbacks
    def test_client_to_backend_respects_flow_control(self) -> None:
        """While the backend does not read, the proxy stops reading the TLS client; all arrives after."""
        backend, endpoint = yield self.start(_Sink, paused=True)
        self.addCleanup(lambda: backend.instances and backend.instances[0].lost)
        client = yield endpoint.connect(protocol.Factory.forProtocol(_Reader))
        client.transport.write(b"x" * self.SIZE)
        yield self.wait_for(lambda: backend.instances)
        yield task.deferLater(reactor, 1.0, lambda: None)
        # The proxy holds little in memory: it stopped reading the client.
        (proxy,) = self.proxies
        self.assertLess(_unsent(proxy.peer.transport), self.LIMIT, "the proxy read everything into memory")
        backend.instances[0].transport.resumeProducing()
        yield self.wait_for(lambda: backend.instances[0].received == self.SIZE)
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_backend_to_client_respects_flow_control(self) -> None:
        """While the TLS client does not read, the proxy stops reading the backend; all arrives after."""
        backend, endpoint = yield self.start(_Source, payload=b"y" * self.SIZE, paused=False)
        self.addCleanup(lambda: backend.instances and backend.instances[0].lost)
        client = yield endpoint.connect(protocol.Factory.forProtocol(_Reader))
        client.transport.pauseProducing()
        yield self.wait_for(lambda: backend.instances)
        yield task.deferLater(reactor, 1.0, lambda: None)
        (proxy,) = self.proxies
        self.assertLess(_unsent(proxy.transport.transport), self.LIMIT, "the proxy read everything into memory")
        client.transport.resumeProducing()
        yield self.wait_for(lambda: client.received == self.SIZE)
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_backend_close_reaches_client_as_clean_close(self) -> None:
        """When the backend closes, the TLS client sees a clean close (close_notify), not truncation."""
        from twisted.internet.error import ConnectionDone

        backend, endpoint = yield self.start(_Source, payload=b"bye", paused=False)
        client = yield endpoint.connect(protocol.Factory.forProtocol(_Reader))
        yield self.wait_for(lambda: backend.instances and client.received == 3)
        backend.instances[0].transport.loseConnection()
        (reason,) = yield client.lost
        self.assertTrue(reason.check(ConnectionDone), reason)
