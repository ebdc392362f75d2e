"""Twisted's own SMTP client and server, upgraded with STARTTLS by twistls.

``ESMTP(contextFactory=...)`` and ``ESMTPSenderFactory(contextFactory=...)``
call ``transport.startTLS(contextFactory)``: give them twistls context
factories and wrap their factories with ``TLSWrappingFactory(...,
start_tls=True)``.

Run:  twistls mkcert --dir DIR && python starttls_smtp.py DIR
"""

import io
import os
import sys

from twisted.internet import defer, protocol
from twisted.internet.task import react
from twisted.mail import smtp
from zope.interface import implementer

from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory


@implementer(smtp.IMessage)
class Message:
    def __init__(self, mailbox):
        self.mailbox, self.lines = mailbox, []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        self.mailbox.append(b"\n".join(self.lines))
        return defer.succeed(None)

    def connectionLost(self):
        pass


@implementer(smtp.IMessageDelivery)
class Delivery:
    """Accepts any mail into a list (a real server would check and store it)."""

    def __init__(self, mailbox):
        self.mailbox = mailbox

    def receivedHeader(self, helo, origin, recipients):
        return None

    def validateFrom(self, helo, origin):
        return origin

    def validateTo(self, user):
        return lambda: Message(self.mailbox)


class Server(smtp.ESMTP):
    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.closed.callback(None)


class ServerFactory(protocol.ServerFactory):
    def __init__(self, tls, mailbox):
        self.tls, self.mailbox = tls, mailbox
        self.closed = defer.Deferred()  # fires when the SMTP session ends

    def buildProtocol(self, addr):
        server = Server(contextFactory=self.tls)
        server.delivery = Delivery(self.mailbox)
        server.host = b"mail.localhost"
        server.factory = self
        return server


async def main(reactor, certdir):
    mailbox = []
    tls = ServerContextFactory(os.path.join(certdir, "server.pem"), os.path.join(certdir, "server.key"))
    server_factory = ServerFactory(tls, mailbox)
    port = reactor.listenTCP(0, TLSWrappingFactory(server_factory, start_tls=True), interface="127.0.0.1")
    try:
        message = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nSent over STARTTLS.\r\n"
        sent = defer.Deferred()
        sender = smtp.ESMTPSenderFactory(
            None, None, "a@example.com", ["b@example.com"], io.BytesIO(message), sent,
            retries=0,
            contextFactory=ClientContextFactory("localhost", cafile=os.path.join(certdir, "ca.pem")),
            requireAuthentication=False,
            requireTransportSecurity=True,  # refuse to send in the clear
        )
        reactor.connectTCP("127.0.0.1", port.getHost().port, TLSWrappingFactory(sender, start_tls=True))
        accepted, recipients = await sent
        await server_factory.closed
        print(f"{accepted} recipient accepted: {recipients[0][0].decode()} ({recipients[0][1]})")
        print("delivered:", mailbox[0].splitlines()[-1].decode())
    finally:
        await port.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
