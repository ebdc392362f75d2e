"""Endpoints and the ``twistls:`` endpoint strings: parsing (MemoryReactor),
plugin discovery, and real 127.0.0.1 connections."""

from __future__ import annotations

import os
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ConnectingCancelledError, ConnectionDone
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.interfaces import (
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.internet.testing import MemoryReactor
from twisted.plugin import IPlugin, getPlugins
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests._pki import pki
from twistls import (
    ClientContextFactory,
    ConfigurationError,
    HostnameMismatchError,
    ServerContextFactory,
    TLSWrappingFactory,
    UntrustedCertificateError,
)
from twistls.checker import certificate_names
from twistls.endpoints import (
    TLSClientEndpoint,
    TLSServerEndpoint,
    _ClientParser,
    _ServerParser,
    wrap_client_tls,
    wrap_server_tls,
)

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/
PLUGINS = os.path.join(os.path.dirname(HERE), "twisted", "plugins")


def _esc(path: str) -> str:
    """Escape a path for an endpoint string."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


class ClientStringTests(SynchronousTestCase):
    """``clientFromString(reactor, "twistls:...")``."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.p = pki()

    def parse(self, text: str) -> TLSClientEndpoint:
        endpoint = clientFromString(self.reactor, text)
        self.assertIsInstance(endpoint, TLSClientEndpoint)
        self.assertTrue(IStreamClientEndpoint.providedBy(endpoint))
        return endpoint

    def test_keyword_form_builds_a_verifying_endpoint(self) -> None:
        """host=/port=/caFile= give a verifying endpoint over a HostnameEndpoint."""
        endpoint = self.parse(f"twistls:host=example.com:port=443:caFile={_esc(self.p.cafile)}")
        self.assertEqual(endpoint.hostname, "example.com")
        self.assertEqual(endpoint.context_factory.hostname, "example.com")
        self.assertFalse(endpoint.context_factory.insecure_skip_verify)
        self.assertEqual(endpoint.context_factory.handshake_timeout, 30.0)
        self.assertIsInstance(endpoint.wrapped_endpoint, HostnameEndpoint)
        self.assertEqual(endpoint.wrapped_endpoint._hostText, "example.com")
        self.assertEqual(endpoint.wrapped_endpoint._port, 443)

    def test_positional_form(self) -> None:
        """``twistls:HOST:PORT`` is accepted too."""
        endpoint = self.parse(f"twistls:localhost:8443:caFile={_esc(self.p.cafile)}")
        self.assertEqual(endpoint.hostname, "localhost")
        self.assertEqual(endpoint.wrapped_endpoint._port, 8443)

    def test_ipv6_host_escaped(self) -> None:
        """An IPv6 literal host is written with escaped colons (brackets optional)."""
        endpoint = self.parse(f"twistls:host=\\:\\:1:port=443:caFile={_esc(self.p.cafile)}")
        self.assertEqual(endpoint.hostname, "::1")
        endpoint = self.parse(f"twistls:host=[\\:\\:1]:port=443:caFile={_esc(self.p.cafile)}")
        self.assertEqual(endpoint.hostname, "::1")

    def test_every_option(self) -> None:
        """Each documented key reaches the context factory or the TCP endpoint."""
        pin = "a" * 64
        endpoint = self.parse(
            f"twistls:host=localhost:port=443:caFile={_esc(self.p.cafile)}:caPath={_esc(self.p.dir)}"
            f":clientCertificate={_esc(self.p.client.cert)}:clientPrivateKey={_esc(self.p.client.key)}"
            f":timeout=7:bindAddress=127.0.0.1:handshakeTimeout=2.5:pins={pin},sha256/{'A' * 43}="
            ":legacyCommonName=yes"
        )
        cf = endpoint.context_factory
        self.assertEqual(cf.handshake_timeout, 2.5)
        self.assertTrue(cf.allow_common_name)
        self.assertEqual(len(cf.pins), 2)
        self.assertEqual(endpoint.wrapped_endpoint._timeout, 7)
        self.assertEqual(endpoint.wrapped_endpoint._bindAddress, ("127.0.0.1", 0))

    def test_handshake_timeout_none(self) -> None:
        """handshakeTimeout=none turns the handshake timeout off."""
        endpoint = self.parse(f"twistls:localhost:443:caFile={_esc(self.p.cafile)}:handshakeTimeout=none")
        self.assertIsNone(endpoint.context_factory.handshake_timeout)

    def test_alpn(self) -> None:
        """alpn= offers the listed protocols, in order."""
        endpoint = self.parse(f"twistls:localhost:443:caFile={_esc(self.p.cafile)}:alpn=h2,http/1.1")
        self.assertEqual(tuple(endpoint.context_factory.alpn_protocols), (b"h2", b"http/1.1"))

    def test_insecure_skip_verify_is_explicit(self) -> None:
        """insecureSkipVerify=yes is the only way to turn verification off."""
        endpoint = self.parse("twistls:localhost:443:insecureSkipVerify=yes")
        self.assertTrue(endpoint.context_factory.insecure_skip_verify)

    def test_endpoint_key_tunnels_and_connects_through_it(self) -> None:
        """endpoint= dials another endpoint; connect() wraps the factory with TLS."""
        endpoint = self.parse(
            f"twistls:host=db.example:port=443:caFile={_esc(self.p.cafile)}:endpoint=tcp\\:10.0.0.5\\:5432"
        )
        self.assertIsInstance(endpoint.wrapped_endpoint, TCP4ClientEndpoint)
        d = endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        self.assertNoResult(d)
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[0]
        self.assertEqual((host, port), ("10.0.0.5", 5432))
        tls = factory._wrappedFactory  # TCP4ClientEndpoint's own wrapper around ours
        self.assertIsInstance(tls, TLSWrappingFactory)
        self.assertEqual(tls.context_factory.hostname, "db.example")

    def test_cancel_before_connected(self) -> None:
        """Cancelling connect() before TCP connects cancels the TCP attempt (ConnectingCancelledError)."""
        endpoint = self.parse(f"twistls:host=localhost:port=443:caFile={_esc(self.p.cafile)}:endpoint=tcp\\:127.0.0.1\\:1")
        d = endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        d.cancel()
        self.failureResultOf(d, ConnectingCancelledError)

    def test_bad_strings_raise_configuration_error(self) -> None:
        """Unknown keys, missing files and bad values raise ConfigurationError naming them."""
        ca = _esc(self.p.cafile)
        cases = {
            f"twistls:host=localhost:port=443:caFile={ca}:bogus=1": "bogus",
            "twistls:host=localhost:port=443:caFile=/no/such/ca.pem": "caFile",
            f"twistls:host=localhost:port=443:caPath=/no/such/dir": "caPath",
            f"twistls:port=443:caFile={ca}": "host",
            f"twistls:host=localhost:caFile={ca}": "port",
            f"twistls:host=localhost:port=http:caFile={ca}": "port",
            f"twistls:host=localhost:port=70000:caFile={ca}": "port",
            f"twistls:host=localhost:port=443:caFile={ca}:legacyCommonName=maybe": "legacyCommonName",
            f"twistls:host=localhost:port=443:caFile={ca}:timeout=-1": "timeout",
            f"twistls:host=localhost:port=443:caFile={ca}:handshakeTimeout=soon": "handshakeTimeout",
            f"twistls:host=localhost:port=443:caFile={ca}:pins=abc": "pin",
            f"twistls:host=localhost:port=443:caFile={ca}:clientPrivateKey={_esc(self.p.client.key)}": "clientPrivateKey",
            f"twistls:host=localhost:port=443:caFile={ca}:clientCertificate={_esc(self.p.client.cert)}"
            f":clientPrivateKey={_esc(self.p.server.key)}": "does not match",
            f"twistls:localhost:443:extra:caFile={ca}": "positional",
            f"twistls:host=localhost:port=443:caFile={ca}:endpoint=nope\\:1": "endpoint",
        }
        for text, needle in cases.items():
            with self.assertRaises(ConfigurationError, msg=text) as caught:
                clientFromString(self.reactor, text)
            self.assertIn(needle, str(caught.exception), text)
            self.assertNotIn("\n", str(caught.exception))


class ServerStringTests(SynchronousTestCase):
    """``serverFromString(reactor, "twistls:...")``."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.p = pki()

    def parse(self, text: str) -> TLSServerEndpoint:
        endpoint = serverFromString(self.reactor, text)
        self.assertIsInstance(endpoint, TLSServerEndpoint)
        self.assertTrue(IStreamServerEndpoint.providedBy(endpoint))
        return endpoint

    def test_minimal_string_listens_with_tls(self) -> None:
        """PORT and certificate= are enough; listen() wraps the factory with TLS."""
        endpoint = self.parse(f"twistls:8443:certificate={_esc(self.p.server.chain)}")
        self.assertIsInstance(endpoint.wrapped_endpoint, TCP4ServerEndpoint)
        self.assertFalse(endpoint.context_factory.verifies_clients)
        self.assertEqual(endpoint.context_factory.handshake_timeout, 30.0)
        endpoint.listen(protocol.Factory.forProtocol(protocol.Protocol))
        port, factory, backlog, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, backlog, interface), (8443, 50, ""))
        self.assertIsInstance(factory, TLSWrappingFactory)
        self.assertIs(factory.context_factory, endpoint.context_factory)

    def test_every_option(self) -> None:
        """privateKey, caFile, requireClientCertificate, interface, backlog, handshakeTimeout."""
        endpoint = self.parse(
            f"twistls:port=0:certificate={_esc(self.p.server.cert)}:privateKey={_esc(self.p.server.key)}"
            f":caFile={_esc(self.p.cafile)}:requireClientCertificate=no:interface=127.0.0.1"
            ":backlog=7:handshakeTimeout=4"
        )
        self.assertTrue(endpoint.context_factory.verifies_clients)
        self.assertEqual(endpoint.context_factory.handshake_timeout, 4.0)
        endpoint.listen(protocol.Factory.forProtocol(protocol.Protocol))
        port, _factory, backlog, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, backlog, interface), (0, 7, "127.0.0.1"))

    def test_ipv6_interface(self) -> None:
        """An escaped IPv6 interface gives an IPv6 listening endpoint."""
        endpoint = self.parse(f"twistls:0:certificate={_esc(self.p.server.chain)}:interface=\\:\\:1")
        self.assertIsInstance(endpoint.wrapped_endpoint, TCP6ServerEndpoint)

    def test_bad_strings_raise_configuration_error(self) -> None:
        """Unknown keys, missing files, mismatched keys raise ConfigurationError naming them."""
        cert = _esc(self.p.server.cert)
        cases = {
            f"twistls:0:certificate={cert}:privateKey={_esc(self.p.server.key)}:bogus=1": "bogus",
            "twistls:0:certificate=/no/such/cert.pem": "certificate",
            f"twistls:0:certificate={cert}:privateKey=/no/such/key.pem": "privateKey",
            f"twistls:0:certificate={cert}:privateKey={_esc(self.p.client.key)}": "key",
            f"twistls:0:privateKey={_esc(self.p.server.key)}": "certificate=",
            f"twistls:certificate={_esc(self.p.server.chain)}": "port",
            f"twistls:https:certificate={_esc(self.p.server.chain)}": "port",
            f"twistls:0:certificate={_esc(self.p.server.chain)}:backlog=0": "backlog",
            f"twistls:0:certificate={_esc(self.p.server.chain)}:requireClientCertificate=yes": "caFile",
            f"twistls:0:certificate={_esc(self.p.server.chain)}:caFile=/no/ca.pem": "caFile",
            f"twistls:0:certificate={_esc(self.p.server.chain)}:caFile={_esc(self.p.cafile)}"
            ":requireClientCertificate=perhaps": "requireClientCertificate",
        }
        for text, needle in cases.items():
            with self.assertRaises(ConfigurationError, msg=text) as caught:
                serverFromString(self.reactor, text)
            self.assertIn(needle, str(caught.exception), text)

    def test_wrappers_refuse_foreign_factories(self) -> None:
        """wrap_client_tls/wrap_server_tls need twistls factories and a hostname."""
        p = self.p
        tcp = TCP4ClientEndpoint(self.reactor, "127.0.0.1", 1)
        with self.assertRaises(ConfigurationError):
            wrap_client_tls("localhost", object(), tcp)  # type: ignore[arg-type]
        with self.assertRaises(ConfigurationError):
            wrap_client_tls("", ClientContextFactory(cafile=p.cafile), tcp)
        with self.assertRaises(ConfigurationError):
            wrap_server_tls(ClientContextFactory(cafile=p.cafile), TCP4ServerEndpoint(self.reactor, 0))  # type: ignore[arg-type]


class PluginTests(SynchronousTestCase):
    """The drop-ins in ``twisted/plugins``."""

    def test_parsers_are_discovered(self) -> None:
        """getPlugins finds the twistls client and server parsers."""
        clients = [p for p in getPlugins(IStreamClientEndpointStringParserWithReactor) if p.prefix == "twistls"]
        servers = [p for p in getPlugins(IStreamServerEndpointStringParser) if p.prefix == "twistls"]
        self.assertEqual(len(clients), 1)
        self.assertEqual(len(servers), 1)
        self.assertIsInstance(clients[0], _ClientParser)
        self.assertIsInstance(servers[0], _ServerParser)
        self.assertTrue(IPlugin.providedBy(clients[0]))

    def test_service_maker_is_discovered(self) -> None:
        """getPlugins finds the ``twistd twistls`` service maker, naming twistls.tap."""
        makers = [m for m in getPlugins(IServiceMaker) if m.tapname == "twistls"]
        self.assertEqual(len(makers), 1)
        self.assertEqual(makers[0].module, "twistls.tap")

    def test_plugin_files_are_declarations(self) -> None:
        """The drop-ins hold no logic, import no M2Crypto, and have no __init__.py beside them."""
        self.assertFalse(os.path.exists(os.path.join(PLUGINS, "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(os.path.dirname(PLUGINS), "__init__.py")))
        for name in ("twistls_endpoints.py", "twistls_service.py"):
            with open(os.path.join(PLUGINS, name), encoding="utf-8") as f:
                text = f.read()
            self.assertNotIn("import M2Crypto", text)
            self.assertNotIn("from M2Crypto", text)
            self.assertNotIn("def ", text)
            self.assertNotIn("class ", text)


    def test_loading_plugins_does_not_load_m2crypto(self) -> None:
        """Discovering every plugin (as ``twistd --help`` does) does not import M2Crypto."""
        import subprocess
        import sys

        code = (
            "import sys; from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin)); "
            "print('M2Crypto' in sys.modules)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=os.path.dirname(HERE)
        )
        self.assertEqual(out.stdout.strip(), "False", out.stderr)


class _Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Recorder(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.instances.append(self)
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)


class _Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received: defer.Deferred[bytes] = defer.Deferred()
        self.lost: defer.Deferred[object] = defer.Deferred()
        self.buffer = b""
        self.expect = 0

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= self.expect and not self.received.called:
            self.received.callback(self.buffer)

    def connectionLost(self, reason: object) -> None:
        self.lost.callback([reason])


class LoopbackTests(TestCase):
    """String-built endpoints over real 127.0.0.1 sockets."""

    timeout = 30

    @defer.inlineCallbacks
    def listen(self, extra: str = "", proto: type[protocol.Protocol] = _Echo):  # type: ignore[no-untyped-def]
        p = pki()
        factory = protocol.Factory.forProtocol(proto)
        factory.instances = []  # type: ignore[attr-defined]
        endpoint = serverFromString(
            reactor,
            f"twistls:0:certificate={_esc(p.server.cert)}:privateKey={_esc(p.server.key)}:interface=127.0.0.1{extra}",
        )
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    @defer.inlineCallbacks
    def test_echo_through_strings(self) -> None:
        """connect() fires after a verified handshake; data round-trips; close is clean."""
        p = pki()
        port, _ = yield self.listen()
        endpoint = clientFromString(reactor, f"twistls:host=localhost:port={port}:caFile={_esc(p.cafile)}")
        client = yield endpoint.connect(protocol.Factory.forProtocol(_Client))
        info = client.transport.connection_info()
        self.assertIsNotNone(info)
        self.assertTrue(info.verified)
        client.expect = 5
        client.transport.write(b"hello")
        data = yield client.received
        self.assertEqual(data, b"hello")
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_wrong_hostname_fails_connect(self) -> None:
        """connect() fails with HostnameMismatchError naming the expected host; the server gets no byte."""
        p = pki()
        port, factory = yield self.listen(proto=_Recorder)
        endpoint = clientFromString(
            reactor, f"twistls:host=wrong.example:port={port}:caFile={_esc(p.cafile)}:endpoint=tcp\\:127.0.0.1\\:{port}"
        )

        class Eager(_Client):
            def connectionMade(self) -> None:
                self.transport.write(b"SECRET")

        failure = yield self.assertFailure(
            endpoint.connect(protocol.Factory.forProtocol(Eager)), HostnameMismatchError
        )
        self.assertEqual(failure.hostname, "wrong.example")
        self.assertIn("DNS:localhost", str(failure))
        for server in factory.instances:
            self.assertEqual(b"".join(server.chunks), b"")

    @defer.inlineCallbacks
    def test_untrusted_ca_fails_connect(self) -> None:
        """connect() fails with UntrustedCertificateError against a CA the client does not trust."""
        p = pki()
        port, _ = yield self.listen()
        endpoint = clientFromString(reactor, f"twistls:host=localhost:port={port}:caFile={_esc(p.other_cafile)}")
        yield self.assertFailure(endpoint.connect(protocol.Factory.forProtocol(_Client)), UntrustedCertificateError)

    @defer.inlineCallbacks
    def test_client_certificate_from_strings(self) -> None:
        """A server string with caFile= accepts a client string with clientCertificate=."""
        p = pki()
        port, _ = yield self.listen(f":caFile={_esc(p.cafile)}")
        endpoint = clientFromString(
            reactor,
            f"twistls:host=127.0.0.1:port={port}:caFile={_esc(p.cafile)}"
            f":clientCertificate={_esc(p.client.cert)}:clientPrivateKey={_esc(p.client.key)}",
        )
        client = yield endpoint.connect(protocol.Factory.forProtocol(_Client))
        client.expect = 2
        client.transport.write(b"ok")
        self.assertEqual((yield client.received), b"ok")
        client.transport.loseConnection()
        yield client.lost

    @defer.inlineCallbacks
    def silent_server(self):  # type: ignore[no-untyped-def]
        """A TCP server that accepts and never answers; returns (port, server protocols)."""
        factory = protocol.Factory.forProtocol(_Recorder)
        factory.instances = []  # type: ignore[attr-defined]
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)

        def close_all() -> None:
            for server in factory.instances:
                server.transport.abortConnection()

        self.addCleanup(close_all)
        return port.getHost().port, factory

    @defer.inlineCallbacks
    def test_handshake_timeout_fails_connect(self) -> None:
        """handshakeTimeout= bounds a handshake with a silent server: connect() fails with HandshakeTimeoutError."""
        from twistls import HandshakeTimeoutError

        port, _ = yield self.silent_server()
        endpoint = clientFromString(
            reactor, f"twistls:host=localhost:port={port}:caFile={_esc(pki().cafile)}:handshakeTimeout=0.3"
        )
        yield self.assertFailure(endpoint.connect(protocol.Factory.forProtocol(_Client)), HandshakeTimeoutError)

    @defer.inlineCallbacks
    def test_cancel_during_handshake_aborts(self) -> None:
        """Cancelling connect() while the handshake is pending fails it with CancelledError and drops the connection."""
        from twisted.internet.defer import CancelledError

        port, factory = yield self.silent_server()
        endpoint = clientFromString(reactor, f"twistls:host=localhost:port={port}:caFile={_esc(pki().cafile)}")
        client = _Client()
        d = endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        for _ in range(200):
            if factory.instances:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        d.cancel()
        yield self.assertFailure(d, CancelledError)
        yield client.lost

    @defer.inlineCallbacks
    def test_python_api_wrappers(self) -> None:
        """wrap_server_tls + wrap_client_tls over plain TCP endpoints verify the given name."""
        p = pki()
        server = wrap_server_tls(
            ServerContextFactory(p.server.cert, p.server.key), TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        )
        listening = yield server.listen(protocol.Factory.forProtocol(_Echo))
        self.addCleanup(listening.stopListening)
        port = listening.getHost().port
        policy = ClientContextFactory(cafile=p.cafile)
        good = wrap_client_tls("example.com", policy, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        client = yield good.connect(protocol.Factory.forProtocol(_Client))
        self.assertEqual(client.transport.connection_info().server_name, "example.com")
        client.transport.loseConnection()
        yield client.lost
        bad = wrap_client_tls("other.example", policy, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        yield self.assertFailure(bad.connect(protocol.Factory.forProtocol(_Client)), HostnameMismatchError)


class PackagingTests(SynchronousTestCase):
    """The plugin drop-ins after a normal, non-editable ``pip install``."""

    def test_wheel_install_registers_plugins(self) -> None:
        """A wheel built from the source installs twisted/plugins/twistls_*.py (no __init__.py),
        getPlugins finds both parsers and the service maker from outside the checkout, and
        the dropin.cache written beside them lists only twistls' drop-ins."""
        import pickle
        import shutil
        import subprocess
        import sys
        import sysconfig
        import tempfile
        import zipfile

        root = os.path.dirname(HERE)
        work = tempfile.mkdtemp(prefix="twistls-wheel-")
        self.addCleanup(shutil.rmtree, work, True)
        src = os.path.join(work, "src")
        os.mkdir(src)
        for name in ("setup.py", "setup.cfg", "README.md"):
            if os.path.exists(os.path.join(root, name)):
                shutil.copy(os.path.join(root, name), src)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache")
        shutil.copytree(os.path.join(root, "twistls"), os.path.join(src, "twistls"), ignore=ignore)
        shutil.copytree(PLUGINS, os.path.join(src, "twisted", "plugins"), ignore=ignore)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        run = dict(capture_output=True, text=True, timeout=300, cwd=work)
        built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", work, src], **run)
        self.assertEqual(built.returncode, 0, built.stderr)
        (wheel,) = [n for n in os.listdir(work) if n.endswith(".whl")]
        names = zipfile.ZipFile(os.path.join(work, wheel)).namelist()
        self.assertIn("twisted/plugins/twistls_endpoints.py", names)
        self.assertIn("twisted/plugins/twistls_service.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertNotIn("twisted/__init__.py", names)

        venv = os.path.join(work, "venv")
        made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], **run)
        self.assertEqual(made.returncode, 0, made.stderr)
        python = os.path.join(venv, "bin", "python")
        purelib = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], **run
        ).stdout.strip()
        # The dependencies come from this test's environment, but not twistls
        # itself: a plain path line, so no editable-install .pth runs.
        with open(os.path.join(purelib, "zz_deps.pth"), "w") as f:
            f.write(sysconfig.get_paths()["purelib"] + "\n")
        installed = subprocess.run(
            [*pip, "--python", python, "install", "--no-deps", "--no-index", os.path.join(work, wheel)], **run
        )
        self.assertEqual(installed.returncode, 0, installed.stderr)
        code = (
            "import sys, twistls\n"
            f"assert {root!r} not in sys.path, sys.path\n"
            f"assert twistls.__file__.startswith({purelib!r}), twistls.__file__\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.internet.interfaces import IStreamServerEndpointStringParser as S\n"
            "from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor as C\n"
            "from twisted.application.service import IServiceMaker as M\n"
            "print(sorted(p.prefix for p in getPlugins(S) if p.prefix == 'twistls'),"
            " sorted(p.prefix for p in getPlugins(C) if p.prefix == 'twistls'),"
            " sorted(m.tapname for m in getPlugins(M) if m.tapname == 'twistls'))\n"
        )
        found = subprocess.run([python, "-c", code], **run)
        self.assertEqual(found.stdout.strip(), "['twistls'] ['twistls'] ['twistls']", found.stderr)
        with open(os.path.join(purelib, "twisted", "plugins", "dropin.cache"), "rb") as f:
            cache = pickle.load(f)
        self.assertEqual(sorted(cache), ["twistls_endpoints", "twistls_service"])


def _passphrase_file(testcase: Any, content: bytes) -> str:
    """A mode-0600 file holding ``content``, removed after the test."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="twistls-passphrase-")
    os.write(fd, content)
    os.close(fd)
    testcase.addCleanup(os.remove, path)
    return path


class DocumentationTests(SynchronousTestCase):
    """doc/howto/endpoint-strings.rst stays true."""

    def test_examples_parse(self) -> None:
        """Every example string in the reference parses, with real files for the placeholder names."""
        import re

        p = pki()
        files = {
            "ca.pem": p.cafile,
            "clients.pem": p.cafile,
            "server.pem": p.server.cert,
            "key.pem": p.server.key,
            "client.pem": p.client.cert,
            "client.key": p.client.key,
            "passphrase.txt": _passphrase_file(self, b"not needed: the example key is not encrypted\n"),
        }
        with open(os.path.join(os.path.dirname(HERE), "doc", "howto", "endpoint-strings.rst"), encoding="utf-8") as f:
            text = f.read()
        examples = text[text.index("\nExamples\n") : text.index("With twistd:")]
        lines = [line.strip() for line in examples.splitlines() if line.strip().startswith("twistls:")]
        self.assertGreaterEqual(len(lines), 10)
        for line in lines:
            real = re.sub(r"=([\w.]+\.(?:pem|key|txt))(?=:|$)", lambda m: "=" + _esc(files[m.group(1)]), line)
            server = "certificate=" in line or "sniDirectory=" in line
            if not server:
                endpoint = clientFromString(MemoryReactor(), real)
                self.assertIsInstance(endpoint, TLSClientEndpoint, line)
            else:
                endpoint = serverFromString(MemoryReactor(), real)
                self.assertIsInstance(endpoint, TLSServerEndpoint, line)

    def test_every_key_is_documented(self) -> None:
        """Each key the parsers accept appears in the reference and in the module docstring."""
        import twistls.endpoints as module

        with open(os.path.join(os.path.dirname(HERE), "doc", "howto", "endpoint-strings.rst"), encoding="utf-8") as f:
            text = f.read()
        for key in module._CLIENT_KEYS | module._SERVER_KEYS:
            self.assertIn(f"``{key}``", text)
            self.assertIn(key, module.__doc__ or "")


class ConnectionOptionStringTests(TestCase):
    """idleTimeout, allowTruncation and sniDirectory in endpoint strings, over 127.0.0.1."""

    timeout = 30

    @defer.inlineCallbacks
    def serve(self, extra: str):  # type: ignore[no-untyped-def]
        factory = protocol.Factory.forProtocol(_Echo)
        endpoint = serverFromString(reactor, f"twistls:0:interface=127.0.0.1{extra}")
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def connect(self, port: int, host: str = "localhost", extra: str = ""):  # type: ignore[no-untyped-def]
        string = f"twistls:host={host}:port={port}:caFile={_esc(pki().cafile)}{extra}"
        return clientFromString(reactor, string).connect(protocol.Factory.forProtocol(_Client))

    @defer.inlineCallbacks
    def test_server_idle_timeout_closes_an_idle_client(self) -> None:
        """A server string with idleTimeout=0.3 closes a verified but silent client with close_notify."""
        p = pki()
        port = yield self.serve(f":certificate={_esc(p.server.cert)}:privateKey={_esc(p.server.key)}:idleTimeout=0.3")
        client = yield self.connect(port)
        started = reactor.seconds()
        (reason,) = yield client.lost
        self.assertTrue(reason.check(ConnectionDone), reason)  # close_notify: a clean end
        self.assertGreaterEqual(reactor.seconds() - started, 0.25)

    @defer.inlineCallbacks
    def test_server_without_idle_timeout_keeps_the_client(self) -> None:
        """Without idleTimeout the same silent client stays connected."""
        p = pki()
        port = yield self.serve(f":certificate={_esc(p.server.cert)}:privateKey={_esc(p.server.key)}")
        client = yield self.connect(port)
        yield task.deferLater(reactor, 0.6, lambda: None)
        self.assertFalse(client.lost.called)
        client.transport.loseConnection()
        yield client.lost

    def test_allow_truncation_and_idle_timeout_parse(self) -> None:
        """Both roles accept idleTimeout and allowTruncation; bad values are ConfigurationErrors."""
        p = pki()
        client = clientFromString(
            reactor, f"twistls:host=localhost:port=1:caFile={_esc(p.cafile)}:idleTimeout=60:allowTruncation=yes"
        )
        self.assertEqual((client._idle_timeout, client._allow_truncation), (60.0, True))
        server = serverFromString(
            reactor, f"twistls:0:certificate={_esc(p.server.chain)}:idleTimeout=none:allowTruncation=no"
        )
        self.assertEqual((server._idle_timeout, server._allow_truncation), (None, False))
        for bad in (":idleTimeout=-1", ":idleTimeout=soon", ":allowTruncation=maybe"):
            self.assertRaises(
                ConfigurationError, serverFromString, reactor, f"twistls:0:certificate={_esc(p.server.chain)}{bad}"
            )

    @defer.inlineCallbacks
    def test_sni_directory_serves_each_name(self) -> None:
        """sniDirectory picks the certificate by SNI; certificate= serves other names; each client verifies."""
        p = pki()
        directory = os.path.join(p.dir, "sni-endpoint")
        os.makedirs(directory, exist_ok=True)
        for name in ("a.example", "b.example"):
            leaf = p.leaf(f"sni-endpoint-{name}", p.ca, name)
            with open(leaf.chain, "rb") as src, open(os.path.join(directory, f"{name}.pem"), "wb") as dst:
                dst.write(src.read())
        port = yield self.serve(
            f":certificate={_esc(p.server.cert)}:privateKey={_esc(p.server.key)}:sniDirectory={_esc(directory)}"
        )
        for name in ("a.example", "b.example", "localhost"):
            client = yield self.connect(port, host=name, extra=f":endpoint=tcp\\:127.0.0.1\\:{port}")
            self.assertIn(f"DNS:{name}", certificate_names(client.transport.getPeerCertificate()))
            client.transport.loseConnection()
            yield client.lost
        with self.assertRaises(HostnameMismatchError):
            yield self.connect(port, host="c.example", extra=f":endpoint=tcp\\:127.0.0.1\\:{port}")


class StrictStringTests(SynchronousTestCase):
    """Endpoint strings never fall back to weaker settings: empty values, repeated keys,
    unknown keys, loose booleans and zero or negative numbers are one-line ConfigurationErrors."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.p = pki()
        p = self.p
        self.client = {
            "host": "localhost",
            "port": "443",
            "caFile": _esc(p.cafile),
        }
        self.server = {
            "port": "0",
            "certificate": _esc(p.server.cert),
            "privateKey": _esc(p.server.key),
        }

    def client_string(self, **extra: str) -> str:
        return "twistls:" + ":".join(f"{k}={v}" for k, v in {**self.client, **extra}.items())

    def server_string(self, **extra: str) -> str:
        return "twistls:" + ":".join(f"{k}={v}" for k, v in {**self.server, **extra}.items())

    def assert_refused(self, text: str | bytes, *needles: str, server: bool = False) -> None:
        """``text`` raises a one-line ConfigurationError containing every needle."""
        parse = serverFromString if server else clientFromString
        with self.assertRaises(ConfigurationError, msg=text) as caught:
            parse(self.reactor, text)
        message = str(caught.exception)
        for needle in needles:
            self.assertIn(needle, message, text)
        self.assertNotIn("\n", message, text)

    def test_empty_value_of_every_client_key_is_refused(self) -> None:
        """Each client key given an empty (or blank) value is refused with an error naming it."""
        from twistls.endpoints import _CLIENT_KEYS

        for key in sorted(_CLIENT_KEYS):
            for empty in ("", " "):
                self.assert_refused(self.client_string(**{key: empty}), key)

    def test_empty_value_of_every_server_key_is_refused(self) -> None:
        """Each server key given an empty (or blank) value is refused with an error naming it."""
        from twistls.endpoints import _SERVER_KEYS

        for key in sorted(_SERVER_KEYS):
            for empty in ("", " "):
                self.assert_refused(self.server_string(**{key: empty}), key, server=True)

    def test_empty_positional_arguments_are_refused(self) -> None:
        """An empty positional host, port or a stray ':' is refused, naming what is missing."""
        ca = _esc(self.p.cafile)
        self.assert_refused(f"twistls::443:caFile={ca}", "host")
        self.assert_refused(f"twistls:localhost::caFile={ca}", "port")
        self.assert_refused(f"twistls:localhost:443::caFile={ca}", "':'")
        self.assert_refused(f"twistls::certificate={_esc(self.p.server.chain)}", "port", server=True)
        self.assert_refused(f"twistls:0:certificate={_esc(self.p.server.chain)}:", "':'", server=True)

    def test_pins_without_a_pin_are_refused(self) -> None:
        """pins=, pins=, and a pin list with an empty item are refused, naming pins."""
        pin = "a" * 64
        for value in ("", ",", " , ", f"{pin},", f",{pin}", f"{pin},,{pin}"):
            self.assert_refused(self.client_string(pins=value), "pins")

    def test_alpn_without_a_protocol_is_refused(self) -> None:
        """alpn=, and an ALPN list with an empty item are refused, naming alpn."""
        for value in (",", "h2,", "h2,,http/1.1"):
            self.assert_refused(self.client_string(alpn=value), "alpn")

    def test_empty_handshake_timeout_is_refused_not_unlimited(self) -> None:
        """handshakeTimeout= (empty) is an error in both roles, not "no timeout"."""
        self.assert_refused(self.client_string(handshakeTimeout=""), "handshakeTimeout")
        self.assert_refused(self.server_string(handshakeTimeout=""), "handshakeTimeout", server=True)

    def test_repeated_client_keys_are_refused(self) -> None:
        """A client key given twice is refused even when the last value would be stricter or equal."""
        ca = _esc(self.p.cafile)
        pin = "a" * 64
        cases = {
            f"twistls:localhost:443:caFile={ca}:insecureSkipVerify=no:insecureSkipVerify=yes": "insecureSkipVerify",
            f"twistls:localhost:443:caFile={ca}:insecureSkipVerify=yes:insecureSkipVerify=no": "insecureSkipVerify",
            f"twistls:localhost:443:caFile={ca}:handshakeTimeout=5:handshakeTimeout=none": "handshakeTimeout",
            f"twistls:localhost:443:caFile={ca}:pins={pin}:pins={'b' * 64}": "pins",
            f"twistls:localhost:443:caFile={ca}:caFile={ca}": "caFile",
            f"twistls:localhost:443:caFile={ca}:legacyCommonName=no:legacyCommonName=no": "legacyCommonName",
            f"twistls:host=localhost:host=evil.example:port=443:caFile={ca}": "host",
            f"twistls:host=localhost:port=443:port=444:caFile={ca}": "port",
        }
        for text, key in cases.items():
            self.assert_refused(text, key, "more than once")

    def test_repeated_server_keys_are_refused(self) -> None:
        """A server key given twice is refused, e.g. requireClientCertificate=yes then =no."""
        ca = _esc(self.p.cafile)
        chain = _esc(self.p.server.chain)
        cases = {
            f"twistls:0:certificate={chain}:caFile={ca}:requireClientCertificate=yes:requireClientCertificate=no":
                "requireClientCertificate",
            f"twistls:0:certificate={chain}:caFile={ca}:caFile={ca}": "caFile",
            f"twistls:0:certificate={chain}:interface=127.0.0.1:interface=0.0.0.0": "interface",
            f"twistls:0:certificate={chain}:certificate={chain}": "certificate",
            f"twistls:0:certificate={chain}:handshakeTimeout=5:handshakeTimeout=none": "handshakeTimeout",
            f"twistls:port=0:port=1:certificate={chain}": "port",
        }
        for text, key in cases.items():
            self.assert_refused(text, key, "more than once", server=True)

    def test_repeated_keys_in_bytes_strings_are_refused(self) -> None:
        """Repeated keys are found in bytes strings too."""
        text = self.client_string(insecureSkipVerify="no") + ":insecureSkipVerify=yes"
        self.assert_refused(text.encode("utf-8"), "insecureSkipVerify", "more than once")
        text = self.server_string(handshakeTimeout="5") + ":handshakeTimeout=none"
        self.assert_refused(text.encode("utf-8"), "handshakeTimeout", "more than once", server=True)

    def test_repeated_key_inside_endpoint_is_refused(self) -> None:
        """A key repeated inside the nested endpoint= string is refused, naming it and endpoint."""
        self.assert_refused(self.client_string(endpoint="tcp\\:host=10.0.0.5\\:port=1\\:port=2"), "endpoint", "port")
        self.assert_refused(
            self.client_string(endpoint="twistls\\:host=a\\:port=1\\:insecureSkipVerify=no\\:insecureSkipVerify=yes"),
            "insecureSkipVerify",
        )

    def test_each_key_once_is_still_accepted(self) -> None:
        """The same keys given once each parse; a key and a value that look alike are not repeats."""
        endpoint = clientFromString(self.reactor, self.client_string(insecureSkipVerify="no", alpn="h2"))
        self.assertFalse(endpoint.context_factory.insecure_skip_verify)
        endpoint = clientFromString(self.reactor, self.client_string(endpoint="tcp\\:host=10.0.0.5\\:port=1"))
        self.assertIsInstance(endpoint.wrapped_endpoint, TCP4ClientEndpoint)
        endpoint = serverFromString(self.reactor, self.server_string(caFile=_esc(self.p.cafile)))
        self.assertTrue(endpoint.context_factory.verifies_clients)

    def test_unknown_keys_are_refused(self) -> None:
        """Keys the grammar does not have (other spellings, Python-API-only settings, an empty key) are refused by name."""
        for key in ("cafile", "verifyDepth", "minimumVersion", "crlFile", "insecure_skip_verify", "hostname"):
            self.assert_refused(self.client_string(**{key: "0"}), key)
        for key in ("requireClientCert", "verifyDepth", "minimumVersion", "crlFile", "clientCaFile"):
            self.assert_refused(self.server_string(**{key: "0"}), key, server=True)
        self.assert_refused(self.client_string() + ":=yes", "empty key")
        self.assert_refused(self.server_string() + ":=yes", "empty key", server=True)

    def test_booleans_take_only_the_documented_words(self) -> None:
        """Boolean keys refuse anything but yes/no, true/false, on/off, 1/0 (any case), naming the key."""
        for key in ("legacyCommonName", "insecureSkipVerify", "allowTruncation"):
            for bad in ("maybe", "y", "n", "2", "-1", "yes please", "nope", "t", "enabled"):
                self.assert_refused(self.client_string(**{key: bad}), key)
        for key in ("requireClientCertificate", "allowTruncation"):
            for bad in ("maybe", "y", "2", "required", "optional"):
                self.assert_refused(self.server_string(caFile=_esc(self.p.cafile), **{key: bad}), key, server=True)
        for word, expected in (("YES", True), ("True", True), ("on", True), ("1", True),
                               ("no", False), ("FALSE", False), ("off", False), ("0", False)):
            endpoint = clientFromString(self.reactor, self.client_string(legacyCommonName=word))
            self.assertIs(endpoint.context_factory.allow_common_name, expected, word)

    def test_zero_and_negative_numbers_are_refused(self) -> None:
        """Zero, negative, infinite and NaN timeouts, ports and backlogs are refused by key; "none" is the only "no limit"."""
        for key in ("handshakeTimeout", "idleTimeout", "timeout"):
            for bad in ("0", "0.0", "-1", "-0.5", "inf", "nan", "soon", "1e999"):
                self.assert_refused(self.client_string(**{key: bad}), key)
        for key in ("handshakeTimeout", "idleTimeout"):
            for bad in ("0", "-1", "inf", "nan"):
                self.assert_refused(self.server_string(**{key: bad}), key, server=True)
        self.assert_refused(self.client_string(timeout="none"), "timeout")
        for bad in ("0", "-1", "65536", "1.5", "0x50"):
            self.assert_refused(self.client_string(port=bad), "port")
        for bad in ("-1", "65536", "1.5"):
            self.assert_refused(self.server_string(port=bad), "port", server=True)
        for bad in ("0", "-1", "ten"):
            self.assert_refused(self.server_string(backlog=bad), "backlog", server=True)
        endpoint = clientFromString(self.reactor, self.client_string(handshakeTimeout="NONE", idleTimeout="never"))
        self.assertIsNone(endpoint.context_factory.handshake_timeout)
        self.assertIsNone(endpoint.idle_timeout)

    def test_a_lone_trailing_backslash_is_refused(self) -> None:
        """A nested endpoint= ending in a lone backslash is a ConfigurationError, not a RuntimeError."""
        self.assert_refused(self.client_string(endpoint="tcp\\:10.0.0.5\\:1\\\\"), "endpoint")

    def test_split_matches_twisted(self) -> None:
        """The private splitter reads strings exactly as Twisted's own parser does (last value wins there)."""
        from twisted.internet.endpoints import _parse

        from twistls.endpoints import _split_description

        for text in (
            "twistls:a:b=c=d:e",
            "twistls:=x",
            "twistls:",
            "twistls:8443:",
            "twistls:a\\:b:k=v\\:w",
            "twistls:k=:j",
            "twistls:a\\=b:c\\\\d=e",
            "TWISTLS:x:k=v:k=w",
            b"twistls:x:k=v:k=w",
        ):
            args, pairs = _split_description(text)
            twisted_args, twisted_kwargs = _parse(text)
            decode = (lambda v: v.decode("utf-8")) if isinstance(text, bytes) else (lambda v: v)
            self.assertEqual(args, [decode(a) for a in twisted_args], text)
            self.assertEqual(dict(pairs), {k: decode(v) for k, v in twisted_kwargs.items()}, text)

    def test_direct_parser_calls_are_checked_too(self) -> None:
        """Calling the plugin parsers directly (no string) still refuses empty and unknown values."""
        ca = self.p.cafile
        endpoint = _ClientParser().parseStreamClient(self.reactor, host="localhost", port="443", caFile=ca)
        self.assertEqual(endpoint.hostname, "localhost")
        with self.assertRaises(ConfigurationError):
            _ClientParser().parseStreamClient(self.reactor, host="localhost", port="443", caFile=ca, pins="")
        with self.assertRaises(ConfigurationError):
            _ServerParser().parseStreamServer(self.reactor, "0", certificate=self.p.server.chain, handshakeTimeout="")


def _encrypted_key(testcase: Any, key_path: str, passphrase: bytes) -> str:
    """A copy of the PEM key at ``key_path``, encrypted with ``passphrase``."""
    from cryptography.hazmat.primitives import serialization

    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(passphrase)
    )
    return _passphrase_file(testcase, encrypted)


class PassphraseFileStringTests(SynchronousTestCase):
    """passphraseFile= opens encrypted keys in server and client strings."""

    def test_server_string_opens_an_encrypted_key(self) -> None:
        """A server string with passphraseFile= (one trailing newline stripped) loads an encrypted key."""
        p = pki()
        key = _encrypted_key(self, p.server.key, b"s3cret")
        secret = _passphrase_file(self, b"s3cret\n")
        endpoint = serverFromString(
            MemoryReactor(), f"twistls:0:certificate={_esc(p.server.cert)}:privateKey={_esc(key)}:passphraseFile={_esc(secret)}"
        )
        self.assertIsInstance(endpoint, TLSServerEndpoint)
        self.assertNotIn("s3cret", repr(vars(endpoint.context_factory)))

    def test_server_string_without_or_with_a_wrong_passphrase_is_refused(self) -> None:
        """Without passphraseFile= the error says to give it; a wrong one, an empty or a missing file are named."""
        p = pki()
        key = _encrypted_key(self, p.server.key, b"s3cret")
        base = f"twistls:0:certificate={_esc(p.server.cert)}:privateKey={_esc(key)}"
        cases = [
            ("", "passphraseFile=FILE"),
            (f":passphraseFile={_esc(_passphrase_file(self, b'wrong'))}", "wrong passphrase"),
            (f":passphraseFile={_esc(_passphrase_file(self, b''))}", "empty"),
            (":passphraseFile=/no/such/passphrase", "no such file"),
        ]
        for extra, needle in cases:
            with self.assertRaises(ConfigurationError) as caught:
                serverFromString(MemoryReactor(), base + extra)
            self.assertIn(needle, str(caught.exception), extra)
            self.assertIn("passphraseFile" if extra else "encrypted", str(caught.exception))
            self.assertNotIn("s3cret", str(caught.exception))

    def test_client_string_opens_an_encrypted_client_key(self) -> None:
        """A client string with clientCertificate= and passphraseFile= loads an encrypted client key; without it, the error names passphraseFile=."""
        p = pki()
        key = _encrypted_key(self, p.client.key, b"client-secret")
        base = f"twistls:host=localhost:port=1:caFile={_esc(p.cafile)}:clientCertificate={_esc(p.client.cert)}:clientPrivateKey={_esc(key)}"
        secret = _passphrase_file(self, b"client-secret\n")
        endpoint = clientFromString(MemoryReactor(), f"{base}:passphraseFile={_esc(secret)}")
        self.assertIsInstance(endpoint, TLSClientEndpoint)
        with self.assertRaises(ConfigurationError) as caught:
            clientFromString(MemoryReactor(), base)
        self.assertIn("passphraseFile=FILE", str(caught.exception))
        with self.assertRaises(ConfigurationError) as caught:
            clientFromString(MemoryReactor(), f"twistls:host=localhost:port=1:passphraseFile={_esc(secret)}")
        self.assertIn("needs clientCertificate", str(caught.exception))


class ProxyProtocolStringTests(SynchronousTestCase):
    """proxyProtocol= and endpoint= on server strings."""

    def test_endpoint_and_proxy_protocol_parse(self) -> None:
        """endpoint= gives the listening endpoint and proxyProtocol=yes turns the PROXY header on."""
        p = pki()
        endpoint = serverFromString(
            MemoryReactor(), f"twistls:endpoint=tcp\\:0\\:interface=127.0.0.1:certificate={_esc(p.server.chain)}:proxyProtocol=yes"
        )
        self.assertIsInstance(endpoint.wrapped_endpoint, TCP4ServerEndpoint)
        self.assertTrue(endpoint.proxy_protocol)
        plain = serverFromString(MemoryReactor(), f"twistls:0:certificate={_esc(p.server.chain)}")
        self.assertFalse(plain.proxy_protocol)

    def test_bad_endpoint_and_proxy_protocol_values_are_refused(self) -> None:
        """A port beside endpoint=, a TLS endpoint=, a repeated nested key and a non-boolean proxyProtocol are errors naming them."""
        p = pki()
        cert = _esc(p.server.chain)
        cases = {
            f"twistls:8443:endpoint=tcp\\:0:certificate={cert}": "give port in endpoint=",
            f"twistls:endpoint=tcp\\:0:interface=127.0.0.1:certificate={cert}": "give interface in endpoint=",
            f"twistls:endpoint=ssl\\:0:certificate={cert}": "TLS already",
            f"twistls:endpoint=tcp\\:0\\:backlog=1\\:backlog=2:certificate={cert}": "backlog= is given more than once",
            f"twistls:0:certificate={cert}:proxyProtocol=maybe": "proxyProtocol",
        }
        for string, needle in cases.items():
            with self.assertRaises(ConfigurationError, msg=string) as caught:
                serverFromString(MemoryReactor(), string)
            self.assertIn(needle, str(caught.exception), string)


class _CapturingEndpoint:
    """A client and server endpoint that keeps the factory it is given."""

    factory: Any = None

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        self.factory = protocolFactory
        return defer.Deferred()

    def listen(self, protocolFactory: Any) -> defer.Deferred[Any]:
        self.factory = protocolFactory
        return defer.Deferred()


class HandshakeTimeoutOwnershipTests(SynchronousTestCase):
    """The endpoints' handshake_timeout goes to the wrapping factory and wins over the context factory's."""

    def client(self, **kw: Any) -> tuple[Any, _CapturingEndpoint]:
        inner = _CapturingEndpoint()
        cf = ClientContextFactory(cafile=pki().cafile, handshake_timeout=40)
        endpoint = wrap_client_tls("localhost", cf, inner, clock=task.Clock(), **kw)
        endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        return endpoint, inner

    def server(self, **kw: Any) -> tuple[Any, _CapturingEndpoint]:
        inner = _CapturingEndpoint()
        cf = ServerContextFactory(pki().server.cert, pki().server.key, handshake_timeout=40)
        endpoint = wrap_server_tls(cf, inner, clock=task.Clock(), **kw)
        endpoint.listen(protocol.Factory.forProtocol(protocol.Protocol))
        return endpoint, inner

    def test_client_endpoint_timeout_reaches_the_wrapping_factory(self) -> None:
        """wrap_client_tls(handshake_timeout=5) gives the wrapping factory 5 seconds, not the context factory's 40."""
        endpoint, inner = self.client(handshake_timeout=5)
        self.assertEqual(endpoint.handshake_timeout, 5)
        self.assertEqual(inner.factory.handshake_timeout_for(endpoint.context_factory), 5)

    def test_client_endpoint_without_timeout_uses_the_context_factory(self) -> None:
        """Without handshake_timeout the endpoint and its connections use the context factory's."""
        from twistls._typing import FROM_CONTEXT

        endpoint, inner = self.client()
        self.assertEqual(endpoint.handshake_timeout, 40)
        self.assertIs(inner.factory.handshake_timeout, FROM_CONTEXT)
        self.assertEqual(inner.factory.handshake_timeout_for(endpoint.context_factory), 40)

    def test_server_endpoint_none_means_no_limit(self) -> None:
        """wrap_server_tls(handshake_timeout=None) lifts the context factory's limit."""
        endpoint, inner = self.server(handshake_timeout=None)
        self.assertIsNone(endpoint.handshake_timeout)
        self.assertIsNone(inner.factory.handshake_timeout_for(endpoint.context_factory))

    def test_proxy_header_timeout_follows_the_endpoint(self) -> None:
        """The PROXY header must come within the endpoint's handshake timeout (30 s when there is none)."""
        from twistls.endpoints import _PROXY_HEADER_TIMEOUT, _ProxyHeaderFactory

        _endpoint, inner = self.server(handshake_timeout=7, proxy_protocol=True)
        self.assertIsInstance(inner.factory, _ProxyHeaderFactory)
        self.assertEqual(inner.factory.timeout, 7)
        self.assertEqual(inner.factory.wrappedFactory.handshake_timeout, 7)
        _endpoint, unlimited = self.server(handshake_timeout=None, proxy_protocol=True)
        self.assertEqual(unlimited.factory.timeout, _PROXY_HEADER_TIMEOUT)
        _endpoint, default = self.server(proxy_protocol=True)
        self.assertEqual(default.factory.timeout, 40)

    def test_bad_endpoint_timeout_is_refused_at_construction(self) -> None:
        """A handshake_timeout of zero or less is a ConfigurationError from wrap_client_tls and wrap_server_tls."""
        with self.assertRaises(ConfigurationError):
            wrap_client_tls("localhost", ClientContextFactory(cafile=pki().cafile), _CapturingEndpoint(), handshake_timeout=0)
        with self.assertRaises(ConfigurationError):
            wrap_server_tls(ServerContextFactory(pki().server.cert, pki().server.key), _CapturingEndpoint(), handshake_timeout=-1)
