"""The Twisted wrapper over in-memory transports, with a Clock for timers."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport, ITLSTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests._iopump import connect
from tests._pki import pki
from twistls._engine import ConnectionInfo
from twistls.context import ClientContextFactory, ServerContextFactory
from twistls.errors import (
    ConfigurationError,
    ConnectionTruncatedError,
    EngineStateError,
    HandshakeTimeoutError,
    HostnameMismatchError,
    TLSError,
    UntrustedCertificateError,
)
from twistls.protocol import TLSProtocolWrapper, TLSWrappingFactory


class Recorder(Protocol):
    """Writes ``greeting`` on connect, records data and the connectionLost reason."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.chunks: list[bytes] = []
        self.reason: Failure | None = None
        self.made = 0

    def connectionMade(self) -> None:
        self.made += 1
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


@implementer(IHandshakeListener)
class Listener(Recorder):
    """A Recorder told about the handshake."""

    handshakes = 0

    def handshakeCompleted(self) -> None:
        self.handshakes += 1


class StreamingProducer:
    """An IPushProducer that records what it was told."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.paused = False
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


def _server_cf(**kw: Any) -> ServerContextFactory:
    leaf = kw.pop("leaf", None) or pki().server
    return ServerContextFactory(leaf.cert, leaf.key, **kw)


def _client_cf(hostname: str = "localhost", **kw: Any) -> ClientContextFactory:
    kw.setdefault("cafile", pki().cafile)
    return ClientContextFactory(hostname, **kw)


def _factory(protocol: Protocol, context_factory: Any, clock: Clock, **kw: Any) -> TLSWrappingFactory:
    return TLSWrappingFactory(Factory.forProtocol(lambda: protocol), context_factory, clock=clock, **kw)


class Connection:
    """A client and a server protocol wrapped in TLS and joined by an IOPump."""

    def __init__(
        self,
        client: Protocol | None = None,
        server: Protocol | None = None,
        *,
        client_cf: Any = None,
        server_cf: Any = None,
        pump: bool = True,
        client_kw: dict[str, Any] | None = None,
        server_kw: dict[str, Any] | None = None,
    ) -> None:
        self.clock = Clock()
        self.client = client if client is not None else Recorder()
        self.server = server if server is not None else Recorder()
        client_factory = _factory(self.client, client_cf or _client_cf(), self.clock, **(client_kw or {}))
        server_factory = _factory(self.server, server_cf or _server_cf(), self.clock, **(server_kw or {}))
        self.pump = connect(client_factory, server_factory, self.clock, pump=pump)

    @property
    def client_wrapper(self) -> TLSProtocolWrapper:
        return self.pump.client.protocol  # type: ignore[no-any-return]

    @property
    def server_wrapper(self) -> TLSProtocolWrapper:
        return self.pump.server.protocol  # type: ignore[no-any-return]

    def flush(self) -> None:
        self.pump.flush()


def _record_types(wire: bytes) -> list[int]:
    """The content types of the TLS records in ``wire``."""
    types = []
    while len(wire) >= 5:
        types.append(wire[0])
        wire = wire[5 + int.from_bytes(wire[3:5], "big") :]
    return types


class ConnectTests(SynchronousTestCase):
    """TLS from the moment the transport connects."""

    def test_data_both_ways(self) -> None:
        """Both wrapped protocols get what the other wrote in connectionMade."""
        conn = Connection(Recorder(b"from client"), Recorder(b"from server"))
        self.assertEqual(conn.server.data, b"from client")
        self.assertEqual(conn.client.data, b"from server")
        info = conn.client_wrapper.connection_info()
        assert info is not None
        self.assertIn(info.version, ("TLSv1.3", "TLSv1.2"))
        self.assertTrue(info.verified)
        self.assertNotIn(b"from client", conn.pump.client.wire())
        self.assertNotIn(b"from server", conn.pump.server.wire())

    def test_untrusted_server_fails(self) -> None:
        """A client facing an untrusted certificate loses the connection with UntrustedCertificateError and the server gets nothing."""
        conn = Connection(Recorder(b"SECRET"), client_cf=_client_cf(), server_cf=_server_cf(leaf=pki().untrusted_server))
        assert conn.client.reason is not None
        self.assertTrue(conn.client.reason.check(UntrustedCertificateError), conn.client.reason)
        self.assertEqual(conn.server.data, b"")
        self.assertIsNotNone(conn.server.reason)

    def test_wrong_host_fails_and_secret_withheld(self) -> None:
        """A client expecting another name loses the connection with HostnameMismatchError and its early write never reaches the server."""
        conn = Connection(Recorder(b"SECRET"), client_cf=_client_cf("wrong.example"))
        assert conn.client.reason is not None
        self.assertTrue(conn.client.reason.check(HostnameMismatchError), conn.client.reason)
        self.assertIsInstance(conn.client.reason.value, TLSError)
        self.assertEqual(conn.server.data, b"")
        self.assertIsNotNone(conn.server.reason)

    def test_peer_certificate(self) -> None:
        """getPeerCertificate returns the server certificate after the handshake and None before it."""
        conn = Connection(pump=False)
        self.assertIsNone(conn.client_wrapper.getPeerCertificate())
        conn.flush()
        cert = conn.client_wrapper.getPeerCertificate()
        self.assertIsNotNone(cert)
        from cryptography.hazmat.primitives.serialization import Encoding

        self.assertEqual(cert.public_bytes(Encoding.DER), pki().server.der)

    def test_interfaces(self) -> None:
        """The wrapper provides ITLSTransport always and ISSLTransport once TLS runs."""
        conn = Connection()
        self.assertTrue(ITLSTransport.providedBy(conn.client_wrapper))
        self.assertTrue(ISSLTransport.providedBy(conn.client_wrapper))
        self.assertTrue(ISSLTransport.providedBy(conn.server_wrapper))


class FailureTests(SynchronousTestCase):
    """Failures reach connectionLost typed, and are logged once."""

    def _capture(self) -> list[dict[str, Any]]:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []

        def observer(event: dict[str, Any]) -> None:
            if event.get("log_namespace") == "twistls":
                events.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return events

    def test_failure_logged_once(self) -> None:
        """A rejected handshake is logged once on each side, the client's line naming the reason."""
        events = self._capture()
        conn = Connection(client_cf=_client_cf("wrong.example"))
        client_lines = [e for e in events if "wrong.example" in str(e.get("reason", ""))]
        self.assertEqual(len(client_lines), 1, events)
        self.assertIsNotNone(conn.server.reason)

    def _server_ends_after(self, sent: bytes) -> list[dict[str, Any]]:
        """A server connection whose peer sends ``sent`` and closes TCP; its twistls log events."""
        from twisted.internet.error import ConnectionDone
        from twisted.internet.testing import StringTransport

        events = self._capture()
        factory = _factory(Recorder(), _server_cf(), Clock())
        wrapper = factory.buildProtocol(None)
        wrapper.makeConnection(StringTransport())
        if sent:
            wrapper.dataReceived(sent)
        wrapper.connectionLost(Failure(ConnectionDone()))
        return [e for e in events if "TLS connection" in e.get("log_format", "")]

    def test_silent_peer_is_not_a_warning(self) -> None:
        """A peer that connects and closes without sending a byte (a port or load-balancer health
        check) gets one line at info, not a warning."""
        lines = self._server_ends_after(b"")
        self.assertEqual([e["log_level"].name for e in lines], ["info"], lines)

    def test_peer_cut_mid_handshake_is_a_warning(self) -> None:
        """The twin: a peer that sent part of a ClientHello and closed is a warning."""
        lines = self._server_ends_after(b"\x16\x03\x01\x00\xc8\x01\x00")
        self.assertEqual([e["log_level"].name for e in lines], ["warn"], lines)

    def test_success_not_logged(self) -> None:
        """A good connection logs no warning."""
        events = self._capture()
        Connection()
        self.assertEqual([e for e in events if e["log_level"].name in ("warn", "error", "critical")], [])

    def test_mtls_accepted(self) -> None:
        """A server requiring client certificates gets data from a client presenting one, and sees its certificate."""
        p = pki()
        server = Recorder()
        conn = Connection(
            Recorder(b"hello"),
            server,
            client_cf=_client_cf(certificate=p.client.cert, private_key=p.client.key),
            server_cf=_server_cf(client_cafile=p.cafile),
        )
        self.assertEqual(server.data, b"hello")
        info = conn.server_wrapper.connection_info()
        assert info is not None
        self.assertEqual(info.peer_chain_der[0], p.client.der)

    def test_mtls_missing_client_certificate(self) -> None:
        """A client without a certificate is refused: the server's protocol gets NoPeerCertificateError and no data."""
        from twistls.errors import NoPeerCertificateError

        server = Recorder()
        client = Recorder(b"hello")
        Connection(client, server, server_cf=_server_cf(client_cafile=pki().cafile))
        self.assertEqual(server.data, b"")
        assert server.reason is not None and client.reason is not None
        self.assertTrue(server.reason.check(NoPeerCertificateError), server.reason)
        self.assertTrue(client.reason.check(TLSError), client.reason)
        self.assertEqual(server.made, 1)


class EarlyWriteTests(SynchronousTestCase):
    """No application byte leaves before the handshake and the Checker are done."""

    def test_writes_before_handshake_are_held(self) -> None:
        """A write in connectionMade leaves only handshake records on the wire until the handshake ends, then arrives."""
        conn = Connection(Recorder(b"EARLY"), pump=False)
        wire = conn.pump.client.wire()
        self.assertTrue(wire)
        self.assertEqual(set(_record_types(wire)), {0x16})  # only handshake records
        self.assertEqual(conn.server.data, b"")
        conn.flush()
        self.assertEqual(conn.server.data, b"EARLY")

    def test_server_writes_before_handshake_are_held(self) -> None:
        """A server write in connectionMade reaches the client only after the handshake."""
        client = Listener()
        conn = Connection(client, Recorder(b"HELLO"), pump=False)
        self.assertEqual(set(_record_types(conn.pump.server.wire() or b"\x16\x03\x03\x00\x00")), {0x16})
        conn.flush()
        self.assertEqual(client.handshakes, 1)
        self.assertEqual(client.data, b"HELLO")

    def test_writes_withheld_when_checker_rejects(self) -> None:
        """Writes made before the handshake are dropped, never sent, when the Checker rejects the peer."""
        conn = Connection(Recorder(b"SECRET"), client_cf=_client_cf("wrong.example"), pump=False)
        before = len(conn.pump.client.wire())
        conn.flush()
        self.assertEqual(conn.server.data, b"")
        # After the ClientHello the client sent at most an alert, never an application record.
        self.assertNotIn(0x17, _record_types(conn.pump.client.wire()[before:])[1:])


class StartTLSProtocol(LineReceiver):
    """A line protocol that upgrades to TLS on 'STARTTLS'/'GO'."""

    def __init__(self, context_factory: Any, *, initiator: bool) -> None:
        self.context_factory = context_factory
        self.initiator = initiator
        self.lines: list[bytes] = []
        self.reason: Failure | None = None
        self.handshakes = 0

    def connectionMade(self) -> None:
        if self.initiator:
            self.sendLine(b"STARTTLS")

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if line == b"STARTTLS":
            self.sendLine(b"GO")
            self.transport.startTLS(self.context_factory)
            self.sendLine(b"server secret")
        elif line == b"GO":
            self.transport.startTLS(self.context_factory)
            self.sendLine(b"client secret")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class StartTLSTests(SynchronousTestCase):
    """STARTTLS: clear text first, then TLS on both sides."""

    def _connect(self, client_cf: Any = None, server_cf: Any = None) -> tuple[Connection, StartTLSProtocol, StartTLSProtocol]:
        client = StartTLSProtocol(client_cf or _client_cf(), initiator=True)
        server = StartTLSProtocol(server_cf or _server_cf(), initiator=False)
        conn = Connection(
            client,
            server,
            client_cf=_client_cf(),
            server_cf=_server_cf(),
            client_kw={"start_tls": True},
            server_kw={"start_tls": True},
        )
        return conn, client, server

    def test_starttls_upgrade(self) -> None:
        """Lines pass in the clear, then both sides switch to TLS and exchange secrets encrypted."""
        conn, client, server = self._connect()
        self.assertEqual(server.lines, [b"STARTTLS", b"client secret"])
        self.assertEqual(client.lines, [b"GO", b"server secret"])
        self.assertIn(b"STARTTLS\r\n", conn.pump.client.wire())
        self.assertIn(b"GO\r\n", conn.pump.server.wire())
        self.assertNotIn(b"secret", conn.pump.client.wire() + conn.pump.server.wire())
        self.assertIsNotNone(conn.client_wrapper.connection_info())
        self.assertTrue(ISSLTransport.providedBy(conn.client_wrapper))
        self.assertTrue(ITLSTransport.providedBy(conn.client_wrapper))

    def test_starttls_rejects_wrong_host(self) -> None:
        """A STARTTLS upgrade to a certificate for another name fails with HostnameMismatchError and the secret stays unsent."""
        conn, client, server = self._connect(client_cf=_client_cf("wrong.example"))
        assert client.reason is not None
        self.assertTrue(client.reason.check(HostnameMismatchError), client.reason)
        self.assertNotIn(b"client secret", server.lines)

    def test_not_ssl_before_starttls(self) -> None:
        """Before STARTTLS the wrapper does not claim ISSLTransport but offers ITLSTransport."""
        client = Recorder()
        conn = Connection(client, Recorder(), client_kw={"start_tls": True}, server_kw={"start_tls": True})
        self.assertTrue(ITLSTransport.providedBy(conn.client_wrapper))
        self.assertFalse(ISSLTransport.providedBy(conn.client_wrapper))
        self.assertFalse(conn.client_wrapper.tls_started)

    def test_declarations_follow_the_transport_and_keep_what_was_added(self) -> None:
        """The wrapper provides what its transport provides (shared, cached declarations); an
        interface added to one wrapper before STARTTLS survives it and is not shared by others."""
        from zope.interface import Interface, alsoProvides

        class IExtra(Interface):
            pass

        from twisted.internet.interfaces import ITransport

        first = Connection(Recorder(), Recorder(), client_kw={"start_tls": True}, server_kw={"start_tls": True})
        second = Connection(Recorder(), Recorder(), client_kw={"start_tls": True}, server_kw={"start_tls": True})
        self.assertTrue(ITransport.providedBy(first.client_wrapper))
        alsoProvides(first.client_wrapper, IExtra)
        for conn in (first, second):
            conn.client_wrapper.startTLS(_client_cf())
            conn.server_wrapper.startTLS(_server_cf())
            conn.pump.flush()
            self.assertTrue(ISSLTransport.providedBy(conn.client_wrapper))
            self.assertTrue(ITransport.providedBy(conn.client_wrapper))
        self.assertTrue(IExtra.providedBy(first.client_wrapper))
        self.assertFalse(IExtra.providedBy(second.client_wrapper))
        self.assertFalse(ISSLTransport.providedBy(Connection(Recorder(), Recorder(), client_kw={"start_tls": True},
                                                             server_kw={"start_tls": True}).client_wrapper))

    def test_starttls_twice(self) -> None:
        """Calling startTLS a second time raises EngineStateError."""
        conn, client, server = self._connect()
        self.assertRaises(EngineStateError, conn.client_wrapper.startTLS, _client_cf())
        self.assertRaises(EngineStateError, conn.server_wrapper.start_tls, _server_cf())

    def test_starttls_foreign_factory(self) -> None:
        """startTLS with a context factory that is not twistls' raises ConfigurationError."""
        from twisted.internet.ssl import CertificateOptions

        conn = Connection(Recorder(), Recorder(), client_kw={"start_tls": True}, server_kw={"start_tls": True})
        self.assertRaises(ConfigurationError, conn.client_wrapper.startTLS, CertificateOptions())
        self.assertRaises(ConfigurationError, conn.client_wrapper.startTLS, object())
        self.assertFalse(conn.client_wrapper.tls_started)

    def test_wrapping_factory_refuses_foreign_factory(self) -> None:
        """TLSWrappingFactory refuses a non-twistls context factory, or none without start_tls, with ConfigurationError."""
        self.assertRaises(ConfigurationError, TLSWrappingFactory, Factory.forProtocol(Recorder), object())
        self.assertRaises(ConfigurationError, TLSWrappingFactory, Factory.forProtocol(Recorder), None)

    def test_wrapping_factory_refuses_hostnameless_client(self) -> None:
        """TLSWrappingFactory refuses a verifying client factory without a hostname at construction with ConfigurationError."""
        factory = ClientContextFactory(cafile=pki().cafile)
        with self.assertRaises(ConfigurationError) as cm:
            TLSWrappingFactory(Factory.forProtocol(Recorder), factory, clock=Clock())
        self.assertIn("hostname", str(cm.exception))
        TLSWrappingFactory(Factory.forProtocol(Recorder), factory.with_hostname("localhost"), clock=Clock())


class WriteAggregationTests(SynchronousTestCase):
    """Many small writes in one turn become few records."""

    def test_small_writes_aggregate(self) -> None:
        """1000 writes of 10 bytes in one turn cost at most 1.1 times the payload on the wire after clock.advance(0)."""
        conn = Connection()
        before = len(conn.pump.client.wire())
        for _ in range(1000):
            conn.client_wrapper.write(b"0123456789")
        conn.clock.advance(0)
        sent = len(conn.pump.client.wire()) - before
        self.assertGreater(sent, 10_000)
        self.assertLessEqual(sent, 11_000)
        conn.flush()
        self.assertEqual(conn.server.data, b"0123456789" * 1000)

    def test_write_sequence(self) -> None:
        """writeSequence delivers its pieces in order."""
        conn = Connection()
        conn.client_wrapper.writeSequence([b"a", b"b", b"c"])
        conn.flush()
        self.assertEqual(conn.server.data, b"abc")

    def test_large_write_flushes_at_once(self) -> None:
        """A write of 64 KiB goes on the wire without waiting for the end of the turn."""
        conn = Connection()
        before = len(conn.pump.client.wire())
        conn.client_wrapper.write(b"x" * 65536)
        self.assertGreater(len(conn.pump.client.wire()) - before, 65536)


@implementer(IHandshakeListener)
class Greeter(Recorder):
    """Writes ``greeting`` once the handshake is done; echoes what it receives."""

    def handshakeCompleted(self) -> None:
        self.transport.write(self.greeting)

    def connectionMade(self) -> None:
        self.made += 1

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.greeting == b"":
            self.transport.write(data.upper())


class CoalescingTests(SynchronousTestCase):
    """What the protocol writes in answer to an event leaves in one transport
    write with the engine's own output for the same input."""

    def test_finished_and_first_data_in_one_write(self) -> None:
        """A TLS 1.3 client's Finished and what it writes in handshakeCompleted go out in one write."""
        conn = Connection(Greeter(b"hello"), Greeter(b""))
        self.assertEqual(conn.server.data, b"hello")
        self.assertEqual(conn.client.data, b"HELLO")
        written = conn.pump.client.written
        self.assertEqual(len(written), 2, [_record_types(w) for w in written])  # ClientHello; Finished + data
        self.assertGreaterEqual(_record_types(written[1]).count(0x17), 2)

    def test_tickets_and_answer_in_one_write(self) -> None:
        """A server's session tickets and its answer to the data that came with the client's Finished go out in one write."""
        conn = Connection(Greeter(b"hello"), Greeter(b""))
        written = conn.pump.server.written
        self.assertEqual(len(written), 2, [_record_types(w) for w in written])  # ServerHello..Finished; tickets + answer
        self.assertGreaterEqual(_record_types(written[1]).count(0x17), 2)


class CloseTests(SynchronousTestCase):
    """loseConnection, abortConnection, truncation."""

    def test_lose_connection_sends_close_notify(self) -> None:
        """loseConnection flushes data, sends close_notify, and both sides see ConnectionDone."""
        conn = Connection()
        conn.client_wrapper.write(b"bye")
        before = len(conn.pump.client.wire())
        conn.client_wrapper.loseConnection()
        self.assertGreater(len(conn.pump.client.wire()), before)  # data + close_notify written at once
        conn.flush()
        self.assertEqual(conn.server.data, b"bye")
        self.assertTrue(conn.server_wrapper._engine.peer_closed)  # the server saw close_notify
        assert conn.server.reason is not None and conn.client.reason is not None
        self.assertTrue(conn.server.reason.check(ConnectionDone), conn.server.reason)
        self.assertTrue(conn.client.reason.check(ConnectionDone), conn.client.reason)
        self.assertFalse(conn.server_wrapper._truncated)

    def test_server_lose_connection(self) -> None:
        """A server's loseConnection ends the client cleanly with ConnectionDone."""
        conn = Connection()
        conn.server_wrapper.write(b"bye")
        conn.server_wrapper.loseConnection()
        conn.flush()
        self.assertEqual(conn.client.data, b"bye")
        assert conn.client.reason is not None
        self.assertTrue(conn.client.reason.check(ConnectionDone), conn.client.reason)

    def test_lose_connection_peer_never_reads(self) -> None:
        """When the peer never reads, loseConnection aborts the transport after close_timeout seconds."""
        conn = Connection(client_kw={"close_timeout": 5.0})
        conn.pump.server.pauseProducing()  # the peer stops reading
        conn.client_wrapper.loseConnection()
        conn.flush()
        self.assertTrue(conn.pump.client.disconnecting)
        self.assertIsNone(conn.client.reason)
        conn.clock.advance(4.9)
        self.assertFalse(conn.pump.client.aborting)
        conn.clock.advance(0.2)
        self.assertTrue(conn.pump.client.aborting)
        conn.flush()
        self.assertIsNotNone(conn.client.reason)
        self.assertFalse(conn.clock.getDelayedCalls())

    def test_lose_connection_close_timer_cancelled(self) -> None:
        """After a clean close no close timer is left on the clock."""
        conn = Connection()
        conn.client_wrapper.loseConnection()
        conn.flush()
        self.assertFalse(conn.clock.getDelayedCalls())

    def test_abort_connection(self) -> None:
        """abortConnection drops at once: the wrapped protocol sees ConnectionAborted, the peer a truncation."""
        conn = Connection()
        conn.client_wrapper.abortConnection()
        conn.flush()
        assert conn.client.reason is not None and conn.server.reason is not None
        self.assertTrue(conn.client.reason.check(ConnectionAborted), conn.client.reason)
        self.assertTrue(conn.server.reason.check(ConnectionTruncatedError), conn.server.reason)

    def test_truncation(self) -> None:
        """A transport ending without close_notify after the handshake gives ConnectionTruncatedError after the data."""
        conn = Connection()
        conn.server_wrapper.write(b"partial")
        conn.clock.advance(0)
        conn.pump.server.loseConnection()  # the TCP connection ends under TLS
        conn.flush()
        self.assertEqual(conn.client.data, b"partial")
        assert conn.client.reason is not None
        self.assertTrue(conn.client.reason.check(ConnectionTruncatedError), conn.client.reason)

    def test_truncation_allowed(self) -> None:
        """With allow_truncation=True the same ending is a ConnectionDone."""
        conn = Connection(client_kw={"allow_truncation": True})
        conn.server_wrapper.write(b"partial")
        conn.clock.advance(0)
        conn.pump.server.loseConnection()
        conn.flush()
        self.assertEqual(conn.client.data, b"partial")
        assert conn.client.reason is not None
        self.assertTrue(conn.client.reason.check(ConnectionDone), conn.client.reason)

    def test_lose_connection_before_handshake(self) -> None:
        """loseConnection called in connectionMade waits for the handshake, delivers earlier writes, then closes cleanly."""

        class WriteAndClose(Recorder):
            def connectionMade(self) -> None:
                self.transport.write(b"one-shot")
                self.transport.loseConnection()

        client = WriteAndClose()
        conn = Connection(client)
        self.assertEqual(conn.server.data, b"one-shot")
        assert client.reason is not None and conn.server.reason is not None
        self.assertTrue(client.reason.check(ConnectionDone), client.reason)
        self.assertTrue(conn.server.reason.check(ConnectionDone), conn.server.reason)

    def test_lose_connection_before_failed_handshake(self) -> None:
        """loseConnection before a handshake the Checker rejects ends with HostnameMismatchError and sends nothing."""

        class WriteAndClose(Recorder):
            def connectionMade(self) -> None:
                self.transport.write(b"SECRET")
                self.transport.loseConnection()

        client = WriteAndClose()
        conn = Connection(client, client_cf=_client_cf("wrong.example"))
        self.assertEqual(conn.server.data, b"")
        assert client.reason is not None
        self.assertTrue(client.reason.check(HostnameMismatchError), client.reason)

    def test_bulk_both_ways(self) -> None:
        """1 MiB each way through the wrappers arrives intact."""
        conn = Connection()
        up, down = bytes(range(256)) * 4096, bytes(reversed(range(256))) * 4096
        conn.client_wrapper.write(up)
        conn.server_wrapper.write(down)
        conn.flush()
        self.assertEqual(conn.server.data, up)
        self.assertEqual(conn.client.data, down)

    def test_writes_after_lose_connection_ignored(self) -> None:
        """Writes after loseConnection are dropped without error."""
        conn = Connection()
        conn.client_wrapper.loseConnection()
        conn.client_wrapper.write(b"late")
        conn.flush()
        self.assertEqual(conn.server.data, b"")


class HandshakeTests(SynchronousTestCase):
    """Handshake notification and timeout."""

    def test_handshake_listener_called_once(self) -> None:
        """A wrapped IHandshakeListener gets handshakeCompleted exactly once, before any data."""
        client, server = Listener(), Listener(b"data")
        conn = Connection(client, server)
        conn.server_wrapper.write(b"more")
        conn.flush()
        self.assertEqual(client.handshakes, 1)
        self.assertEqual(server.handshakes, 1)
        self.assertEqual(client.data, b"datamore")

    def test_handshake_listener_not_called_on_failure(self) -> None:
        """A wrapped IHandshakeListener is not told of a handshake the Checker rejected."""
        client = Listener()
        Connection(client, client_cf=_client_cf("wrong.example"))
        self.assertEqual(client.handshakes, 0)
        assert client.reason is not None
        self.assertTrue(client.reason.check(HostnameMismatchError))

    def test_when_handshake_done_fires(self) -> None:
        """when_handshake_done fires with ConnectionInfo, also when asked after the handshake."""
        conn = Connection(pump=False)
        early = conn.client_wrapper.when_handshake_done()
        results: list[Any] = []
        early.addCallback(results.append)
        self.assertEqual(results, [])
        conn.flush()
        self.assertEqual(len(results), 1)
        self.assertIsInstance(results[0], ConnectionInfo)
        self.assertEqual(results[0].peer_chain_der[0], pki().server.der)
        late = self.successResultOf(conn.client_wrapper.when_handshake_done())
        self.assertIs(late, results[0])

    def test_when_handshake_done_fails(self) -> None:
        """when_handshake_done fails with the typed TLS error when the Checker rejects the peer."""
        conn = Connection(client_cf=_client_cf("wrong.example"), pump=False)
        d = conn.client_wrapper.when_handshake_done()
        conn.flush()
        self.failureResultOf(d, HostnameMismatchError)
        self.failureResultOf(conn.client_wrapper.when_handshake_done(), HostnameMismatchError)

    def test_handshake_timeout(self) -> None:
        """A handshake that stalls for 30 seconds ends with HandshakeTimeoutError in connectionLost."""
        conn = Connection(pump=False)
        conn.pump.server.pauseProducing()  # the server never sees the ClientHello
        d = conn.client_wrapper.when_handshake_done()
        conn.flush()
        conn.clock.advance(29.9)
        self.assertIsNone(conn.client.reason)
        conn.clock.advance(0.2)
        conn.flush()
        assert conn.client.reason is not None
        self.assertTrue(conn.client.reason.check(HandshakeTimeoutError), conn.client.reason)
        self.failureResultOf(d, HandshakeTimeoutError)

    def test_server_handshake_timeout(self) -> None:
        """A server whose client never sends a ClientHello gives up after its handshake_timeout."""
        clock = Clock()
        server = Recorder()
        server_factory = _factory(server, _server_cf(handshake_timeout=10), clock)
        silent = Factory.forProtocol(Protocol)
        pump = connect(silent, server_factory, clock)
        clock.advance(10)
        pump.flush()
        assert server.reason is not None
        self.assertTrue(server.reason.check(HandshakeTimeoutError), server.reason)

    def stalled_server(self, cf_timeout: float | None, **factory_kw: Any) -> tuple[Clock, Recorder, Any]:
        """A server (context factory timeout ``cf_timeout``) whose client never sends a ClientHello."""
        clock = Clock()
        server = Recorder()
        server_factory = _factory(server, _server_cf(handshake_timeout=cf_timeout), clock, **factory_kw)
        pump = connect(Factory.forProtocol(Protocol), server_factory, clock)
        return clock, server, pump

    def test_wrapping_factory_handshake_timeout(self) -> None:
        """The wrapping factory's handshake_timeout ends a stalled handshake with HandshakeTimeoutError."""
        clock, server, pump = self.stalled_server(None, handshake_timeout=5)
        clock.advance(4.9)
        self.assertIsNone(server.reason)
        clock.advance(0.2)
        pump.flush()
        assert server.reason is not None
        self.assertTrue(server.reason.check(HandshakeTimeoutError), server.reason)

    def test_wrapping_factory_handshake_timeout_wins_over_context_factory(self) -> None:
        """A shorter wrapping-factory timeout wins over the context factory's longer one."""
        clock, server, pump = self.stalled_server(60, handshake_timeout=5)
        clock.advance(5.1)
        pump.flush()
        assert server.reason is not None
        self.assertTrue(server.reason.check(HandshakeTimeoutError), server.reason)
        self.assertIn("within 5 seconds", str(server.reason.value))

    def test_wrapping_factory_none_disables_the_context_factory_timeout(self) -> None:
        """handshake_timeout=None on the wrapping factory means no limit, whatever the context factory says."""
        clock, server, pump = self.stalled_server(10, handshake_timeout=None)
        clock.advance(3600)
        pump.flush()
        self.assertIsNone(server.reason)

    def test_context_factory_timeout_applies_by_default(self) -> None:
        """Without a handshake_timeout of its own the wrapping factory uses the context factory's."""
        from twistls._typing import FROM_CONTEXT

        clock, server, pump = self.stalled_server(10)
        self.assertIs(pump.server.protocol.factory.handshake_timeout, FROM_CONTEXT)
        clock.advance(9.9)
        self.assertIsNone(server.reason)
        clock.advance(0.2)
        pump.flush()
        assert server.reason is not None
        self.assertTrue(server.reason.check(HandshakeTimeoutError), server.reason)

    def test_handshake_timeout_for_resolves_the_precedence(self) -> None:
        """handshake_timeout_for gives the wrapping factory's value, else the context factory's."""
        cf = _server_cf(handshake_timeout=7)
        clock = Clock()
        self.assertEqual(_factory(Protocol(), cf, clock).handshake_timeout_for(cf), 7)
        self.assertEqual(_factory(Protocol(), cf, clock, handshake_timeout=3).handshake_timeout_for(cf), 3)
        self.assertIsNone(_factory(Protocol(), cf, clock, handshake_timeout=None).handshake_timeout_for(cf))

    def test_bad_wrapping_factory_handshake_timeout_is_refused(self) -> None:
        """A handshake_timeout of zero or less is a ConfigurationError when the factory is made."""
        for bad in (0, -1.5):
            with self.assertRaises(ConfigurationError):
                _factory(Protocol(), _server_cf(), Clock(), handshake_timeout=bad)

    def test_starttls_context_factory_timeout_yields_to_the_wrapping_factory(self) -> None:
        """With STARTTLS the wrapping factory's timeout also wins over the factory passed to startTLS."""
        clock = Clock()
        server = Recorder()
        server_factory = TLSWrappingFactory(
            Factory.forProtocol(lambda: server), None, start_tls=True, handshake_timeout=2, clock=clock
        )
        pump = connect(Factory.forProtocol(Protocol), server_factory, clock)
        pump.server.protocol.startTLS(_server_cf(handshake_timeout=60))
        clock.advance(2.1)
        pump.flush()
        assert server.reason is not None
        self.assertTrue(server.reason.check(HandshakeTimeoutError), server.reason)

    def test_no_timeout_after_handshake(self) -> None:
        """A completed handshake cancels the timeout: 60 idle seconds later the connection is still open."""
        conn = Connection()
        conn.clock.advance(60)
        conn.flush()
        self.assertIsNone(conn.client.reason)
        self.assertIsNone(conn.server.reason)


class FlowControlTests(SynchronousTestCase):
    """IPushProducer / IConsumer in both directions."""

    def test_producer_paused_until_handshake(self) -> None:
        """A streaming producer registered before the handshake is paused until it completes, then resumed."""
        producer = StreamingProducer()

        class Registers(Recorder):
            def connectionMade(self) -> None:
                self.transport.registerProducer(producer, True)

        conn = Connection(Registers(), pump=False)
        self.assertTrue(producer.paused)
        conn.flush()
        self.assertFalse(producer.paused)
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_server_producer_paused_until_handshake(self) -> None:
        """On the server too a streaming producer registered in connectionMade waits for the handshake, then follows the transport."""
        producer = StreamingProducer()

        class Registers(Recorder):
            def connectionMade(self) -> None:
                self.transport.registerProducer(producer, True)

        conn = Connection(Recorder(), Registers(), pump=False)
        self.assertTrue(producer.paused)
        conn.flush()
        self.assertFalse(producer.paused)
        gate = conn.pump.server.producer
        gate.pauseProducing()
        self.assertTrue(producer.paused)
        gate.resumeProducing()
        self.assertFalse(producer.paused)

    def test_pull_producer(self) -> None:
        """A non-streaming producer is registered as such and asked for more data when the transport wants it."""
        conn = Connection()
        producer = StreamingProducer()
        conn.client_wrapper.registerProducer(producer, False)
        self.assertIs(conn.pump.client.streaming, False)
        conn.pump.client.producer.resumeProducing()
        self.assertEqual(producer.calls, ["resume"])

    def test_producer_follows_transport(self) -> None:
        """The transport pausing and resuming the wrapper's producer pauses and resumes the wrapped producer."""
        conn = Connection()
        producer = StreamingProducer()
        conn.client_wrapper.registerProducer(producer, True)
        gate = conn.pump.client.producer
        self.assertIsNotNone(gate)
        gate.pauseProducing()
        self.assertTrue(producer.paused)
        gate.resumeProducing()
        self.assertFalse(producer.paused)
        conn.client_wrapper.unregisterProducer()
        self.assertIsNone(conn.pump.client.producer)

    def test_producer_stays_paused_while_transport_holds_it(self) -> None:
        """A producer the transport paused during the handshake stays paused after the handshake until the transport resumes it."""
        producer = StreamingProducer()

        class Registers(Recorder):
            def connectionMade(self) -> None:
                self.transport.registerProducer(producer, True)

        conn = Connection(Registers(), pump=False)
        conn.pump.client.producer.pauseProducing()  # the transport's buffer is full
        conn.flush()
        self.assertTrue(producer.paused)
        conn.pump.client.producer.resumeProducing()
        self.assertFalse(producer.paused)

    def test_lose_connection_waits_for_producer(self) -> None:
        """loseConnection with a registered producer waits for unregisterProducer, then closes cleanly."""
        conn = Connection()
        producer = StreamingProducer()
        conn.client_wrapper.registerProducer(producer, True)
        conn.client_wrapper.write(b"tail")
        conn.client_wrapper.loseConnection()
        conn.flush()
        self.assertIsNone(conn.client.reason)
        conn.client_wrapper.unregisterProducer()
        conn.flush()
        self.assertEqual(conn.server.data, b"tail")
        assert conn.client.reason is not None
        self.assertTrue(conn.client.reason.check(ConnectionDone), conn.client.reason)

    def test_protocol_pauses_transport(self) -> None:
        """The wrapped protocol calling transport.pauseProducing() stops reading from the underlying transport until it resumes."""
        conn = Connection()
        conn.client_wrapper.pauseProducing()
        self.assertTrue(conn.pump.client.reading_paused)
        conn.server_wrapper.write(b"held")
        conn.flush()
        self.assertEqual(conn.client.data, b"")
        conn.client_wrapper.resumeProducing()
        self.assertFalse(conn.pump.client.reading_paused)
        conn.flush()
        self.assertEqual(conn.client.data, b"held")

    def test_producer_stopped_on_connection_lost(self) -> None:
        """A registered producer is stopped when the connection is lost."""
        conn = Connection()
        producer = StreamingProducer()
        conn.client_wrapper.registerProducer(producer, True)
        conn.client_wrapper.abortConnection()
        conn.flush()
        self.assertIn("stop", producer.calls)
