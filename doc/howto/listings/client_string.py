"""The same client with an endpoint string: every Twisted API that takes a
client endpoint string now speaks verified TLS.

Run:  python client_string.py [HOST [PORT [CAFILE]]]
"""

import sys

from twisted.internet import defer, protocol
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import react


def quote(value):
    """Escape a value for an endpoint string (':' and '=' and '\\')."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


class FirstLine(protocol.Protocol):
    def __init__(self, host):
        self.host = host
        self.received = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self.transport.write(f"HEAD / HTTP/1.0\r\nHost: {self.host}\r\n\r\n".encode("ascii"))

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.done.callback(self.received.split(b"\r\n", 1)[0])


async def main(reactor, host="example.com", port="443", cafile=None):
    description = f"twistls:host={quote(host)}:port={port}"
    if cafile:
        description += f":caFile={quote(cafile)}"
    client = FirstLine(host)
    endpoint = clientFromString(reactor, description)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    print(f"connected with {description.split(':caFile')[0]}")
    status = await client.done
    print(status.decode("ascii", "replace"))


if __name__ == "__main__":
    react(main, sys.argv[1:])
