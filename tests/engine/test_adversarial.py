"""A malicious peer built from the engine: what it controls, it cannot use.

Each test plays one attack in memory (two engines back to back, no sockets)
against the invariants written down in ``doc/howto/security.rst``: trust is
decided on the chain OpenSSL verified, never on what the peer appended,
prepended or reordered; a resumed session is held to the checks of the
handshake that made it; any exception in a check or callback fails the
connection; nothing of an OpenSSL object is read after it is freed.
"""

from __future__ import annotations

import gc
import os
import tempfile
import weakref

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from twistls import ClientContextFactory, ServerContextFactory
from twistls import _openssl as _ossl
from twistls._libssl import chain as _libssl_chain
from twistls._libssl import extensions as _libssl_extensions
from twistls._libssl import handshake as _libssl_handshake
from twistls._engine import Failed, HandshakeCompleted, PlaintextReceived, TLSEngine
from twistls.checker import spki_sha256
from twistls.errors import (
    HostnameMismatchError,
    PeerAlertError,
    PinMismatchError,
    TLSError,
    VerificationError,
)
from tests._pki import PKI, pki, self_signed
from tests._pump import EnginePair


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _pems(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return [c.public_bytes(serialization.Encoding.PEM) for c in x509.load_pem_x509_certificates(f.read())]


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class _Attacker:
    """Certificate files a malicious server presents (made once)."""

    def __init__(self, p: PKI) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-adversary-")
        # Both CAs are trusted: the attacker holds a valid certificate for
        # the name from "any trusted CA" (the other one).
        with open(p.cafile, "rb") as a, open(p.other_cafile, "rb") as b:
            self.both_cas = _write(self.dir, "both-cas.pem", a.read() + b.read())
        self.intermediate_pem = _pems(p.chained_server.cert)[1]
        # [attacker's valid leaf, the genuine pinned intermediate]
        self.padded_with_intermediate = _write(
            self.dir, "padded.pem", _pems(p.untrusted_server.cert)[0] + self.intermediate_pem
        )
        # [own self-signed certificate, the genuine leaf]
        der, key = self_signed("localhost", san=[x509.DNSName("localhost")])
        self.self_signed_key = _write(self.dir, "self-signed-key.pem", key)
        with open(p.server.cert, "rb") as f:
            genuine_leaf = f.read()
        self.self_signed_plus_genuine = _write(self.dir, "self-plus-genuine.pem", _pem(der) + genuine_leaf)
        # [valid leaf for another name, the genuine leaf for the right name]
        self.other_name_plus_genuine = _write(
            self.dir, "other-plus-genuine.pem", _pems(p.wrong_name_server.cert)[0] + genuine_leaf
        )
        # a deep chain with its intermediates in the wrong order
        deep = _pems(p.deep_server.cert)
        self.deep_reversed = _write(self.dir, "deep-reversed.pem", deep[0] + b"".join(reversed(deep[1:])))


_attacker: _Attacker | None = None


def attacker() -> _Attacker:
    global _attacker
    if _attacker is None:
        _attacker = _Attacker(pki())
    return _attacker


def run(client: ClientContextFactory | TLSEngine, server: ServerContextFactory | TLSEngine) -> EnginePair:
    """Handshake, then the client sends a secret; returns the pair."""
    c = client if isinstance(client, TLSEngine) else client.create_engine()
    s = server if isinstance(server, TLSEngine) else server.create_engine()
    pair = EnginePair(c, s)
    pair.client.send_plaintext(b"SECRET")
    pair.start()
    pair.pump()
    return pair


def error(pair: EnginePair, side: str = "client") -> TLSError | None:
    events = pair.client_events if side == "client" else pair.server_events
    failed = [e for e in events if isinstance(e, Failed)]
    return failed[0].error if failed else None


class PeerChainTests(SynchronousTestCase):
    """Certificates the peer appends, prepends or reorders."""

    def test_pin_on_appended_intermediate_refused(self) -> None:
        """A valid leaf from another trusted CA padded with the genuine pinned intermediate is refused, with an alert."""
        p, a = pki(), attacker()
        pin = spki_sha256(_der(a.intermediate_pem))
        client = ClientContextFactory("localhost", cafile=a.both_cas, pins=[pin])
        pair = run(client, ServerContextFactory(a.padded_with_intermediate, p.untrusted_server.key))
        self.assertIsInstance(error(pair), PinMismatchError)
        self.assertIsInstance(error(pair, "server"), PeerAlertError)
        self.assertEqual(pair.received("server"), b"")

    def test_pin_on_genuine_intermediate_accepted(self) -> None:
        """The twin: the genuine chain through the pinned intermediate is accepted."""
        p, a = pki(), attacker()
        pin = spki_sha256(_der(a.intermediate_pem))
        client = ClientContextFactory("localhost", cafile=a.both_cas, pins=[pin])
        pair = run(client, ServerContextFactory(p.chained_server.cert, p.chained_server.key))
        self.assertIsNone(error(pair))
        self.assertEqual(pair.received("server"), b"SECRET")

    def test_insecure_leaf_pin_with_prepended_self_signed_refused(self) -> None:
        """Without verification, a self-signed leaf followed by the genuine pinned leaf is refused inside the handshake."""
        p, a = pki(), attacker()
        client = ClientContextFactory("localhost", insecure_skip_verify=True, pins=[spki_sha256(p.server.der)])
        pair = run(client, ServerContextFactory(a.self_signed_plus_genuine, a.self_signed_key))
        self.assertIsInstance(error(pair), PinMismatchError)
        self.assertIsInstance(error(pair, "server"), PeerAlertError)
        self.assertEqual(pair.received("server"), b"")

    def test_insecure_leaf_pin_accepted(self) -> None:
        """The twin: without verification, the server whose own key is pinned is accepted."""
        p = pki()
        client = ClientContextFactory("localhost", insecure_skip_verify=True, pins=[spki_sha256(p.server.der)])
        pair = run(client, ServerContextFactory(p.server.cert, p.server.key))
        self.assertIsNone(error(pair))
        self.assertEqual(pair.received("server"), b"SECRET")
        self.assertFalse(pair.client.info().verified)

    def test_other_name_leaf_plus_right_leaf_refused(self) -> None:
        """A valid chain for another name with the right leaf appended fails the name check (the appended leaf counts for nothing)."""
        p, a = pki(), attacker()
        client = ClientContextFactory("localhost", cafile=p.cafile)
        pair = run(client, ServerContextFactory(a.other_name_plus_genuine, p.wrong_name_server.key))
        self.assertIsInstance(error(pair), HostnameMismatchError)
        self.assertEqual(pair.received("server"), b"")

    def test_wrong_order_chain_verifies(self) -> None:
        """Intermediates sent in the wrong order still verify: OpenSSL builds the path itself."""
        p, a = pki(), attacker()
        pair = run(ClientContextFactory("localhost", cafile=p.cafile), ServerContextFactory(a.deep_reversed, p.deep_server.key))
        self.assertIsNone(error(pair))
        self.assertEqual(len(pair.client.verified_chain_der()), 5)  # leaf, 3 intermediates, root

    def test_wrong_order_chain_from_untrusted_ca_refused(self) -> None:
        """The twin: the same reordered chain against another trust anchor is refused."""
        p, a = pki(), attacker()
        pair = run(ClientContextFactory("localhost", cafile=p.other_cafile), ServerContextFactory(a.deep_reversed, p.deep_server.key))
        self.assertIsInstance(error(pair), VerificationError)


class ResumptionTests(SynchronousTestCase):
    """A resumed session is held to the checks of the handshake that made it."""

    def _session(self) -> tuple[ClientContextFactory, ServerContextFactory, int, tuple[bytes, ...] | None]:
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile)
        server = ServerContextFactory(p.server.cert, p.server.key)
        pair = run(client, server)
        pair.server.send_plaintext(b"x")  # the client reads its tickets
        pair.pump()
        pair.client.close()
        pair.pump()
        cached = client._sessions.get(("localhost", None, "localhost", "localhost")) if client._sessions else None
        self.assertIsNotNone(cached)
        assert cached is not None
        return client, server, cached[0], cached[1]

    def test_session_keeps_verified_chain(self) -> None:
        """A cached session carries the chain OpenSSL verified, leaf to anchor."""
        _, _, _, chain = self._session()
        self.assertIsNotNone(chain)
        assert chain is not None
        self.assertEqual(len(chain), 2)

    def test_session_not_offered_for_another_name(self) -> None:
        """A factory for another expected name finds no session to offer, so the full handshake's check decides."""
        client, server, _, _ = self._session()
        other = client.with_hostname("other.example")
        pair = run(other, server)
        self.assertFalse(pair.client.session_reused())
        self.assertIsInstance(error(pair), HostnameMismatchError)

    def test_session_forced_on_another_name_refused(self) -> None:
        """A session resumed under another expected name fails the Checker on the stored chain."""
        client, server, session, chain = self._session()
        other = client.with_hostname("other.example")
        engine = TLSEngine(other._handle, client=True, server_hostname="localhost", verifier=other.create_engine()._peer.verifier)
        engine.use_session(session, chain)
        pair = run(engine, server)
        self.assertTrue(engine.session_reused())
        self.assertIsInstance(error(pair), HostnameMismatchError)
        self.assertEqual(pair.received("server"), b"")

    def test_session_without_chain_refused(self) -> None:
        """A verifying engine that resumes a session with no verified chain refuses the peer."""
        client, server, session, _ = self._session()
        engine = TLSEngine(client._handle, client=True, server_hostname="localhost", verifier=client.create_engine()._peer.verifier)
        engine.use_session(session)
        pair = run(engine, server)
        self.assertTrue(engine.session_reused())
        self.assertIsInstance(error(pair), VerificationError)
        self.assertEqual(pair.received("server"), b"")

    def test_session_resumes_for_same_name(self) -> None:
        """The twin: the same factory resumes its session and is accepted."""
        client, server, _, _ = self._session()
        pair = run(client, server)
        self.assertTrue(pair.client.session_reused())
        self.assertIsNone(error(pair))
        self.assertEqual(pair.client.verified_chain_der()[0], pki().server.der)


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt/SystemExit without stopping the test run."""


class FailClosedTests(SynchronousTestCase):
    """Any exception, of any type, fails the connection before plaintext flows."""

    def _assert_closed(self, pair: EnginePair, side: str) -> TLSError:
        engine = pair.client if side == "client" else pair.server
        events = pair.client_events if side == "client" else pair.server_events
        failure = error(pair, side)
        self.assertIsInstance(failure, TLSError)
        assert failure is not None
        self.assertFalse(engine.handshake_done)
        self.assertFalse(any(isinstance(e, (HandshakeCompleted, PlaintextReceived)) for e in events))
        self.assertEqual(engine.receive_bytes(b"\x17\x03\x03\x00\x05hello"), [])
        return failure

    def test_base_exception_in_handshake_verifier(self) -> None:
        """A verifier raising a BaseException inside the handshake fails it (with an alert), and no secret leaves."""
        p = pki()

        def verifier(peer_chain: object, verified_chain: object) -> None:
            raise _Interrupt()

        engine = TLSEngine(ClientContextFactory("localhost", cafile=p.cafile)._handle, client=True,
                           server_hostname="localhost", verifier=verifier)
        pair = run(engine, ServerContextFactory(p.server.cert, p.server.key))
        failure = self._assert_closed(pair, "client")
        self.assertIsInstance(failure.__cause__, _Interrupt)
        self.assertIsInstance(error(pair, "server"), PeerAlertError)
        self.assertEqual(pair.received("server"), b"")

    def test_base_exception_in_post_handshake_verifier(self) -> None:
        """A server verifier raising a BaseException after the handshake leaves the engine failed, never established."""
        p = pki()

        def verifier(peer_chain: object, verified_chain: object) -> None:
            raise _Interrupt()

        server = TLSEngine(ServerContextFactory(p.server.cert, p.server.key)._handle, client=False, verifier=verifier)
        pair = run(ClientContextFactory("localhost", cafile=p.cafile), server)
        self._assert_closed(pair, "server")
        self.assertEqual(pair.received("server"), b"")

    def test_base_exception_in_verify_callback(self) -> None:
        """An exception inside OpenSSL's verify callback fails the handshake instead of passing."""
        p = pki()

        def broken(stack: object) -> list[bytes]:
            raise _Interrupt()

        self.patch(_libssl_handshake, "stack_der", broken)
        pair = run(ClientContextFactory("localhost", cafile=p.cafile), ServerContextFactory(p.server.cert, p.server.key))
        self._assert_closed(pair, "client")

    def test_base_exception_in_servername_callback(self) -> None:
        """A BaseException inside the server's SNI callback fails the handshake with an alert."""
        p = pki()
        server = ServerContextFactory(p.server.cert, p.server.key, sni_certificates={"example.com": (p.server.cert, p.server.key)})

        def broken(hooks: object, name: object) -> None:
            raise _Interrupt()

        self.patch(_libssl_extensions, "sni_choose", broken)
        pair = run(ClientContextFactory("localhost", cafile=p.cafile), server)
        self._assert_closed(pair, "server")
        self.assertIsInstance(error(pair), PeerAlertError)

    def test_hooks_detached_fail_closed(self) -> None:
        """An SSL whose hooks are gone (a bug) is refused by the verify callback, not waved through."""
        p = pki()
        engine = ClientContextFactory("localhost", cafile=p.cafile).create_engine()
        token = _ossl.SSL_get_ex_data(engine.ssl_address, _ossl._SSL_SLOT)
        _ossl.detach(token)
        pair = run(engine, ServerContextFactory(p.server.cert, p.server.key))
        self.assertIsInstance(error(pair), TLSError)
        self.assertEqual(pair.received("server"), b"")


class LifetimeTests(SynchronousTestCase):
    """Nothing of an OpenSSL object is read after it is freed."""

    def test_context_factory_collected_while_connections_live(self) -> None:
        """Connections outlive their context factories: callbacks (ALPN, key log) still find their state."""
        p = pki()
        client_cf = ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["h2"])
        server_cf = ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=["h2"])
        client, server = client_cf.create_engine(), server_cf.create_engine()
        refs = [weakref.ref(client_cf), weakref.ref(server_cf)]
        del client_cf, server_cf
        gc.collect()
        self.assertEqual([r() for r in refs], [None, None])
        pair = run(client, server)
        self.assertIsNone(error(pair))
        self.assertEqual(pair.received("server"), b"SECRET")
        self.assertEqual(client.alpn_protocol(), b"h2")

    def test_accessors_after_free(self) -> None:
        """After free(), every accessor answers from what the handshake captured, never from freed memory."""
        p = pki()
        client_cf = ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["h2"])
        server_cf = ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=["h2"])
        pair = run(client_cf, server_cf)
        engine = pair.client
        before = engine.info()
        engine.free()
        gc.collect()
        self.assertEqual(engine.alpn_protocol(), b"h2")
        self.assertEqual(engine.version(), before.version)
        self.assertEqual(engine.cipher(), (before.cipher, before.cipher_bits))
        self.assertEqual(engine.server_name(), "localhost")
        self.assertEqual(engine.negotiated_group(), before.group)
        self.assertFalse(engine.session_reused())
        self.assertEqual(engine.verify_result(), 0)
        self.assertEqual(engine.peer_certificate_der(), p.server.der)
        self.assertEqual(engine.peer_chain_der()[0], p.server.der)
        self.assertEqual(len(engine.verified_chain_der()), 2)
        self.assertIs(engine.info(), before)
        self.assertEqual(engine.bytes_to_send(), b"")

    def test_accessors_after_free_without_handshake(self) -> None:
        """An engine freed before its handshake completed answers None or empty, without touching OpenSSL."""
        engine = ClientContextFactory("localhost", cafile=pki().cafile).create_engine()
        engine.start()
        engine.free()
        self.assertIsNone(engine.alpn_protocol())
        self.assertIsNone(engine.version())
        self.assertIsNone(engine.server_name())
        self.assertIsNone(engine.verify_result())
        self.assertIsNone(engine.peer_certificate_der())
        self.assertEqual(engine.verified_chain_der(), [])
        self.assertFalse(engine.session_reused())
        self.assertIsNone(engine.info().version)


def _alternate_case(testcase: SynchronousTestCase) -> tuple[object, str, str, str]:
    """The conformance case whose only valid path OpenSSL's builder misses:
    (case, chain file, anchors file, leaf key file)."""
    import shutil

    from tests.conformance.cases import cases, leaf_key_pem

    case = next(c for c in cases() if c.name == "alternate-path-constrained-first")
    d = tempfile.mkdtemp(prefix="twistls-adv-")
    testcase.addCleanup(shutil.rmtree, d, True)
    chain = _write(d, "chain.pem", case.pem_chain())
    anchors = _write(d, "anchors.pem", case.pem_anchors())
    key = _write(d, "key.pem", leaf_key_pem())
    os.chmod(key, 0o600)
    return case, chain, anchors, key


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


class ReverificationAttackTests(SynchronousTestCase):
    """The re-verification on another path (issue 13) accepts only what
    OpenSSL verifies again, frees what it makes, and fails closed."""

    def _handshake(self, engine: TLSEngine | None = None) -> EnginePair:
        case, chain, anchors, key = _alternate_case(self)
        client = ClientContextFactory("example.com", cafile=anchors, session_cache_size=0)
        pair = EnginePair(engine or client.create_engine(), ServerContextFactory(chain, key).create_engine())
        pair.client.send_plaintext(b"SECRET")
        pair.start()
        pair.pump()
        return pair

    def test_a_path_openssl_refuses_is_not_accepted(self) -> None:
        """A path finder that offers the constrained path (which OpenSSL refuses) gets nothing accepted."""
        case, chain, anchors, key = _alternate_case(self)
        client = ClientContextFactory("example.com", cafile=anchors, session_cache_size=0)
        engine = client.create_engine()
        constrained = [case.leaf, case.intermediates[0], case.anchors[0]]  # via the constraining root
        engine._peer.alternate_path = lambda presented: list(constrained)
        pair = self._handshake(engine)
        self.assertFalse(pair.client.handshake_done)
        self.assertEqual(pair.received("server"), b"")
        self.assertIsInstance(error(pair, "client"), VerificationError)

    def test_a_path_for_another_leaf_is_not_used(self) -> None:
        """A path that does not start with the peer's own certificate is never tried."""
        case, chain, anchors, key = _alternate_case(self)
        client = ClientContextFactory("example.com", cafile=anchors, session_cache_size=0)
        engine = client.create_engine()
        other = self_signed("example.com")[0]
        engine._peer.alternate_path = lambda presented: [other, case.intermediates[1], case.anchors[1]]
        calls: list[object] = []
        self.patch(_libssl_chain, "reverify", lambda *args: calls.append(args))
        pair = self._handshake(engine)
        self.assertFalse(pair.client.handshake_done)
        self.assertEqual(calls, [])

    def test_base_exception_in_path_finder_fails_the_handshake(self) -> None:
        """A BaseException while finding the alternative fails the handshake; no secret leaves."""
        case, chain, anchors, key = _alternate_case(self)
        client = ClientContextFactory("example.com", cafile=anchors, session_cache_size=0)
        engine = client.create_engine()

        def interrupt(presented: object) -> None:
            raise _Interrupt()

        engine._peer.alternate_path = interrupt
        pair = self._handshake(engine)
        self.assertFalse(pair.client.handshake_done)
        self.assertEqual(pair.received("server"), b"")

    def test_reverify_frees_what_it_makes_on_every_path(self) -> None:
        """Success, OpenSSL's refusal, an unparsable certificate and allocation failures, thousands
        of times: no growth (run under MALLOC_PERTURB_ / PYTHONMALLOC=debug for use-after-free)."""
        case, chain, anchors, key = _alternate_case(self)
        client = ClientContextFactory("example.com", cafile=anchors, session_cache_size=0)
        ctx = client.context_address
        store, param = _ossl.SSL_CTX_get_cert_store(ctx), _ossl.SSL_CTX_get0_param(ctx)
        leaf, via_a, via_b = case.leaf, case.intermediates[0], case.intermediates[1]

        def once() -> None:
            self.assertIsNotNone(_ossl.reverify(store, param, 1, b"ssl_server", leaf, [via_b]))
            self.assertIsNone(_ossl.reverify(store, param, 1, b"ssl_server", leaf, [via_a]))
            self.assertRaises(MemoryError, _ossl.reverify, store, param, 1, b"ssl_server", leaf, [via_b, b"\x30\x03junk"])
            real_push = _libssl_chain.OPENSSL_sk_push
            _libssl_chain.OPENSSL_sk_push = lambda stack, x509: 0  # type: ignore[assignment]
            try:
                self.assertRaises(MemoryError, _ossl.reverify, store, param, 1, b"ssl_server", leaf, [via_a, via_b])
            finally:
                _libssl_chain.OPENSSL_sk_push = real_push

        for _ in range(200):
            once()
        before = _rss_kib()
        for _ in range(3000):
            once()
        self.assertLess(_rss_kib() - before, 2048)
