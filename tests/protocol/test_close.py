"""Clean versus unclean close, and delivery of everything received before it."""

from __future__ import annotations

import os

from twisted.internet import defer, protocol
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import TestCase

from twistls import ClientContextFactory, ConnectionTruncatedError, ServerContextFactory
from tests._e2e import Collector, connect_tls, listen_tls
from tests._hardening import EngineClient, LogCapture, connect_raw, listen, within
from tests._pki import pki

PAYLOAD = os.urandom(1 << 20)


class _Order(protocol.Protocol):
    """Records the order of dataReceived and connectionLost calls."""

    def connectionMade(self) -> None:
        self.calls: list[str] = []
        self.chunks: list[bytes] = []
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.factory.instances.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.calls.append("data")
        self.chunks.append(data)

    def connectionLost(self, reason) -> None:
        self.calls.append("lost")
        self.reason = reason
        self.lost.callback(None)


class CloseTests(TestCase):
    """How the end of a connection is reported to the wrapped protocol."""

    timeout = 30

    @defer.inlineCallbacks
    def end_client(self, *, close_notify: bool, **factory_kw):
        """A client sends 1 MiB then ends with or without close_notify (in the
        same TCP segment burst); returns the server protocol."""
        p = pki()
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        port, factory = listen_tls(self, ServerContextFactory(p.server.cert, p.server.key), proto=_Order, **factory_kw)

        def send_and_end(client: EngineClient) -> None:
            client.engine.send_plaintext(PAYLOAD)
            if close_notify:
                client.engine.close()
            client.flush()
            # Half-close: keep reading, or unread session tickets make the
            # kernel reset the connection and discard what the server has not read.
            client.transport.loseWriteConnection()

        client = EngineClient(ClientContextFactory("localhost", cafile=p.cafile), send_and_end)
        yield connect_raw(port, client)
        yield within(client.done, 10, "client end")
        server = factory.instances[0]
        yield within(server.lost, 10, "server end")
        self.assertEqual(b"".join(server.chunks), PAYLOAD)
        self.assertEqual(server.calls[-1], "lost")
        self.assertEqual(server.calls.count("lost"), 1)
        return server

    @defer.inlineCallbacks
    def test_close_notify_is_a_clean_end(self):
        """Data then close_notify: all data, then ConnectionDone."""
        server = yield self.end_client(close_notify=True)
        self.assertTrue(server.reason.check(ConnectionDone), server.reason)
        self.assertIsNone(server.reason.check(ConnectionTruncatedError))

    @defer.inlineCallbacks
    def test_drop_without_close_notify_is_truncation(self):
        """Data then a TCP close without close_notify: all data, then ConnectionTruncatedError, logged once."""
        server = yield self.end_client(close_notify=False)
        self.assertTrue(server.reason.check(ConnectionTruncatedError), server.reason)
        lines = [e for e in self.logs.twistls() if "close_notify" in str(e.get("reason", ""))]
        self.assertEqual(len(lines), 1)
        self.assertEqual(self.logs.with_failure(), [])

    @defer.inlineCallbacks
    def test_allow_truncation_makes_it_clean(self):
        """With allow_truncation=True the same drop is a clean ConnectionDone."""
        server = yield self.end_client(close_notify=False, allow_truncation=True)
        self.assertTrue(server.reason.check(ConnectionDone), server.reason)
        self.assertIsNone(server.reason.check(ConnectionTruncatedError))

    @defer.inlineCallbacks
    def test_client_sees_truncation_when_server_drops(self):
        """A server that drops TCP after writing: the twistls client gets the
        data, then ConnectionTruncatedError."""
        p = pki()

        class DropAfterWrite(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(b"reply:" + data)
                # Bypass TLS: close the TCP transport under the wrapper, no close_notify.
                reactor_call(self.transport.transport.loseConnection)

        port, _ = listen_tls(self, ServerContextFactory(p.server.cert, p.server.key), proto=DropAfterWrite)
        client = Collector(b"ping")
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile), port, client)
        data, reason = yield within(client.done, 10, "client end")
        self.assertEqual(data, b"reply:ping")
        self.assertTrue(reason.check(ConnectionTruncatedError), reason)


def reactor_call(f) -> None:
    from twisted.internet import reactor

    reactor.callLater(0.05, f)
