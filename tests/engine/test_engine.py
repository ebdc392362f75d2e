"""The sans-IO engine: two engines back to back, no sockets, no reactor."""

from __future__ import annotations

import gc
import os
import random
import weakref
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests._pki import Leaf, pki
from tests._pump import EnginePair
from twistls._engine import (
    CloseNotifyReceived,
    Failed,
    HandshakeCompleted,
    PlaintextReceived,
    TLSEngine,
    Truncated,
)
from twistls.context import ClientContextFactory, ServerContextFactory
from twistls.errors import (
    CertificateExpiredError,
    ChainTooLongError,
    EngineStateError,
    HostnameMismatchError,
    NoPeerCertificateError,
    PeerAlertError,
    ProtocolVersionError,
    TLSError,
    UntrustedCertificateError,
)

MIB = 1 << 20


def _server(leaf: Leaf | None = None, **kw: Any) -> ServerContextFactory:
    leaf = leaf or pki().server
    return ServerContextFactory(leaf.cert, leaf.key, **kw)


def _client(hostname: str = "localhost", **kw: Any) -> ClientContextFactory:
    kw.setdefault("cafile", pki().cafile)
    return ClientContextFactory(hostname, **kw)


def _pair(server: ServerContextFactory | None = None, client: ClientContextFactory | None = None) -> EnginePair:
    return EnginePair((client or _client()).create_engine(), (server or _server()).create_engine())


def _kinds(events: list[Any]) -> list[type]:
    return [type(e) for e in events]


def _failure(events: list[Any]) -> TLSError:
    failed = [e for e in events if isinstance(e, Failed)]
    if len(failed) != 1:
        raise AssertionError(f"expected exactly one Failed event, got {events!r}")
    return failed[0].error


class HandshakeTests(SynchronousTestCase):
    """Handshakes between a client and a server engine."""

    def _handshake(self, version: str) -> EnginePair:
        pair = _pair(_server(minimum_version=version, maximum_version=version))
        pair.start()
        pair.pump()
        self.assertEqual(_kinds(pair.client_events), [HandshakeCompleted])
        self.assertEqual(_kinds(pair.server_events), [HandshakeCompleted])
        self.assertEqual(pair.client.version(), version)
        self.assertEqual(pair.server.version(), version)
        return pair

    def test_handshake_tls13(self) -> None:
        """A default client and a TLS 1.3 server complete a TLS 1.3 handshake."""
        pair = self._handshake("TLSv1.3")
        info = pair.client.info()
        self.assertTrue(info.verified)
        self.assertEqual(info.server_name, "localhost")
        self.assertEqual(info.peer_chain_der[0], pki().server.der)

    def test_handshake_tls12(self) -> None:
        """A default client and a TLS 1.2-only server complete a TLS 1.2 handshake with an AEAD cipher."""
        pair = self._handshake("TLSv1.2")
        cipher = pair.client.cipher()
        assert cipher is not None
        self.assertTrue(cipher[0].startswith("ECDHE-"), cipher)
        self.assertTrue("GCM" in cipher[0] or "CHACHA20" in cipher[0], cipher)

    def test_handshake_fails_without_common_version(self) -> None:
        """A client requiring TLS 1.3 and a TLS 1.2-only server both fail with ProtocolVersionError."""
        pair = _pair(_server(maximum_version="TLSv1.2"), _client(minimum_version="TLSv1.3"))
        pair.start()
        pair.pump()
        self.assertNotIn(HandshakeCompleted, _kinds(pair.client_events))
        self.assertIsInstance(_failure(pair.client_events), ProtocolVersionError)
        self.assertIsInstance(_failure(pair.server_events), ProtocolVersionError)

    def test_writes_before_handshake_are_buffered(self) -> None:
        """Plaintext sent before the handshake stays in the engine, then arrives after it in order."""
        pair = _pair()
        pair.client.send_plaintext(b"early ")
        pair.client.send_plaintext(b"bird")
        self.assertEqual(pair.client.pending_plaintext, 10)
        pair.start()
        hello = pair.client.bytes_to_send()
        self.assertNotIn(b"early", hello)
        pair.server_events += pair.server.receive_bytes(hello)
        pair.pump()
        self.assertEqual(_kinds(pair.server_events), [HandshakeCompleted, PlaintextReceived])
        self.assertEqual(pair.received("server"), b"early bird")
        self.assertEqual(pair.client.pending_plaintext, 0)

    def test_server_writes_before_handshake_are_buffered(self) -> None:
        """A server engine buffers plaintext queued before the handshake and the client receives it after HandshakeCompleted."""
        pair = _pair()
        pair.server.send_plaintext(b"greeting")
        pair.start()
        pair.pump()
        self.assertEqual(_kinds(pair.client_events)[0], HandshakeCompleted)
        self.assertEqual(pair.received("client"), b"greeting")

    def test_start_twice_raises(self) -> None:
        """Starting a handshake twice raises EngineStateError."""
        engine = _client().create_engine()
        engine.start()
        self.assertRaises(EngineStateError, engine.start)
        engine.free()


class DataTests(SynchronousTestCase):
    """Application data through established engines."""

    def test_16mib_each_way(self) -> None:
        """16 MiB in each direction arrive intact and in order."""
        pair = _pair().start()
        pair.pump()
        up = os.urandom(16 * MIB)
        down = os.urandom(16 * MIB)
        pair.client.send_plaintext(up)
        pair.server.send_plaintext(down)
        pair.pump(rounds=10_000)
        self.assertEqual(pair.received("server"), up)
        self.assertEqual(pair.received("client"), down)
        self.assertNotIn(Failed, _kinds(pair.client_events) + _kinds(pair.server_events))

    def test_tampered_record_fails(self) -> None:
        """Flipping one ciphertext bit of a bulk transfer ends in a Failed event, not corrupt plaintext."""
        pair = _pair().start()
        pair.pump()
        pair.client.send_plaintext(os.urandom(MIB))
        wire = bytearray(pair.client.bytes_to_send())
        wire[len(wire) // 2] ^= 0x01
        events = pair.server.receive_bytes(bytes(wire))
        self.assertIsInstance(_failure(events), TLSError)
        self.assertLess(sum(len(e.data) for e in events if isinstance(e, PlaintextReceived)), MIB)


class CloseTests(SynchronousTestCase):
    """close_notify and truncation."""

    def _closes(self, initiator: str) -> None:
        pair = _pair().start()
        pair.pump()
        first = getattr(pair, initiator)
        other_name = "server" if initiator == "client" else "client"
        other = getattr(pair, other_name)
        first.send_plaintext(b"last words")
        first.close()
        pair.pump()
        other_events = getattr(pair, other_name + "_events")
        self.assertEqual(_kinds(other_events)[-2:], [PlaintextReceived, CloseNotifyReceived])
        self.assertEqual(pair.received(other_name), b"last words")
        self.assertTrue(other.peer_closed)
        other.close()  # the answer
        pair.pump()
        self.assertEqual(_kinds(getattr(pair, initiator + "_events"))[-1], CloseNotifyReceived)
        self.assertTrue(first.peer_closed)

    def test_client_initiated_close_notify(self) -> None:
        """The client's close_notify reaches the server after its data, and the server's answer reaches the client."""
        self._closes("client")

    def test_server_initiated_close_notify(self) -> None:
        """The server's close_notify reaches the client after its data, and the client's answer reaches the server."""
        self._closes("server")

    def test_close_is_idempotent(self) -> None:
        """Calling close() twice sends one close_notify."""
        pair = _pair().start()
        pair.pump()
        pair.client.close()
        once = pair.client.bytes_to_send()
        pair.client.close()
        self.assertEqual(pair.client.bytes_to_send(), b"")
        self.assertTrue(once)

    def test_truncation_reported(self) -> None:
        """EOF after the handshake without close_notify gives Truncated, after the data that came before it."""
        pair = _pair().start()
        pair.pump()
        pair.server.send_plaintext(b"partial")
        events = pair.client.receive_bytes(pair.server.bytes_to_send())
        events += pair.client.receive_bytes(b"")
        self.assertEqual(_kinds(events), [PlaintextReceived, Truncated])
        self.assertEqual(events[0].data, b"partial")
        self.assertFalse(pair.client.peer_closed)

    def test_truncation_mid_record(self) -> None:
        """EOF in the middle of a record gives Truncated and never the partial record's plaintext."""
        pair = _pair().start()
        pair.pump()
        pair.server.send_plaintext(b"x" * 1000)
        wire = pair.server.bytes_to_send()
        events = pair.client.receive_bytes(wire[:100]) + pair.client.receive_bytes(b"")
        self.assertEqual(_kinds(events), [Truncated])

    def test_clean_close_is_not_truncation(self) -> None:
        """EOF after close_notify is a clean close, never Truncated."""
        pair = _pair().start()
        pair.pump()
        pair.server.close()
        events = pair.client.receive_bytes(pair.server.bytes_to_send()) + pair.client.receive_bytes(b"")
        self.assertEqual(_kinds(events), [CloseNotifyReceived])

    def test_eof_during_handshake_fails(self) -> None:
        """EOF before the handshake finished is a Failed event, not Truncated."""
        pair = _pair().start()
        events = pair.client.receive_bytes(b"")
        self.assertIsInstance(_failure(events), TLSError)


class GarbageTests(SynchronousTestCase):
    """Malformed input produces a Failed event, never an exception or a hang."""

    def _feed(self, engine: TLSEngine, chunks: list[bytes]) -> list[Any]:
        events: list[Any] = []
        for chunk in chunks:
            events += engine.receive_bytes(chunk)  # must not raise
            engine.bytes_to_send()
        return events

    def test_random_garbage_to_server(self) -> None:
        """Random bytes sent to a server engine give one Failed event."""
        rng = random.Random(1)
        for _ in range(20):
            engine = _server().create_engine()
            blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000)))
            events = self._feed(engine, [blob, b""])
            error = _failure(events)
            self.assertIsInstance(error, TLSError)
            self.assertNotIsInstance(error, ProtocolVersionError)  # garbage is not a version disagreement
            self.assertTrue(engine.failed)
            engine.free()

    def test_random_garbage_to_client(self) -> None:
        """Random bytes answering a ClientHello give the client one Failed event."""
        rng = random.Random(2)
        for _ in range(20):
            engine = _client().create_engine()
            engine.start()
            engine.bytes_to_send()
            blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000)))
            events = self._feed(engine, [blob, b""])
            self.assertIsInstance(_failure(events), TLSError)
            engine.free()

    def test_garbage_after_handshake(self) -> None:
        """Random bytes after an established handshake give a Failed event and no plaintext."""
        pair = _pair().start()
        pair.pump()
        events = self._feed(pair.server, [os.urandom(3000)])
        self.assertIsInstance(_failure(events), TLSError)
        self.assertNotIn(PlaintextReceived, _kinds(events))

    def test_plain_http_to_server(self) -> None:
        """An HTTP request sent to a server engine gives a Failed event."""
        engine = _server().create_engine()
        events = self._feed(engine, [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"])
        error = _failure(events)
        self.assertIsInstance(error, TLSError)
        self.assertIn("does not speak TLS", str(error))

    def test_ssh_banner_to_server(self) -> None:
        """An SSH banner sent to a server engine fails as 'does not speak TLS', not as a version mismatch."""
        engine = _server().create_engine()
        error = _failure(self._feed(engine, [b"SSH-2.0-OpenSSH_9.2\r\n", b""]))
        self.assertNotIsInstance(error, ProtocolVersionError)
        self.assertIn("does not speak TLS", str(error))

    def test_truncated_client_hello_then_eof(self) -> None:
        """Half a ClientHello followed by EOF gives the server one Failed event."""
        client = _client().create_engine()
        client.start()
        hello = client.bytes_to_send()
        server = _server().create_engine()
        self.assertEqual(server.receive_bytes(hello[: len(hello) // 2]), [])
        events = server.receive_bytes(b"")
        self.assertIsInstance(_failure(events), TLSError)
        self.assertTrue(server.failed)

    def test_complete_client_hello_then_more(self) -> None:
        """A whole ClientHello (the success twin of the truncated one) gets a ServerHello and no failure."""
        client = _client().create_engine()
        client.start()
        server = _server().create_engine()
        self.assertEqual(server.receive_bytes(client.bytes_to_send()), [])
        self.assertTrue(server.bytes_to_send())
        self.assertFalse(server.failed)

    def test_input_after_failure_is_ignored(self) -> None:
        """Bytes fed to a failed engine produce no further events."""
        engine = _server().create_engine()
        self._feed(engine, [b"\x00" * 64])
        self.assertTrue(engine.failed)
        self.assertEqual(engine.receive_bytes(b"more"), [])
        self.assertEqual(engine.receive_bytes(b""), [])


class StateTests(SynchronousTestCase):
    """Misuse of a finished engine and freeing."""

    def test_write_to_established_engine(self) -> None:
        """send_plaintext on an established engine puts bytes on the wire at once."""
        pair = _pair().start()
        pair.pump()
        pair.client.send_plaintext(b"x")
        self.assertTrue(pair.client.bytes_to_send())

    def test_write_to_failed_engine_raises(self) -> None:
        """send_plaintext on a failed engine raises EngineStateError."""
        engine = _server().create_engine()
        engine.receive_bytes(b"\x16\x03\x01\x00\x05hello")
        engine.receive_bytes(b"")
        self.assertTrue(engine.failed)
        self.assertRaises(EngineStateError, engine.send_plaintext, b"x")

    def test_write_after_close_raises(self) -> None:
        """send_plaintext after close() raises EngineStateError."""
        pair = _pair().start()
        pair.pump()
        pair.client.close()
        self.assertRaises(EngineStateError, pair.client.send_plaintext, b"x")

    def test_write_after_peer_closed_raises(self) -> None:
        """send_plaintext after the peer's close_notify raises EngineStateError."""
        pair = _pair().start()
        pair.pump()
        pair.server.close()
        pair.pump()
        self.assertRaises(EngineStateError, pair.client.send_plaintext, b"x")

    def test_write_after_close_before_handshake_raises(self) -> None:
        """send_plaintext on an engine closed before its handshake raises EngineStateError."""
        engine = _client().create_engine()
        engine.close()
        self.assertRaises(EngineStateError, engine.send_plaintext, b"x")
        self.assertEqual(engine.bytes_to_send(), b"")

    def test_free_is_idempotent(self) -> None:
        """free() releases the SSL object once; later calls and calls on the freed engine are harmless."""
        pair = _pair().start()
        pair.pump()
        for engine in (pair.client, pair.server):
            self.assertTrue(engine._finalizer.alive)
            engine.free()
            self.assertFalse(engine._finalizer.alive)
            engine.free()
            engine.close()  # must not touch the freed SSL object
            self.assertEqual(engine.receive_bytes(b"junk"), [])
            self.assertEqual(engine.bytes_to_send(), b"")
            self.assertRaises(EngineStateError, engine.send_plaintext, b"x")

    def test_unfreed_engine_is_freed_when_collected(self) -> None:
        """An engine dropped without free() releases its SSL object when garbage collected."""
        engine = _client().create_engine()
        engine.start()
        finalizer = engine._finalizer
        ref = weakref.ref(engine)
        del engine
        gc.collect()
        self.assertIsNone(ref())
        self.assertFalse(finalizer.alive)


class VerificationTests(SynchronousTestCase):
    """Certificate verification failures, each with its specific error type."""

    def _rejected(self, server: ServerContextFactory, client: ClientContextFactory) -> tuple[TLSError, EnginePair]:
        pair = _pair(server, client)
        pair.client.send_plaintext(b"SECRET")
        pair.start()
        pair.pump()
        self.assertNotIn(HandshakeCompleted, _kinds(pair.client_events))
        self.assertEqual(pair.received("server"), b"")
        return _failure(pair.client_events), pair

    def test_trusted_ca_accepted(self) -> None:
        """A certificate from the configured CA is accepted and early plaintext reaches the server."""
        pair = _pair()
        pair.client.send_plaintext(b"SECRET")
        pair.start()
        pair.pump()
        self.assertEqual(pair.received("server"), b"SECRET")

    def test_untrusted_ca(self) -> None:
        """A certificate from an unknown CA fails with UntrustedCertificateError at depth 0."""
        error, pair = self._rejected(_server(pki().untrusted_server), _client())
        self.assertIsInstance(error, UntrustedCertificateError)
        self.assertEqual(error.depth, 0)
        self.assertIsNotNone(error.verify_code)
        self.assertIn("depth 0", str(error))
        server_error = _failure(pair.server_events)  # the client's alert reached the server
        self.assertIsInstance(server_error, PeerAlertError)
        self.assertEqual(server_error.alert, "unknown ca")

    def test_expired(self) -> None:
        """An expired certificate fails with CertificateExpiredError."""
        error, _ = self._rejected(_server(pki().expired_server), _client())
        self.assertIsInstance(error, CertificateExpiredError)
        self.assertEqual(error.verify_code, 10)
        self.assertEqual(error.depth, 0)

    def test_not_yet_valid(self) -> None:
        """A certificate valid only from tomorrow fails with CertificateNotYetValidError."""
        import datetime

        from twistls.errors import CertificateNotYetValidError

        now = datetime.datetime.now(datetime.timezone.utc)
        leaf = pki().leaf(
            "future", pki().ca, "localhost", not_before=now + datetime.timedelta(days=1), not_after=now + datetime.timedelta(days=30)
        )
        error, _ = self._rejected(_server(leaf), _client())
        self.assertIsInstance(error, CertificateNotYetValidError)
        self.assertEqual(error.verify_code, 9)

    def test_wrong_host(self) -> None:
        """A valid certificate for another name fails with HostnameMismatchError and early plaintext never reaches the server."""
        error, pair = self._rejected(_server(), _client("wrong.example"))
        self.assertIsInstance(error, HostnameMismatchError)
        self.assertEqual(error.hostname, "wrong.example")
        self.assertIn("DNS:localhost", str(error))
        pair.server_events += pair.server.receive_bytes(b"")
        self.assertEqual(pair.received("server"), b"")
        self.assertNotIn(HandshakeCompleted, _kinds(pair.server_events))

    def test_wrong_host_tls12(self) -> None:
        """Over TLS 1.2 too a hostname mismatch never lets early plaintext reach the server."""
        error, pair = self._rejected(_server(maximum_version="TLSv1.2"), _client("wrong.example"))
        self.assertIsInstance(error, HostnameMismatchError)

    def test_intermediate_chain_accepted(self) -> None:
        """A leaf sent with its intermediate verifies against the root."""
        pair = _pair(_server(pki().chained_server)).start()
        pair.pump()
        self.assertEqual(_kinds(pair.client_events), [HandshakeCompleted])
        self.assertEqual(len(pair.client.peer_chain_der()), 2)

    def test_missing_intermediate(self) -> None:
        """A leaf sent without its intermediate fails with UntrustedCertificateError."""
        error, _ = self._rejected(_server(pki().missing_intermediate_server), _client())
        self.assertIsInstance(error, UntrustedCertificateError)
        self.assertEqual(error.verify_code, 20)  # unable to get local issuer certificate

    def test_chain_within_depth_accepted(self) -> None:
        """A leaf under three intermediates verifies with verify_depth=3."""
        pair = _pair(_server(pki().deep_server), _client(verify_depth=3)).start()
        pair.pump()
        self.assertEqual(_kinds(pair.client_events), [HandshakeCompleted])

    def test_chain_too_long(self) -> None:
        """A leaf under three intermediates fails with ChainTooLongError at verify_depth 1 and 2."""
        for depth in (1, 2):
            error, pair = self._rejected(_server(pki().deep_server), _client(verify_depth=depth))
            self.assertIsInstance(error, ChainTooLongError)
            self.assertEqual(error.verify_code, 22)  # X509_V_ERR_CERT_CHAIN_TOO_LONG
            self.assertEqual(error.depth, depth + 1)
            self.assertIsInstance(_failure(pair.server_events), TLSError)

    def test_verifier_bug_fails_closed(self) -> None:
        """A verifier raising something other than TLSError gives a Failed event, not an exception, and withholds early plaintext."""

        def broken(peer_chain: object, verified_chain: object) -> None:
            raise KeyError("bug")

        client = TLSEngine(_client()._handle, client=True, server_hostname="localhost", verifier=broken)
        pair = EnginePair(client, _server().create_engine())
        pair.client.send_plaintext(b"SECRET")
        pair.start()
        pair.pump()
        error = _failure(pair.client_events)
        self.assertIsInstance(error, TLSError)
        self.assertIsInstance(error.__cause__, KeyError)
        self.assertEqual(pair.received("server"), b"")

    def test_mtls_client_certificate_accepted(self) -> None:
        """A server requiring client certificates accepts a client presenting one from its CA."""
        p = pki()
        server = _server(client_cafile=p.cafile)
        pair = _pair(server, _client(certificate=p.client.cert, private_key=p.client.key))
        pair.client.send_plaintext(b"hi")
        pair.start()
        pair.pump()
        self.assertEqual(_kinds(pair.server_events), [HandshakeCompleted, PlaintextReceived])
        self.assertEqual(pair.server.peer_chain_der()[0], p.client.der)

    def test_mtls_without_client_certificate(self) -> None:
        """A server requiring client certificates fails with NoPeerCertificateError when the client has none, and gets no data."""
        pair = _pair(_server(client_cafile=pki().cafile), _client())
        pair.client.send_plaintext(b"SECRET")
        pair.start()
        pair.pump()
        error = _failure(pair.server_events)
        self.assertIsInstance(error, NoPeerCertificateError)
        self.assertNotIn(HandshakeCompleted, _kinds(pair.server_events))
        self.assertEqual(pair.received("server"), b"")
        self.assertIsInstance(_failure(pair.client_events), TLSError)

    def test_optional_client_certificate_absent(self) -> None:
        """With require_client_certificate=False a client without a certificate is served and the server sees no peer chain."""
        pair = _pair(_server(client_cafile=pki().cafile, require_client_certificate=False), _client())
        pair.client.send_plaintext(b"anonymous")
        pair.start()
        pair.pump()
        self.assertEqual(pair.received("server"), b"anonymous")
        self.assertEqual(pair.server.peer_chain_der(), [])
        self.assertFalse(pair.server.info().peer_chain_der)

    def test_optional_client_certificate_untrusted(self) -> None:
        """With require_client_certificate=False an untrusted client certificate is still refused with UntrustedCertificateError."""
        p = pki()
        pair = _pair(
            _server(client_cafile=p.cafile, require_client_certificate=False),
            _client(certificate=p.untrusted_server.cert, private_key=p.untrusted_server.key),
        )
        pair.client.send_plaintext(b"SECRET")
        pair.start()
        pair.pump()
        self.assertIsInstance(_failure(pair.server_events), UntrustedCertificateError)
        self.assertEqual(pair.received("server"), b"")

    def test_mtls_untrusted_client_certificate(self) -> None:
        """A client certificate from an unknown CA makes the server fail with UntrustedCertificateError."""
        p = pki()
        pair = _pair(
            _server(client_cafile=p.cafile),
            _client(certificate=p.untrusted_server.cert, private_key=p.untrusted_server.key),
        )
        pair.start()
        pair.pump()
        self.assertIsInstance(_failure(pair.server_events), UntrustedCertificateError)


def _split_pump(pair: EnginePair, sizes: list[int], max_rounds: int = 5000) -> None:
    """Move bytes between the engines, delivering each direction in pieces
    whose sizes cycle through ``sizes``."""
    pending = {"c2s": b"", "s2c": b""}
    index = {"c2s": 0, "s2c": 0}
    for _ in range(max_rounds):
        pending["c2s"] += pair.client.bytes_to_send()
        pending["s2c"] += pair.server.bytes_to_send()
        if not pending["c2s"] and not pending["s2c"]:
            return
        for key, engine, events in (
            ("c2s", pair.server, pair.server_events),
            ("s2c", pair.client, pair.client_events),
        ):
            if pending[key]:
                size = sizes[index[key] % len(sizes)]
                index[key] += 1
                piece, pending[key] = pending[key][:size], pending[key][size:]
                events += engine.receive_bytes(piece)
    raise AssertionError("the engines did not settle")


class FragmentationTests(SynchronousTestCase):
    """Arbitrary splits of the ciphertext stream (property-based)."""

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        sizes=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=8),
        writes=st.lists(st.binary(min_size=0, max_size=5000), min_size=1, max_size=6),
        tls12=st.booleans(),
    )
    def test_arbitrary_splits_round_trip(self, sizes: list[int], writes: list[bytes], tls12: bool) -> None:
        """Whatever the ciphertext split points and write sizes, the handshake completes and plaintext round-trips."""
        server = _server(maximum_version="TLSv1.2") if tls12 else _server()
        pair = _pair(server)
        pair.client.send_plaintext(writes[0])  # before the handshake
        pair.start()
        for chunk in writes[1:]:
            pair.client.send_plaintext(chunk)
            _split_pump(pair, sizes)
        _split_pump(pair, sizes)
        self.assertEqual(_kinds(pair.client_events)[0], HandshakeCompleted)
        self.assertEqual(_kinds(pair.server_events)[0], HandshakeCompleted)
        self.assertEqual(pair.received("server"), b"".join(writes))
        for chunk in reversed(writes):
            pair.server.send_plaintext(chunk)
        _split_pump(pair, sizes)
        self.assertEqual(pair.received("client"), b"".join(reversed(writes)))
        self.assertNotIn(Failed, _kinds(pair.client_events) + _kinds(pair.server_events))

    @settings(max_examples=40, deadline=None)
    @given(cut=st.integers(min_value=0, max_value=20_000), tls12=st.booleans())
    def test_eof_anywhere_ends_cleanly(self, cut: int, tls12: bool) -> None:
        """An EOF after any prefix of the server's stream gives the client exactly one terminal event, never an exception, and plaintext that is a prefix of what was sent."""
        server = _server(maximum_version="TLSv1.2") if tls12 else _server()
        pair = _pair(server)
        payload = bytes(range(256)) * 40
        pair.server.send_plaintext(payload)
        pair.start()
        delivered = 0
        for _ in range(100):
            out = pair.client.bytes_to_send()
            if out:
                pair.server_events += pair.server.receive_bytes(out)
            if pair.server.handshake_done and not pair.server.peer_closed:
                pair.server.close()  # payload, then close_notify
            back = pair.server.bytes_to_send()[: max(0, cut - delivered)]
            if not back and not out:
                break
            delivered += len(back)
            if back:
                pair.client_events += pair.client.receive_bytes(back)
        pair.client_events += pair.client.receive_bytes(b"")
        kinds = _kinds(pair.client_events)
        terminal = [k for k in kinds if k in (Truncated, Failed, CloseNotifyReceived)]
        self.assertEqual(len(terminal), 1, pair.client_events)
        self.assertIn(kinds[-1], (Truncated, Failed, CloseNotifyReceived))
        data = pair.received("client")
        self.assertTrue(payload.startswith(data))
        if kinds[-1] is CloseNotifyReceived:
            self.assertEqual(data, payload)
        if HandshakeCompleted not in kinds:
            self.assertEqual(data, b"")
            self.assertIs(kinds[-1], Failed)

    @settings(max_examples=50, deadline=None)
    @given(chunks=st.lists(st.binary(min_size=0, max_size=600), min_size=1, max_size=5), client=st.booleans())
    def test_arbitrary_input_never_raises(self, chunks: list[bytes], client: bool) -> None:
        """Arbitrary bytes then EOF, fed to either role, end in exactly one Failed event and never raise."""
        engine = _client().create_engine() if client else _server().create_engine()
        if client:
            engine.start()
            engine.bytes_to_send()
        events: list[Any] = []
        for chunk in [*chunks, b""]:
            events += engine.receive_bytes(chunk)
            engine.bytes_to_send()
        self.assertEqual(_kinds(events), [Failed])
        self.assertIsInstance(events[0].error, TLSError)
        engine.free()

    @settings(max_examples=25, deadline=None)
    @given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
    def test_arbitrary_bit_flip_fails(self, position: int, bit: int) -> None:
        """Flipping any single bit of the ServerHello message makes the handshake fail, never complete."""
        pair = _pair()
        pair.start()
        pair.server.receive_bytes(pair.client.bytes_to_send())
        flight = bytearray(pair.server.bytes_to_send())
        # Only the first record's body: RFC 8446 has the record-layer version ignored.
        body_length = int.from_bytes(flight[3:5], "big")
        flight[5 + position % body_length] ^= 1 << bit
        events = pair.client.receive_bytes(bytes(flight))
        events += pair.client.receive_bytes(b"")
        self.assertNotIn(HandshakeCompleted, _kinds(events))
        self.assertIsInstance(_failure(events), TLSError)


def _case_files(testcase: SynchronousTestCase, name: str) -> tuple[Any, str, str, str]:
    """(case, chain file, anchors file, leaf key file) of a conformance case."""
    import shutil
    import tempfile

    from tests.conformance.cases import cases, leaf_key_pem

    case = next(c for c in cases() if c.name == name)
    d = tempfile.mkdtemp(prefix="twistls-reverify-")
    testcase.addCleanup(shutil.rmtree, d, True)
    paths = []
    for file_name, data in (("chain.pem", case.pem_chain()), ("anchors.pem", case.pem_anchors()), ("key.pem", leaf_key_pem())):
        path = os.path.join(d, file_name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        paths.append(path)
    return case, paths[0], paths[1], paths[2]


def _subjects(chain: list[bytes]) -> list[str]:
    from cryptography import x509

    return [x509.load_der_x509_certificate(der).subject.rfc4514_string() for der in chain]


class ReverificationTests(SynchronousTestCase):
    """Where OpenSSL's verification fails but another path (pyca's) or the
    same chain a second earlier (at exactly notAfter) is valid, OpenSSL
    verifies that again, and only then is the peer accepted, on that chain."""

    def _handshake(self, name: str, *, at: int | None = None, **client_kw: Any) -> EnginePair:
        from twistls import _openssl as ossl

        case, chain, anchors, key = _case_files(self, name)
        client = ClientContextFactory(case.host, cafile=anchors, session_cache_size=0, **client_kw)
        engine = client.create_engine()
        if at is not None:  # verify as of ``at``: OpenSSL's clock only (the Checker's is the real one)
            ossl.X509_VERIFY_PARAM_set_time(ossl.SSL_get0_param(engine.ssl_address), at)
        pair = EnginePair(engine, ServerContextFactory(chain, key).create_engine())
        pair.client.send_plaintext(b"SECRET")
        pair.start()
        pair.pump()
        return pair

    def test_alternate_path_is_reverified_and_becomes_the_verified_chain(self) -> None:
        """OpenSSL builds the path through the constraining root first and fails; pyca's path
        through the open root is verified again by OpenSSL and is the connection's verified chain."""
        pair = self._handshake("alternate-path-constrained-first")
        self.assertIn(HandshakeCompleted, _kinds(pair.client_events))
        self.assertEqual(pair.received("server"), b"SECRET")
        info = pair.client.info()
        self.assertEqual(info.verify_result, 0)
        self.assertTrue(info.verified)
        self.assertEqual(_subjects(list(info.verified_chain_der))[-1], "CN=Open Root,O=twistls conformance")
        self.assertEqual(pair.client.verified_chain_der(), list(info.verified_chain_der))

    def test_resumed_session_keeps_the_reverified_chain(self) -> None:
        """A session made on the re-verified path resumes, with that chain as its verified chain."""
        case, chain, anchors, key = _case_files(self, "alternate-path-constrained-first")
        client = ClientContextFactory(case.host, cafile=anchors)
        server = ServerContextFactory(chain, key)
        reused, chains = [], []
        for _ in range(3):
            pair = EnginePair(client.create_engine(("192.0.2.1", 443)), server.create_engine()).start()
            pair.pump()
            self.assertTrue(pair.client.handshake_done)
            pair.client.send_plaintext(b"x")  # reads the TLS 1.3 ticket
            pair.pump()
            info = pair.client.info()
            reused.append(info.session_reused)
            chains.append(_subjects(list(info.verified_chain_der))[-1])
        self.assertEqual(reused[1:], [True, True])
        self.assertEqual(set(chains), {"CN=Open Root,O=twistls conformance"})

    def test_alternate_path_is_not_taken_by_the_rfc5280_profile(self) -> None:
        """Without the strict profile there is no second path builder: OpenSSL's failure stands."""
        pair = self._handshake("alternate-path-constrained-first", pki_profile="rfc5280")
        self.assertNotIn(HandshakeCompleted, _kinds(pair.client_events))
        self.assertIn("excluded", str(_failure(pair.client_events)))
        self.assertEqual(pair.received("server"), b"")

    def test_pins_are_held_to_the_reverified_chain(self) -> None:
        """A pin on the open root (on the re-verified path) is met; one on the constraining
        root (only on the path OpenSSL refused) is not."""
        from twistls.checker import spki_sha256

        case, _, _, _ = _case_files(self, "alternate-path-constrained-first")
        by_subject = dict(zip(_subjects(list(case.anchors)), case.anchors))
        open_pin = spki_sha256(by_subject["CN=Open Root,O=twistls conformance"])
        closed_pin = spki_sha256(by_subject["CN=Constraining Root,O=twistls conformance"])
        pair = self._handshake("alternate-path-constrained-first", pins=[open_pin])
        self.assertIn(HandshakeCompleted, _kinds(pair.client_events))
        pair = self._handshake("alternate-path-constrained-first", pins=[closed_pin])
        self.assertNotIn(HandshakeCompleted, _kinds(pair.client_events))
        self.assertEqual(pair.received("server"), b"")

    def test_reverification_fails_closed(self) -> None:
        """An allocation failure while re-verifying is a refusal with OpenSSL's first error."""
        from twistls._libssl import chain

        def out_of_memory(*args: Any) -> None:
            raise MemoryError("simulated")

        self.patch(chain, "reverify", out_of_memory)
        pair = self._handshake("alternate-path-constrained-first")
        self.assertNotIn(HandshakeCompleted, _kinds(pair.client_events))
        self.assertIn("excluded", str(_failure(pair.client_events)))
        self.assertEqual(pair.received("server"), b"")

    def test_reverification_that_openssl_refuses_is_a_refusal(self) -> None:
        """If OpenSSL refuses pyca's path too, the first failure stands."""
        from twistls._libssl import chain

        self.patch(chain, "reverify", lambda *args: None)
        pair = self._handshake("alternate-path-constrained-first")
        self.assertNotIn(HandshakeCompleted, _kinds(pair.client_events))
        self.assertEqual(pair.received("server"), b"")

    def test_valid_at_exactly_not_after(self) -> None:
        """RFC 5280: a certificate is valid through its notAfter; both profiles accept at that second."""
        case, _, _, _ = _case_files(self, "at-not-after")
        for profile in ("strict", "rfc5280"):
            pair = self._handshake("at-not-after", at=int(case.at.timestamp()), pki_profile=profile)
            self.assertIn(HandshakeCompleted, _kinds(pair.client_events), profile)
            self.assertEqual(pair.client.info().verify_result, 0)
            self.assertEqual(pair.received("server"), b"SECRET")

    def test_expired_one_second_after_not_after(self) -> None:
        """One second after notAfter the certificate has expired, for both profiles."""
        case, _, _, _ = _case_files(self, "after-not-after")
        for profile in ("strict", "rfc5280"):
            pair = self._handshake("after-not-after", at=int(case.at.timestamp()), pki_profile=profile)
            self.assertNotIn(HandshakeCompleted, _kinds(pair.client_events), profile)
            self.assertIsInstance(_failure(pair.client_events), CertificateExpiredError)
            self.assertEqual(pair.received("server"), b"")

    def test_not_after_with_crl_checking_is_not_reverified(self) -> None:
        """With CRLs checked, the second-earlier re-verification is not tried (at t-1 OpenSSL might
        prefer an older CRL to one issued at t): refused live and by `twistls verify` alike."""
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization

        from tests.conformance.cases import _key
        from twistls._verify import verify_certificate

        case, chain, anchors, _ = _case_files(self, "at-not-after")
        issuer = x509.load_der_x509_certificate(case.intermediates[0])
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(case.at - datetime.timedelta(hours=1))
            .next_update(case.at + datetime.timedelta(days=30))
            .sign(_key("int"), hashes.SHA256())
        )
        crlfile = os.path.join(os.path.dirname(chain), "crl.pem")
        with open(crlfile, "wb") as f:
            f.write(crl.public_bytes(serialization.Encoding.PEM))
        pair = self._handshake("at-not-after", at=int(case.at.timestamp()), crlfile=crlfile)
        self.assertIsInstance(_failure(pair.client_events), CertificateExpiredError)
        self.assertEqual(pair.received("server"), b"")
        result = verify_certificate(chain, hostname=case.host, cafile=anchors, at=case.at, crlfile=crlfile)
        self.assertEqual([p.verify_code for p in result.problems][:1], [10])
        # The CRL itself is usable: one second earlier the same chain verifies.
        earlier = case.at - datetime.timedelta(seconds=1)
        self.assertTrue(verify_certificate(chain, hostname=case.host, cafile=anchors, at=earlier, crlfile=crlfile).accepted)
