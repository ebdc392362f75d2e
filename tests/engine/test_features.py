"""Issue 4 features at the engine level: two sans-IO engines back to back,
no sockets (ALPN, SNI selection, session resumption, key log, CRLs,
protocol control, connection info)."""

from __future__ import annotations

import datetime
import json
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from twisted.trial.unittest import SynchronousTestCase

from twistls import (
    CertificateRevokedError,
    ClientContextFactory,
    ConfigurationError,
    HostnameMismatchError,
    ProtocolVersionError,
    ServerContextFactory,
    TLSError,
)
from twistls._engine import Failed, HandshakeCompleted
from twistls.checker import Checker
from tests._pki import pki
from tests._pump import EnginePair


def handshake(client_cf, server_cf, **create):
    """Run one handshake and a message each way; returns the pair."""
    pair = EnginePair(client_cf.create_engine(**create), server_cf.create_engine()).start()
    pair.pump()
    if pair.client.handshake_done and pair.server.handshake_done:
        pair.server.send_plaintext(b"hello")  # lets a TLS 1.3 client read its tickets
        pair.client.send_plaintext(b"hi")
        pair.pump()
    return pair


def close(pair):
    """Close both sides cleanly (close_notify), as the wrapper does."""
    pair.client.close()
    pair.pump()
    pair.server.close()
    pair.pump()
    pair.client.free()
    pair.server.free()


def failure(pair, side="client"):
    events = pair.client_events if side == "client" else pair.server_events
    failed = [e for e in events if isinstance(e, Failed)]
    return failed[0].error if failed else None


def sni_pki():
    """Certificates for the SNI tests, made once: a.example, b.example,
    *.wild.example and a default one."""
    p = pki()
    if not hasattr(p, "sni"):
        p.sni = {
            "a.example": p.leaf("sni-a", p.ca, "a.example"),
            "b.example": p.leaf("sni-b", p.ca, "b.example"),
            "*.wild.example": p.leaf("sni-wild", p.ca, "*.wild.example"),
            "default": p.leaf("sni-default", p.ca, "default.example"),
        }
    return p.sni


def san_of(der):
    cert = x509.load_der_x509_certificate(der)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


class ALPNEngineTests(SynchronousTestCase):
    def test_server_preference_wins(self):
        """Client offers http/1.1 then h2; the server prefers h2 and both see h2."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["http/1.1", "h2"])
        server = ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=["h2", "http/1.1"])
        pair = handshake(client, server)
        self.assertEqual(pair.client.alpn_protocol(), b"h2")
        self.assertEqual(pair.server.alpn_protocol(), b"h2")
        self.assertEqual(pair.client.info().alpn_protocol, "h2")

    def test_no_overlap_negotiates_nothing(self):
        """With no protocol in common the handshake still succeeds and nothing is selected."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["spdy/3"])
        server = ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=["h2"])
        pair = handshake(client, server)
        self.assertTrue(pair.client.handshake_done)
        self.assertIsNone(pair.client.alpn_protocol())

    def test_per_connection_list(self):
        """A server engine given its own list (from the wrapped factory) uses it."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["h2", "http/1.1"])
        server = ServerContextFactory(p.server.cert, p.server.key)
        engine = server.create_engine()
        engine.set_alpn_protocols([b"http/1.1"])
        pair = EnginePair(client.create_engine(), engine).start()
        pair.pump()
        self.assertEqual(pair.client.alpn_protocol(), b"http/1.1")

    def test_bad_protocol_names_rejected(self):
        """Empty, over-long or bare-string ALPN lists are configuration errors naming the value."""
        p = pki()
        for bad in ([""], ["x" * 256], "h2"):
            with self.assertRaises(ConfigurationError) as ctx:
                ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=bad)
            self.assertIn(repr(bad[0] if isinstance(bad, list) else bad), str(ctx.exception))


class SNIEngineTests(SynchronousTestCase):
    def server(self):
        certs = sni_pki()
        return ServerContextFactory(
            certs["default"].cert,
            certs["default"].key,
            sni_certificates={
                "a.example": (certs["a.example"].cert, certs["a.example"].key),
                "b.example": certs["b.example"].chain,
                "*.wild.example": (certs["*.wild.example"].cert, certs["*.wild.example"].key),
            },
        )

    def received_names(self, hostname, server=None):
        p = pki()
        client = ClientContextFactory(hostname, cafile=p.cafile, session_cache_size=0)
        pair = handshake(client, server or self.server())
        return pair, san_of(pair.client.peer_certificate_der())

    def test_exact_names_choose_their_certificate(self):
        """Clients asking for a.example and b.example each get that certificate and pass the Checker."""
        for name in ("a.example", "b.example"):
            pair, names = self.received_names(name)
            self.assertEqual(names, [name])
            self.assertTrue(pair.client.handshake_done)
            self.assertEqual(pair.server.server_name(), name)

    def test_wildcard_one_label(self):
        """x.wild.example gets the *.wild.example certificate."""
        pair, names = self.received_names("x.wild.example")
        self.assertEqual(names, ["*.wild.example"])
        self.assertTrue(pair.client.handshake_done)

    def test_wildcard_not_two_labels(self):
        """y.x.wild.example gets the default certificate and fails the Checker."""
        pair, names = self.received_names("y.x.wild.example")
        self.assertEqual(names, ["default.example"])
        self.assertIsInstance(failure(pair), HostnameMismatchError)

    def test_unknown_name_gets_default(self):
        """A name the server does not hold gets the default certificate (and the client rejects it)."""
        pair, names = self.received_names("c.example")
        self.assertEqual(names, ["default.example"])
        self.assertIsInstance(failure(pair), HostnameMismatchError)

    def test_no_name_gets_default(self):
        """A client sending no server_name (an IP address) gets the default certificate."""
        p = pki()
        client = ClientContextFactory("127.0.0.1", insecure_skip_verify=True)
        pair = handshake(client, self.server())
        self.assertEqual(san_of(pair.client.peer_certificate_der()), ["default.example"])
        self.assertIsNone(pair.server.server_name())

    def test_from_directory(self):
        """A directory of <hostname>.pem files serves each name, DEFAULT.pem the rest."""
        certs = sni_pki()
        directory = tempfile.mkdtemp(prefix="twistls-sni-")
        for name, leaf in (("a.example", certs["a.example"]), ("*.wild.example", certs["*.wild.example"]),
                           ("DEFAULT", certs["default"])):
            with open(os.path.join(directory, name + ".pem"), "wb") as f, open(leaf.chain, "rb") as src:
                f.write(src.read())
        server = ServerContextFactory.from_directory(directory)
        for asked, got in (("a.example", "a.example"), ("q.wild.example", "*.wild.example"), ("b.example", "default.example")):
            _, names = self.received_names(asked, server)
            self.assertEqual(names, [got])

    def test_from_directory_without_default_refused(self):
        """A directory with several names and no DEFAULT.pem is a configuration error."""
        certs = sni_pki()
        directory = tempfile.mkdtemp(prefix="twistls-sni-")
        for name in ("a.example", "b.example"):
            with open(os.path.join(directory, name + ".pem"), "wb") as f, open(certs[name].chain, "rb") as src:
                f.write(src.read())
        with self.assertRaises(ConfigurationError) as ctx:
            ServerContextFactory.from_directory(directory)
        self.assertIn("DEFAULT.pem", str(ctx.exception))

    def test_bad_sni_name_refused(self):
        """A partial or multi-label wildcard is refused and named."""
        certs = sni_pki()
        for bad in ("a*.example", "*.*.example", "*.com"):
            with self.assertRaises(ConfigurationError) as ctx:
                ServerContextFactory(certs["default"].chain, sni_certificates={bad: certs["a.example"].chain})
            self.assertIn(repr(bad), str(ctx.exception))


class ResumptionEngineTests(SynchronousTestCase):
    def resume(self, version, **server_kw):
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile)
        server = ServerContextFactory(p.server.cert, p.server.key, maximum_version=version, **server_kw)
        first = handshake(client, server, peer_address=("127.0.0.1", 4433))
        self.assertFalse(first.client.session_reused())
        close(first)
        second = handshake(client, server, peer_address=("127.0.0.1", 4433))
        return client, server, second

    def test_tls13_ticket_resumes(self):
        """A second TLS 1.3 connection to the same (host, port, name) resumes on both sides."""
        _, _, second = self.resume("TLSv1.3")
        self.assertEqual(second.client.version(), "TLSv1.3")
        self.assertTrue(second.client.info().session_reused)
        self.assertTrue(second.server.session_reused())
        self.assertEqual(second.received("client"), b"hello")

    def test_tls12_ticket_resumes(self):
        """A second TLS 1.2 connection resumes with a session ticket."""
        _, _, second = self.resume("TLSv1.2")
        self.assertEqual(second.client.version(), "TLSv1.2")
        self.assertTrue(second.client.session_reused())

    def test_tls12_session_id_resumes(self):
        """With tickets off, TLS 1.2 resumes from the server's session-ID cache."""
        _, _, second = self.resume("TLSv1.2", session_tickets=False)
        self.assertTrue(second.client.session_reused())
        self.assertTrue(second.server.session_reused())

    def test_other_port_does_not_resume(self):
        """A session is only offered to the (host, port, name) it came from."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile)
        server = ServerContextFactory(p.server.cert, p.server.key)
        close(handshake(client, server, peer_address=("127.0.0.1", 1)))
        other = handshake(client, server, peer_address=("127.0.0.1", 2))
        self.assertFalse(other.client.session_reused())

    def test_cache_disabled(self):
        """session_cache_size=0 never resumes."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, session_cache_size=0)
        server = ServerContextFactory(p.server.cert, p.server.key)
        close(handshake(client, server))
        self.assertFalse(handshake(client, server).client.session_reused())

    def test_cache_is_bounded(self):
        """The client cache keeps at most session_cache_size sessions."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, session_cache_size=2)
        server = ServerContextFactory(p.server.cert, p.server.key)
        for port in range(1, 5):
            close(handshake(client, server, peer_address=("127.0.0.1", port)))
        self.assertEqual(len(client._sessions), 2)

    def test_resumed_session_still_checked(self):
        """A session resumed under another expected hostname still fails the Checker."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile)
        server = ServerContextFactory(p.server.cert, p.server.key)
        close(handshake(client, server, peer_address=("127.0.0.1", 7)))
        cached = client._sessions.get(("127.0.0.1", 7, "localhost", "localhost"))
        self.assertIsNotNone(cached)
        session, chain = cached
        checker = Checker(hostname="wrong.example")
        from twistls._engine import TLSEngine

        engine = TLSEngine(client._handle, client=True, server_hostname="localhost",
                           verifier=lambda peer, verified: checker.check(peer, verified_chain=verified))
        engine.use_session(session, chain)
        pair = EnginePair(engine, server.create_engine()).start()
        pair.pump()
        self.assertTrue(engine.session_reused())
        self.assertIsInstance(failure(pair), HostnameMismatchError)


class ProtocolControlEngineTests(SynchronousTestCase):
    def test_group_negotiated_and_reported(self):
        """Client X25519:P-256 against server P-256 negotiates P-256, shown in the info."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, groups="X25519:P-256")
        server = ServerContextFactory(p.server.cert, p.server.key, groups="P-256")
        pair = handshake(client, server)
        self.assertEqual(pair.client.info().group, "P-256")
        self.assertEqual(pair.server.info().group, "P-256")

    @staticmethod
    def _libssl_has_mlkem() -> bool:
        from twistls import _openssl
        from twistls._engine import ContextHandle

        scratch = ContextHandle()
        try:
            _openssl.set_groups(scratch.address, "X25519MLKEM768")
            return True
        except ValueError:
            return False
        finally:
            _openssl.ERR_clear_error()
            scratch.free()

    def test_default_group_is_hybrid_where_available(self):
        """Defaults on both sides agree on X25519MLKEM768 where the libssl has ML-KEM (OpenSSL >= 3.5), else X25519."""
        from twistls.context import DEFAULT_GROUPS, HYBRID_GROUPS, default_groups

        hybrid = self._libssl_has_mlkem()
        self.assertEqual(default_groups(), HYBRID_GROUPS if hybrid else DEFAULT_GROUPS)
        p = pki()
        pair = handshake(ClientContextFactory("localhost", cafile=p.cafile), ServerContextFactory(p.server.cert, p.server.key))
        expected = "X25519MLKEM768" if hybrid else "X25519"
        self.assertEqual(pair.client.info().group, expected)
        self.assertEqual(pair.server.info().group, expected)

    def test_default_client_meets_classic_server_without_retry(self):
        """A default client against a server with only the classic groups settles on X25519 in two client flights (key shares for both: no HelloRetryRequest)."""
        p = pki()
        pair = EnginePair(
            ClientContextFactory("localhost", cafile=p.cafile).create_engine(),
            ServerContextFactory(p.server.cert, p.server.key, groups="X25519:P-256:P-384").create_engine(),
        )
        pair.start()
        pair.pump()
        self.assertEqual([type(e) for e in pair.client_events], [HandshakeCompleted])
        self.assertEqual(pair.client.info().group, "X25519")
        self.assertEqual(pair.flights_to_server, 2)

    def test_explicit_classic_groups_are_kept(self):
        """groups="X25519:P-256:P-384" given explicitly is not upgraded to the hybrid default."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, groups="X25519:P-256:P-384")
        pair = handshake(client, ServerContextFactory(p.server.cert, p.server.key))
        self.assertEqual(pair.client.info().group, "X25519")

    def test_group_names_without_nid(self):
        """Groups OpenSSL reports as TLSEXT_nid_unknown | TLS id get their IANA names."""
        from twistls._openssl import group_name

        self.assertEqual(group_name(0x1000000 | 0x11EC), "X25519MLKEM768")
        self.assertEqual(group_name(0x1000000 | 0x001D), "X25519")
        self.assertEqual(group_name(1034), "X25519")
        self.assertIsNone(group_name(0))

    def test_disjoint_groups_fail(self):
        """No group in common fails the handshake on both sides."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, groups="X25519")
        server = ServerContextFactory(p.server.cert, p.server.key, groups="P-384")
        pair = handshake(client, server)
        self.assertIsInstance(failure(pair), TLSError)
        self.assertIsInstance(failure(pair, "server"), TLSError)

    def test_bad_values_are_named(self):
        """A bad group, ciphersuite or version is named in the ConfigurationError."""
        p = pki()
        cases = [
            (dict(groups="X25519:P-999"), "'P-999'"),
            (dict(ciphersuites="TLS_AES_128_GCM_SHA256:TLS_BOGUS"), "'TLS_BOGUS'"),
            (dict(minimum_version="TLSv9"), "'TLSv9'"),
            (dict(ciphers="NOPE-CIPHER"), "'NOPE-CIPHER'"),
            (dict(minimum_version="TLSv1.3", maximum_version="TLSv1.2"), "'TLSv1.3'"),
        ]
        for kw, needle in cases:
            for make in (lambda: ClientContextFactory("localhost", cafile=p.cafile, **kw),
                         lambda: ServerContextFactory(p.server.cert, p.server.key, **kw)):
                with self.assertRaises(ConfigurationError) as ctx:
                    make()
                self.assertIn(needle, str(ctx.exception))


class ConnectionInfoTests(SynchronousTestCase):
    def test_as_dict_is_json(self):
        """as_dict() holds version, cipher, group, ALPN, SNI, reuse and the chain, and is JSON."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile, alpn_protocols=["h2"])
        server = ServerContextFactory(p.server.cert, p.server.key, alpn_protocols=["h2"])
        pair = handshake(client, server)
        info = pair.client.info().as_dict()
        json.dumps(info)
        self.assertEqual(info["version"], "TLSv1.3")
        self.assertEqual(info["alpn_protocol"], "h2")
        self.assertEqual(info["server_name"], "localhost")
        self.assertIn(info["group"], ("X25519", "X25519MLKEM768"))  # the latter where the libssl has ML-KEM
        self.assertIs(info["session_reused"], False)
        self.assertTrue(info["verified"])
        self.assertEqual(info["verify_message"], "ok")
        self.assertIn("DNS:localhost", info["peer_chain"][0]["san"])

    def test_before_handshake(self):
        """Before the handshake the info has no version, cipher or group."""
        p = pki()
        info = ClientContextFactory("localhost", cafile=p.cafile).create_engine().info()
        self.assertIsNone(info.version)
        self.assertIsNone(info.group)
        self.assertEqual(info.as_dict()["peer_chain"], [])


class KeyLogEngineTests(SynchronousTestCase):
    def test_keylog_lines_written(self):
        """keylog_file= gets the NSS key-log lines of a TLS 1.3 handshake."""
        p = pki()
        path = os.path.join(tempfile.mkdtemp(prefix="twistls-keylog-"), "keys.log")
        client = ClientContextFactory("localhost", cafile=p.cafile, keylog_file=path)
        with self.assertLogs("twistls", "WARNING") as logs:
            ServerContextFactory(p.server.cert, p.server.key, keylog_file=path + ".server")
        self.assertIn("key-log", logs.output[0])
        handshake(client, ServerContextFactory(p.server.cert, p.server.key))
        with open(path) as f:
            labels = {line.split()[0] for line in f}
        self.assertTrue({"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                         "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels, labels)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_keylog_from_environment(self):
        """SSLKEYLOGFILE turns the key log on when keylog_file is not given."""
        p = pki()
        path = os.path.join(tempfile.mkdtemp(prefix="twistls-keylog-"), "env.log")
        self.patch(os.environ, "SSLKEYLOGFILE", path) if "SSLKEYLOGFILE" in os.environ else None
        os.environ["SSLKEYLOGFILE"] = path
        self.addCleanup(os.environ.pop, "SSLKEYLOGFILE", None)
        client = ClientContextFactory("localhost", cafile=p.cafile)
        handshake(client, ServerContextFactory(p.server.cert, p.server.key))
        self.assertIn("CLIENT_TRAFFIC_SECRET_0", open(path).read())

    def test_keylog_off_by_default(self):
        """Without the option or the variable no key-log callback writes anything."""
        p = pki()
        os.environ.pop("SSLKEYLOGFILE", None)
        client = ClientContextFactory("localhost", cafile=p.cafile)
        from twistls import _openssl

        self.assertIsNone(_openssl.ctx_hooks(client.context_address).keylog)

    def test_keylog_unwritable_refused(self):
        """A key-log path that cannot be opened is a configuration error naming it."""
        p = pki()
        with self.assertRaises(ConfigurationError) as ctx:
            ClientContextFactory("localhost", cafile=p.cafile, keylog_file="/nonexistent/dir/keys.log")
        self.assertIn("/nonexistent/dir/keys.log", str(ctx.exception))


def make_crl(ca, revoked_der=()):
    """A PEM CRL signed by trustme CA ``ca`` revoking the given DER certificates."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = load_pem_private_key(ca.private_key_pem.bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(days=1))
        .next_update(now + datetime.timedelta(days=7))
    )
    for der in revoked_der:
        serial = x509.load_der_x509_certificate(der).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - datetime.timedelta(hours=1)).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    path = os.path.join(tempfile.mkdtemp(prefix="twistls-crl-"), "ca.crl.pem")
    with open(path, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))
    return path


class CRLEngineTests(SynchronousTestCase):
    def test_revoked_server_certificate_fails(self):
        """A server certificate on the CA's CRL fails with CertificateRevokedError."""
        p = pki()
        crl = make_crl(p.ca, [p.server.der])
        pair = handshake(ClientContextFactory("localhost", cafile=p.cafile, crlfile=crl),
                         ServerContextFactory(p.server.cert, p.server.key))
        error = failure(pair)
        self.assertIsInstance(error, CertificateRevokedError)
        self.assertEqual(error.verify_code, 23)
        self.assertEqual(error.depth, 0)

    def test_unrevoked_certificate_passes(self):
        """The same CRL without the server's serial lets the handshake pass."""
        p = pki()
        crl = make_crl(p.ca, [p.client.der])
        pair = handshake(ClientContextFactory("localhost", cafile=p.cafile, crlfile=crl),
                         ServerContextFactory(p.server.cert, p.server.key))
        self.assertTrue(pair.client.handshake_done)

    def test_chain_mode_needs_every_crl(self):
        """crl_check='chain' with only the root's CRL fails on the intermediate's missing CRL;
        'leaf' mode checks only the leaf, so a CRL from the intermediate suffices."""
        p = pki()
        root_crl = make_crl(p.ca)
        pair = handshake(ClientContextFactory("localhost", cafile=p.cafile, crlfile=root_crl, crl_check="chain"),
                         ServerContextFactory(p.chained_server.cert, p.chained_server.key))
        self.assertIsNotNone(failure(pair))
        leaf_crl = make_crl(p.intermediate, [p.chained_server.der])
        pair = handshake(ClientContextFactory("localhost", cafile=p.cafile, crlfile=leaf_crl),
                         ServerContextFactory(p.chained_server.cert, p.chained_server.key))
        self.assertIsInstance(failure(pair), CertificateRevokedError)

    def test_revoked_client_certificate_fails(self):
        """A server with a CRL refuses a revoked client certificate."""
        p = pki()
        crl = make_crl(p.ca, [p.client.der])
        server = ServerContextFactory(p.server.cert, p.server.key, client_cafile=p.cafile, crl_path=os.path.dirname(crl))
        client = ClientContextFactory("localhost", cafile=p.cafile, certificate=p.client.cert, private_key=p.client.key)
        pair = handshake(client, server)
        self.assertIsInstance(failure(pair, "server"), CertificateRevokedError)

    def test_bad_crl_options_refused(self):
        """A bad crl_check, a file that is no CRL, or CRLs without verification are refused."""
        p = pki()
        with self.assertRaises(ConfigurationError) as ctx:
            ClientContextFactory("localhost", cafile=p.cafile, crlfile=make_crl(p.ca), crl_check="all")
        self.assertIn("'all'", str(ctx.exception))
        with self.assertRaises(ConfigurationError) as ctx:
            ClientContextFactory("localhost", cafile=p.cafile, crlfile=p.server.key)
        self.assertIn(p.server.key, str(ctx.exception))
        with self.assertRaises(ConfigurationError):
            ServerContextFactory(p.server.cert, p.server.key, crlfile=make_crl(p.ca))


def _copy_to(path: str, source: str) -> None:
    with open(path, "wb") as f, open(source, "rb") as src:
        f.write(src.read())


class ReloadEngineTests(SynchronousTestCase):
    def reloadable_server(self) -> tuple[ServerContextFactory, str]:
        """A server loading a.example's chain from a file of its own (the path returned)."""
        path = os.path.join(tempfile.mkdtemp(prefix="twistls-reload-"), "server.pem")
        _copy_to(path, sni_pki()["a.example"].chain)
        return ServerContextFactory(path), path

    def test_reload_swaps_certificate(self):
        """After reload() new connections get the new certificate; an established one continues."""
        p = pki()
        server, path = self.reloadable_server()
        client = ClientContextFactory("a.example", cafile=p.cafile, session_cache_size=0)
        old = handshake(client, server)
        self.assertEqual(san_of(old.client.peer_certificate_der()), ["a.example"])
        _copy_to(path, sni_pki()["b.example"].chain)
        server.reload()
        new = handshake(client.with_hostname("b.example"), server)
        self.assertEqual(san_of(new.client.peer_certificate_der()), ["b.example"])
        old.client.send_plaintext(b"still here")
        old.pump()
        self.assertIn(b"still here", old.received("server"))

    def test_failed_reload_keeps_old(self):
        """A reload from a bad file raises, logs, and keeps serving the old certificate."""
        p = pki()
        server, path = self.reloadable_server()
        with open(path, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        with self.assertLogs("twistls", "ERROR") as logs:
            self.assertRaises(ConfigurationError, server.reload)
        self.assertIn("reload failed", logs.output[0])
        client = ClientContextFactory("a.example", cafile=p.cafile, session_cache_size=0)
        pair = handshake(client, server)
        self.assertEqual(san_of(pair.client.peer_certificate_der()), ["a.example"])
        self.assertEqual(server.certificate, path)


class SNICombinationTests(SynchronousTestCase):
    def server(self, **kw):
        certs = sni_pki()
        return ServerContextFactory(
            certs["default"].chain,
            sni_certificates={"a.example": certs["a.example"].chain},
            alpn_protocols=["h2", "http/1.1"],
            **kw,
        )

    def test_alpn_after_sni_switch(self):
        """A connection switched to the a.example context still negotiates ALPN."""
        p = pki()
        client = ClientContextFactory("a.example", cafile=p.cafile, alpn_protocols=["http/1.1", "h2"])
        pair = handshake(client, self.server())
        self.assertEqual(san_of(pair.client.peer_certificate_der()), ["a.example"])
        self.assertEqual(pair.client.alpn_protocol(), b"h2")

    def test_resumption_after_sni_switch(self):
        """A session for a.example resumes on the SNI server (TLS 1.3 and TLS 1.2)."""
        p = pki()
        for version in ("TLSv1.3", "TLSv1.2"):
            server = self.server(maximum_version=version)
            client = ClientContextFactory("a.example", cafile=p.cafile)
            close(handshake(client, server))
            second = handshake(client, server)
            self.assertTrue(second.client.session_reused(), version)
            self.assertEqual(san_of(second.client.peer_certificate_der()), ["a.example"])

    def test_keylog_after_sni_switch(self):
        """The server's key log keeps working for connections switched by SNI."""
        p = pki()
        path = os.path.join(tempfile.mkdtemp(prefix="twistls-keylog-"), "server.log")
        with self.assertLogs("twistls", "WARNING"):
            server = self.server(keylog_file=path)
        handshake(ClientContextFactory("a.example", cafile=p.cafile), server)
        self.assertIn("SERVER_TRAFFIC_SECRET_0", open(path).read())

    def test_failing_callback_is_fatal(self):
        """An exception inside the servername callback fails the handshake instead of passing silently."""
        from twistls._libssl import extensions

        p = pki()
        server = self.server()
        self.patch(extensions, "sni_choose", lambda ctx, name: 1 // 0)
        pair = handshake(ClientContextFactory("a.example", cafile=p.cafile), server)
        self.assertFalse(pair.client.handshake_done)
        self.assertIsNotNone(failure(pair, "server"))


class SessionHygieneTests(SynchronousTestCase):
    def test_unclean_end_not_resumed(self):
        """A session whose connection ended without close_notify is dropped, not offered."""
        p = pki()
        client = ClientContextFactory("localhost", cafile=p.cafile)
        server = ServerContextFactory(p.server.cert, p.server.key)
        first = handshake(client, server)
        self.assertEqual(len(client._sessions), 1)
        first.client.free()  # no close_notify: OpenSSL marks the session not resumable
        first.server.free()
        second = handshake(client, server)
        self.assertFalse(second.client.session_reused())
        self.assertTrue(second.client.handshake_done)
