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
from tests.tools.test_twistd import _esc, _read_line
from twistls import TLSWrappingFactory
from twistls import tap
from twistls.endpoints import TLSClientEndpoint, TLSServerEndpoint


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


class ListenerConsistencyTests(SynchronousTestCase):
    """Every security option of ``twistd twistls`` reaches every listener it serves, or is refused."""

    def setUp(self) -> None:
        self.p = pki()
        self.listen = f"twistls:0:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}"

    def refused(self, *argv: str) -> str:
        """The one-line UsageError message ``argv`` gives."""
        with self.assertRaises(usage.UsageError, msg=argv) as caught:
            parse(*argv)
        message = str(caught.exception)
        self.assertNotIn("\n", message, argv)
        return message

    def test_client_ca_applies_to_the_listen_port_and_starttls(self) -> None:
        """echo --listen twistls:... --client-ca requires client certificates on the TLS port and on STARTTLS."""
        sub = parse("echo", "--listen", self.listen, "--client-ca", self.p.cafile, "--starttls-port", "0").subOptions
        self.assertTrue(sub["listen-endpoint"].context_factory.verifies_clients)
        self.assertIs(sub["context-factory"], sub["listen-endpoint"].context_factory)
        sub = parse("echo", "--listen", "TwistLS" + self.listen[len("twistls"):], "--client-ca", self.p.cafile).subOptions
        self.assertTrue(sub["listen-endpoint"].context_factory.verifies_clients)
        sub = parse("echo", "--certificate", self.p.server.chain, "--port", "0", "--client-ca", self.p.cafile).subOptions
        self.assertTrue(sub["listen-endpoint"].context_factory.verifies_clients)
        self.assertIs(sub["context-factory"], sub["listen-endpoint"].context_factory)

    def test_without_client_ca_no_listener_asks_for_certificates(self) -> None:
        """The failure twin: without --client-ca neither the TLS port nor STARTTLS asks for client certificates."""
        sub = parse("echo", "--listen", self.listen, "--starttls-port", "0").subOptions
        self.assertFalse(sub["listen-endpoint"].context_factory.verifies_clients)
        self.assertIs(sub["context-factory"], sub["listen-endpoint"].context_factory)

    def test_client_ca_path_with_a_colon_is_escaped(self) -> None:
        """A --client-ca path holding ':' and '\\' reaches the --listen string intact."""
        directory = os.path.join(self.p.dir, "odd:dir\\x")
        os.makedirs(directory, exist_ok=True)
        cafile = os.path.join(directory, "ca.pem")
        with open(self.p.cafile, "rb") as src, open(cafile, "wb") as dst:
            dst.write(src.read())
        sub = parse("echo", "--listen", self.listen, "--client-ca", cafile).subOptions
        self.assertTrue(sub["listen-endpoint"].context_factory.verifies_clients)

    def test_starttls_port_takes_the_listen_strings_connection_options(self) -> None:
        """idleTimeout=, allowTruncation= and handshakeTimeout= of --listen reach the STARTTLS port too."""
        options = parse(
            "echo", "--listen", self.listen + ":idleTimeout=3:allowTruncation=yes:handshakeTimeout=4", "--starttls-port", "0"
        )
        tls, plain = [c for c in tap.makeService(options) if isinstance(c, StreamServerEndpointService)]
        self.assertEqual((plain.factory.idle_timeout, plain.factory.allow_truncation), (3.0, True))
        self.assertEqual((tls.endpoint.idle_timeout, tls.endpoint.allow_truncation), (3.0, True))
        self.assertEqual(plain.factory.wrappedFactory.context_factory.handshake_timeout, 4.0)
        options = parse("echo", "--certificate", self.p.server.chain, "--port", "0", "--starttls-port", "0",
                        "--idle-timeout", "5")
        tls, plain = [c for c in tap.makeService(options) if isinstance(c, StreamServerEndpointService)]
        self.assertEqual((plain.factory.idle_timeout, tls.endpoint.idle_timeout), (5.0, 5.0))
        self.assertEqual((plain.factory.allow_truncation, tls.endpoint.allow_truncation), (False, False))

    def test_options_that_cannot_reach_every_listener_are_refused(self) -> None:
        """Options that would apply to only some listeners, or to none, are one-line errors naming them."""
        p = self.p
        ca = _esc(p.cafile)
        cases = [
            (("echo", "--listen", self.listen, "--certificate", p.server.chain), "--certificate"),
            (("echo", "--listen", self.listen, "--private-key", p.server.key), "--private-key"),
            (("echo", "--listen", self.listen + f":caFile={ca}", "--client-ca", p.cafile), "caFile"),
            (("echo", "--listen", self.listen + f":caPath={_esc(p.dir)}", "--client-ca", p.cafile), "caPath"),
            (("echo", "--listen", self.listen + f":caFile={ca}:requireClientCertificate=no", "--client-ca", p.cafile),
             "requireClientCertificate"),
            (("echo", "--listen", "tcp:0:interface=127.0.0.1", "--client-ca", p.cafile), "--client-ca"),
            (("echo", "--listen", "tcp:0:interface=127.0.0.1", "--certificate", p.server.chain), "--certificate"),
            (("echo", "--listen", "tcp:0:interface=127.0.0.1", "--handshake-timeout", "5"), "--handshake-timeout"),
            (("echo", "--listen", "tcp:0:interface=127.0.0.1", "--idle-timeout", "5"), "--idle-timeout"),
            (("echo", "--listen", self.listen, "--client-ca", "/no/such/ca.pem"), "/no/such/ca.pem"),
            (("echo", "--certificate", p.server.chain, "--client-ca", "/no/such/ca.pem"), "/no/such/ca.pem"),
            (("proxy", "--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1", "--handshake-timeout", "5"),
             "--handshake-timeout"),
            (("proxy", "--listen", "tcp:0", "--connect", "tcp:127.0.0.1:1", "--idle-timeout", "5"), "--idle-timeout"),
        ]
        for argv, needle in cases:
            self.assertIn(needle, self.refused(*argv), argv)

    def test_repeated_or_empty_keys_in_any_string_are_refused(self) -> None:
        """Repeated keys in --listen/--connect strings (twistls: or not) and empty twistls: values are refused by name."""
        cases = [
            (("proxy", "--listen", self.listen + ":handshakeTimeout=5:handshakeTimeout=none",
              "--connect", "tcp:127.0.0.1:1"), "handshakeTimeout"),
            (("proxy", "--listen", self.listen, "--connect",
              f"twistls:host=localhost:port=1:caFile={_esc(self.p.cafile)}:insecureSkipVerify=no:insecureSkipVerify=yes"),
             "insecureSkipVerify"),
            (("proxy", "--listen", self.listen, "--connect", "tcp:host=127.0.0.1:port=1:port=2"), "port"),
            (("proxy", "--listen", "tcp:0:interface=127.0.0.1:interface=0.0.0.0", "--connect", "tcp:127.0.0.1:1"),
             "interface"),
            (("echo", "--listen", self.listen + ":handshakeTimeout=", "--handshake-timeout", "5"), "handshakeTimeout"),
            (("proxy", "--listen", self.listen + ":idleTimeout=", "--idle-timeout", "5", "--connect", "tcp:127.0.0.1:1"),
             "idleTimeout"),
            (("proxy", "--listen", self.listen, "--connect", "tcp:127.0.0.1:1\\"), "backslash"),
        ]
        for argv, needle in cases:
            self.assertIn(needle, self.refused(*argv), argv)

    def test_option_defaults_go_only_into_twistls_strings_without_the_key(self) -> None:
        """--handshake-timeout is added to a TWISTLS: string whose path merely contains the key's name."""
        directory = os.path.join(self.p.dir, "handshakeTimeout=9")
        os.makedirs(directory, exist_ok=True)
        cert = os.path.join(directory, "server.pem")
        with open(self.p.server.chain, "rb") as src, open(cert, "wb") as dst:
            dst.write(src.read())
        options = parse("proxy", "--handshake-timeout", "3", "--listen", f"TWISTLS:0:certificate={_esc(cert)}",
                        "--connect", "tcp:127.0.0.1:1")
        self.assertEqual(options.subOptions["listen-endpoint"].context_factory.handshake_timeout, 3.0)


class _EchoClient(protocol.Protocol):
    """Collects what the echo server sends back; ``lost`` fires with [reason]."""

    def connectionMade(self) -> None:
        self.data = b""
        self.lost: defer.Deferred[list[Any]] = defer.Deferred()
        self.full: defer.Deferred[bytes] = defer.Deferred()
        self.want = 0

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.want and len(self.data) >= self.want and not self.full.called:
            self.full.callback(self.data)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback([reason])


def _starttls_roundtrip(port: int, cafile: str, leaf: Any) -> bytes | Exception:
    """Blocking: STARTTLS on ``port``, handshake with (or without) ``leaf``'s certificate, send and read back."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=cafile)
    if leaf is not None:
        context.load_cert_chain(leaf.cert, leaf.key)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"STARTTLS\r\n")
            line = _read_line(raw)
            if line != b"OK begin TLS\r\n":
                return AssertionError(f"no STARTTLS answer: {line!r}")
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"ping")
                data = b""
                while len(data) < 4:
                    chunk = tls.recv(100)
                    if not chunk:
                        break
                    data += chunk
                return data
    except (OSError, ssl.SSLError) as exc:
        return exc


class EchoClientCertificateTests(TestCase):
    """``twistd twistls echo --listen twistls:... --client-ca CA`` in-process, over 127.0.0.1."""

    timeout = 60

    @defer.inlineCallbacks
    def serve(self, *argv: str):  # type: ignore[no-untyped-def]
        """Start every listener makeService builds; returns their port numbers in order (TLS, then STARTTLS)."""
        p = pki()
        listen = (
            f"twistls:0:certificate={_esc(p.server.cert)}:privateKey={_esc(p.server.key)}:interface=127.0.0.1"
        )
        options = parse("echo", "--listen", listen, "--interface", "127.0.0.1", "--starttls-port", "0", *argv)
        ports = []
        for svc in tap.makeService(options):
            if isinstance(svc, StreamServerEndpointService):
                listening = yield svc.endpoint.listen(svc.factory)
                self.addCleanup(listening.stopListening)
                ports.append(listening.getHost().port)
        return ports

    def client(self, port: int, *, with_certificate: bool) -> Any:
        p = pki()
        text = f"twistls:host=localhost:port={port}:caFile={_esc(p.cafile)}:endpoint=tcp\\:127.0.0.1\\:{port}"
        if with_certificate:
            text += f":clientCertificate={_esc(p.client.cert)}:clientPrivateKey={_esc(p.client.key)}"
        return clientFromString(reactor, text)

    @defer.inlineCallbacks
    def test_tls_port_refuses_a_client_without_certificate(self) -> None:
        """With --client-ca the --listen port refuses a client that sends no certificate and echoes nothing."""
        from tests._e2e import bounded
        from twistls import PeerAlertError

        tls_port, _ = yield self.serve("--client-ca", pki().cafile)
        try:
            client = yield bounded(
                self.client(tls_port, with_certificate=False).connect(protocol.Factory.forProtocol(_EchoClient)),
                20, "connect",
            )
        except PeerAlertError as exc:  # refused during the handshake (TLS 1.2)
            reason: Any = exc
        else:  # TLS 1.3: the server's refusal arrives after the client finished
            client.transport.write(b"ping")
            (failure,) = yield bounded(client.lost, 20, "server refusal")
            self.assertEqual(client.data, b"")
            reason = failure.value
        self.assertIsInstance(reason, PeerAlertError)
        self.assertEqual(reason.alert, "certificate required")

    @defer.inlineCallbacks
    def test_tls_port_serves_a_client_with_certificate(self) -> None:
        """With --client-ca the --listen port echoes to a client presenting a certificate from that CA."""
        from tests._e2e import bounded

        tls_port, _ = yield self.serve("--client-ca", pki().cafile)
        client = yield bounded(
            self.client(tls_port, with_certificate=True).connect(protocol.Factory.forProtocol(_EchoClient)), 20, "connect"
        )
        client.want = 4
        client.transport.write(b"ping")
        self.assertEqual((yield bounded(client.full, 20, "echo")), b"ping")
        client.transport.loseConnection()
        yield bounded(client.lost, 20, "close")

    @defer.inlineCallbacks
    def test_starttls_port_requires_the_same_certificate(self) -> None:
        """With --client-ca the STARTTLS port refuses a client without a certificate and echoes to one with it."""
        from twisted.internet import threads

        p = pki()
        _, plain_port = yield self.serve("--client-ca", p.cafile)
        refused = yield threads.deferToThread(_starttls_roundtrip, plain_port, p.cafile, None)
        self.assertIsInstance(refused, OSError)
        served = yield threads.deferToThread(_starttls_roundtrip, plain_port, p.cafile, p.client)
        self.assertEqual(served, b"ping")

    @defer.inlineCallbacks
    def test_without_client_ca_a_client_without_certificate_is_served(self) -> None:
        """The twin without --client-ca: the --listen port echoes to a client that sends no certificate."""
        from tests._e2e import bounded

        tls_port, _ = yield self.serve()
        client = yield bounded(
            self.client(tls_port, with_certificate=False).connect(protocol.Factory.forProtocol(_EchoClient)), 20, "connect"
        )
        client.want = 4
        client.transport.write(b"ping")
        self.assertEqual((yield bounded(client.full, 20, "echo")), b"ping")
        client.transport.loseConnection()
        yield bounded(client.lost, 20, "close")
