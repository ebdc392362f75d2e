"""A twistls server in its own process, so tests can watch its RSS and fds.

    python tests/_hardening_server.py MODE CERT KEY [BYTES]

MODE ``echo``: echo everything (no producer of its own); an optional 4th
argument is the factory's ``profile`` (``modern``).
MODE ``push``: after the handshake, write BYTES bytes through a registered
streaming producer, then close.
Prints ``PORT <n>`` once listening; exits when stdin closes.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import protocol, reactor, stdio  # noqa: E402
from twisted.internet.interfaces import IHandshakeListener, IPushProducer  # noqa: E402
from zope.interface import implementer  # noqa: E402

from twistls import ServerContextFactory, TLSWrappingFactory  # noqa: E402

CHUNK = b"\xa5" * (1 << 16)


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


@implementer(IHandshakeListener, IPushProducer)
class Push(protocol.Protocol):
    total = 0

    def handshakeCompleted(self) -> None:
        self.left = self.total
        self.paused = False
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0:
            self.transport.write(CHUNK)
            self.left -= len(CHUNK)
        if self.left <= 0 and not self.paused:
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            self.left = -1

    def stopProducing(self) -> None:
        self.left = -1


class StdinWatch(protocol.Protocol):
    def connectionLost(self, reason: object) -> None:
        if reactor.running:
            reactor.stop()


def main() -> None:
    mode, cert, key = sys.argv[1:4]
    proto: type[protocol.Protocol] = Echo if mode == "echo" else Push
    if mode == "push":
        Push.total = int(sys.argv[4])
    profile = sys.argv[4] if mode == "echo" and len(sys.argv) > 4 else "intermediate"
    factory = protocol.Factory.forProtocol(proto)
    port = reactor.listenTCP(
        0,
        TLSWrappingFactory(factory, ServerContextFactory(cert, key, profile=profile)),
        interface="127.0.0.1",
        backlog=256,
    )
    stdio.StandardIO(StdinWatch())
    sys.stdout.write(f"PORT {port.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
