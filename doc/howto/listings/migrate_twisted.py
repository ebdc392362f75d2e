"""From ``twisted.internet.ssl`` to twistls: the same client and server both ways.

``twisted_client``/``twisted_server_options`` are the Twisted (pyOpenSSL)
versions; ``twistls_client``/``twistls_server_options`` are their twistls
replacements.  ``main`` serves with twistls and connects with both clients,
so each side interoperates with the other library.

Run:  twistls mkcert --dir DIR && python migrate_twisted.py DIR
"""

import os
import sys

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.task import react

from twistls import ClientContextFactory, ServerContextFactory, TLSWrappingFactory
from twistls.endpoints import wrap_client_tls


def twisted_client(reactor, host, port, cafile):
    from twisted.internet import ssl

    with open(cafile) as f:
        trust = ssl.Certificate.loadPEM(f.read())
    options = ssl.optionsForClientTLS(host, trustRoot=trust)
    return wrapClientTLS(options, HostnameEndpoint(reactor, host, port))


def twistls_client(reactor, host, port, cafile):
    policy = ClientContextFactory(cafile=cafile)  # the system store when cafile is None
    return wrap_client_tls(host, policy, HostnameEndpoint(reactor, host, port))


def twisted_server_options(certificate, key):
    from twisted.internet import ssl

    with open(certificate) as c, open(key) as k:
        return ssl.PrivateCertificate.loadPEM(c.read() + k.read()).options()


def twistls_server_options(certificate, key):
    return ServerContextFactory(certificate, key)  # the intermediates in certificate are sent too


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
    server_tls = twistls_server_options(path("server.pem"), path("server.key"))
    # reactor.listenSSL(port, factory, options) becomes:
    listening = reactor.listenTCP(
        0, TLSWrappingFactory(protocol.Factory.forProtocol(Echo), server_tls), interface="127.0.0.1"
    )
    port = listening.getHost().port
    try:
        for make_endpoint in (twistls_client, twisted_client):
            client = Client()
            await make_endpoint(reactor, "localhost", port, path("ca.pem")).connect(
                protocol.Factory.forProtocol(lambda: client)
            )
            print(f"{make_endpoint.__name__}: {(await client.done).decode()}")
    finally:
        await listening.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
