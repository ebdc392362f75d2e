"""The PKI profiles end to end over real 127.0.0.1 sockets (issue 13): a
twistls server presents a conformance case's chain, a twistls client with
each profile connects, and the verdict is the one the offline cases expect."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import TestCase

from tests._e2e import Collector, connect_tls, listen_tls
from tests.conformance.cases import cases, leaf_key_pem
from twistls import ClientContextFactory, ServerContextFactory
from twistls.errors import PKIProfileError, VerificationError


class ProfileOverLoopbackTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-e2e-pkix-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        return path

    @defer.inlineCallbacks
    def connect(self, name: str, profile: str) -> Any:
        """Serve case ``name`` on 127.0.0.1 and send b"ping" with a ``profile`` client; (data, reason)."""
        case = {c.name: c for c in cases()}[name]
        chain = self._write(f"{name}.pem", case.pem_chain())
        anchors = self._write(f"{name}-ca.pem", case.pem_anchors())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = ServerContextFactory(chain, self._write("leaf.key", leaf_key_pem()))
        port, _ = listen_tls(self, server)
        client = Collector(b"ping", expect=4)
        connect_tls(ClientContextFactory(case.host, cafile=anchors, pki_profile=profile, session_cache_size=0), port, client)
        result = yield client.done
        return result

    @defer.inlineCallbacks
    def test_strict_refuses_a_common_name_outside_the_san(self) -> None:
        """cn-not-in-san: the strict client fails with PKIProfileError naming the rule; nothing is echoed."""
        data, reason = yield self.connect("cn-not-in-san", "strict")
        self.assertEqual(data, b"")
        self.assertTrue(reason.check(PKIProfileError), reason)

    @defer.inlineCallbacks
    def test_rfc5280_accepts_the_same_server(self) -> None:
        """The twin: the rfc5280 opt-out connects to the same server and gets its echo."""
        data, reason = yield self.connect("cn-not-in-san", "rfc5280")
        self.assertEqual(data, b"ping")
        self.assertTrue(reason.check(ConnectionDone), reason)

    @defer.inlineCallbacks
    def test_strict_reverifies_the_alternate_path(self) -> None:
        """alternate-path-constrained-first: OpenSSL alone refuses; the strict client re-verifies on
        pyca's path and connects."""
        data, reason = yield self.connect("alternate-path-constrained-first", "strict")
        self.assertEqual(data, b"ping")
        self.assertTrue(reason.check(ConnectionDone), reason)

    @defer.inlineCallbacks
    def test_rfc5280_refuses_the_constrained_path(self) -> None:
        """The twin: the rfc5280 profile has no second path builder and fails verification."""
        data, reason = yield self.connect("alternate-path-constrained-first", "rfc5280")
        self.assertEqual(data, b"")
        self.assertTrue(reason.check(VerificationError), reason)
