"""Record framing: the engine tells a stream cut inside a TLS record from one
that ended between records (no sockets)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests._pki import pki
from tests._pump import EnginePair
from twistls import ClientContextFactory, ServerContextFactory
from twistls._events import Truncated
from twistls._framing import RecordFraming


class RecordFramingTests(SynchronousTestCase):
    """Following the 5-byte record headers over arbitrary segments."""

    def framed(self, *segments: bytes) -> tuple[int, bytes]:
        framing = RecordFraming()
        for segment in segments:
            framing.feed(segment)
        return framing.left, framing.head

    def test_whole_records_in_any_segments_end_between_records(self) -> None:
        """Complete records end at a boundary however the segments cut them (headers included)."""
        stream = b"\x17\x03\x03\x00\x03abc" + b"\x15\x03\x03\x00\x00" + b"\x17\x03\x03\x01\x00" + b"x" * 256
        for cut in range(len(stream) + 1):
            self.assertEqual(self.framed(stream[:cut], stream[cut:]), (0, b""), cut)
        self.assertEqual(self.framed(*[stream[i : i + 1] for i in range(len(stream))]), (0, b""))

    def test_cut_record_or_header_is_seen(self) -> None:
        """A stream that ends inside a record body or header is not at a boundary."""
        self.assertEqual(self.framed(b"\x17\x03\x03\x00\x03ab"), (1, b""))
        self.assertEqual(self.framed(b"\x17\x03\x03\x00\x03abc\x17\x03"), (0, b"\x17\x03"))


class TruncatedEventTests(SynchronousTestCase):
    """The engine's Truncated event says where the stream stopped."""

    def _established(self) -> EnginePair:
        p = pki()
        pair = EnginePair(
            ClientContextFactory("localhost", cafile=p.cafile).create_engine(),
            ServerContextFactory(p.server.cert, p.server.key).create_engine(),
        ).start()
        pair.pump()
        self.assertTrue(pair.server.handshake_done)
        return pair

    def _truncation(self, pair: EnginePair, sent: bytes) -> Truncated:
        events = pair.server.receive_bytes(sent) if sent else []
        events += pair.server.receive_bytes(b"")
        found = [e for e in events if isinstance(e, Truncated)]
        self.assertEqual(len(found), 1, events)
        return found[0]

    def test_end_between_records(self) -> None:
        """A whole record, then the end of the stream: not mid-record."""
        pair = self._established()
        pair.client.send_plaintext(b"goodbye")
        self.assertFalse(self._truncation(pair, pair.client.bytes_to_send()).mid_record)

    def test_end_inside_a_record(self) -> None:
        """The twin: a record cut short, then the end: mid-record."""
        pair = self._established()
        pair.client.send_plaintext(b"a message cut in two")
        record = pair.client.bytes_to_send()
        self.assertTrue(self._truncation(pair, record[: len(record) // 2]).mid_record)
