"""Client certificates (mutual TLS) on both sides.

The server requires a certificate issued by its client CA and sees who the
client is; a client without a certificate is refused during the handshake.

Run:  twistls mkcert --dir DIR --client client.example && python mutual_tls.py DIR
"""

import os
import sys

from twisted.internet import defer, protocol
from twisted.internet.task import react

from twistls import ClientContextFactory, ServerContextFactory, TLSError, TLSWrappingFactory
from twistls.checker import certificate_names


class Greeter(protocol.Protocol):
    """Server side: greets the client by the names on its certificate."""

    def connectionMade(self):
        self.transport.when_handshake_done().addCallbacks(self.greet, lambda failure: None)

    def greet(self, info):
        client = self.transport.getPeerCertificate()  # a cryptography x509.Certificate
        names = ", ".join(certificate_names(client))
        self.transport.write(f"hello {names}\n".encode())
        self.transport.loseConnection()


class Reader(protocol.Protocol):
    def __init__(self):
        self.data, self.done = b"", defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback((self.data, reason))


async def connect(reactor, port, client_tls):
    reader = Reader()
    factory = protocol.ClientFactory.forProtocol(lambda: reader)
    reactor.connectTCP("127.0.0.1", port, TLSWrappingFactory(factory, client_tls))
    return await reader.done


async def main(reactor, certdir):
    path = lambda name: os.path.join(certdir, name)  # noqa: E731
    server_tls = ServerContextFactory(
        path("server.pem"),
        path("server.key"),
        client_cafile=path("ca.pem"),  # turns client certificates on: required and verified
    )
    listening = reactor.listenTCP(
        0, TLSWrappingFactory(protocol.Factory.forProtocol(Greeter), server_tls), interface="127.0.0.1"
    )
    port = listening.getHost().port
    try:
        with_certificate = ClientContextFactory(
            "localhost", cafile=path("ca.pem"), certificate=path("client.pem"), private_key=path("client.key")
        )
        data, reason = await connect(reactor, port, with_certificate)
        print("with a certificate:", data.decode().strip())

        without = ClientContextFactory("localhost", cafile=path("ca.pem"))
        data, reason = await connect(reactor, port, without)
        if reason.check(TLSError):
            print("without a certificate:", type(reason.value).__name__, "-", reason.value)
        else:
            print("without a certificate: not refused?", reason.value)
    finally:
        await listening.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
