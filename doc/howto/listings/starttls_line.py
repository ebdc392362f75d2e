"""STARTTLS in your own line protocol, on both sides.

Both sides begin in the clear behind ``TLSWrappingFactory(..., start_tls=True)``;
each upgrades by calling ``self.transport.startTLS(context_factory)``.

Run:  twistls mkcert --dir DIR && python starttls_line.py DIR
"""

import os
import sys

from twisted.internet import defer, protocol
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver

from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory


class Server(LineReceiver):
    def lineReceived(self, line):
        if line == b"STARTTLS" and not self.transport.tls_started:
            self.sendLine(b"OK begin TLS")  # the last cleartext line
            self.clearLineBuffer()  # never carry cleartext bytes into the TLS session
            self.transport.startTLS(self.factory.tls)
        elif self.transport.tls_started:
            self.sendLine(b"secret received: " + line)
            self.transport.loseConnection()
        else:
            self.sendLine(b"ERR say STARTTLS first")


class Client(LineReceiver):
    def __init__(self, tls):
        self.tls = tls
        self.done = defer.Deferred()

    def connectionMade(self):
        self.sendLine(b"STARTTLS")

    def lineReceived(self, line):
        print("server:", line.decode())
        if line == b"OK begin TLS":
            self.transport.startTLS(self.tls)
            # Written now, sent only once the server is verified.
            self.sendLine(b"the password")

    def connectionLost(self, reason):
        self.done.callback(None)


async def main(reactor, certdir):
    server_factory = protocol.Factory.forProtocol(Server)
    server_factory.tls = ServerContextFactory(
        os.path.join(certdir, "server.pem"), os.path.join(certdir, "server.key")
    )
    port = reactor.listenTCP(
        0, TLSWrappingFactory(server_factory, start_tls=True), interface="127.0.0.1"
    )
    try:
        client = Client(ClientContextFactory("localhost", cafile=os.path.join(certdir, "ca.pem")))
        client_factory = protocol.ClientFactory.forProtocol(lambda: client)
        reactor.connectTCP(
            "127.0.0.1", port.getHost().port, TLSWrappingFactory(client_factory, start_tls=True)
        )
        await client.done
    finally:
        await port.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
