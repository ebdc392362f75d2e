"""End-to-end STARTTLS over real 127.0.0.1 sockets.

Both sides start in the clear behind ``TLSWrappingFactory(..., start_tls=True)``
and upgrade when the wrapped protocol calls ``self.transport.startTLS(cf)``:
first a small line protocol, then Twisted's own ESMTP client and server.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet import ssl as tssl
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.cred import checkers, portal
from twisted.mail import imap4, smtp
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from twistls import (
    ClientContextFactory,
    HostnameMismatchError,
    PeerAlertError,
    ServerContextFactory,
    TLSWrappingFactory,
    UntrustedCertificateError,
    VerificationError,
)
from tests._e2e import bounded
from tests._pki import pki


def server_cf() -> ServerContextFactory:
    p = pki()
    return ServerContextFactory(p.server.cert, p.server.key)


class LineServer(LineReceiver):
    """Answers ``GO`` to ``STARTTLS`` and upgrades; echoes later lines as ``TLS: ...``."""

    def connectionMade(self) -> None:
        self.factory.instances.append(self)
        self.lines: list[bytes] = []
        self.clear_lines: list[bytes] = []
        self.lost: defer.Deferred[list[object]] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if not self.transport.tls_started:
            self.clear_lines.append(line)
        if line == b"STARTTLS":
            self.sendLine(b"GO")
            self.transport.startTLS(self.factory.tls)
        else:
            self.sendLine(b"TLS: " + line)

    def connectionLost(self, reason: object) -> None:
        self.reason = reason
        self.lost.callback([reason])


class LineClient(LineReceiver):
    """Sends ``STARTTLS`` in the clear, upgrades on ``GO``, then sends one line over TLS."""

    def __init__(self, tls: ClientContextFactory) -> None:
        self.tls = tls
        self.lines: list[bytes] = []
        self.done: defer.Deferred[list[object]] = defer.Deferred()
        self.ssl_before_upgrade: bool | None = None

    def connectionMade(self) -> None:
        self.ssl_before_upgrade = ISSLTransport.providedBy(self.transport)
        self.sendLine(b"STARTTLS")

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)
        if line == b"GO":
            self.transport.startTLS(self.tls)
            self.sendLine(b"secret over TLS")  # buffered until the server is verified
        elif line.startswith(b"TLS: "):
            self.info = self.transport.connection_info()
            self.transport.loseConnection()

    def connectionLost(self, reason: object) -> None:
        self.reason = reason
        self.done.callback([reason])


class LineStartTLSTests(TestCase):
    """A line protocol upgrades both sides with STARTTLS."""

    timeout = 60

    @defer.inlineCallbacks
    def converse(self, hostname: str):  # type: ignore[no-untyped-def]
        factory = protocol.Factory.forProtocol(LineServer)
        factory.instances = []  # type: ignore[attr-defined]
        factory.tls = server_cf()  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, TLSWrappingFactory(factory, None, start_tls=True), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = LineClient(ClientContextFactory(hostname, cafile=pki().cafile))
        client_factory = protocol.ClientFactory.forProtocol(lambda: client)
        reactor.connectTCP("127.0.0.1", port.getHost().port, TLSWrappingFactory(client_factory, None, start_tls=True))
        (reason,) = yield bounded(client.done, 30, "STARTTLS line client")
        server = factory.instances[0]
        yield bounded(server.lost, 10, "STARTTLS line server end")
        return client, reason, server

    @defer.inlineCallbacks
    def test_upgrade_then_lines_over_tls(self):
        """STARTTLS goes in the clear, the answer comes over TLS 1.3 and both sides saw the upgrade."""
        client, reason, server = yield self.converse("localhost")
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertFalse(client.ssl_before_upgrade)
        self.assertEqual(server.clear_lines, [b"STARTTLS"])
        self.assertEqual(server.lines, [b"STARTTLS", b"secret over TLS"])
        self.assertEqual(client.lines, [b"GO", b"TLS: secret over TLS"])
        self.assertEqual(client.info.version, "TLSv1.3")
        self.assertTrue(client.info.verified)
        self.assertTrue(ISSLTransport.providedBy(client.transport))
        server_info = server.transport.connection_info()
        self.assertEqual((server_info.version, server_info.cipher), (client.info.version, client.info.cipher))
        self.assertEqual(server_info.server_name, "localhost")

    @defer.inlineCallbacks
    def test_wrong_hostname_after_starttls_rejected(self):
        """A client expecting another name fails after STARTTLS with HostnameMismatchError, and its line never reaches the server."""
        client, reason, server = yield self.converse("wrong.example")
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertIn("wrong.example", str(reason.value))
        self.assertIn("DNS:localhost", str(reason.value))
        self.assertEqual(client.lines, [b"GO"])
        self.assertEqual(server.lines, [b"STARTTLS"])


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, mailbox: list[bytes]) -> None:
        self.mailbox = mailbox
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[None]:
        self.mailbox.append(b"\n".join(self.lines))
        return defer.succeed(None)

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    """Accepts any sender and recipient, without authentication."""

    def __init__(self, mailbox: list[bytes]) -> None:
        self.mailbox = mailbox

    def receivedHeader(self, helo: object, origin: object, recipients: object) -> None:
        return None

    def validateFrom(self, helo: object, origin: object) -> object:
        return origin

    def validateTo(self, user: object) -> object:
        return lambda: _Message(self.mailbox)


class _ESMTPServer(smtp.ESMTP):
    def connectionMade(self) -> None:
        self.lost: defer.Deferred[list[object]] = defer.Deferred()
        super().connectionMade()

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        self.reason = reason
        self.lost.callback([reason])


class _ESMTPServerFactory(protocol.ServerFactory):
    def __init__(self, context: ServerContextFactory) -> None:
        self.context = context
        self.mailbox: list[bytes] = []
        self.instances: list[smtp.ESMTP] = []

    def buildProtocol(self, addr: object) -> smtp.ESMTP:
        p = _ESMTPServer(contextFactory=self.context)
        p.delivery = _Delivery(self.mailbox)
        p.host = b"mail.localhost"
        p.factory = self
        self.instances.append(p)
        return p


class _RecordingSenderFactory(smtp.ESMTPSenderFactory):
    def buildProtocol(self, addr: object) -> smtp.ESMTPSender:
        p = super().buildProtocol(addr)
        self.built = p
        self.lost: defer.Deferred[list[object]] = defer.Deferred()
        original = p.connectionLost

        def connectionLost(reason: object) -> None:
            original(reason)
            self.lost.callback([reason])

        p.connectionLost = connectionLost  # type: ignore[method-assign]
        return p


@defer.inlineCallbacks
def send_esmtp(case, message, server_context, client_context, *, twistls_server=True, twistls_client=True):  # type: ignore[no-untyped-def]
    """Send ``message`` from an ESMTP sender to an ESMTP server on 127.0.0.1 (cleaned up
    by the test ``case``); each side runs behind a twistls STARTTLS wrapper or on
    Twisted's own TCP startTLS. Returns (outcome, server, mailbox, sender)."""
    server_factory = _ESMTPServerFactory(server_context)
    listening = TLSWrappingFactory(server_factory, None, start_tls=True) if twistls_server else server_factory
    port = reactor.listenTCP(0, listening, interface="127.0.0.1")
    case.addCleanup(port.stopListening)
    result: defer.Deferred[object] = defer.Deferred()
    sender = _RecordingSenderFactory(
        None,
        None,
        "a@example.com",
        ["b@example.com"],
        io.BytesIO(message),
        result,
        retries=0,
        contextFactory=client_context,
        requireAuthentication=False,
        requireTransportSecurity=True,
    )
    connecting = TLSWrappingFactory(sender, None, start_tls=True) if twistls_client else sender
    reactor.connectTCP("127.0.0.1", port.getHost().port, connecting)
    try:
        outcome = yield bounded(result, 30, "ESMTP send")
    except smtp.SMTPClientError as exc:
        outcome = exc
    server = server_factory.instances[0]
    yield bounded(server.lost, 10, "ESMTP server connection end")
    yield bounded(sender.lost, 10, "ESMTP client connection end")
    return outcome, server, server_factory.mailbox, sender


class SMTPStartTLSTests(TestCase):
    """Twisted's own ESMTP client and server upgrade with STARTTLS over twistls."""

    timeout = 60

    MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: twistls\r\n\r\nHello over STARTTLS.\r\n"

    def send(self, cafile: str):  # type: ignore[no-untyped-def]
        return self.send_with(server_cf(), ClientContextFactory("localhost", cafile=cafile))

    def send_with(self, server_context, client_context, *, twistls_server=True, twistls_client=True):  # type: ignore[no-untyped-def]
        return send_esmtp(
            self, self.MESSAGE, server_context, client_context, twistls_server=twistls_server, twistls_client=twistls_client
        )

    @defer.inlineCallbacks
    def test_mail_arrives_over_starttls(self):
        """ESMTP with requireTransportSecurity delivers the message, and the server's transport really ran TLS."""
        outcome, server, mailbox, sender = yield self.send(pki().cafile)
        self.assertEqual(outcome, (1, [(b"b@example.com", 250, b"Recipient address accepted")]))
        self.assertEqual(len(mailbox), 1)
        self.assertIn(b"Hello over STARTTLS.", mailbox[0])
        self.assertTrue(ITLSTransport.providedBy(server.transport))
        self.assertTrue(server.startedTLS)
        self.assertTrue(server.transport.tls_started)
        info = server.transport.connection_info()
        self.assertIsNotNone(info)
        self.assertEqual(info.version, "TLSv1.3")
        self.assertEqual(info.server_name, "localhost")
        client_info = sender.built.transport.connection_info()
        self.assertTrue(client_info.verified)
        self.assertEqual(client_info.cipher, info.cipher)

    @defer.inlineCallbacks
    def test_wrong_ca_fails_with_verification_error(self):
        """A sender trusting another CA fails with an SMTP error caused by UntrustedCertificateError, and nothing is delivered."""
        p = pki()
        outcome, server, mailbox, _ = yield self.send(p.other_cafile)
        self.assertIsInstance(outcome, smtp.SMTPClientError)
        cause = outcome.__cause__
        self.assertIsInstance(cause, VerificationError)
        self.assertIsInstance(cause, UntrustedCertificateError)
        self.assertIn("unable to get local issuer certificate", str(cause))
        self.assertEqual(mailbox, [])
        self.assertTrue(server.startedTLS)
        server_reason = server.reason
        self.assertTrue(server_reason.check(PeerAlertError), server_reason)
        self.assertEqual(server_reason.value.alert, "unknown ca")

    @defer.inlineCallbacks
    def test_sender_refuses_server_without_starttls(self):
        """A twistls-wrapped sender requiring TLS refuses a server that offers no STARTTLS: the wrapper is not an ISSLTransport before TLS starts."""
        outcome, server, mailbox, sender = yield self.send_with(None, ClientContextFactory("localhost", cafile=pki().cafile))
        self.assertIsInstance(outcome, smtp.TLSRequiredError)
        self.assertEqual(mailbox, [])
        self.assertFalse(server.startedTLS)
        self.assertFalse(sender.built.transport.tls_started)

    @defer.inlineCallbacks
    def test_twisted_tls_sender_to_twistls_server(self):
        """Twisted's ESMTP sender using Twisted's own TLS upgrades a twistls-wrapped ESMTP server and delivers."""
        trust = tssl.Certificate.loadPEM(read(pki().cafile))
        options = tssl.optionsForClientTLS("localhost", trustRoot=trust)
        outcome, server, mailbox, sender = yield self.send_with(server_cf(), options, twistls_client=False)
        self.assertEqual(outcome[0], 1)
        self.assertEqual(len(mailbox), 1)
        self.assertIn(b"Hello over STARTTLS.", mailbox[0])
        info = server.transport.connection_info()
        self.assertEqual(info.version, "TLSv1.3")
        handle = sender.built.transport.getHandle()
        self.assertEqual(handle.get_cipher_name(), info.cipher)

    @defer.inlineCallbacks
    def test_twistls_sender_to_twisted_tls_server(self):
        """A twistls-wrapped ESMTP sender upgrades Twisted's own ESMTP server (pyOpenSSL) and delivers."""
        options = tssl.PrivateCertificate.loadPEM(read(pki().server.chain)).options()
        outcome, server, mailbox, sender = yield self.send_with(
            options, ClientContextFactory("localhost", cafile=pki().cafile), twistls_server=False
        )
        self.assertEqual(outcome[0], 1)
        self.assertEqual(len(mailbox), 1)
        self.assertTrue(server.startedTLS)
        info = sender.built.transport.connection_info()
        self.assertTrue(info.verified)
        self.assertEqual(server.transport.getHandle().get_cipher_name(), info.cipher)

    @defer.inlineCallbacks
    def test_twistls_sender_refuses_twisted_tls_server_with_wrong_name(self):
        """A twistls sender expecting another name refuses Twisted's ESMTP server with HostnameMismatchError; nothing is delivered."""
        options = tssl.PrivateCertificate.loadPEM(read(pki().server.chain)).options()
        outcome, server, mailbox, _ = yield self.send_with(
            options, ClientContextFactory("mail.example", cafile=pki().cafile), twistls_server=False
        )
        self.assertIsInstance(outcome, smtp.SMTPClientError)
        self.assertIsInstance(outcome.__cause__, HostnameMismatchError)
        self.assertIn("mail.example", str(outcome.__cause__))
        self.assertEqual(mailbox, [])


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class _IMAPServer(imap4.IMAP4Server):
    """Records every line with whether TLS was on when it arrived."""

    def connectionMade(self) -> None:
        self.seen: list[tuple[bool, bytes]] = []
        self.lost: defer.Deferred[list[object]] = defer.Deferred()
        self.factory.instances.append(self)
        super().connectionMade()

    def lineReceived(self, line: bytes) -> None:
        self.seen.append((bool(self.transport.tls_started), line))
        return super().lineReceived(line)

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        self.reason = reason
        self.lost.callback([reason])


@implementer(portal.IRealm)
class _Realm:
    def requestAvatar(self, avatar_id: bytes, mind: object, *interfaces: object) -> tuple[object, object, object]:
        return imap4.IAccount, imap4.MemoryAccount(avatar_id), lambda: None


class _IMAPClient(imap4.IMAP4Client):
    def serverGreeting(self, caps: object) -> None:
        self.factory.greeted.callback(caps)

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        self.factory.lost.callback([reason])


class IMAPStartTLSTests(TestCase):
    """Twisted's IMAP4 client and server: the login goes over STARTTLS, never in the clear."""

    timeout = 60
    PASSWORD = b"imap-secret-pw"

    @defer.inlineCallbacks
    def login(self, cafile: str):  # type: ignore[no-untyped-def]
        server_factory = protocol.ServerFactory()
        server_factory.instances = []  # type: ignore[attr-defined]
        checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=self.PASSWORD)
        imap_portal = portal.Portal(_Realm(), [checker])

        def build_server() -> _IMAPServer:
            server = _IMAPServer(contextFactory=server_cf())
            server.portal = imap_portal
            server.factory = server_factory
            return server

        server_factory.protocol = build_server  # type: ignore[assignment]
        port = reactor.listenTCP(0, TLSWrappingFactory(server_factory, None, start_tls=True), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client_factory = protocol.ClientFactory()
        client_factory.greeted = defer.Deferred()  # type: ignore[attr-defined]
        client_factory.lost = defer.Deferred()  # type: ignore[attr-defined]
        tls = ClientContextFactory("localhost", cafile=cafile)
        client_factory.built = []  # type: ignore[attr-defined]

        def build_client() -> _IMAPClient:
            client = _IMAPClient(contextFactory=tls)
            client_factory.built.append(client)  # type: ignore[attr-defined]
            return client

        client_factory.protocol = build_client  # type: ignore[assignment]
        reactor.connectTCP("127.0.0.1", port.getHost().port, TLSWrappingFactory(client_factory, None, start_tls=True))
        yield bounded(client_factory.greeted, 30, "IMAP greeting")
        return server_factory, client_factory, _last_client(client_factory)

    @defer.inlineCallbacks
    def test_login_over_starttls(self):
        """IMAP4Client upgrades with STARTTLS before LOGIN, and the server saw the password only over TLS."""
        server_factory, client_factory, _ = yield self.login(pki().cafile)
        server = server_factory.instances[0]
        imap_client = _last_client(client_factory)
        yield bounded(imap_client.login(b"alice", self.PASSWORD), 30, "IMAP login")
        self.assertTrue(imap_client.startedTLS)
        self.assertTrue(server.startedTLS)
        info = server.transport.connection_info()
        self.assertEqual(info.version, "TLSv1.3")
        clear = [line for tls, line in server.seen if not tls]
        self.assertTrue(all(self.PASSWORD not in line for line in clear), clear)
        self.assertTrue(any(tls and self.PASSWORD in line for tls, line in server.seen), server.seen)
        yield bounded(imap_client.logout(), 30, "IMAP logout")
        yield bounded(server.lost, 10, "IMAP server end")
        yield bounded(client_factory.lost, 10, "IMAP client end")

    @defer.inlineCallbacks
    def test_wrong_ca_fails_before_login(self):
        """An IMAP client trusting another CA fails the login with UntrustedCertificateError, and the password is never sent."""
        server_factory, client_factory, _ = yield self.login(pki().other_cafile)
        server = server_factory.instances[0]
        imap_client = _last_client(client_factory)
        with self.assertRaises(UntrustedCertificateError):
            yield bounded(imap_client.login(b"alice", self.PASSWORD), 30, "IMAP login")
        # IMAP4Client itself log.err()s a failed STARTTLS before passing it on.
        self.assertEqual(len(self.flushLoggedErrors(UntrustedCertificateError)), 1)
        yield bounded(server.lost, 10, "IMAP server end")
        yield bounded(client_factory.lost, 10, "IMAP client end")
        self.assertTrue(all(self.PASSWORD not in line for _, line in server.seen), server.seen)
        self.assertTrue(server.reason.check(PeerAlertError), server.reason)


def _last_client(client_factory: Any) -> Any:
    return client_factory.built[-1]
