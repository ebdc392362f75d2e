"""A private CA, and pinning the server's public key on top of it.

``pins`` holds SHA-256 digests of SubjectPublicKeyInfo (the key, not the
whole certificate, so renewing a certificate with the same key keeps the pin
valid).  A pin is checked in addition to the chain and the name; a chain
passes when any of its certificates has a pinned key.

Run:  twistls mkcert --dir DIR && python pinning.py DIR
"""

import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import defer, protocol
from twisted.internet.task import react

from twistls import ClientContextFactory, PinMismatchError, ServerContextFactory, TLSWrappingFactory, spki_sha256


def pin_of(pem_path):
    """The pin of the first certificate in a PEM file (what ``pins=`` takes)."""
    with open(pem_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return spki_sha256(cert.public_bytes(serialization.Encoding.DER))


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Client(protocol.Protocol):
    def __init__(self):
        self.data, self.done = b"", defer.Deferred()

    def connectionMade(self):
        self.transport.write(b"ping")

    def dataReceived(self, data):
        self.data += data
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback((self.data, reason))


async def attempt(reactor, port, client_tls):
    client = Client()
    reactor.connectTCP(
        "127.0.0.1", port, TLSWrappingFactory(protocol.ClientFactory.forProtocol(lambda: client), client_tls)
    )
    return await client.done


async def main(reactor, certdir):
    path = lambda name: os.path.join(certdir, name)  # noqa: E731
    server_tls = ServerContextFactory(path("server.pem"), path("server.key"))
    listening = reactor.listenTCP(
        0, TLSWrappingFactory(protocol.Factory.forProtocol(Echo), server_tls), interface="127.0.0.1"
    )
    port = listening.getHost().port
    try:
        # 1. A private CA: trust exactly the CA file, not the system store.
        server_pin = pin_of(path("server.pem"))
        print("server key pin:", server_pin)
        pinned = ClientContextFactory("localhost", cafile=path("ca.pem"), pins=[server_pin])
        data, reason = await attempt(reactor, port, pinned)
        print("pinned key:", data.decode())

        # 2. A pin that matches nothing the server sends: refused, even though
        #    the chain and the name are valid.
        wrong = ClientContextFactory("localhost", cafile=path("ca.pem"), pins=["00" * 32])
        data, reason = await attempt(reactor, port, wrong)
        if reason.check(PinMismatchError):
            print("wrong pin: PinMismatchError; the server's keys are", ", ".join(reason.value.actual))
    finally:
        await listening.stopListening()


if __name__ == "__main__":
    react(main, sys.argv[1:])
