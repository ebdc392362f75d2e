"""Context factories: secure defaults read back from OpenSSL, and every
configuration mistake refused at construction."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Callable

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from tests._pki import pki, self_signed
from tests._pump import EnginePair
from twistls import _openssl as ossl
from twistls._engine import Failed, HandshakeCompleted
from twistls.context import (
    DEFAULT_OPTIONS,
    ClientContextFactory,
    ServerContextFactory,
)
from twistls.errors import (
    ConfigurationError,
    HostnameMismatchError,
    NoPeerCertificateError,
    PeerAlertError,
    PinMismatchError,
    TLSError,
    UntrustedCertificateError,
    VerificationError,
)
from twistls.checker import spki_sha256

CTRL_GET_MIN_PROTO_VERSION = 130
CTRL_GET_MAX_PROTO_VERSION = 131
TLS1_2_VERSION = 0x0303

#: Bits M2Crypto's SSL.Context() would switch on and that twistls must keep off.
_FORBIDDEN = {
    "IGNORE_UNEXPECTED_EOF": 1 << 7,
    "LEGACY_SERVER_CONNECT": 1 << 2,
    "NO_EXTENDED_MASTER_SECRET": 1 << 0,  # SSL_OP_BIT(0) in OpenSSL 3.0's ssl.h
    "ENABLE_KTLS": 1 << 3,
    "ALLOW_NO_DHE_KEX": 1 << 10,
    "ALLOW_UNSAFE_LEGACY_RENEGOTIATION": 1 << 18,
    "ALLOW_CLIENT_RENEGOTIATION": 1 << 8,
    "TLS_ROLLBACK_BUG": 1 << 23,
    "NO_ENCRYPT_THEN_MAC": 1 << 19,
    "NO_TLSv1_2": 1 << 27,
    "NO_TLSv1_3": 1 << 29,
}
_REQUIRED = {
    "NO_COMPRESSION": 1 << 17,
    "NO_RENEGOTIATION": 1 << 30,
}


def _client(hostname: str | None = "localhost", **kw: Any) -> ClientContextFactory:
    if not kw.get("insecure_skip_verify"):
        kw.setdefault("cafile", pki().cafile)
    return ClientContextFactory(hostname, **kw)


def _server(**kw: Any) -> ServerContextFactory:
    leaf = kw.pop("leaf", None) or pki().server
    return ServerContextFactory(leaf.cert, leaf.key, **kw)


def _handshake(server: ServerContextFactory, client: ClientContextFactory) -> EnginePair:
    pair = EnginePair(client.create_engine(), server.create_engine()).start()
    pair.pump()
    return pair


def _tmpfile(testcase: SynchronousTestCase, data: bytes, name: str = "file.pem") -> str:
    directory = tempfile.mkdtemp(prefix="twistls-test-")
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    testcase.addCleanup(os.unlink, path)
    return path


class DefaultsTests(SynchronousTestCase):
    """The secure defaults, read back from the SSL_CTX."""

    def test_client_options_exact(self) -> None:
        """A default client context has exactly DEFAULT_OPTIONS set."""
        self.assertEqual(_client().options(), DEFAULT_OPTIONS)

    def test_server_options_exact(self) -> None:
        """A default server context has exactly DEFAULT_OPTIONS plus CIPHER_SERVER_PREFERENCE."""
        self.assertEqual(_server().options(), DEFAULT_OPTIONS | ossl.OP_CIPHER_SERVER_PREFERENCE)

    def test_default_options_value(self) -> None:
        """DEFAULT_OPTIONS is NO_COMPRESSION | NO_RENEGOTIATION | ENABLE_MIDDLEBOX_COMPAT and nothing else."""
        self.assertEqual(DEFAULT_OPTIONS, (1 << 17) | (1 << 30) | (1 << 20))

    def test_dangerous_bits_clear(self) -> None:
        """IGNORE_UNEXPECTED_EOF, LEGACY_SERVER_CONNECT, NO_EXTENDED_MASTER_SECRET and other legacy bits are clear on both roles."""
        for factory in (_client(), _server(), _client(insecure_skip_verify=True)):
            options = factory.options()
            for name, bit in _FORBIDDEN.items():
                self.assertFalse(options & bit, f"{name} is set on {type(factory).__name__}: {options:#x}")
            self.assertFalse(options & 0xFFF, f"an OpenSSL 1.0-era SSL_OP_ALL bit is set: {options:#x}")

    def test_required_bits_set(self) -> None:
        """NO_COMPRESSION and NO_RENEGOTIATION are set on both roles."""
        for factory in (_client(), _server()):
            options = factory.options()
            for name, bit in _REQUIRED.items():
                self.assertTrue(options & bit, f"{name} is not set on {type(factory).__name__}")

    def test_client_verify_mode_and_depth(self) -> None:
        """A default client verifies with PEER|FAIL_IF_NO_PEER_CERT at depth 9."""
        factory = _client()  # held: the SSL_CTX is freed with its factory
        ctx = factory.context_address
        self.assertEqual(ossl.SSL_CTX_get_verify_mode(ctx), ossl.VERIFY_PEER | ossl.VERIFY_FAIL_IF_NO_PEER_CERT)
        self.assertEqual(ossl.SSL_CTX_get_verify_depth(ctx), 9)

    def test_client_verify_depth_configurable(self) -> None:
        """verify_depth=3 is what the SSL_CTX holds."""
        factory = _client(verify_depth=3)  # held: the SSL_CTX is freed with its factory
        self.assertEqual(ossl.SSL_CTX_get_verify_depth(factory.context_address), 3)

    def test_server_verify_mode_without_client_cas(self) -> None:
        """A default server asks for no client certificate."""
        factory = _server()  # held: the SSL_CTX is freed with its factory
        self.assertEqual(ossl.SSL_CTX_get_verify_mode(factory.context_address), ossl.VERIFY_NONE)

    def test_server_verify_mode_with_client_cas(self) -> None:
        """With client CAs a server requires and verifies client certificates, or only verifies them when asked."""
        required = _server(client_cafile=pki().cafile)
        self.assertEqual(
            ossl.SSL_CTX_get_verify_mode(required.context_address),
            ossl.VERIFY_PEER | ossl.VERIFY_FAIL_IF_NO_PEER_CERT,
        )
        optional = _server(client_cafile=pki().cafile, require_client_certificate=False)
        self.assertEqual(ossl.SSL_CTX_get_verify_mode(optional.context_address), ossl.VERIFY_PEER)

    def test_security_level_2(self) -> None:
        """Both roles run at OpenSSL security level 2."""
        for factory in (_client(), _server()):
            self.assertEqual(ossl.SSL_CTX_get_security_level(factory.context_address), 2)

    def test_minimum_version_tls12(self) -> None:
        """Both roles have a TLS 1.2 floor and no ceiling, read back with SSL_CTX_ctrl."""
        for factory in (_client(), _server()):
            ctx = factory.context_address
            self.assertEqual(ossl.SSL_CTX_ctrl(ctx, CTRL_GET_MIN_PROTO_VERSION, 0, None), TLS1_2_VERSION)
            self.assertEqual(ossl.SSL_CTX_ctrl(ctx, CTRL_GET_MAX_PROTO_VERSION, 0, None), 0)

    def test_minimum_version_tls13(self) -> None:
        """minimum_version='TLSv1.3' is what the SSL_CTX holds."""
        factory = _client(minimum_version="TLSv1.3")  # held: the SSL_CTX is freed with its factory
        ctx = factory.context_address
        self.assertEqual(ossl.SSL_CTX_ctrl(ctx, CTRL_GET_MIN_PROTO_VERSION, 0, None), 0x0304)

    def test_weak_rsa_key_refused(self) -> None:
        """A 1024-bit RSA server certificate is refused at construction (security level 2)."""
        der, key = self_signed("weak.example", san=[x509.DNSName("weak.example")], rsa_bits=1024)
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        cert = _tmpfile(self, pem, "weak-cert.pem")
        keyfile = _tmpfile(self, key, "weak-key.pem")
        os.chmod(keyfile, 0o600)
        with self.assertRaises(ConfigurationError) as cm:
            ServerContextFactory(cert, keyfile)
        self.assertIn("too small", str(cm.exception))

    def test_strong_rsa_key_accepted(self) -> None:
        """A 2048-bit RSA server certificate is accepted (the twin of the weak key)."""
        der, key = self_signed("rsa.example", san=[x509.DNSName("rsa.example")], rsa_bits=2048)
        pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        keyfile = _tmpfile(self, key, "rsa-key.pem")
        os.chmod(keyfile, 0o600)
        ServerContextFactory(_tmpfile(self, pem, "rsa-cert.pem"), keyfile)

    def test_extended_master_secret_required(self) -> None:
        """A TLS 1.2 peer that does not negotiate the extended master secret is refused: nobody completes the handshake."""
        for side in ("server", "client"):
            server = _server(maximum_version="TLSv1.2")
            client = _client()
            weak = server if side == "server" else client
            ossl.SSL_CTX_set_options(weak.context_address, ossl.OP_NO_EXTENDED_MASTER_SECRET)
            self.assertTrue(weak.options() & 1, "SSL_OP_NO_EXTENDED_MASTER_SECRET is bit 0")
            pair = _handshake(server, client)
            pair.client_events += pair.client.receive_bytes(b"")  # the server hung up
            kinds = [type(e) for e in pair.client_events + pair.server_events]
            self.assertNotIn(HandshakeCompleted, kinds, side)
            # The side facing the weak peer refuses it, names the reason, and alerts the other.
            strict_events = pair.client_events if side == "server" else pair.server_events
            other_events = pair.server_events if side == "server" else pair.client_events
            failed = [e.error for e in strict_events if isinstance(e, Failed)]
            self.assertEqual(len(failed), 1, (side, strict_events))
            self.assertIn("extended master secret", str(failed[0]))
            alerted = [e.error for e in other_events if isinstance(e, Failed)]
            self.assertIsInstance(alerted[0], PeerAlertError, side)

    def test_extended_master_secret_negotiated(self) -> None:
        """A default TLS 1.2 handshake negotiates the extended master secret."""
        pair = _handshake(_server(maximum_version="TLSv1.2"), _client())
        self.assertEqual([type(e) for e in pair.client_events], [HandshakeCompleted])
        self.assertTrue(ossl.extms_used(pair.client.ssl_address))

    def test_no_compression_negotiated(self) -> None:
        """A handshake reports no compression."""
        pair = _handshake(_server(), _client())
        self.assertIsNone(pair.client.info().compression)


class ReuseTests(SynchronousTestCase):
    """One SSL_CTX per factory, reused."""

    def test_one_ssl_ctx_for_every_engine(self) -> None:
        """Every engine a factory makes uses the factory's one SSL_CTX."""
        for factory in (_client(), _server()):
            engines = [factory.create_engine() for _ in range(3)]
            for engine in engines:
                self.assertEqual(ossl.SSL_get_SSL_CTX(engine.ssl_address), factory.context_address)
                engine.free()

    def test_with_hostname_shares_ssl_ctx(self) -> None:
        """with_hostname() returns a factory for another name on the same SSL_CTX, leaving the original alone."""
        base = _client("localhost")
        other = base.with_hostname("example.com")
        self.assertIsNot(other, base)
        self.assertEqual(other.context_address, base.context_address)
        self.assertEqual(other.hostname, "example.com")
        self.assertEqual(base.hostname, "localhost")
        engine = other.create_engine()
        self.assertEqual(ossl.SSL_get_SSL_CTX(engine.ssl_address), base.context_address)
        engine.free()

    def test_with_hostname_checks_new_name(self) -> None:
        """A with_hostname() factory checks its own name: the other name is rejected with HostnameMismatchError."""
        base = _client("localhost")
        pair = _handshake(_server(), base.with_hostname("example.com"))
        self.assertEqual([type(e) for e in pair.client_events], [HandshakeCompleted])
        pair = _handshake(_server(), base.with_hostname("nowhere.example"))
        self.assertIsInstance(pair.client_events[-1].error, HostnameMismatchError)

    def test_hostnameless_factory_with_hostname(self) -> None:
        """A factory made without a hostname works once with_hostname() gives one."""
        pair = _handshake(_server(), _client(None).with_hostname("localhost"))
        self.assertEqual([type(e) for e in pair.client_events], [HandshakeCompleted])

    def test_sni_sent_for_names(self) -> None:
        """A client sends its hostname as SNI, lower-cased."""
        pair = _handshake(_server(), _client("LocalHost"))
        self.assertEqual(pair.server.server_name(), "localhost")

    def test_no_sni_for_ip_literals(self) -> None:
        """A client connecting to an IP literal sends no SNI and still verifies the IP SAN."""
        for host in ("127.0.0.1", "::1", "[::1]"):
            pair = _handshake(_server(), _client(host))
            self.assertIsNone(pair.server.server_name(), host)
            self.assertEqual([type(e) for e in pair.client_events], [HandshakeCompleted], host)


class ConfigurationErrorTests(SynchronousTestCase):
    """Every configuration mistake raises ConfigurationError at construction."""

    def assertConfigError(self, make: Callable[[], object], *fragments: str) -> ConfigurationError:
        with self.assertRaises(ConfigurationError) as cm:
            make()
        for fragment in fragments:
            self.assertIn(fragment, str(cm.exception))
        self.assertIsInstance(cm.exception, ValueError)
        return cm.exception

    def test_valid_configuration_accepted(self) -> None:
        """A complete, consistent configuration builds both factories (the twin of every error below)."""
        p = pki()
        _server(client_cafile=p.cafile, verify_depth=2)
        _client(certificate=p.client.cert, private_key=p.client.key, verify_depth=1)
        ServerContextFactory(p.server.chain)  # key and certificate in one file

    def test_missing_certificate_file(self) -> None:
        """A certificate path that does not exist is refused, naming the path."""
        self.assertConfigError(lambda: ServerContextFactory("/nonexistent/cert.pem", pki().server.key), "/nonexistent/cert.pem")

    def test_missing_key_file(self) -> None:
        """A key path that does not exist is refused, naming the path."""
        self.assertConfigError(lambda: ServerContextFactory(pki().server.cert, "/nonexistent/key.pem"), "/nonexistent/key.pem")

    def test_certificate_without_key(self) -> None:
        """A certificate file holding no key, with no key file, is refused."""
        self.assertConfigError(lambda: ServerContextFactory(pki().server.cert), "private key")

    def test_key_given_as_certificate(self) -> None:
        """A key file passed as the certificate is refused."""
        self.assertConfigError(lambda: ServerContextFactory(pki().server.key, pki().server.key), "certificate")

    def test_garbage_key_file(self) -> None:
        """A key file that is not PEM is refused without echoing its content."""
        path = _tmpfile(self, b"SECRET-NOT-A-KEY")
        error = self.assertConfigError(lambda: ServerContextFactory(pki().server.cert, path), path)
        self.assertNotIn("SECRET-NOT-A-KEY", str(error))

    def test_key_not_matching_certificate(self) -> None:
        """A key that does not match the certificate is refused at construction, naming both files."""
        p = pki()
        self.assertConfigError(
            lambda: ServerContextFactory(p.server.cert, p.client.key), "does not match", p.server.cert, p.client.key
        )

    def test_client_key_not_matching_certificate(self) -> None:
        """A client certificate with another key is refused at construction."""
        p = pki()
        self.assertConfigError(
            lambda: _client(certificate=p.client.cert, private_key=p.server.key), "does not match"
        )

    def test_missing_cafile(self) -> None:
        """A CA file that does not exist is refused."""
        self.assertConfigError(lambda: ClientContextFactory("localhost", cafile="/nonexistent/ca.pem"), "/nonexistent/ca.pem")

    def test_cafile_without_certificates(self) -> None:
        """A CA file holding no certificate is refused."""
        path = _tmpfile(self, b"not a certificate\n")
        self.assertConfigError(lambda: ClientContextFactory("localhost", cafile=path), path)

    def test_missing_capath(self) -> None:
        """A CA directory that does not exist is refused."""
        self.assertConfigError(lambda: ClientContextFactory("localhost", capath="/nonexistent/certs"), "/nonexistent/certs")

    def test_bad_client_cafile(self) -> None:
        """A server client-CA file that does not exist or holds no certificate is refused."""
        self.assertConfigError(lambda: _server(client_cafile="/nonexistent/ca.pem"), "/nonexistent/ca.pem")
        path = _tmpfile(self, b"junk")
        self.assertConfigError(lambda: _server(client_cafile=path), path)

    def test_bad_version_names(self) -> None:
        """Unknown protocol version names are refused, for both bounds and both roles."""
        for bad in ("TLSv1.4", "SSLv3", "tls1.2", ""):
            self.assertConfigError(lambda: _client(minimum_version=bad), repr(bad))
            self.assertConfigError(lambda: _server(maximum_version=bad), repr(bad))

    def test_tls10_tls11_refused(self) -> None:
        """TLS 1.0 and 1.1 (which could never be negotiated: security level 2,
        AEAD-only ciphers) are refused by name, as either bound, in both roles."""
        for old in ("TLSv1", "TLSv1.1"):
            self.assertConfigError(lambda: _client(minimum_version=old), f"minimum_version {old!r}")
            self.assertConfigError(lambda: _server(minimum_version=old), "RFC 8996")
            self.assertConfigError(lambda: _client(maximum_version=old), f"maximum_version {old!r}")
            self.assertConfigError(lambda: _server(maximum_version=old), "TLSv1.2")

    def test_minimum_above_maximum(self) -> None:
        """A minimum version above the maximum is refused."""
        self.assertConfigError(lambda: _client(minimum_version="TLSv1.3", maximum_version="TLSv1.2"))

    def test_bad_cipher_string(self) -> None:
        """A TLS 1.2 cipher string matching no cipher is refused."""
        self.assertConfigError(lambda: _client(ciphers="NO-SUCH-CIPHER"), "NO-SUCH-CIPHER")
        self.assertConfigError(lambda: _server(ciphers="NO-SUCH-CIPHER"), "NO-SUCH-CIPHER")

    def test_bad_ciphersuites(self) -> None:
        """An unknown TLS 1.3 ciphersuite is refused."""
        self.assertConfigError(lambda: _client(ciphersuites="TLS_NO_SUCH_SUITE"), "TLS_NO_SUCH_SUITE")

    def test_bad_groups(self) -> None:
        """An unknown key-exchange group is refused."""
        self.assertConfigError(lambda: _client(groups="X25519:NOPE-999"), "NOPE-999")
        self.assertConfigError(lambda: _server(groups="NOPE-999"), "NOPE-999")

    def test_verify_depth_below_one(self) -> None:
        """verify_depth 0, negative, a bool or not an int is refused, for both roles, verifying or not."""
        for bad in (0, -1, True, 2.5, "3"):
            self.assertConfigError(lambda: _client(verify_depth=bad), "verify_depth")
            self.assertConfigError(lambda: _client(verify_depth=bad, insecure_skip_verify=True), "verify_depth")
            self.assertConfigError(lambda: _server(verify_depth=bad), "verify_depth")
            self.assertConfigError(lambda: _server(verify_depth=bad, client_cafile=pki().cafile), "verify_depth")

    def test_private_key_without_certificate(self) -> None:
        """A client private_key without certificate is refused."""
        self.assertConfigError(lambda: _client(private_key=pki().client.key), "without certificate")

    def test_client_without_hostname_while_verifying(self) -> None:
        """A verifying client factory without a hostname refuses to make an engine."""
        factory = _client(None)
        self.assertConfigError(factory.create_engine, "hostname")

    def test_insecure_client_without_hostname(self) -> None:
        """An insecure_skip_verify client factory may make an engine without a hostname."""
        with self.assertLogs("twistls", logging.WARNING):
            factory = _client(None, insecure_skip_verify=True)
        factory.create_engine().free()

    def test_bad_hostname(self) -> None:
        """A hostname that is not a str, or is empty, is refused."""
        self.assertConfigError(lambda: _client(b"localhost"))  # type: ignore[arg-type]
        self.assertConfigError(lambda: _client(""))
        self.assertConfigError(lambda: _client("exa mple.com"), "not a valid DNS name")
        self.assertConfigError(lambda: _client("*.example.com"), "not a valid DNS name")
        self.assertConfigError(lambda: _client("localhost").with_hostname("bad name"), "not a valid DNS name")

    def test_bad_pins(self) -> None:
        """A malformed pin is refused by the client factory."""
        self.assertConfigError(lambda: _client(pins=["00" * 31]), "pin")

    def test_bad_handshake_timeout(self) -> None:
        """A handshake timeout of zero or less is refused."""
        self.assertConfigError(lambda: _client(handshake_timeout=0), "handshake_timeout")
        self.assertConfigError(lambda: _server(handshake_timeout=-1), "handshake_timeout")


class InsecureTests(SynchronousTestCase):
    """insecure_skip_verify: loud, and effective."""

    def test_insecure_logs_warning(self) -> None:
        """insecure_skip_verify=True logs a warning on the 'twistls' logger naming the setting."""
        with self.assertLogs("twistls", logging.WARNING) as cm:
            _client(insecure_skip_verify=True)
        self.assertEqual(len(cm.records), 1)
        self.assertIn("insecure_skip_verify", cm.output[0])

    def test_insecure_warns_once_per_factory(self) -> None:
        """Making engines and with_hostname() copies of an insecure factory logs nothing more."""
        with self.assertLogs("twistls", logging.WARNING):
            factory = _client(insecure_skip_verify=True)
        with self.assertNoLogs("twistls", logging.WARNING):
            factory.create_engine().free()
            factory.with_hostname("example.com").create_engine().free()

    def test_verifying_factory_does_not_warn(self) -> None:
        """A verifying factory logs no warning."""
        with self.assertNoLogs("twistls", logging.WARNING):
            _client()

    def test_insecure_chain_errors_not_fatal(self) -> None:
        """An insecure client's SSL_CTX verifies (so its callback's verdict stays fatal) but accepts chain errors."""
        with self.assertLogs("twistls", logging.WARNING):
            factory = _client(insecure_skip_verify=True)
        self.assertEqual(ossl.SSL_CTX_get_verify_mode(factory.context_address), ossl.VERIFY_PEER)
        self.assertTrue(factory._handle.accept_unverified)
        self.assertFalse(factory._handle.verifying)

    def test_untrusted_rejected_when_verifying(self) -> None:
        """A verifying client rejects an untrusted certificate with UntrustedCertificateError."""
        pair = _handshake(_server(leaf=pki().untrusted_server), _client())
        self.assertIsInstance(pair.client_events[-1].error, UntrustedCertificateError)

    def test_insecure_accepts_untrusted(self) -> None:
        """An insecure client completes a handshake with an untrusted, wrongly named certificate and reports it unverified."""
        with self.assertLogs("twistls", logging.WARNING):
            factory = _client("wrong.example", insecure_skip_verify=True)
        pair = EnginePair(factory.create_engine(), _server(leaf=pki().untrusted_server).create_engine())
        pair.client.send_plaintext(b"hello")
        pair.start()
        pair.pump()
        self.assertEqual([type(e) for e in pair.client_events], [HandshakeCompleted])
        self.assertEqual(pair.received("server"), b"hello")
        info = pair.client.info()
        self.assertFalse(info.verified)
        self.assertNotEqual(info.verify_result, 0)

    def test_insecure_still_enforces_pins(self) -> None:
        """An insecure client with pins still rejects a key that is not pinned with PinMismatchError, and accepts a pinned one."""
        p = pki()
        with self.assertLogs("twistls", logging.WARNING):
            bad = _client(insecure_skip_verify=True, pins=[spki_sha256(p.server.der)])
            good = _client(insecure_skip_verify=True, pins=[spki_sha256(p.untrusted_server.der)])
        pair = _handshake(_server(leaf=p.untrusted_server), bad)
        error = pair.client_events[-1].error
        self.assertIsInstance(error, PinMismatchError)
        self.assertIsInstance(error, TLSError)
        pair = _handshake(_server(leaf=p.untrusted_server), good)
        self.assertEqual([type(e) for e in pair.client_events], [HandshakeCompleted])


def _failure(pair: EnginePair, side: str = "client") -> Any:
    events = pair.client_events if side == "client" else pair.server_events
    failed = [e for e in events if isinstance(e, Failed)]
    return failed[0].error if failed else None


class NoSilentWeakeningTests(SynchronousTestCase):
    """No combination of arguments silently weakens what the user asked for."""

    def test_required_client_certificate_without_cas_refused(self) -> None:
        """require_client_certificate=True without client CAs is a ConfigurationError naming the missing setting."""
        with self.assertRaises(ConfigurationError) as cm:
            _server(require_client_certificate=True)
        self.assertIn("client_cafile", str(cm.exception))

    def test_client_cas_require_a_certificate_by_default(self) -> None:
        """With client CAs and no explicit choice, a client without a certificate is refused."""
        server = _server(client_cafile=pki().cafile)
        self.assertTrue(server.require_client_certificate)
        mode = ossl.SSL_CTX_get_verify_mode(server.context_address)
        self.assertEqual(mode, ossl.VERIFY_PEER | ossl.VERIFY_FAIL_IF_NO_PEER_CERT)
        self.assertIsInstance(_failure(_handshake(server, _client()), "server"), NoPeerCertificateError)

    def test_plain_server_needs_no_client_certificate(self) -> None:
        """The twin: ServerContextFactory(cert, key) keeps working and asks for no client certificate."""
        server = _server()
        self.assertFalse(server.require_client_certificate)
        self.assertEqual(ossl.SSL_CTX_get_verify_mode(server.context_address), ossl.VERIFY_NONE)
        self.assertIsNone(_failure(_handshake(server, _client())))

    def test_optional_client_certificate_still_verified(self) -> None:
        """require_client_certificate=False with client CAs makes the certificate optional, not unverified."""
        p = pki()
        server = _server(client_cafile=p.cafile, require_client_certificate=False)
        self.assertEqual(ossl.SSL_CTX_get_verify_mode(server.context_address), ossl.VERIFY_PEER)
        self.assertIsNone(_failure(_handshake(server, _client())))
        stranger = _client(certificate=p.untrusted_server.cert, private_key=p.untrusted_server.key)
        self.assertIsInstance(_failure(_handshake(server, stranger), "server"), VerificationError)

    def test_bad_chain_limits_refused(self) -> None:
        """max_peer_chain_size and session_cache_memory must be whole, positive byte counts."""
        for kw in ({"max_peer_chain_size": 0}, {"max_peer_chain_size": True}, {"session_cache_memory": -1}):
            with self.assertRaises(ConfigurationError) as cm:
                _server(**kw)
            self.assertIn(next(iter(kw)), str(cm.exception))


class PeerChainLimitTests(SynchronousTestCase):
    """A client cannot pad its certificate chain to fill a server's session cache."""

    def _padded_client(self, size: int) -> ClientContextFactory:
        p = pki()
        with open(p.client.cert, "rb") as f:
            pem = f.read()
        while len(pem) < size:
            der, _ = self_signed("junk", rsa_bits=2048)
            pem += x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
        path = _tmpfile(self, pem, "padded-client.pem")
        return _client(certificate=path, private_key=p.client.key)

    def test_padded_client_chain_refused(self) -> None:
        """A client chain over max_peer_chain_size fails the handshake on the server."""
        server = _server(client_cafile=pki().cafile)
        pair = _handshake(server, self._padded_client(48 * 1024))
        self.assertIsInstance(_failure(pair, "server"), TLSError)
        self.assertFalse(pair.server.handshake_done)

    def test_client_chain_under_limit_accepted(self) -> None:
        """The twin: a client chain under the limit (raised to fit) is accepted."""
        server = _server(client_cafile=pki().cafile, max_peer_chain_size=128 * 1024)
        pair = _handshake(server, self._padded_client(48 * 1024))
        self.assertIsNone(_failure(pair, "server"))
        self.assertTrue(pair.server.handshake_done)

    def test_session_cache_bounded_by_memory(self) -> None:
        """With client certificates the server cache holds at most session_cache_memory // max_peer_chain_size sessions."""
        server = _server(client_cafile=pki().cafile)
        self.assertEqual(server.effective_session_cache_size, 64 * 1024 * 1024 // (32 * 1024))
        get_size = 43  # SSL_CTRL_GET_SESS_CACHE_SIZE
        self.assertEqual(ossl.SSL_CTX_ctrl(server.context_address, get_size, 0, None), 2048)
        plain = _server()
        self.assertEqual(plain.effective_session_cache_size, 20480)


class ExtendedMasterSecretTests(SynchronousTestCase):
    """TLS 1.2 without the extended master secret is refused in the ClientHello, with an alert."""

    def _no_ems_client(self, maximum: str = "TLSv1.2") -> ClientContextFactory:
        client = _client(maximum_version=maximum)
        ossl.SSL_CTX_set_options(client.context_address, ossl.OP_NO_EXTENDED_MASTER_SECRET)
        return client

    def test_tls12_without_ems_refused_with_alert(self) -> None:
        """The server answers the ClientHello with a handshake_failure alert and names the reason."""
        client, server = self._no_ems_client().create_engine(), _server().create_engine()
        client.start()
        events = server.receive_bytes(client.bytes_to_send())
        failures = [e.error for e in events if isinstance(e, Failed)]
        self.assertEqual(len(failures), 1)
        self.assertIn("extended master secret", str(failures[0]))
        self.assertEqual(server.bytes_to_send(), b"\x15\x03\x03\x00\x02\x02\x28")  # fatal handshake_failure
        pair = _handshake(_server(), self._no_ems_client())
        error = _failure(pair)
        self.assertIsInstance(error, PeerAlertError)
        self.assertEqual(error.alert, "handshake failure")

    def test_tls13_without_ems_accepted(self) -> None:
        """The twin: EMS means nothing in TLS 1.3, so such a client negotiating 1.3 is accepted."""
        pair = _handshake(_server(), self._no_ems_client(maximum="TLSv1.3"))
        self.assertIsNone(_failure(pair))
        self.assertEqual(pair.client.version(), "TLSv1.3")

    def test_tls12_with_ems_accepted(self) -> None:
        """The twin: a default TLS 1.2 client (it offers EMS) is accepted."""
        pair = _handshake(_server(), _client(maximum_version="TLSv1.2"))
        self.assertIsNone(_failure(pair))
        self.assertEqual(pair.client.version(), "TLSv1.2")


class KeyLogFileTests(SynchronousTestCase):
    """The key-log file never leaks secrets through a symlink or a loose mode."""

    def _path(self) -> str:
        directory = tempfile.mkdtemp(prefix="twistls-keylog-")
        return os.path.join(directory, "keys.log")

    def test_symlink_refused(self) -> None:
        """A key-log path that is a symlink is refused, and its target receives nothing."""
        path = self._path()
        target = path + ".target"
        open(target, "wb").close()
        os.symlink(target, path)
        with self.assertRaises(ConfigurationError) as cm:
            _client(keylog_file=path)
        self.assertIn(path, str(cm.exception))
        self.assertEqual(os.path.getsize(target), 0)

    def test_world_readable_file_made_private(self) -> None:
        """An existing 0644 key-log file is made 0600 before any secret is written."""
        path = self._path()
        open(path, "wb").close()
        os.chmod(path, 0o644)
        with self.assertLogs("twistls", logging.WARNING):
            client = _client(keylog_file=path)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        _handshake(_server(), client)
        self.assertIn(b"CLIENT_TRAFFIC_SECRET_0", open(path, "rb").read())

    def test_new_file_is_private(self) -> None:
        """A new key-log file is created mode 0600."""
        path = self._path()
        with self.assertLogs("twistls", logging.WARNING):
            _client(keylog_file=path)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_other_owner_refused(self) -> None:
        """A key-log file owned by another user is refused."""
        if os.geteuid() != 0:
            raise self.skipTest("needs root to give the file away")  # type: ignore[misc]
        path = self._path()
        open(path, "wb").close()
        os.chown(path, 65534, -1)
        with self.assertRaises(ConfigurationError) as cm:
            _client(keylog_file=path)
        self.assertIn("owned by another user", str(cm.exception))

    def test_not_a_regular_file_refused(self) -> None:
        """A key-log path that is a directory or a FIFO is refused."""
        path = self._path()
        os.mkfifo(path)
        with self.assertRaises(ConfigurationError):
            _client(keylog_file=path)


class ServerWithoutEMSTests(SynchronousTestCase):
    """A TLS 1.2 server that does not agree to the extended master secret is refused inside the handshake, with an alert."""

    def test_tls12_server_without_ems_refused_with_alert(self) -> None:
        """The client refuses the ServerHello's choice before finishing, and the server receives handshake_failure."""
        server = _server(maximum_version="TLSv1.2")
        ossl.SSL_CTX_set_options(server.context_address, ossl.OP_NO_EXTENDED_MASTER_SECRET)
        pair = _handshake(server, _client())
        error = _failure(pair)
        self.assertIsInstance(error, TLSError)
        self.assertIn("extended master secret", str(error))
        self.assertFalse(pair.client.handshake_done)
        server_error = _failure(pair, "server")
        self.assertIsInstance(server_error, PeerAlertError)
        self.assertEqual(server_error.alert, "handshake failure")

    def test_tls12_server_with_ems_accepted(self) -> None:
        """The twin: a default TLS 1.2 server (it agrees to EMS) is accepted."""
        pair = _handshake(_server(maximum_version="TLSv1.2"), _client())
        self.assertIsNone(_failure(pair))
        self.assertEqual(pair.client.version(), "TLSv1.2")

    def test_tls13_server_unaffected(self) -> None:
        """A TLS 1.3 server is accepted whatever its EMS option (EMS is a TLS 1.2 notion)."""
        server = _server()
        ossl.SSL_CTX_set_options(server.context_address, ossl.OP_NO_EXTENDED_MASTER_SECRET)
        pair = _handshake(server, _client())
        self.assertIsNone(_failure(pair))
        self.assertEqual(pair.client.version(), "TLSv1.3")

    def test_insecure_client_refuses_too(self) -> None:
        """An insecure_skip_verify client refuses such a server with an alert as well."""
        server = _server(maximum_version="TLSv1.2")
        ossl.SSL_CTX_set_options(server.context_address, ossl.OP_NO_EXTENDED_MASTER_SECRET)
        with self.assertLogs("twistls", logging.WARNING):
            client = _client(insecure_skip_verify=True)
        pair = _handshake(server, client)
        self.assertIn("extended master secret", str(_failure(pair)))
        self.assertIsInstance(_failure(pair, "server"), PeerAlertError)

    def test_server_hello_parser(self) -> None:
        """The ServerHello reader tells TLS 1.3, HelloRetryRequest and EMS apart, and gives up on garbage."""
        def hello(random: bytes, extensions: bytes) -> bytes:
            body = b"\x03\x03" + random + b"\x00" + b"\x13\x01" + b"\x00" + len(extensions).to_bytes(2, "big") + extensions
            return b"\x02" + len(body).to_bytes(3, "big") + body

        ems = b"\x00\x17\x00\x00"
        tls13 = b"\x00\x2b\x00\x02\x03\x04"
        self.assertEqual(ossl.server_hello_facts(hello(b"r" * 32, ems)), (False, False, True))
        self.assertEqual(ossl.server_hello_facts(hello(b"r" * 32, b"")), (False, False, False))
        self.assertEqual(ossl.server_hello_facts(hello(b"r" * 32, tls13)), (False, True, False))
        self.assertEqual(ossl.server_hello_facts(hello(ossl._HRR_RANDOM, tls13))[0], True)
        self.assertIsNone(ossl.server_hello_facts(b"\x02\x00"))
        self.assertIsNone(ossl.server_hello_facts(b"\x01" + b"\x00" * 80))


class ModuleLayoutTests(SynchronousTestCase):
    """The context layer stays below Twisted; names moved out of it stay importable from it."""

    def test_context_imports_no_twisted(self) -> None:
        """Importing twistls.context imports no Twisted module (so no reactor) and not the SIGHUP reload module."""
        import subprocess
        import sys

        code = (
            "import sys, twistls.context\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted' or m == 'twistls._reload'))\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(result.stdout.strip(), "[]", result.stderr)

    def test_reload_names_still_importable_from_context(self) -> None:
        """The SIGHUP helpers imported from twistls.context, and twistls.reload_on_sighup, are those of twistls._reload."""
        import twistls
        from twistls import _reload
        from twistls.context import (
            _reload_each,
            _reload_on_sighup_when_running,
            _sighup_factories,
            reload_on_sighup,
        )

        self.assertIs(reload_on_sighup, _reload.reload_on_sighup)
        self.assertIs(twistls.reload_on_sighup, _reload.reload_on_sighup)
        self.assertIs(_reload_each, _reload.reload_each)
        self.assertIs(_reload_on_sighup_when_running, _reload.reload_on_sighup_when_running)
        self.assertIs(_sighup_factories, _reload.sighup_factories)

    def test_unknown_context_attribute_is_an_attribute_error(self) -> None:
        """A name twistls.context never had is an AttributeError, not a lazy import."""
        import twistls.context

        self.assertRaises(AttributeError, getattr, twistls.context, "no_such_name")


class SessionOfferTests(SynchronousTestCase):
    """A cached session is offered only while its verified chain passes the factory's checks."""

    def _cached(self) -> tuple[ClientContextFactory, tuple[Any, ...]]:
        client = _client()
        pair = _handshake(_server(maximum_version="TLSv1.2"), client)
        self.assertIsNone(_failure(pair))
        for side in (pair.client, pair.server):  # close_notify both ways: the session stays resumable
            side.close()
            pair.pump()
        key = ("localhost", None, "localhost", "localhost")
        sessions = client._sessions
        assert sessions is not None
        self.assertEqual(len(sessions), 1)
        return client, key

    def test_session_offered_when_chain_still_passes(self) -> None:
        """offer() gives the session back when the verifier accepts its chain, or when there is no verifier."""
        client, key = self._cached()
        sessions = client._sessions
        assert sessions is not None
        for verifier in (None, lambda peer, verified: None):
            offered = sessions.offer(key, verifier)
            assert offered is not None
            ossl.SSL_SESSION_free(offered[0])  # the caller's reference
        self.assertEqual(len(sessions), 1)

    def test_offered_session_outlives_the_cache_entry(self) -> None:
        """offer() hands over a reference of the caller's own: another
        thread replacing, evicting or clearing the entry (here: while the
        verifier runs) does not free the session being offered."""
        from twistls import _sessions

        client, key = self._cached()
        sessions = client._sessions
        assert sessions is not None
        counts = {"up": 0, "free": 0}
        real_free, real_up = ossl.SSL_SESSION_free, getattr(ossl, "SSL_SESSION_up_ref", None)

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(ossl, name)

            def SSL_SESSION_free(self, session: int) -> None:
                counts["free"] += 1
                real_free(session)

            def SSL_SESSION_up_ref(self, session: int) -> int:
                counts["up"] += 1
                assert real_up is not None
                return int(real_up(session))

        def clear_meanwhile(peer: Any, verified: Any) -> None:
            sessions.clear()  # another thread, while this one checks the chain

        self.patch(_sessions, "_ossl", Counting())
        offered = sessions.offer(key, clear_meanwhile)
        assert offered is not None
        # The cache held one reference; whatever it freed, one must be left for the caller.
        self.assertGreaterEqual(1 + counts["up"] - counts["free"], 1)
        self.assertEqual(ossl.SSL_SESSION_is_resumable(offered[0]), 1)
        real_free(offered[0])

    def test_session_dropped_when_chain_refused(self) -> None:
        """offer() drops the session, and offers nothing, when the verifier refuses its chain."""
        client, key = self._cached()
        sessions = client._sessions
        assert sessions is not None

        def refuse(peer: Any, verified: Any) -> None:
            raise HostnameMismatchError("other.example", [])

        self.assertIsNone(sessions.offer(key, refuse))
        self.assertEqual(len(sessions), 0)
        self.assertIsNone(sessions.offer(key, None))


class ReloadExpiryWarningTests(SynchronousTestCase):
    """A reload that brings in a certificate expiring soon warns, as the start-up status line does."""

    def test_reload_to_a_near_expiry_certificate_warns(self) -> None:
        import datetime

        from tests._pki import HOSTS

        p = pki()
        factory = ServerContextFactory(p.server.cert, p.server.key)
        soon = p.leaf("reload-soon", p.ca, *HOSTS, not_after=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3))
        with self.assertLogs("twistls", logging.WARNING) as cm:
            factory.reload(soon.cert, soon.key)
        self.assertTrue(any("expires in" in line for line in cm.output), cm.output)

    def test_reload_to_a_far_expiry_certificate_does_not_warn(self) -> None:
        """The twin: the usual test certificate (valid for months) reloads without a warning."""
        p = pki()
        factory = ServerContextFactory(p.server.cert, p.server.key)
        with self.assertLogs("twistls", logging.INFO) as cm:
            factory.reload(p.server.cert, p.server.key)
        self.assertFalse(any("WARNING" in line for line in cm.output), cm.output)
