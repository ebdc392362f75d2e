"""End-to-end over real 127.0.0.1 sockets: twistls client <-> twistls server."""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import TestCase

from twistls import ClientContextFactory, HostnameMismatchError, ServerContextFactory, UntrustedCertificateError
from tests._e2e import Collector, ServerRecorder, connect_tls, listen_tls
from tests._pki import pki


class EchoTests(TestCase):
    timeout = 60

    def server_cf(self, **kw):
        p = pki()
        return ServerContextFactory(p.server.cert, p.server.key, **kw)

    @defer.inlineCallbacks
    def echo(self, version: str, size: int):
        p = pki()
        port, _ = listen_tls(self, self.server_cf(minimum_version=version, maximum_version=version))
        payload = os.urandom(size)
        client = Collector(payload, expect=size)
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile), port, client)
        data, reason = yield client.done
        self.assertEqual(len(data), size)
        self.assertEqual(data, payload)
        self.assertTrue(reason.check(ConnectionDone), reason)

    def test_echo_16mib_tls13(self):
        """16 MiB echo intact over TLS 1.3."""
        return self.echo("TLSv1.3", 16 << 20)

    def test_echo_16mib_tls12(self):
        """16 MiB echo intact over TLS 1.2."""
        return self.echo("TLSv1.2", 16 << 20)

    @defer.inlineCallbacks
    def test_wrong_hostname_rejected_and_secret_never_sent(self):
        """A client expecting another name fails with HostnameMismatchError and
        the secret it wrote in connectionMade never reaches the server."""
        p = pki()
        port, factory = listen_tls(self, self.server_cf(), proto=ServerRecorder)
        client = Collector(b"SECRET")
        connect_tls(ClientContextFactory("wrong.example", cafile=p.cafile), port, client)
        data, reason = yield client.done
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertIn("wrong.example", str(reason.value))
        self.assertIn("DNS:localhost", str(reason.value))
        for server in factory.instances:
            yield server.lost
            self.assertEqual(b"".join(server.chunks), b"")

    @defer.inlineCallbacks
    def test_untrusted_ca_rejected(self):
        """A server certificate from an unknown CA fails with UntrustedCertificateError."""
        p = pki()
        port, _ = listen_tls(self, ServerContextFactory(p.untrusted_server.cert, p.untrusted_server.key))
        client = Collector(b"x")
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile), port, client)
        data, reason = yield client.done
        self.assertTrue(reason.check(UntrustedCertificateError), reason)
        self.assertEqual(reason.value.depth, 0)


class _ReadsOnLost(Collector):
    """Reads every TLS accessor of its transport in connectionLost (after the engine is freed)."""

    def connectionLost(self, reason):
        t = self.transport
        info = t.connection_info()
        self.seen = {
            "alpn": t.negotiatedProtocol,
            "peer": t.getPeerCertificate(),
            "version": info.version if info else None,
            "cipher": info.cipher if info else None,
            "server_name": info.server_name if info else None,
            "reused": info.session_reused if info else None,
            "verify_result": info.verify_result if info else None,
            "chain": len(info.peer_chain_der) if info else None,
            "verified_chain": len(info.verified_chain_der) if info else None,
        }
        super().connectionLost(reason)


class AccessorsAfterCloseTests(TestCase):
    """Reading TLS details in connectionLost answers from captured data (issue 12, defect 3)."""

    @defer.inlineCallbacks
    def test_accessors_in_connection_lost(self):
        """negotiatedProtocol and every other accessor work in connectionLost, after the engine was freed."""
        p = pki()
        port, _ = listen_tls(self, ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=["h2"]))
        proto = _ReadsOnLost(payload=b"ping", expect=4)
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["h2"]), port, proto)
        data, reason = yield proto.done
        self.assertEqual(data, b"ping")
        self.assertEqual(proto.seen["alpn"], b"h2")
        self.assertIsNotNone(proto.seen["peer"])
        self.assertEqual(proto.seen["version"], "TLSv1.3")
        self.assertIsNotNone(proto.seen["cipher"])
        self.assertEqual(proto.seen["server_name"], "localhost")
        self.assertEqual(proto.seen["verify_result"], 0)
        self.assertEqual(proto.seen["chain"], 1)
        self.assertEqual(proto.seen["verified_chain"], 2)

    @defer.inlineCallbacks
    def test_accessors_after_failed_handshake(self):
        """After a rejected handshake the accessors answer None, without touching freed memory."""
        p = pki()
        port, _ = listen_tls(self, ServerContextFactory(p.wrong_name_server.cert, p.wrong_name_server.key))
        proto = _ReadsOnLost(payload=b"ping")
        connect_tls(ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["h2"]), port, proto)
        _, reason = yield proto.done
        self.assertTrue(reason.check(HostnameMismatchError), reason)
        self.assertIsNone(proto.seen["alpn"])
        self.assertIsNone(proto.seen["peer"])
        self.assertIsNone(proto.seen["version"])
