"""Fuzzing the sans-IO engine: arbitrary and mutated records into client and
server engines.  No exception escapes, nothing hangs, nothing crashes; a
failure is always a ``Failed`` event carrying a TLSError, after which the
engine ignores input.

The suite runs a bounded budget (well under a minute).  For long runs::

    TWISTLS_FUZZ_EXAMPLES=200000 .venv/bin/python -m pytest -q tests/engine/test_fuzz.py

(examples per target; add ``-p no:randomly --hypothesis-seed=N`` to
reproduce, and ``--hypothesis-show-statistics`` for timings).
"""

from __future__ import annotations

import functools
import os
import unittest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twistls import ClientContextFactory, ServerContextFactory, TLSError
from twistls._engine import Failed, HandshakeCompleted, PlaintextReceived, TLSEngine
from tests._pki import pki
from tests._pump import EnginePair

EXAMPLES = int(os.environ.get("TWISTLS_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=5000,  # ms per example: a hang fails the test
    suppress_health_check=list(HealthCheck),
    derandomize=EXAMPLES <= 1000,  # the suite's short run is reproducible
    database=None,
)


@functools.lru_cache(maxsize=None)
def factories(version: str) -> tuple[ClientContextFactory, ServerContextFactory]:
    p = pki()
    client = ClientContextFactory("localhost", cafile=p.cafile, maximum_version=version)
    server = ServerContextFactory(p.server.cert, p.server.key, maximum_version=version)
    return client, server


class Transcript:
    """A real handshake plus one data record each way, as wire flights."""

    def __init__(self, version: str) -> None:
        client_cf, server_cf = factories(version)
        client, server = client_cf.create_engine(), server_cf.create_engine()
        client.start()
        self.to_server: list[bytes] = []
        self.to_client: list[bytes] = []
        for _ in range(10):
            out = client.bytes_to_send()
            if out:
                self.to_server.append(out)
                server.receive_bytes(out)
            back = server.bytes_to_send()
            if back:
                self.to_client.append(back)
                client.receive_bytes(back)
            if not out and not back:
                break
        assert client.handshake_done and server.handshake_done
        client.send_plaintext(b"client data" * 50)
        self.to_server.append(client.bytes_to_send())
        server.send_plaintext(b"server data" * 50)
        self.to_client.append(server.bytes_to_send())
        client.close()
        self.to_server.append(client.bytes_to_send())
        client.free()
        server.free()


@functools.lru_cache(maxsize=None)
def transcript(version: str) -> Transcript:
    return Transcript(version)


def mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) mutations: flip, set, insert, delete,
    truncate, duplicate a slice, or rewrite a record-length byte."""
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            buf.append(value & 0xFF)
            continue
        i = pos % len(buf)
        kind %= 7
        if kind == 0:
            buf[i] ^= 1 << (value % 8)
        elif kind == 1:
            buf[i] = value & 0xFF
        elif kind == 2:
            buf[i:i] = bytes([value & 0xFF]) * (1 + value % 7)
        elif kind == 3:
            del buf[i : i + 1 + value % 16]
        elif kind == 4:
            del buf[i:]
        elif kind == 5:
            buf[i:i] = buf[i : i + 1 + value % 64]
        else:  # a record header length byte (offset 3 or 4 of a header-ish spot)
            j = (i - i % 5) + 3 + value % 2
            if j < len(buf):
                buf[j] = value & 0xFF
    return bytes(buf)


def feed(engine: TLSEngine, chunks: list[bytes]) -> list[object]:
    """Feed chunks (then EOF); check the engine's contract on each call."""
    events: list[object] = []
    failed = False
    for chunk in [*chunks, b""]:
        got = engine.receive_bytes(chunk)
        engine.bytes_to_send()
        if failed:
            assert got == [], got  # nothing after a failure
        for event in got:
            if isinstance(event, Failed):
                assert isinstance(event.error, TLSError), event
                assert str(event.error) and "\n" not in str(event.error)
                failed = True
            elif isinstance(event, PlaintextReceived):
                # Only after an accepted handshake; a failure later in the same
                # call (a good record, then a forged one) clears handshake_done.
                assert engine._established_once
        events += got
        if not chunk:
            break
    return events


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return [p for p in pieces if p]


mutations = st.lists(st.tuples(st.integers(0, 6), st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8)
cuts = st.lists(st.integers(0, 1 << 16), max_size=6)
versions = st.sampled_from(["TLSv1.3", "TLSv1.2"])


class EngineFuzzTests(unittest.TestCase):
    """Engines survive arbitrary and mutated input."""

    @FUZZ
    @given(data=st.binary(max_size=4096), cuts=cuts, client=st.booleans())
    def test_arbitrary_bytes(self, data: bytes, cuts: list[int], client: bool) -> None:
        """Random bytes, split anywhere, into a fresh client or server engine."""
        client_cf, server_cf = factories("TLSv1.3")
        engine = client_cf.create_engine() if client else server_cf.create_engine()
        try:
            if client:
                engine.start()
                engine.bytes_to_send()
            feed(engine, split(data, cuts))
        finally:
            engine.free()

    @FUZZ
    @given(version=versions, flight=st.integers(0, 3), ops=mutations, cuts=cuts)
    def test_mutated_client_flights_into_server(self, version, flight, ops, cuts) -> None:
        """A real client's flights with one mutated, replayed into a server engine."""
        t = transcript(version)
        flights = list(t.to_server)
        k = flight % len(flights)
        flights[k] = mutate(flights[k], ops)
        _, server_cf = factories(version)
        server = server_cf.create_engine()
        try:
            feed(server, [piece for f in flights for piece in split(f, cuts)])
        finally:
            server.free()

    @FUZZ
    @given(version=versions, flight=st.integers(0, 3), ops=mutations, cuts=cuts)
    def test_mutated_server_flights_into_client(self, version, flight, ops, cuts) -> None:
        """Mutated server flights into a live client engine: it fails cleanly or completes."""
        t = transcript(version)
        client_cf, _ = factories(version)
        client = client_cf.create_engine()
        try:
            client.start()
            client.bytes_to_send()
            flights = list(t.to_client)
            k = flight % len(flights)
            flights[k] = mutate(flights[k], ops)
            events = feed(client, [piece for f in flights for piece in split(f, cuts)])
            # A replayed transcript never authenticates to a new client (fresh randoms).
            self.assertFalse(any(isinstance(e, HandshakeCompleted) for e in events))
        finally:
            client.free()

    @FUZZ
    @given(version=versions, ops=mutations, cuts=cuts, garbage=st.binary(max_size=512))
    def test_mutated_records_after_handshake(self, version, ops, cuts, garbage) -> None:
        """Established engines fed mutated data records and garbage both ways."""
        client_cf, server_cf = factories(version)
        pair = EnginePair(client_cf.create_engine(), server_cf.create_engine()).start()
        try:
            pair.pump()
            self.assertTrue(pair.client.handshake_done)
            pair.client.send_plaintext(b"x" * 3000)
            record = pair.client.bytes_to_send()
            feed(pair.server, split(mutate(record, ops), cuts) + [garbage])
            pair.server.send_plaintext(b"y" * 100) if not pair.server.failed and not pair.server.peer_closed else None
            feed(pair.client, split(mutate(pair.server.bytes_to_send() or garbage, ops), cuts))
        except Exception as exc:  # EngineStateError from send after close is a local misuse, not a fuzz finding
            from twistls import EngineStateError

            if not isinstance(exc, EngineStateError):
                raise
        finally:
            pair.client.free()
            pair.server.free()
