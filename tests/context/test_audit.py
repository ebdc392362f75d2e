"""Configuration audit of a default twistls server (and ``profile="modern"``).

Two layers:

* always: in-memory probes with one cipher, suite, group or version at a
  time against the server factory, plus ``openssl s_client`` over
  127.0.0.1 for the wire view (versions, compression, secure renegotiation);
* when sslyze is available: a full sslyze scan checked against Mozilla's
  "intermediate" / "modern" configurations, Heartbleed, ROBOT, CCS
  injection, compression, insecure renegotiation and session resumption.

sslyze pins ``cryptography<47``, older than the one twistls is tested with,
so it lives in its own virtual environment::

    python3 -m venv .venv-audit && .venv-audit/bin/pip install sslyze

and is found there, or through ``TWISTLS_SSLYZE_PYTHON=/path/to/python``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import trustme

from twistls import ClientContextFactory, ServerContextFactory, TLSError
from twistls import _openssl as _ossl
from tests._pump import EnginePair
from tests.e2e.test_memory import start_server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Mozilla server-side TLS, version 5.7.
INTERMEDIATE_TLS12 = {
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-CHACHA20-POLY1305",
}
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
ALL_TLS13_SUITES = TLS13_SUITES | {"TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"}
MOZILLA_GROUPS = {"X25519", "P-256", "P-384"}
PROBE_GROUPS = ["X25519", "X448", "P-256", "P-384", "P-521", "ffdhe2048", "ffdhe3072", "ffdhe4096"]


class _Certs:
    """A test CA with one RSA and one ECDSA leaf valid for 60 days."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="twistls-audit-")
        now = datetime.datetime.now(datetime.timezone.utc)
        self.paths: dict[str, tuple[str, str]] = {}
        for kind, key_type in (("rsa", trustme.KeyType.RSA), ("ecdsa", trustme.KeyType.ECDSA)):
            ca = trustme.CA(key_type=key_type)
            leaf = ca.issue_cert(
                "localhost",
                "127.0.0.1",
                key_type=key_type,
                not_before=now - datetime.timedelta(days=1),
                not_after=now + datetime.timedelta(days=60),
            )
            files = []
            for name, data in (
                ("ca", ca.cert_pem.bytes()),
                ("cert", b"".join(b.bytes() for b in leaf.cert_chain_pems)),
                ("key", leaf.private_key_pem.bytes()),
            ):
                path = os.path.join(self.dir, f"{kind}-{name}.pem")
                with open(path, "wb") as f:
                    f.write(data)
                os.chmod(path, 0o600)
                files.append(path)
            self.paths[kind] = (files[1], files[2])
            setattr(self, f"{kind}_ca", files[0])


_CERTS: list[_Certs] = []


def certs() -> _Certs:
    if not _CERTS:
        _CERTS.append(_Certs())
    return _CERTS[0]


def all_tls12_ciphers() -> list[str]:
    out = subprocess.run(
        ["openssl", "ciphers", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"], capture_output=True, text=True, timeout=30
    ).stdout
    return [c for c in out.strip().split(":") if c and not c.startswith("TLS_")]


class InMemoryAuditTests(unittest.TestCase):
    """One-at-a-time probes against the server factories (no sockets)."""

    def accepts(self, server: ServerContextFactory, *, version: str, tweak) -> bool:
        client_cf = ClientContextFactory(
            "localhost", insecure_skip_verify=True, minimum_version="TLSv1.2", maximum_version="TLSv1.3"
        )
        ctx = client_cf.context_address
        _ossl.SSL_CTX_set_security_level(ctx, 0)
        _ossl.set_min_max_version(ctx, version, version)
        try:
            tweak(ctx)
        except ValueError:
            return False  # this OpenSSL cannot even offer it
        client = client_cf.create_engine()
        pair = EnginePair(client, server.create_engine())
        try:
            pair.start()
        except TLSError:  # "no ciphers available": the client cannot offer it
            pair.client.free()
            pair.server.free()
            _ossl.drain_errors()
            return False
        pair.pump()
        ok = client.handshake_done
        pair.client.free()
        pair.server.free()
        _ossl.drain_errors()
        return ok

    def server(self, kind: str, **kw) -> ServerContextFactory:
        cert, key = certs().paths[kind]
        return ServerContextFactory(cert, key, **kw)

    def accepted_tls12_ciphers(self, server: ServerContextFactory) -> set[str]:
        return {
            c
            for c in all_tls12_ciphers()
            if self.accepts(server, version="TLSv1.2", tweak=lambda ctx, c=c: _ossl.set_cipher_list(ctx, c + ":@SECLEVEL=0"))
        }

    def test_intermediate_versions(self):
        """A default server speaks TLS 1.2 and 1.3 and refuses TLS 1.0 and 1.1."""
        for kind in ("rsa", "ecdsa"):
            server = self.server(kind)
            got = {
                v
                for v in ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
                if self.accepts(server, version=v, tweak=lambda ctx: _ossl.set_cipher_list(ctx, "ALL:@SECLEVEL=0"))
            }
            self.assertEqual(got, {"TLSv1.2", "TLSv1.3"}, kind)

    def test_intermediate_tls12_ciphers(self):
        """Every TLS 1.2 cipher a default server accepts (RSA or ECDSA key) is
        in Mozilla intermediate: ECDHE + AEAD only, so no RSA key exchange (ROBOT), no CBC, no RC4."""
        for kind in ("rsa", "ecdsa"):
            accepted = self.accepted_tls12_ciphers(self.server(kind))
            self.assertTrue(accepted, kind)
            self.assertLessEqual(accepted, INTERMEDIATE_TLS12, kind)
            self.assertFalse([c for c in accepted if not c.startswith(("ECDHE-", "DHE-"))])

    def test_tls13_suites(self):
        """TLS 1.3 suites accepted are the three Mozilla lists (no CCM)."""
        server = self.server("ecdsa")
        got = {
            s
            for s in ALL_TLS13_SUITES
            if self.accepts(server, version="TLSv1.3", tweak=lambda ctx, s=s: _ossl.set_ciphersuites(ctx, s))
        }
        self.assertEqual(got, TLS13_SUITES)

    def test_groups(self):
        """Key exchange groups accepted are exactly X25519, P-256, P-384
        (TLS 1.2 probed with the RSA key: an ECDSA key's own curve must be
        offered in TLS 1.2, which would hide the others)."""
        for version, kind in (("TLSv1.2", "rsa"), ("TLSv1.3", "ecdsa")):
            server = self.server(kind)
            got = {
                g
                for g in PROBE_GROUPS
                if self.accepts(server, version=version, tweak=lambda ctx, g=g: _ossl.set_groups(ctx, g))
            }
            self.assertEqual(got, MOZILLA_GROUPS, version)

    def test_modern_profile(self):
        """profile="modern" speaks TLS 1.3 only, with the three Mozilla suites."""
        server = self.server("ecdsa", profile="modern")
        got = {
            v
            for v in ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
            if self.accepts(server, version=v, tweak=lambda ctx: _ossl.set_cipher_list(ctx, "ALL:@SECLEVEL=0"))
        }
        self.assertEqual(got, {"TLSv1.3"})
        self.assertEqual(self.accepted_tls12_ciphers(server), set())

    def test_unknown_profile_refused(self):
        """An unknown profile is a ConfigurationError."""
        from twistls import ConfigurationError

        cert, key = certs().paths["ecdsa"]
        self.assertRaises(ConfigurationError, ServerContextFactory, cert, key, profile="old")

    def test_options(self):
        """Compression, renegotiation and unsafe legacy renegotiation are off; server cipher preference on."""
        options = self.server("ecdsa").options()
        self.assertTrue(options & _ossl.OP_NO_COMPRESSION)
        self.assertTrue(options & _ossl.OP_NO_RENEGOTIATION)
        self.assertTrue(options & _ossl.OP_CIPHER_SERVER_PREFERENCE)
        self.assertFalse(options & _ossl.OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION)
        self.assertFalse(options & _ossl.OP_LEGACY_SERVER_CONNECT)
        self.assertFalse(options & _ossl.OP_ALLOW_CLIENT_RENEGOTIATION)


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
class WireAuditTests(unittest.TestCase):
    """openssl s_client against a twistls server process over 127.0.0.1."""

    def setUp(self) -> None:
        cert, key = certs().paths["rsa"]
        self.proc, self.port = start_server(self, "echo", cert=cert, key=key)

    def s_client(self, *args: str) -> tuple[int, str]:
        done = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}", "-servername", "localhost", *args],
            input=b"",
            capture_output=True,
            timeout=30,
        )
        return done.returncode, done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")

    def test_versions_on_the_wire(self):
        """s_client completes TLS 1.2 and 1.3 and is refused for TLS 1.0 and 1.1."""
        for flag, ok in (("-tls1_3", True), ("-tls1_2", True), ("-tls1_1", False), ("-tls1", False)):
            rc, out = self.s_client(flag, "-cipher", "ALL:@SECLEVEL=0")
            self.assertEqual("Cipher is (NONE)" not in out and "New, " in out, ok, (flag, out[-800:]))

    def test_no_compression_and_secure_renegotiation(self):
        """TLS 1.2: no compression, RFC 5746 secure renegotiation advertised."""
        rc, out = self.s_client("-tls1_2")
        self.assertIn("Compression: NONE", out)
        self.assertIn("Secure Renegotiation IS supported", out)


def _sslyze_python() -> str | None:
    for candidate in (os.environ.get("TWISTLS_SSLYZE_PYTHON"), os.path.join(ROOT, ".venv-audit", "bin", "python")):
        if candidate and os.path.exists(candidate):
            return candidate
    try:
        import sslyze  # noqa: F401

        return sys.executable
    except ImportError:
        return None


SSLYZE = _sslyze_python()


@unittest.skipUnless(SSLYZE, "sslyze not installed (see the module docstring)")
class SslyzeAuditTests(unittest.TestCase):
    """sslyze against a twistls server process: Mozilla compliance and known attacks."""

    def scan(self, profile: str) -> tuple[dict[str, str], str]:
        cert, key = certs().paths["ecdsa"]
        proc, port = start_server(self, "echo", profile, cert=cert, key=key)
        done = subprocess.run(
            [SSLYZE, "-m", "sslyze", f"--mozilla_config={profile}", "--resum", f"127.0.0.1:{port}"],
            capture_output=True,
            timeout=240,
        )
        out = done.stdout.decode("utf-8", "replace")
        issues: dict[str, str] = {}
        in_compliance = False
        for line in out.splitlines():
            if "COMPLIANCE AGAINST" in line:
                in_compliance = True
            elif in_compliance and line.strip().startswith("* ") and ":" in line:
                name, _, text = line.strip()[2:].partition(":")
                issues[name.strip()] = text.strip()
        return issues, out

    def check(self, profile: str) -> str:
        issues, out = self.scan(profile)
        self.assertIn("COMPLIANCE AGAINST", out, out[-2000:])
        # The test CA is not in sslyze's public trust stores: the only expected finding.
        issues.pop("certificate_path_validation", None)
        self.assertEqual(issues, {}, out[-3000:])
        return out

    def test_intermediate_compliant(self):
        """A default server is Mozilla-intermediate compliant; no compression,
        Heartbleed, ROBOT, CCS injection or insecure renegotiation; resumption works."""
        out = self.check("intermediate")
        for expected in (
            "OK - Compression disabled",
            "OK - Not vulnerable to Heartbleed",
            "OK - Not vulnerable to OpenSSL CCS injection",
            "Client Renegotiation DoS Attack:   OK - Not vulnerable",
            "Secure Renegotiation:              OK - Supported",
        ):
            self.assertIn(expected, out)
        self.assertRegex(out, r"ROBOT Attack:\s*\n\s*OK - Not vulnerable")
        self.assertRegex(out, r"(?s)Session Resumption.*?OK - Supported \(\d+ successful")

    def test_modern_compliant(self):
        """profile="modern" is Mozilla-modern compliant."""
        self.check("modern")
