"""From M2Crypto's TwistedProtocolWrapper to twistls.compat: one import changes.

Before (M2Crypto; verifies nothing by default, checks the dialled address)::

    from M2Crypto import SSL
    from M2Crypto.SSL.TwistedProtocolWrapper import connectSSL, listenSSL

    listenSSL(8443, factory, SSL.Context())
    connectSSL("localhost", 8443, client_factory, SSL.Context())

After: the same calls, twistls context factories, secure defaults.

Run:  twistls mkcert --dir DIR && python migrate_m2crypto.py DIR
"""

import os
import sys

from twisted.internet import defer, protocol
from twisted.internet.task import react

from twistls import ClientContextFactory, ServerContextFactory
from twistls.compat import connectSSL, listenSSL


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Client(protocol.Protocol):
    def __init__(self):
        self.received = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(b"ping")

    def dataReceived(self, data):
        self.received += data
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.received)


async def main(reactor, certdir):
    path = lambda name: os.path.join(certdir, name)  # noqa: E731
    server_ctx = ServerContextFactory(path("server.pem"), path("server.key"))
    listening = listenSSL(0, protocol.Factory.forProtocol(Echo), server_ctx, interface="127.0.0.1", reactor=reactor)
    try:
        client = Client()
        client_ctx = ClientContextFactory(cafile=path("ca.pem"))  # verifies "localhost", the host passed below
        connectSSL(
            "localhost", listening.getHost().port, protocol.ClientFactory.forProtocol(lambda: client), client_ctx,
            reactor=reactor,
        )
        print("twistls.compat.connectSSL:", (await client.done).decode())
    finally:
        await listening.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
