"""Writes within one reactor turn leave as one TLS record and one send (issue 14, item 7)."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests._iopump import connect
from tests._pki import pki
from twistls.context import ClientContextFactory, ServerContextFactory
from twistls.protocol import TLSWrappingFactory


def records(wire: bytes) -> list[tuple[int, int]]:
    """(content type, length) of each TLS record in ``wire``."""
    out, i = [], 0
    while i + 5 <= len(wire):
        kind, length = wire[i], int.from_bytes(wire[i + 3 : i + 5], "big")
        out.append((kind, length))
        i += 5 + length
    return out


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"hello, world\n" * 20


class _Client(Protocol):
    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class _Producing(Protocol):
    """Registers itself as a streaming producer (as twisted.web's HTTPChannel
    does) and answers each line with three writes."""

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"header: 1\r\n")
        self.transport.writeSequence([b"header: 2\r\n", b"\r\n"])
        self.transport.write(b"body")

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class CoalescingTests(SynchronousTestCase):
    """What a protocol writes in one turn costs one record and one send."""

    def _serve(self, server_factory: Any) -> tuple[Any, _Client, Clock]:
        p = pki()
        clock = Clock()
        client = _Client()
        client_factory = TLSWrappingFactory(
            Factory.forProtocol(lambda: client), ClientContextFactory("localhost", cafile=p.cafile), clock=clock
        )
        server = TLSWrappingFactory(server_factory, ServerContextFactory(p.server.cert, p.server.key), clock=clock)
        pump = connect(client_factory, server, clock)
        return pump, client, clock

    def _answer(self, pump: Any, request: bytes) -> list[tuple[int, int]]:
        """Send ``request`` from the client; the server's records and sends in answer."""
        pump.client.protocol.write(request)
        pump.server.written.clear()
        before = len(pump.server.written)
        pump.flush()
        sends = pump.server.written[before:]
        self.sends = len(sends)
        return records(b"".join(sends))

    def test_twisted_web_answer_is_one_record(self) -> None:
        """twisted.web (a streaming producer on its transport) answers a GET in one record and one send."""
        # The channel's idle timer on a Clock, not on the global reactor (which
        # a later reactor test would find dirty).
        pump, client, _ = self._serve(Site(_Hello(), reactor=Clock()))
        found = self._answer(pump, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertIn(b"hello, world", client.data)
        self.assertEqual(len(found), 1, found)
        self.assertEqual(self.sends, 1)

    def test_producer_writes_in_one_turn_are_one_record(self) -> None:
        """Three writes (one a writeSequence) in one dataReceived of a producing protocol leave as one record."""
        pump, client, _ = self._serve(Factory.forProtocol(_Producing))
        found = self._answer(pump, b"x")
        self.assertEqual(client.data, b"header: 1\r\nheader: 2\r\n\r\nbody")
        self.assertEqual(len(found), 1, found)
        self.assertEqual(self.sends, 1)
