"""The ciphertext writer: straight to the socket when Twisted's TCP transport
has nothing queued, through ``transport.write`` in every other case, and
never out of order.  Real (non-blocking) socket pairs, no reactor running."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twistls._direct_send import ciphertext_writer as _ciphertext_writer, missing_internals


def _drain(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class CiphertextWriterTests(TestCase):
    def connection(self, sndbuf: int | None = None) -> tuple[Any, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if sndbuf is not None:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        transport = tcp.Connection(ours, Protocol(), reactor=MemoryReactor())
        transport.connected = 1
        return transport, theirs

    def test_empty_buffer_goes_straight_to_the_socket(self) -> None:
        transport, peer = self.connection()
        send = _ciphertext_writer(transport)
        self.assertIsNot(send, transport.write)
        send(b"record one")
        self.assertEqual(transport._tempDataLen, 0)
        self.assertEqual(transport.dataBuffer, b"")
        self.assertEqual(_drain(peer), b"record one")

    def test_queued_bytes_keep_their_place(self) -> None:
        transport, peer = self.connection()
        send = _ciphertext_writer(transport)
        transport.write(b"queued first ")
        send(b"then this")
        self.assertEqual(_drain(peer), b"", "nothing may overtake the queued bytes")
        self.assertEqual(b"".join(transport._tempDataBuffer), b"queued first then this")

    def test_what_the_kernel_does_not_take_is_queued_in_order(self) -> None:
        transport, peer = self.connection(sndbuf=4096)
        send = _ciphertext_writer(transport)
        data = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffer holds
        send(data)
        queued = b"".join(transport._tempDataBuffer)
        self.assertGreater(len(queued), 0)
        send(b"tail")  # queued now: behind the remainder
        arrived = _drain(peer)
        self.assertEqual(arrived + b"".join(transport._tempDataBuffer), data + b"tail")

    def test_pull_producer_gets_twisted_path(self) -> None:
        """With a non-streaming producer Twisted's doWrite must see every byte, or it never asks for more."""
        transport, peer = self.connection()
        send = _ciphertext_writer(transport)

        class Pull:
            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        transport.registerProducer(Pull(), False)
        send(b"pulled")
        self.assertEqual(_drain(peer), b"")
        self.assertEqual(b"".join(transport._tempDataBuffer), b"pulled")

    def test_twisted_tls_or_closing_transport_gets_twisted_path(self) -> None:
        for state in ("TLS", "disconnecting", "_writeDisconnected", "_aborting"):
            transport, peer = self.connection()
            send = _ciphertext_writer(transport)
            setattr(transport, state, True)
            if state == "TLS":  # Twisted's own TLS would encrypt in write; stand in for it
                seen: list[bytes] = []
                transport.write = seen.append  # type: ignore[method-assign]
                send(b"x")
                self.assertEqual(seen, [b"x"], state)
            else:
                send(b"x")
            self.assertEqual(_drain(peer), b"", state)

    def test_socket_error_is_left_to_twisted(self) -> None:
        transport, peer = self.connection()
        send = _ciphertext_writer(transport)
        peer.close()
        send(b"into a closed pipe")  # EPIPE: must not raise; Twisted reports it on its own path
        self.assertEqual(b"".join(transport._tempDataBuffer), b"into a closed pipe")

    def test_other_transports_get_their_own_write(self) -> None:
        transport = StringTransport()
        self.assertEqual(_ciphertext_writer(transport), transport.write)


class TwistedInternalsTests(SynchronousTestCase):
    """The direct path's reliance on Twisted's tcp.Connection internals is checked, loudly."""

    def test_installed_twisted_has_every_internal(self) -> None:
        """Every tcp.Connection attribute direct send reads exists on a real TCP transport (else it silently falls back)."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        from twisted.internet import reactor, tcp

        transport = tcp.Connection(a, Protocol(), reactor)
        self.assertEqual(missing_internals(transport), [], "Twisted changed tcp.Connection: update twistls/_direct_send.py")

    def test_missing_internal_falls_back_to_write(self) -> None:
        """A TCP transport without one of them gets plain transport.write."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        from twisted.internet import reactor, tcp

        class OlderConnection(tcp.Connection):
            def __getattribute__(self, name: str) -> Any:
                if name == "_tempDataLen":
                    raise AttributeError(name)
                return super().__getattribute__(name)

        transport = OlderConnection(a, Protocol(), reactor)
        self.assertIn("_tempDataLen", missing_internals(transport))
        self.assertEqual(_ciphertext_writer(transport), transport.write)
