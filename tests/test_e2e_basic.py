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
