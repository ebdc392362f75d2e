"""STARTTLS command injection (the CVE-2011-0411 class): nothing received in
the clear before the upgrade is ever delivered as if it had come over TLS.

A peer (or an attacker on the path) that sends bytes right behind the
STARTTLS command, or right behind the ``220``/``OK`` that answers it, in the
same segment, gets a :class:`~twistls.errors.ProtocolViolationError`: the
connection ends, the pipelined bytes are never processed and never answered.
Twisted's own ESMTP and IMAP4 servers, its ESMTP sender and plain line
protocols are tested in memory (``tests._iopump``); the ESMTP server and
sender once more over 127.0.0.1 sockets.  Every refusal has a success twin:
the same harness without the injected bytes upgrades.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.cred import portal
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.mail import imap4, smtp
from twisted.protocols.basic import LineOnlyReceiver, LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests._e2e import bounded
from tests._hardening import LogCapture
from tests._iopump import IOPump, connect
from tests._pki import pki
from tests.e2e.test_starttls import _Message
from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory
from twistls.errors import ProtocolViolationError

INJECTED = b"MAIL FROM:<injected@evil.example>\r\n"
TLS_HANDSHAKE_RECORD = b"\x16\x03"


def _server_cf() -> ServerContextFactory:
    return ServerContextFactory(pki().server.cert, pki().server.key)


def _client_cf() -> ClientContextFactory:
    return ClientContextFactory("localhost", cafile=pki().cafile)


def _wrapped(factory: Any, clock: Clock) -> TLSWrappingFactory:
    """``factory`` behind a twistls wrapper that starts in the clear."""
    return TLSWrappingFactory(factory, None, start_tls=True, clock=clock)


def _one(proto: Protocol) -> Factory:
    return Factory.forProtocol(lambda: proto)


class RawPeer(LineReceiver):
    """The unwrapped other end: records every byte it receives and answers
    lines that start with a key of ``script`` with the scripted bytes, in one
    write (one TCP segment)."""

    def __init__(self, greeting: bytes = b"", script: dict[bytes, bytes] | None = None,
                 *, hang_up_after: bytes | None = None) -> None:
        self.greeting = greeting
        self.script = script or {}
        self.hang_up_after = hang_up_after  # close once anything arrives behind this
        self.received = b""
        self.reason: Failure | None = None
        self.lost: defer.Deferred[list[Failure]] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.hang_up_after is not None and self.after(self.hang_up_after):
            self.transport.loseConnection()
            return
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        for prefix, answer in self.script.items():
            if line.upper().startswith(prefix):
                self.transport.write(answer)
                return

    def after(self, marker: bytes) -> bytes:
        """What arrived after the first ``marker``."""
        return self.received.partition(marker)[2]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.lost.callback([reason])


# -- SMTP ----------------------------------------------------------------------


@implementer(smtp.IMessageDelivery)
class _Delivery:
    """Accepts every sender and recipient, and records the senders."""

    def __init__(self) -> None:
        self.senders: list[bytes] = []
        self.mailbox: list[bytes] = []

    def receivedHeader(self, helo: object, origin: object, recipients: object) -> None:
        return None

    def validateFrom(self, helo: object, origin: Any) -> object:
        self.senders.append(bytes(origin))
        return origin

    def validateTo(self, user: object) -> object:
        return lambda: _Message(self.mailbox)


class _ESMTPServer(smtp.ESMTP):
    """Twisted's ESMTP server that records how its connection ended."""

    def __init__(self, context: ServerContextFactory, clock: Any = None) -> None:
        super().__init__(contextFactory=context)
        self.delivery = _Delivery()
        self.host = b"mail.localhost"
        self.reason: Failure | None = None
        self.lost: defer.Deferred[list[Failure]] = defer.Deferred()
        if clock is not None:
            self.callLater = clock.callLater  # TimeoutMixin: no global reactor in memory tests

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.reason = reason
        self.lost.callback([reason])


class _SenderFactory(smtp.ESMTPSenderFactory):
    """ESMTPSenderFactory whose sender records how its connection ended."""

    def __init__(self, result: defer.Deferred[Any], *, timeout: float | None = None) -> None:
        super().__init__(
            None,
            None,
            "a@example.com",
            ["b@example.com"],
            io.BytesIO(b"Subject: twistls\r\n\r\nHello over STARTTLS.\r\n"),
            result,
            retries=0,
            contextFactory=_client_cf(),
            requireAuthentication=False,
            requireTransportSecurity=True,
        )
        self.timeout = timeout
        self.built: Any = None
        self.reasons: list[Failure] = []
        self.lost: defer.Deferred[list[Failure]] = defer.Deferred()

    def buildProtocol(self, addr: object) -> smtp.ESMTPSender:
        p = super().buildProtocol(addr)
        self.built = p
        original = p.connectionLost

        def connectionLost(reason: Failure) -> None:
            original(reason)
            self.reasons.append(reason)
            self.lost.callback([reason])

        p.connectionLost = connectionLost  # type: ignore[method-assign]
        return p


def _smtp_script(after_220: bytes) -> dict[bytes, bytes]:
    """A scripted ESMTP server offering STARTTLS; ``after_220`` follows its
    ``220`` answer to STARTTLS in the same segment."""
    return {
        b"EHLO": b"250-mail.example\r\n250 STARTTLS\r\n",
        b"STARTTLS": b"220 go ahead\r\n" + after_220,
    }


class ESMTPServerInjectionTests(SynchronousTestCase):
    """Twisted's ESMTP server behind twistls refuses commands pipelined behind STARTTLS."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)

    def _converse(self, after_starttls: bytes) -> tuple[RawPeer, _ESMTPServer, IOPump]:
        peer = RawPeer()
        server = _ESMTPServer(_server_cf(), self.clock)
        pump = connect(_one(peer), _wrapped(_one(server), self.clock), self.clock)
        peer.transport.write(b"EHLO client.example\r\n")
        pump.flush()
        self.assertIn(b"250 STARTTLS", peer.received)
        peer.transport.write(b"STARTTLS\r\n" + after_starttls)
        pump.flush()
        return peer, server, pump

    def test_pipelined_mail_from_fails_with_protocol_violation(self) -> None:
        """MAIL FROM pipelined behind STARTTLS ends the connection with ProtocolViolationError and is never answered, in clear or encrypted."""
        peer, server, pump = self._converse(INJECTED)
        assert server.reason is not None
        self.assertTrue(server.reason.check(ProtocolViolationError), server.reason)
        self.assertEqual(peer.after(b"250 STARTTLS\r\n"), b"220 Begin TLS negotiation now\r\n")
        self.assertEqual(server.delivery.senders, [])
        self.assertTrue(pump.server.closed)
        self.assertFalse(server.transport.tls_started)
        warnings = [e for e in self.logs.twistls() if "STARTTLS" in str(e.get("reason", ""))]
        self.assertEqual(len(warnings), 1, self.logs.twistls())

    def test_pipelined_partial_command_fails_with_protocol_violation(self) -> None:
        """Half a command behind STARTTLS (no line end yet) also ends the connection with ProtocolViolationError."""
        peer, server, _ = self._converse(b"MAIL FROM:<inj")
        assert server.reason is not None
        self.assertTrue(server.reason.check(ProtocolViolationError), server.reason)
        self.assertEqual(server.delivery.senders, [])

    def test_cleartext_arriving_after_the_refusal_is_dropped(self) -> None:
        """Cleartext that still arrives after a refused STARTTLS, before the close, reaches neither the protocol nor the wire."""
        peer = RawPeer()
        server = _ESMTPServer(_server_cf(), self.clock)
        pump = connect(_one(peer), _wrapped(_one(server), self.clock), self.clock)
        wrapper = pump.server.protocol
        wrapper.dataReceived(b"STARTTLS\r\n" + INJECTED)
        wire = pump.server.wire()
        wrapper.dataReceived(b"RCPT TO:<b@example.com>\r\n" + INJECTED)
        self.assertEqual(pump.server.wire(), wire)
        self.assertEqual(server.delivery.senders, [])
        pump.flush()
        assert server.reason is not None
        self.assertTrue(server.reason.check(ProtocolViolationError), server.reason)

    def test_starttls_alone_upgrades(self) -> None:
        """The same STARTTLS without pipelined bytes is answered in the clear and starts TLS on an open connection."""
        peer, server, pump = self._converse(b"")
        self.assertEqual(peer.after(b"250 STARTTLS\r\n"), b"220 Begin TLS negotiation now\r\n")
        self.assertTrue(server.transport.tls_started)
        self.assertTrue(server.startedTLS)
        self.assertIsNone(server.reason)
        self.assertFalse(pump.server.disconnecting)

    def test_mail_over_starttls_from_twisted_sender(self) -> None:
        """Twisted's ESMTP sender, both ends behind twistls in memory, upgrades and delivers its mail over TLS."""
        server = _ESMTPServer(_server_cf(), self.clock)
        outcome: list[Any] = []
        sender = _SenderFactory(defer.Deferred().addBoth(outcome.append))
        pump = connect(_wrapped(sender, self.clock), _wrapped(_one(server), self.clock), self.clock)
        for _ in range(50):  # FakeTransport does not pull FileSender (a pull producer): pull it here
            if pump.client.producer is None:
                break
            pump.client.producer.resumeProducing()
            pump.flush()
        self.assertEqual(outcome, [(1, [(b"b@example.com", 250, b"Recipient address accepted")])])
        self.assertEqual(server.delivery.senders, [b"a@example.com"])
        self.assertEqual(len(server.delivery.mailbox), 1)
        self.assertTrue(server.transport.tls_started)
        self.assertNotIn(b"MAIL FROM", pump.client.wire())


class ESMTPClientInjectionTests(SynchronousTestCase):
    """Twisted's ESMTP sender behind twistls refuses cleartext that follows the server's 220."""

    def setUp(self) -> None:
        self.clock = Clock()

    def _converse(self, after_220: bytes) -> tuple[RawPeer, _SenderFactory, IOPump]:
        peer = RawPeer(b"220 mail.example ESMTP\r\n", _smtp_script(after_220))
        sender = _SenderFactory(defer.Deferred().addErrback(lambda f: None))
        pump = connect(_wrapped(sender, self.clock), _one(peer), self.clock)
        return peer, sender, pump

    def test_cleartext_after_220_fails_with_protocol_violation(self) -> None:
        """An injected EHLO answer behind the 220 fails the sender with ProtocolViolationError; no ClientHello or command follows STARTTLS."""
        peer, sender, pump = self._converse(b"250-mail.example\r\n250 AUTH PLAIN\r\n")
        self.assertEqual(len(sender.reasons), 1)
        self.assertTrue(sender.reasons[0].check(ProtocolViolationError), sender.reasons[0])
        self.assertIn(b"STARTTLS\r\n", peer.received)
        self.assertEqual(peer.after(b"STARTTLS\r\n"), b"")
        self.assertTrue(pump.client.closed)
        self.assertFalse(sender.built.transport.tls_started)

    def test_220_alone_starts_the_handshake(self) -> None:
        """The same 220 without cleartext behind it makes the sender start TLS: a ClientHello follows STARTTLS."""
        peer, sender, pump = self._converse(b"")
        self.assertTrue(peer.after(b"STARTTLS\r\n").startswith(TLS_HANDSHAKE_RECORD))
        self.assertEqual(sender.reasons, [])
        self.assertTrue(sender.built.transport.tls_started)


# -- IMAP4 ---------------------------------------------------------------------


class _IMAPServer(imap4.IMAP4Server):
    """Twisted's IMAP4 server that records login attempts and its end."""

    def __init__(self, context: ServerContextFactory, clock: Clock) -> None:
        super().__init__(contextFactory=context)
        self.callLater = clock.callLater
        self.logins: list[bytes] = []
        self.reason: Failure | None = None

    def authenticateLogin(self, user: bytes, passwd: bytes) -> Any:
        self.logins.append(user)
        raise UnauthorizedLogin()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.reason = reason


class IMAP4ServerInjectionTests(SynchronousTestCase):
    """Twisted's IMAP4 server behind twistls refuses commands pipelined behind STARTTLS."""

    def _converse(self, after_starttls: bytes) -> tuple[RawPeer, _IMAPServer, IOPump]:
        clock = Clock()
        peer = RawPeer()
        server = _IMAPServer(_server_cf(), clock)
        pump = connect(_one(peer), _wrapped(_one(server), clock), clock)
        self.assertIn(b"STARTTLS", peer.received)
        peer.transport.write(b"a001 STARTTLS\r\n" + after_starttls)
        pump.flush()
        return peer, server, pump

    def test_pipelined_login_fails_with_protocol_violation(self) -> None:
        """LOGIN pipelined behind STARTTLS ends the connection with ProtocolViolationError and is never attempted nor answered."""
        peer, server, pump = self._converse(b"a002 LOGIN alice secret\r\n")
        assert server.reason is not None
        self.assertTrue(server.reason.check(ProtocolViolationError), server.reason)
        self.assertEqual(server.logins, [])
        self.assertEqual(peer.after(b"\r\n"), b"a001 OK Begin TLS negotiation now\r\n")
        self.assertTrue(pump.server.closed)

    def test_starttls_alone_upgrades(self) -> None:
        """The same STARTTLS without pipelined bytes is answered OK and starts TLS on an open connection."""
        peer, server, pump = self._converse(b"")
        self.assertEqual(peer.after(b"\r\n"), b"a001 OK Begin TLS negotiation now\r\n")
        self.assertTrue(server.transport.tls_started)
        self.assertIsNone(server.reason)
        self.assertFalse(pump.server.disconnecting)


# -- plain line protocols and other buffering protocols -------------------------


class _Upgrader(LineReceiver):
    """Upgrades on ``STARTTLS`` (server role) or ``GO`` (client role); records lines."""

    def __init__(self, context: Any, *, later: Clock | None = None) -> None:
        self.context = context
        self.later = later  # upgrade in a later reactor turn instead of from lineReceived
        self.lines: list[bytes] = []
        self.reason: Failure | None = None

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if line in (b"STARTTLS", b"GO"):
            if line == b"STARTTLS":
                self.sendLine(b"GO")
            if self.later is not None:
                self.later.callLater(0, self.transport.startTLS, self.context)
            else:
                self.transport.startTLS(self.context)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class _LineOnlyUpgrader(LineOnlyReceiver):
    """A LineOnlyReceiver that upgrades in a later reactor turn after ``STARTTLS``."""

    def __init__(self, context: Any, clock: Clock) -> None:
        self.context = context
        self.clock = clock
        self.lines: list[bytes] = []
        self.reason: Failure | None = None

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if line == b"STARTTLS":
            self.clock.callLater(0, self.transport.startTLS, self.context)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class _OwnBuffer(Protocol):
    """Buffers under its own name and offers ``clearLineBuffer``; upgrades on request."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.pending = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.pending += data

    def clearLineBuffer(self) -> bytes:
        data, self.pending = self.pending, b""
        return data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class _Chunks(Protocol):
    """No delimiter, no buffer: upgrades when a chunk holds ``STARTTLS``."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.chunks: list[bytes] = []
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        if b"STARTTLS" in data and not self.transport.tls_started:
            self.transport.startTLS(self.context)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class LineProtocolInjectionTests(SynchronousTestCase):
    """Any protocol calling transport.startTLS: cleartext pending at that moment fails the connection."""

    def setUp(self) -> None:
        self.clock = Clock()

    def _server(self, proto: Protocol) -> tuple[RawPeer, IOPump]:
        peer = RawPeer()
        pump = connect(_one(peer), _wrapped(_one(proto), self.clock), self.clock)
        return peer, pump

    def assertViolation(self, reason: Failure | None) -> None:
        assert reason is not None
        self.assertTrue(reason.check(ProtocolViolationError), reason)

    def test_pipelined_line_is_never_delivered(self) -> None:
        """A line pipelined behind STARTTLS is never delivered, and the protocol and when_handshake_done get ProtocolViolationError."""
        server = _Upgrader(_server_cf())
        peer, pump = self._server(server)
        handshake = pump.server.protocol.when_handshake_done()
        peer.transport.write(b"STARTTLS\r\nsecret command\r\n")
        pump.flush()
        self.assertEqual(server.lines, [b"STARTTLS"])
        self.assertViolation(server.reason)
        self.failureResultOf(handshake, ProtocolViolationError)
        self.assertEqual(peer.received, b"GO\r\n")

    def test_starttls_split_across_segments_with_pipelined_line(self) -> None:
        """STARTTLS cut over two segments, the second carrying a pipelined line, still fails with ProtocolViolationError."""
        server = _Upgrader(_server_cf())
        peer, pump = self._server(server)
        peer.transport.write(b"START")
        pump.flush()
        peer.transport.write(b"TLS\r\nsecret command\r\n")
        pump.flush()
        self.assertEqual(server.lines, [b"STARTTLS"])
        self.assertViolation(server.reason)

    def test_starttls_alone_upgrades(self) -> None:
        """The same STARTTLS line alone starts TLS on an open connection."""
        server = _Upgrader(_server_cf())
        peer, pump = self._server(server)
        peer.transport.write(b"STARTTLS\r\n")
        pump.flush()
        self.assertTrue(pump.server.protocol.tls_started)
        self.assertIsNone(server.reason)
        self.assertEqual(peer.received, b"GO\r\n")

    def test_line_buffer_filled_before_a_later_upgrade(self) -> None:
        """Bytes in LineReceiver's buffer when startTLS is called in a later turn fail the connection with ProtocolViolationError."""
        server = _Upgrader(_server_cf(), later=self.clock)
        _, pump = self._server(server)
        pump.server.protocol.dataReceived(b"STARTTLS\r\nsecr")
        self.clock.advance(0)
        pump.flush()
        self.assertViolation(server.reason)
        self.assertEqual(server.lines, [b"STARTTLS"])

    def test_line_only_buffer_filled_before_a_later_upgrade(self) -> None:
        """Bytes in a LineOnlyReceiver's ``_buffer`` when startTLS is called fail the connection with ProtocolViolationError."""
        server = _LineOnlyUpgrader(_server_cf(), self.clock)
        _, pump = self._server(server)
        pump.server.protocol.dataReceived(b"STARTTLS\r\nsecr")
        self.clock.advance(0)
        pump.flush()
        self.assertViolation(server.reason)
        self.assertEqual(server.lines, [b"STARTTLS"])

    def test_line_only_later_upgrade_without_pending_bytes(self) -> None:
        """A LineOnlyReceiver with nothing buffered upgrades in a later turn on an open connection."""
        server = _LineOnlyUpgrader(_server_cf(), self.clock)
        _, pump = self._server(server)
        pump.server.protocol.dataReceived(b"STARTTLS\r\n")
        self.clock.advance(0)
        self.assertTrue(pump.server.protocol.tls_started)
        self.assertIsNone(server.reason)

    def test_clear_line_buffer_protocol_with_pending_bytes(self) -> None:
        """A protocol whose clearLineBuffer returns buffered bytes at startTLS fails with ProtocolViolationError."""
        server = _OwnBuffer(_server_cf())
        _, pump = self._server(server)
        pump.server.protocol.dataReceived(b"secr")
        pump.server.protocol.startTLS(server.context)
        pump.flush()
        self.assertViolation(server.reason)

    def test_clear_line_buffer_protocol_without_pending_bytes(self) -> None:
        """A protocol whose clearLineBuffer returns nothing at startTLS upgrades."""
        server = _OwnBuffer(_server_cf())
        _, pump = self._server(server)
        pump.server.protocol.startTLS(server.context)
        pump.flush()
        self.assertTrue(pump.server.protocol.tls_started)
        self.assertIsNone(server.reason)

    def test_protocol_without_delimiter_gets_no_pipelined_bytes(self) -> None:
        """A protocol without a line delimiter or buffer never sees bytes that came behind its STARTTLS line, and fails with ProtocolViolationError."""
        server = _Chunks(_server_cf())
        peer, pump = self._server(server)
        peer.transport.write(b"STARTTLS\nsecret command\n")
        pump.flush()
        self.assertEqual(server.chunks, [b"STARTTLS\n"])
        self.assertViolation(server.reason)

    def test_cleartext_without_starttls_arrives_whole(self) -> None:
        """Without STARTTLS, a segment of several lines reaches the protocol complete and in order (cut after each line)."""
        server = _Chunks(_server_cf())
        peer, pump = self._server(server)
        peer.transport.write(b"one\ntwo\nthree")
        pump.flush()
        self.assertEqual(b"".join(server.chunks), b"one\ntwo\nthree")
        self.assertEqual(server.chunks, [b"one\n", b"two\n", b"three"])
        self.assertIsNone(server.reason)

    def test_no_line_behind_one_that_closed_the_connection(self) -> None:
        """A line behind one that made the protocol close the connection is not delivered, as with Twisted's own transports."""
        server = _Upgrader(_server_cf())
        server.lineReceived = lambda line: (server.lines.append(line), server.transport.loseConnection())  # type: ignore[method-assign]
        peer, pump = self._server(server)
        peer.transport.write(b"QUIT\r\nMORE\r\n")
        pump.flush()
        self.assertEqual(server.lines, [b"QUIT"])

    def test_client_refuses_cleartext_behind_go(self) -> None:
        """A client whose GO is followed by cleartext in the same segment fails with ProtocolViolationError and sends no ClientHello."""
        client = _Upgrader(_client_cf())
        peer = RawPeer(b"GO\r\nfake TLS answer\r\n")
        pump = connect(_wrapped(_one(client), self.clock), _one(peer), self.clock)
        self.assertEqual(client.lines, [b"GO"])
        self.assertViolation(client.reason)
        self.assertEqual(peer.received, b"")
        self.assertTrue(pump.client.closed)

    def test_client_upgrades_on_go_alone(self) -> None:
        """The same client given GO alone sends a ClientHello."""
        client = _Upgrader(_client_cf())
        peer = RawPeer(b"GO\r\n")
        connect(_wrapped(_one(client), self.clock), _one(peer), self.clock)
        self.assertTrue(peer.received.startswith(TLS_HANDSHAKE_RECORD))
        self.assertIsNone(client.reason)


# -- over 127.0.0.1 sockets -----------------------------------------------------


class _ScriptedSMTPClient(LineReceiver):
    """Speaks just enough ESMTP behind twistls: EHLO, STARTTLS (with
    ``pipelined`` bytes behind it in the same write), then EHLO over TLS."""

    def __init__(self, pipelined: bytes) -> None:
        self.pipelined = pipelined
        self.cleartext: list[bytes] = []
        self.over_tls: list[bytes] = []
        self.step = "greeting"
        self.done: defer.Deferred[list[Failure]] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        (self.over_tls if self.transport.tls_started else self.cleartext).append(line)
        if line[3:4] == b"-":
            return
        if self.step == "greeting":
            self.step = "ehlo"
            self.sendLine(b"EHLO client.example")
        elif self.step == "ehlo":
            self.step = "starttls"
            self.transport.write(b"STARTTLS\r\n" + self.pipelined)
        elif self.step == "starttls":
            self.step = "tls"
            self.transport.startTLS(_client_cf())
            self.sendLine(b"EHLO client.example")
        elif self.step == "tls":
            self.step = "done"
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback([reason])


class ESMTPServerSocketTests(TestCase):
    """Twisted's ESMTP server behind twistls on 127.0.0.1: pipelining past STARTTLS is refused, plain STARTTLS works."""

    timeout = 60

    @defer.inlineCallbacks
    def converse(self, pipelined: bytes):  # type: ignore[no-untyped-def]
        servers: list[_ESMTPServer] = []

        def build(addr: object) -> _ESMTPServer:
            servers.append(_ESMTPServer(_server_cf()))
            return servers[-1]

        factory = protocol.ServerFactory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        port = reactor.listenTCP(0, TLSWrappingFactory(factory, None, start_tls=True), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = _ScriptedSMTPClient(pipelined)
        client_factory = protocol.ClientFactory.forProtocol(lambda: client)
        reactor.connectTCP("127.0.0.1", port.getHost().port, TLSWrappingFactory(client_factory, None, start_tls=True))
        yield bounded(client.done, 30, "scripted ESMTP client end")
        yield bounded(servers[0].lost, 10, "ESMTP server end")
        return client, servers[0]

    @defer.inlineCallbacks
    def test_pipelined_mail_from_is_refused(self):
        """MAIL FROM pipelined behind STARTTLS ends the server's connection with ProtocolViolationError, unanswered and unprocessed."""
        client, server = yield self.converse(INJECTED)
        self.assertTrue(server.reason.check(ProtocolViolationError), server.reason)
        self.assertEqual(server.delivery.senders, [])
        self.assertEqual(client.cleartext[-1], b"220 Begin TLS negotiation now")
        self.assertEqual(client.over_tls, [])

    @defer.inlineCallbacks
    def test_starttls_alone_upgrades(self):
        """STARTTLS without pipelined bytes upgrades, and the EHLO after it is answered over TLS."""
        client, server = yield self.converse(b"")
        self.assertTrue(server.reason.check(ConnectionDone), server.reason)
        self.assertTrue(server.startedTLS)
        self.assertEqual(client.cleartext[-1], b"220 Begin TLS negotiation now")
        self.assertTrue(client.over_tls[-1].startswith(b"250 "), client.over_tls)
        self.assertNotIn(b"STARTTLS", b"\n".join(client.over_tls))  # no longer offered once TLS runs


class ESMTPSenderSocketTests(TestCase):
    """Twisted's ESMTP sender behind twistls on 127.0.0.1 refuses cleartext behind the server's 220."""

    timeout = 60

    @defer.inlineCallbacks
    def send(self, after_220: bytes):  # type: ignore[no-untyped-def]
        peers: list[RawPeer] = []

        def build(addr: object) -> RawPeer:
            peers.append(RawPeer(b"220 mail.example ESMTP\r\n", _smtp_script(after_220), hang_up_after=b"STARTTLS\r\n"))
            return peers[-1]

        factory = protocol.ServerFactory()
        factory.buildProtocol = build  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        result: defer.Deferred[Any] = defer.Deferred()
        sender = _SenderFactory(result, timeout=20)
        reactor.connectTCP("127.0.0.1", port.getHost().port, TLSWrappingFactory(sender, None, start_tls=True))
        try:
            outcome = yield bounded(result, 30, "ESMTP send")
        except smtp.SMTPClientError as exc:
            outcome = exc
        peer = peers[0]
        if not peer.lost.called:
            peer.transport.loseConnection()
        yield bounded(peer.lost, 10, "scripted server end")
        return outcome, peer

    @defer.inlineCallbacks
    def test_injected_ehlo_answer_fails_the_sender(self):
        """An EHLO answer injected behind the 220 fails the send with an SMTP error caused by ProtocolViolationError; nothing follows STARTTLS."""
        outcome, peer = yield self.send(b"250-mail.example\r\n250 AUTH PLAIN\r\n")
        self.assertIsInstance(outcome, smtp.SMTPClientError)
        self.assertIsInstance(outcome.__cause__, ProtocolViolationError)
        self.assertEqual(peer.after(b"STARTTLS\r\n"), b"")

    @defer.inlineCallbacks
    def test_220_alone_gets_a_client_hello(self):
        """The same server answering 220 alone receives a ClientHello after STARTTLS (it then hangs up), not a ProtocolViolationError."""
        outcome, peer = yield self.send(b"")
        self.assertTrue(peer.after(b"STARTTLS\r\n").startswith(TLS_HANDSHAKE_RECORD), peer.received)
        self.assertIsInstance(outcome, smtp.SMTPClientError)
        self.assertNotIsInstance(outcome.__cause__, ProtocolViolationError)
