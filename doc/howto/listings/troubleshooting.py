"""Provoke the common twistls errors on purpose, and read what they carry.

Every failure is a :mod:`twistls.errors` type with attributes (``str()`` is
for people; the attributes are the API).

Run:  twistls mkcert --dir DIR && python troubleshooting.py DIR
"""

import os
import sys

from twisted.internet import defer, protocol
from twisted.internet.task import react

from twistls import (
    ClientContextFactory,
    ConfigurationError,
    HandshakeTimeoutError,
    HostnameMismatchError,
    ProtocolVersionError,
    ServerContextFactory,
    TLSWrappingFactory,
    UntrustedCertificateError,
)


class Client(protocol.Protocol):
    def __init__(self):
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(b"hello")

    def dataReceived(self, data):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(reason.value)  # the exception, e.g. a twistls.errors.TLSError


async def failure_of(reactor, port, client_tls):
    """Connect once; return the error the protocol's connectionLost got."""
    client = Client()
    factory = protocol.ClientFactory.forProtocol(lambda: client)
    reactor.connectTCP("127.0.0.1", port, TLSWrappingFactory(factory, client_tls))
    return await client.done


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


async def main(reactor, certdir):
    path = lambda name: os.path.join(certdir, name)  # noqa: E731
    tls12_only = ServerContextFactory(path("server.pem"), path("server.key"), maximum_version="TLSv1.2")
    tls_port = reactor.listenTCP(
        0, TLSWrappingFactory(protocol.Factory.forProtocol(Echo), tls12_only), interface="127.0.0.1"
    )
    silent_port = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface="127.0.0.1")
    port, silent = tls_port.getHost().port, silent_port.getHost().port
    try:
        # The certificate is valid, but not for the name we expect.
        error = await failure_of(reactor, port, ClientContextFactory("db.example", cafile=path("ca.pem")))
        assert isinstance(error, HostnameMismatchError)
        print("HostnameMismatchError: expected", error.hostname, "- the certificate has", ", ".join(error.names))

        # No CA file: the system store does not know our private CA.
        error = await failure_of(reactor, port, ClientContextFactory("localhost"))
        assert isinstance(error, UntrustedCertificateError)
        print("UntrustedCertificateError: X509 error", error.verify_code, "-", error.verify_message, "at depth", error.depth)

        # The client insists on TLS 1.3; this server stops at TLS 1.2.
        modern = ClientContextFactory("localhost", cafile=path("ca.pem"), minimum_version="TLSv1.3")
        error = await failure_of(reactor, port, modern)
        assert isinstance(error, ProtocolVersionError)
        print("ProtocolVersionError:", error.reason.split(" (")[0])

        # A server that accepts TCP but never answers the handshake.
        impatient = ClientContextFactory("localhost", cafile=path("ca.pem"), handshake_timeout=0.5)
        error = await failure_of(reactor, silent, impatient)
        assert isinstance(error, HandshakeTimeoutError)
        print("HandshakeTimeoutError:", error)

        # Local mistakes are raised at once, when the policy is built.
        try:
            ClientContextFactory("localhost", cafile=path("no-such-ca.pem"))
        except ConfigurationError as exc:
            print("ConfigurationError:", exc)
    finally:
        await tls_port.stopListening()
        await silent_port.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
