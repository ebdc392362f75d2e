"""Stalled and idle peers: the handshake timeout and ``idle_timeout``."""

from __future__ import annotations

import os
import resource
import time

from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import TestCase

from twistls import (
    ClientContextFactory,
    ConfigurationError,
    HandshakeTimeoutError,
    IdleTimeoutError,
    ServerContextFactory,
    TLSWrappingFactory,
)
from tests._e2e import Collector, Echo, connect_tls
from tests._hardening import LogCapture, Raw, connect_raw, listen, within
from tests._pki import pki
from tests.e2e.test_abuse import client_hello

STALLED = 300


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


class StalledPeerTests(TestCase):
    """Peers that open connections and never finish the handshake."""

    timeout = 60

    def setUp(self) -> None:
        # 300 peers need ~600 descriptors in this process (both ends).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 4 * STALLED + 512
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

    @defer.inlineCallbacks
    def test_stalled_peers_do_not_block_a_good_client_and_all_time_out(self):
        """300 connections that send nothing or half a ClientHello do not delay
        a good client's handshake and echo past 1 s, and the handshake timeout
        closes all 300."""
        p = pki()
        logs = LogCapture()
        self.addCleanup(logs.stop)
        timeout = 2.0
        port, factory = listen(self, ServerContextFactory(p.server.cert, p.server.key, handshake_timeout=timeout))
        hello = client_hello(0x0303, 0x0301)
        peers = [Raw([] if i % 2 else [hello[: len(hello) // 2]]) for i in range(STALLED)]
        started = time.monotonic()
        yield defer.gatherResults([connect_raw(port, peer) for peer in peers])
        for _ in range(100):  # the server accepted them all
            if len(factory.made) >= STALLED:
                break
            yield sleep(0.02)
        self.assertEqual(len(factory.made), STALLED)

        payload = os.urandom(4096)
        client = Collector(payload, expect=len(payload))
        began = time.monotonic()
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile), port, client)
        data, reason = yield within(client.done, 10, "good client")
        elapsed = time.monotonic() - began
        self.assertEqual(data, payload)
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertLess(elapsed, 1.0)

        yield within(defer.gatherResults([peer.done for peer in peers]), timeout + 10, "stalled peers closed")
        self.assertGreaterEqual(time.monotonic() - started, timeout * 0.9)
        stalled = factory.made[:STALLED]
        self.assertTrue(all(s.reason.check(HandshakeTimeoutError) for s in stalled), [s.reason for s in stalled[:3]])
        self.assertEqual(logs.with_failure(), [])
        lines = [e for e in logs.twistls() if "did not finish" in str(e.get("reason", ""))]
        self.assertEqual(len(lines), STALLED)


class TrickleTests(TestCase):
    """A peer that keeps the handshake alive one byte at a time."""

    timeout = 30

    @defer.inlineCallbacks
    def test_trickled_client_hello_still_times_out(self):
        """One byte of ClientHello every 0.1 s does not extend the handshake
        timeout: it counts from the connection, not from the last byte."""
        p = pki()
        port, factory = listen(self, ServerContextFactory(p.server.cert, p.server.key, handshake_timeout=1.0))
        peer = Raw()
        yield connect_raw(port, peer)
        hello = client_hello(0x0303, 0x0301)
        began = time.monotonic()

        def drip() -> None:
            if peer.done.called or not hello:
                return
            peer.transport.write(hello[:1])
            calls.append(reactor.callLater(0.1, drip_next))

        def drip_next() -> None:
            nonlocal hello
            hello = hello[1:]
            drip()

        calls: list = []
        drip()
        yield within(peer.done, 10, "trickling peer closed")
        for call in calls:
            if call.active():
                call.cancel()
        self.assertLess(time.monotonic() - began, 3.0)
        server = factory.made[0]
        yield within(server.lost, 5, "server end")
        self.assertTrue(server.reason.check(HandshakeTimeoutError), server.reason)


class IdleTimeoutTests(TestCase):
    """``TLSWrappingFactory(idle_timeout=...)`` on established connections."""

    timeout = 30

    def test_idle_timeout_must_be_positive(self):
        """idle_timeout <= 0 is a ConfigurationError at construction."""
        from twisted.internet.protocol import Factory

        cf = ServerContextFactory(pki().server.cert, pki().server.key)
        for bad in (0, -1.0):
            self.assertRaises(ConfigurationError, TLSWrappingFactory, Factory.forProtocol(Echo), cf, idle_timeout=bad)

    @defer.inlineCallbacks
    def test_idle_connection_closed_cleanly(self):
        """A connection idle past idle_timeout is closed with close_notify; the
        server's protocol sees IdleTimeoutError, the client a clean end."""
        p = pki()
        logs = LogCapture()
        self.addCleanup(logs.stop)
        port, factory = listen(self, ServerContextFactory(p.server.cert, p.server.key), idle_timeout=0.5)
        client = Collector(b"hello")
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile), port, client)
        began = time.monotonic()
        data, reason = yield within(client.done, 10, "idle close")
        self.assertGreaterEqual(time.monotonic() - began, 0.45)
        self.assertEqual(data, b"hello")
        self.assertTrue(reason.check(ConnectionDone), reason)
        server = factory.made[0]
        yield within(server.lost, 5, "server end")
        self.assertTrue(server.reason.check(IdleTimeoutError), server.reason)
        self.assertEqual(len([e for e in logs.twistls() if "no data" in str(e.get("reason", ""))]), 1)
        self.assertEqual(logs.with_failure(), [])

    @defer.inlineCallbacks
    def test_active_connection_is_not_idle(self):
        """Data every 0.1 s keeps a connection with idle_timeout=0.4 open for 1.2 s."""
        p = pki()
        port, factory = listen(self, ServerContextFactory(p.server.cert, p.server.key), idle_timeout=0.4)
        client = Collector()
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile), port, client)
        yield within(client.made, 5, "connect")
        for _ in range(12):
            client.transport.write(b"ping")
            yield sleep(0.1)
        self.assertFalse(client.done.called)
        self.assertEqual(client.received, 48)
        client.transport.loseConnection()
        data, reason = yield within(client.done, 5, "close")
        self.assertTrue(reason.check(ConnectionDone), reason)
