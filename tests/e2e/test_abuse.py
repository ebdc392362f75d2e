"""Garbage and protocol abuse against a twistls server over 127.0.0.1.

Every attack ends only the attacker's connection, with a typed
:class:`~twistls.errors.TLSError` passed to the wrapped protocol and one log
line without a traceback; a well-behaved client is served right after.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from twistls import (
    ClientContextFactory,
    ConnectionTruncatedError,
    PeerAlertError,
    ProtocolVersionError,
    ProtocolViolationError,
    ServerContextFactory,
    TLSError,
)
from twistls import _openssl as _ossl
from tests._e2e import Collector, connect_tls
from tests._hardening import (
    KEY_UPDATE_REQUESTED,
    EngineClient,
    LogCapture,
    Raw,
    SSL_key_update,
    SSL_renegotiate,
    connect_raw,
    listen,
    record,
    within,
)
from tests._pki import pki

HANDSHAKE, APPLICATION_DATA = 22, 23


def client_hello(version: int, record_version: int | None = None) -> bytes:
    """A minimal ClientHello offering only ``version`` (pre-TLS 1.3 style)."""
    body = (
        version.to_bytes(2, "big")
        + os.urandom(32)
        + b"\x00"  # no session id
        + b"\x00\x04\x00\x2f\x00\x35"  # AES128-SHA, AES256-SHA
        + b"\x01\x00"  # null compression
    )
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return record(HANDSHAKE, record_version or version, message)


# An SSLv2-format CLIENT-HELLO (2-byte header with the high bit set).
SSLV2_HELLO = (
    b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10"
    + bytes.fromhex("0700c0050080030080010080080080060040040080020080")[:21]
    + os.urandom(16)
)


class AbuseTests(TestCase):
    """Hostile peers get a typed, logged, traceback-free end; the server goes on."""

    timeout = 30

    def setUp(self) -> None:
        p = pki()
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        self.port, self.factory = listen(self, ServerContextFactory(p.server.cert, p.server.key))

    def client_cf(self, **kw: object) -> ClientContextFactory:
        return ClientContextFactory("localhost", cafile=pki().cafile, **kw)  # type: ignore[arg-type]

    @defer.inlineCallbacks
    def assert_served(self):
        """A good client completes a handshake and an echo."""
        payload = os.urandom(1000)
        client = Collector(payload, expect=len(payload))
        connect_tls(self.client_cf(), self.port, client)
        data, _ = yield within(client.done, 10, "good client")
        self.assertEqual(data, payload)

    @defer.inlineCallbacks
    def assert_ended(self, error_type: type, fragment: str | None = None, *, logged: bool = True):
        """The attacker's server connection ended with ``error_type``, logged
        once in one line without a traceback, and the server still serves."""
        yield within(self.factory.made[0].lost, 10, "attacked connection end") if self.factory.made else None
        self.assertEqual(len(self.factory.made), 1, "exactly one server connection for the attack")
        server = self.factory.made[0]
        reason = server.reason
        self.assertTrue(reason.check(error_type), reason)
        self.assertIsInstance(reason.value, TLSError)
        if fragment is not None:
            self.assertIn(fragment, str(reason.value))
        lines = [e for e in self.logs.twistls() if str(reason.value) in str(e.get("reason", ""))]
        if logged:
            self.assertEqual(len(lines), 1, self.logs.twistls())
            level = "info" if error_type is ConnectionTruncatedError else "warn"
            self.assertEqual(lines[0]["log_level"].name, level)
            self.assertNotIn("\n", str(lines[0]["reason"]))
        self.assertEqual(self.logs.with_failure(), [])
        yield self.assert_served()
        self.assertEqual(len(self.factory.made), 2)

    @defer.inlineCallbacks
    def raw_attack(self, chunks: list[bytes], *, close: bool = False):
        peer = Raw(chunks, close=close)
        yield connect_raw(self.port, peer)
        yield within(peer.done, 10, "raw peer end")
        return peer

    # -- not TLS at all -----------------------------------------------------------

    @defer.inlineCallbacks
    def test_random_bytes_instead_of_client_hello(self):
        """Random bytes end the connection with ProtocolViolationError."""
        yield self.raw_attack([b"\x17\x99" + os.urandom(4094)])
        yield self.assert_ended(ProtocolViolationError, "does not speak TLS")

    @defer.inlineCallbacks
    def test_plaintext_http_request(self):
        """A plaintext HTTP request to the TLS port is a ProtocolViolationError naming it."""
        yield self.raw_attack([b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"])
        yield self.assert_ended(ProtocolViolationError, "http request")

    # -- old protocol versions ------------------------------------------------------

    @defer.inlineCallbacks
    def test_sslv2_hello(self):
        """An SSLv2-format hello is refused as a protocol version problem."""
        yield self.raw_attack([SSLV2_HELLO])
        yield self.assert_ended(ProtocolVersionError)

    @defer.inlineCallbacks
    def test_sslv3_only_client(self):
        """A ClientHello offering only SSL 3.0 is refused with ProtocolVersionError."""
        peer = yield self.raw_attack([client_hello(0x0300)])
        self.assertEqual(peer.received[:1], b"\x15")  # an alert went back
        yield self.assert_ended(ProtocolVersionError)

    @defer.inlineCallbacks
    def version_only_client(self, version: str):
        cf = self.client_cf()  # twistls refuses TLS 1.0/1.1 settings: set them on its SSL_CTX directly
        _ossl.set_min_max_version(cf.context_address, version, version)
        _ossl.SSL_CTX_set_security_level(cf.context_address, 0)
        _ossl.set_cipher_list(cf.context_address, "DEFAULT:@SECLEVEL=0")
        client = EngineClient(cf)
        yield connect_raw(self.port, client)
        yield within(client.done, 10, "old client end")
        self.assertFalse(any(type(e).__name__ == "HandshakeCompleted" for e in client.events))
        yield self.assert_ended(ProtocolVersionError, "unsupported protocol")

    def test_tls10_only_client(self):
        """A real TLS 1.0-only client is refused with ProtocolVersionError."""
        return self.version_only_client("TLSv1")

    def test_tls11_only_client(self):
        """A real TLS 1.1-only client is refused with ProtocolVersionError."""
        return self.version_only_client("TLSv1.1")

    # -- malformed records --------------------------------------------------------

    @defer.inlineCallbacks
    def test_truncated_record_during_handshake(self):
        """A record cut short by the end of the transport ends the handshake with a TLSError."""
        hello = client_hello(0x0303, 0x0301)
        yield self.raw_attack([hello[: len(hello) // 2]], close=True)
        yield self.assert_ended(TLSError, "closed the connection during the TLS handshake")

    @defer.inlineCallbacks
    def test_truncated_record_after_handshake(self):
        """Half a data record then EOF: the data before is delivered, then ConnectionTruncatedError."""

        def attack(client: EngineClient) -> None:
            client.engine.send_plaintext(b"complete")
            client.flush()
            client.engine.send_plaintext(b"cut short" * 100)
            out = client.engine.bytes_to_send()
            client.transport.write(out[: len(out) // 2])
            client.transport.loseConnection()

        client = EngineClient(self.client_cf(), attack)
        yield connect_raw(self.port, client)
        yield within(client.done, 10, "client end")
        yield within(self.factory.made[0].lost, 10, "server end")
        self.assertEqual(b"".join(self.factory.made[0].chunks), b"complete")
        yield self.assert_ended(ConnectionTruncatedError)

    @defer.inlineCallbacks
    def test_oversized_record_before_handshake(self):
        """A handshake record longer than TLS allows is a ProtocolViolationError."""
        yield self.raw_attack([record(HANDSHAKE, 0x0301, b"\x01" * 20000)])
        yield self.assert_ended(ProtocolViolationError, "too long")

    @defer.inlineCallbacks
    def test_oversized_record_after_handshake(self):
        """An application-data record over 2^14 + 2048 bytes is a ProtocolViolationError."""

        def attack(client: EngineClient) -> None:
            client.transport.write(record(APPLICATION_DATA, 0x0303, os.urandom(18500)))

        client = EngineClient(self.client_cf(), attack)
        yield connect_raw(self.port, client)
        yield within(client.done, 10, "client end")
        yield self.assert_ended(ProtocolViolationError)

    @defer.inlineCallbacks
    def test_zero_length_record_flood(self):
        """Thousands of empty handshake records are cut off with ProtocolViolationError."""
        yield self.raw_attack([record(HANDSHAKE, 0x0301, b"") * 5000])
        yield self.assert_ended(ProtocolViolationError)

    @defer.inlineCallbacks
    def test_zero_length_application_data_flood(self):
        """Empty application-data records before the handshake are a ProtocolViolationError."""
        yield self.raw_attack([record(APPLICATION_DATA, 0x0303, b"") * 5000])
        yield self.assert_ended(ProtocolViolationError, "unexpected")

    @defer.inlineCallbacks
    def test_forged_record_in_the_middle_of_data(self):
        """A data record that fails authentication ends the connection after the data before it."""

        def attack(client: EngineClient) -> None:
            client.engine.send_plaintext(b"before")
            client.flush()
            client.engine.send_plaintext(b"forged")
            out = bytearray(client.engine.bytes_to_send())
            out[-1] ^= 0x01
            client.transport.write(bytes(out))

        client = EngineClient(self.client_cf(), attack)
        yield connect_raw(self.port, client)
        yield within(client.done, 10, "client end")
        yield within(self.factory.made[0].lost, 10, "server end")
        self.assertEqual(b"".join(self.factory.made[0].chunks), b"before")
        yield self.assert_ended(ProtocolViolationError, "bad record mac")

    @defer.inlineCallbacks
    def test_fatal_alert_in_the_middle_of_data(self):
        """A fatal alert after some data: the data is delivered, then PeerAlertError."""

        def attack(client: EngineClient) -> None:
            client.engine.send_plaintext(b"before the alert")
            client.flush()
            # The server echoes; the client sees a forged echo and sends a fatal alert.
            client.corrupt_next = True

        client = EngineClient(self.client_cf(), attack)
        yield connect_raw(self.port, client)
        yield within(client.done, 10, "client end")
        yield within(self.factory.made[0].lost, 10, "server end")
        self.assertEqual(b"".join(self.factory.made[0].chunks), b"before the alert")
        yield self.assert_ended(PeerAlertError, "bad record mac")
        self.assertEqual(self.factory.made[0].reason.value.alert, "bad record mac")

    # -- renegotiation and KeyUpdate ---------------------------------------------

    @defer.inlineCallbacks
    def test_client_initiated_renegotiation_refused(self):
        """A TLS 1.2 client asking to renegotiate is refused; the connection ends with a TLSError."""
        cf = self.client_cf(minimum_version="TLSv1.2", maximum_version="TLSv1.2")
        _ossl.SSL_CTX_clear_options(cf.context_address, _ossl.OP_NO_RENEGOTIATION)

        def attack(client: EngineClient) -> None:
            self.assertEqual(SSL_renegotiate(client.engine.ssl_address), 1)
            from M2Crypto import m2

            m2.ssl_do_handshake(client.engine._ssl)
            _ossl.drain_errors()
            client.flush()

        client = EngineClient(cf, attack)
        yield connect_raw(self.port, client)
        yield within(client.done, 10, "client end")
        # The server answered no_renegotiation; the client gave up on it.
        self.assertIn("no renegotiation", str(client.engine.error))
        yield self.assert_ended(TLSError)

    @defer.inlineCallbacks
    def test_key_update_storm(self):
        """Thousands of TLS 1.3 KeyUpdate requests without data are cut off with ProtocolViolationError."""
        from M2Crypto import m2

        def attack(client: EngineClient) -> None:
            for _ in range(4000):
                SSL_key_update(client.engine.ssl_address, KEY_UPDATE_REQUESTED)
                m2.ssl_do_handshake(client.engine._ssl)
            _ossl.drain_errors()
            client.flush()

        client = EngineClient(self.client_cf(), attack)
        yield connect_raw(self.port, client)
        yield within(client.done, 10, "client end")
        yield self.assert_ended(ProtocolViolationError, "KeyUpdate")

    @defer.inlineCallbacks
    def test_key_updates_with_data_are_served(self):
        """KeyUpdates interleaved with data are normal TLS 1.3 and keep the connection."""

        def attack(client: EngineClient) -> None:
            for _ in range(200):
                SSL_key_update(client.engine.ssl_address, KEY_UPDATE_REQUESTED)
                client.engine.send_plaintext(b"k")
            client.flush()

        client = EngineClient(self.client_cf(), attack)
        yield connect_raw(self.port, client)
        for _ in range(100):
            if len(client.received) >= 200:
                break
            yield deferLater(0.02)
        self.assertEqual(client.received, b"k" * 200)
        client.engine.close()
        client.flush()
        client.transport.loseConnection()
        yield within(self.factory.made[0].lost, 10, "server end")
        self.assertIsNone(self.factory.made[0].reason.check(TLSError))


def deferLater(seconds: float) -> defer.Deferred[None]:
    from twisted.internet import reactor, task

    return task.deferLater(reactor, seconds, lambda: None)
