"""A verifying TLS client with the Python API: fetch the first line of an
HTTPS response.

Run:  python client_api.py [HOST [PORT [CAFILE]]]   (default: example.com 443,
the system trust store)
"""

import sys

from twisted.internet import defer, protocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import react

from twistls import ClientContextFactory
from twistls.endpoints import wrap_client_tls


class FirstLine(protocol.Protocol):
    """Sends one HTTP/1.0 request and keeps the first line of the answer."""

    def __init__(self, host):
        self.host = host
        self.received = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        # Safe to write at once: twistls holds the bytes until the server is verified.
        request = f"HEAD / HTTP/1.0\r\nHost: {self.host}\r\n\r\n".encode("ascii")
        self.transport.write(request)

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.done.callback(self.received.split(b"\r\n", 1)[0])


async def main(reactor, host="example.com", port="443", cafile=None):
    # The policy: TLS 1.2+, chain verified against the system store (or cafile),
    # the name checked against the certificate's subjectAltName.
    policy = ClientContextFactory(cafile=cafile)
    endpoint = wrap_client_tls(host, policy, HostnameEndpoint(reactor, host, int(port)))
    client = FirstLine(host)
    # connect() fires only after the handshake AND the name check succeeded;
    # otherwise it fails with a twistls.errors.TLSError subclass.
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    info = client.transport.connection_info()  # what was negotiated
    print(f"verified {host}: {info.version}, {info.cipher}")
    status = await client.done
    print(status.decode("ascii", "replace"))


if __name__ == "__main__":
    react(main, sys.argv[1:])
