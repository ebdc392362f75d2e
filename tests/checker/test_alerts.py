"""The Checker runs inside a verifying client's handshake, so a rejected
server is told why with a TLS alert (engines back to back, no sockets)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests._pki import pki
from tests._pump import EnginePair
from twistls import (
    ClientContextFactory,
    HostnameMismatchError,
    PeerAlertError,
    PinMismatchError,
    ServerContextFactory,
    spki_sha256,
)
from twistls._engine import Failed, HandshakeCompleted


def run(client_cf: ClientContextFactory, *, version: str = "TLSv1.3") -> EnginePair:
    p = pki()
    server = ServerContextFactory(p.server.cert, p.server.key, minimum_version=version, maximum_version=version)
    client = client_cf.create_engine()
    client.send_plaintext(b"SECRET")
    pair = EnginePair(client, server.create_engine()).start()
    pair.pump()
    return pair


def failure(events: list[object]) -> BaseException | None:
    failed = [e for e in events if isinstance(e, Failed)]
    return failed[0].error if failed else None


class CheckerAlertTests(SynchronousTestCase):
    def test_accepted_peer_is_checked_once_inside_the_handshake(self) -> None:
        """A good server passes the Checker during the handshake; it is not run again afterwards."""
        pair = run(ClientContextFactory("localhost", cafile=pki().cafile))
        self.assertIn(HandshakeCompleted(), pair.client_events)
        self.assertTrue(pair.client._peer.checked_in_handshake)
        self.assertEqual(pair.received("server"), b"SECRET")

    def test_wrong_name_sends_bad_certificate_alert(self) -> None:
        """A name mismatch fails the client with HostnameMismatchError and the server with a 'bad certificate' alert."""
        for version in ("TLSv1.3", "TLSv1.2"):
            pair = run(ClientContextFactory("wrong.example", cafile=pki().cafile), version=version)
            client_error = failure(pair.client_events)
            server_error = failure(pair.server_events)
            self.assertIsInstance(client_error, HostnameMismatchError, version)
            self.assertIsInstance(server_error, PeerAlertError, version)
            assert isinstance(server_error, PeerAlertError)
            self.assertEqual(server_error.alert, "bad certificate")
            self.assertEqual(pair.received("server"), b"", version)

    def test_pin_mismatch_sends_handshake_failure_alert(self) -> None:
        """A pin mismatch fails the client with PinMismatchError and the server with a 'handshake failure' alert."""
        pair = run(ClientContextFactory("localhost", cafile=pki().cafile, pins=["00" * 32]))
        self.assertIsInstance(failure(pair.client_events), PinMismatchError)
        server_error = failure(pair.server_events)
        self.assertIsInstance(server_error, PeerAlertError)
        assert isinstance(server_error, PeerAlertError)
        self.assertEqual(server_error.alert, "handshake failure")
        self.assertEqual(pair.received("server"), b"")

    def test_good_pin_accepted(self) -> None:
        """The same client pinning the server's key completes the handshake."""
        pin = spki_sha256(pki().server.der)
        pair = run(ClientContextFactory("localhost", cafile=pki().cafile, pins=[pin]))
        self.assertIn(HandshakeCompleted(), pair.client_events)

    def test_rejected_chain_stays_inspectable(self) -> None:
        """After a rejection inside the handshake the client still shows the certificate it refused."""
        pair = run(ClientContextFactory("wrong.example", cafile=pki().cafile))
        self.assertEqual(pair.client.peer_certificate_der(), pki().server.der)
        self.assertEqual(pair.client.peer_chain_der()[0], pki().server.der)
        self.assertGreaterEqual(len(pair.client.verified_chain_der()), 2)
