"""The strict PKI profile (issue 13): trust anchors, rules, real PKIs, conformance."""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import tempfile
import warnings
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import SynchronousTestCase

from tests._pki import pki
from tests._pump import EnginePair
from tests.conformance.cases import FAMILIES, cases
from tests.conformance.run import KNOWN, Verdict, table
from twistls import _pkix
from twistls._engine import Failed, HandshakeCompleted
from twistls._mkcert import make_certificates
from twistls.checker import Checker
from twistls.context import ClientContextFactory, ServerContextFactory
from twistls.errors import ConfigurationError, PKIProfileError, VerificationError

DER = serialization.Encoding.DER


def _tmpdir(testcase: SynchronousTestCase) -> str:
    d = tempfile.mkdtemp(prefix="twistls-pkix-")
    testcase.addCleanup(shutil.rmtree, d, True)
    return d


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


def _handshake(client: ClientContextFactory, cert: str, key: str) -> EnginePair:
    pair = EnginePair(client.create_engine(), ServerContextFactory(cert, key).create_engine()).start()
    pair.pump()
    return pair


def _failure(pair: EnginePair) -> Any:
    for event in pair.client_events:
        if isinstance(event, Failed):
            return event.error
    return None


def _served(pair: EnginePair) -> bool:
    return any(isinstance(e, HandshakeCompleted) for e in pair.client_events) and pair.client.handshake_done


class TrustAnchorTests(SynchronousTestCase):
    """Loading the anchors OpenSSL uses into a pyca store."""

    def test_system_store_loads_every_root(self) -> None:
        """The system store loads into a pyca Store, roots without extensions a leaf needs included."""
        cafile, capath = _pkix.system_paths()
        if cafile is None and capath is None:
            raise self.skipTest("no system trust store on this machine")
        anchors = _pkix.load_trust_anchors()
        self.assertIsNotNone(anchors.store)
        self.assertGreater(anchors.count, 50)
        self.assertIn("system trust store", anchors.source)
        unusual = {"no SKI": 0, "serial <= 0": 0, "non-critical basicConstraints": 0, "no keyUsage": 0}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cryptography warns about the zero serials it counts
            for cert in anchors.certificates:
                ext = {e.oid: e for e in cert.extensions}
                unusual["no SKI"] += x509.SubjectKeyIdentifier.oid not in ext
                unusual["no keyUsage"] += x509.KeyUsage.oid not in ext
                bc = ext.get(x509.BasicConstraints.oid)
                unusual["non-critical basicConstraints"] += bc is not None and not bc.critical
                unusual["serial <= 0"] += cert.serial_number <= 0
        print(f"system store: {anchors.count} anchors, {anchors.skipped} unparsable; unusual roots: {unusual}")
        self.assertGreater(sum(unusual.values()), 0)  # real roots do lack what a leaf must have

    def test_load_is_cached_per_location(self) -> None:
        """The same (cafile, capath) gives the same loaded object: a factory loads once."""
        self.assertIs(_pkix.load_trust_anchors(pki().cafile, None), _pkix.load_trust_anchors(pki().cafile, None))

    def test_capath_directory_of_pem_files(self) -> None:
        """A CA directory loads every PEM certificate in it, once each."""
        d = _tmpdir(self)
        shutil.copy(pki().cafile, os.path.join(d, "a.pem"))
        shutil.copy(pki().cafile, os.path.join(d, "b.0"))
        shutil.copy(pki().other_cafile, os.path.join(d, "c.pem"))
        _write(d, "junk.txt", b"not a certificate")
        anchors = _pkix.load_trust_anchors(None, d)
        self.assertEqual(anchors.count, 2)

    def test_unreadable_cafile_is_a_configuration_error(self) -> None:
        """A CA file pyca cannot read is refused at construction, like OpenSSL's."""
        d = _tmpdir(self)
        path = _write(d, "empty.pem", b"nothing here\n")
        self.assertRaises(ConfigurationError, _pkix.load_trust_anchors, path, None)

    def test_unknown_profile_is_a_configuration_error(self) -> None:
        """pki_profile takes 'strict' or 'rfc5280' only."""
        exc = self.assertRaises(ConfigurationError, ClientContextFactory, "localhost", cafile=pki().cafile, pki_profile="lax")
        self.assertIn("rfc5280", str(exc))


class RealPKITests(SynchronousTestCase):
    """Real PKIs keep working under the strict default, over a real handshake."""

    def test_trustme_chains_verify(self) -> None:
        """trustme leaves (direct, one and three intermediates) pass the strict profile."""
        p = pki()
        for leaf in (p.server, p.chained_server, p.deep_server):
            client = ClientContextFactory("localhost", cafile=p.cafile)
            self.assertEqual(client.pki_profile, "strict")
            pair = _handshake(client, leaf.cert, leaf.key)
            self.assertTrue(_served(pair), _failure(pair))

    def test_trustme_wrong_host_still_fails_with_its_specific_error(self) -> None:
        """The failure twin: the strict default keeps HostnameMismatchError for a wrong name."""
        from twistls.errors import HostnameMismatchError

        pair = _handshake(ClientContextFactory("wrong.example", cafile=pki().cafile), pki().server.cert, pki().server.key)
        self.assertIsInstance(_failure(pair), HostnameMismatchError)

    def test_mkcert_certificates_verify(self) -> None:
        """`twistls mkcert` output passes the strict profile for every default name."""
        result = make_certificates(_tmpdir(self))
        for host in ("localhost", "127.0.0.1", "::1"):
            pair = _handshake(ClientContextFactory(host, cafile=result.cafile), result.certificate, result.private_key)
            self.assertTrue(_served(pair), (host, _failure(pair)))

    def _openssl(self, *args: str) -> None:
        if shutil.which("openssl") is None:
            raise self.skipTest("no openssl binary")
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    def test_openssl_req_x509_with_san(self) -> None:
        """A self-signed `openssl req -x509 -addext subjectAltName` certificate, trusted as cafile, verifies."""
        d = _tmpdir(self)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", key, "-out", cert,
        )  # fmt: skip
        for host in ("localhost", "127.0.0.1"):
            pair = _handshake(ClientContextFactory(host, cafile=cert), cert, key)
            self.assertTrue(_served(pair), (host, _failure(pair)))

    def _openssl_private_ca(self, leaf_ext: str) -> tuple[str, str, str]:
        """An `openssl req -x509` CA and an `openssl x509 -req` leaf with ``leaf_ext``."""
        d = _tmpdir(self)
        ca, ca_key = os.path.join(d, "ca.pem"), os.path.join(d, "ca.key")
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=Private CA", "-keyout", ca_key, "-out", ca,
        )  # fmt: skip
        key, csr, cert = os.path.join(d, "leaf.key"), os.path.join(d, "leaf.csr"), os.path.join(d, "leaf.pem")
        self._openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", "/CN=localhost", "-keyout", key, "-out", csr,
        )  # fmt: skip
        ext = _write(d, "leaf.ext", leaf_ext.encode())
        self._openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-days", "2", "-extfile", ext, "-out", cert)
        return ca, cert, key

    def test_openssl_private_ca_with_eku_verifies(self) -> None:
        """An OpenSSL-command-line private CA whose leaf has SAN and serverAuth passes the strict profile."""
        ca, cert, key = self._openssl_private_ca(
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
            "basicConstraints=critical,CA:FALSE\n"
        )
        pair = _handshake(ClientContextFactory("localhost", cafile=ca), cert, key)
        self.assertTrue(_served(pair), _failure(pair))

    def test_private_ca_leaf_without_eku_is_refused_and_names_the_opt_out(self) -> None:
        """A private CA's leaf without extendedKeyUsage fails with PKIProfileError naming pki_profile='rfc5280', which accepts it."""
        ca, cert, key = self._openssl_private_ca("subjectAltName=DNS:localhost\n")
        pair = _handshake(ClientContextFactory("localhost", cafile=ca), cert, key)
        error = _failure(pair)
        self.assertIsInstance(error, PKIProfileError)
        self.assertEqual(error.rule, "eku-missing")
        self.assertIn("extendedKeyUsage", str(error))
        self.assertIn('pki_profile="rfc5280"', str(error))
        self.assertIn("CN=localhost", str(error))
        pair = _handshake(ClientContextFactory("localhost", cafile=ca, pki_profile="rfc5280"), cert, key)
        self.assertTrue(_served(pair), _failure(pair))


def _cn_mismatch_leaf(d: str) -> tuple[str, str, str]:
    """A CA and a leaf whose commonName is not among its subjectAltNames (files)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CN test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other.example")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return (
        _write(d, "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        _write(d, "leaf.pem", leaf.public_bytes(serialization.Encoding.PEM)),
        _write(d, "leaf.key", key_pem),
    )


class ClientProfileTests(SynchronousTestCase):
    """The live client: OpenSSL and the strict profile must both accept."""

    def test_cn_not_in_san_fails_strict_and_passes_rfc5280(self) -> None:
        """A commonName outside the subjectAltName fails the handshake with PKIProfileError; rfc5280 accepts it."""
        ca, cert, key = _cn_mismatch_leaf(_tmpdir(self))
        pair = _handshake(ClientContextFactory("localhost", cafile=ca), cert, key)
        error = _failure(pair)
        self.assertIsInstance(error, PKIProfileError)
        self.assertIsInstance(error, VerificationError)
        self.assertEqual(error.rule, "cn-not-in-san")
        self.assertIn("CN=other.example", str(error))
        self.assertFalse(pair.client.handshake_done)
        pair = _handshake(ClientContextFactory("localhost", cafile=ca, pki_profile="rfc5280"), cert, key)
        self.assertTrue(_served(pair), _failure(pair))

    def test_insecure_skip_verify_runs_no_profile(self) -> None:
        """insecure_skip_verify=True loads no anchors and checks no profile."""
        client = ClientContextFactory("localhost", insecure_skip_verify=True)
        self.assertIsNone(client._pki)

    def test_with_hostname_shares_the_profile(self) -> None:
        """with_hostname() keeps the factory's loaded anchors."""
        client = ClientContextFactory("localhost", cafile=pki().cafile)
        other = client.with_hostname("example.com")
        self.assertIs(other._pki, client._pki)
        assert other._checker is not None
        self.assertIs(other._checker.pki, client._pki)

    def test_session_resumption_still_works(self) -> None:
        """A resumed session (leaf plus the verified chain only) passes the strict profile for a chained server."""
        leaf = pki().chained_server
        client = ClientContextFactory("localhost", cafile=pki().cafile)
        server = ServerContextFactory(leaf.cert, leaf.key)
        for _ in range(3):
            pair = EnginePair(client.create_engine(("127.0.0.1", 443)), server.create_engine()).start()
            pair.pump()
            self.assertTrue(_served(pair), _failure(pair))


class CheckerProfileTests(SynchronousTestCase):
    """The Checker's profile check and its accepted-chain cache."""

    def setUp(self) -> None:
        p = pki()
        self.profile = _pkix.StrictProfile(_pkix.load_trust_anchors(p.cafile, None))
        with open(p.chained_server.cert, "rb") as f:
            self.sent = [c.public_bytes(DER) for c in x509.load_pem_x509_certificates(f.read())]
        self.verified = [*self.sent, x509.load_pem_x509_certificate(p.ca.cert_pem.bytes()).public_bytes(DER)]

    def test_repeat_checks_are_cached(self) -> None:
        """A chain accepted once is accepted again without running pyca."""
        checker = Checker("localhost", purpose="server", pki=self.profile)
        calls: list[int] = []
        real = _pkix.StrictProfile.verify

        def counting(this: _pkix.StrictProfile, *args: Any) -> list[x509.Certificate]:
            calls.append(1)
            return real(this, *args)

        self.patch(_pkix.StrictProfile, "verify", counting)
        for _ in range(5):
            checker.check(self.sent, verified_chain=self.verified)
        self.assertEqual(len(calls), 1)

    def test_cache_entry_expires_at_the_first_not_after(self) -> None:
        """The cached verdict holds only until the earliest notAfter of pyca's path."""
        checker = Checker("localhost", purpose="server", pki=self.profile)
        checker.check(self.sent, verified_chain=self.verified)
        (until,) = checker._accepted.values()
        leaf = x509.load_der_x509_certificate(self.sent[0])
        self.assertLessEqual(until, leaf.not_valid_after_utc.timestamp())

    def test_profile_error_lists_every_problem(self) -> None:
        """A chain breaking several rules raises one PKIProfileError whose problems name each rule."""
        case = {c.name: c for c in cases()}["nc-leaf-san-invalid"]
        anchors = [_pkix.load_der(d) for d in case.anchors]
        profile = _pkix.StrictProfile(
            _pkix.TrustAnchors(_pkix._pyca.Store(anchors), tuple(anchors), 0, "test"), at=case.at
        )
        exc = self.assertRaises(PKIProfileError, profile.verify, case.leaf, case.intermediates, case.host)
        rules = [p.rule for p in exc.problems]
        self.assertIn("san-dns-syntax", rules)
        self.assertIn("path-validation", rules)
        self.assertEqual(exc.rule, rules[0])

    def test_common_name_rules(self) -> None:
        """Each commonName spelling rule has its own rule name."""
        by_name = {c.name: c for c in cases()}
        for name, rule in (
            ("cn-not-in-san", "cn-not-in-san"),
            ("cn-case-mismatch", "cn-case"),
            ("cn-unicode-vs-punycode", "cn-idna"),
            ("cn-ip-leading-zeros", "cn-ip-not-canonical"),
            ("cn-ipv6-uncompressed", "cn-ip-not-canonical"),
        ):
            problems = _pkix.common_name_problems(_pkix.load_der(by_name[name].leaf))
            self.assertEqual([p.rule for p in problems], [rule], name)
        self.assertEqual(_pkix.common_name_problems(_pkix.load_der(by_name["ok-dns"].leaf)), [])

    def test_public_suffix(self) -> None:
        """Public suffixes are recognised (ICANN list, or the built-in fallback)."""
        for suffix in ("com", "co.uk", "com.au"):
            self.assertTrue(_pkix.is_public_suffix(suffix), suffix)
        for name in ("example.com", "example.co.uk"):
            self.assertFalse(_pkix.is_public_suffix(name), name)


_TABLE: dict[str, list[Verdict]] = {}


def _verdicts() -> dict[str, list[Verdict]]:
    if not _TABLE:
        _TABLE.update(table())
    return _TABLE


class ConformanceTests(SynchronousTestCase):
    """The generated conformance set, through ``twistls verify``'s engine, for both profiles."""

    def test_strict_matches_every_expected_verdict(self) -> None:
        """The strict profile gives the expected verdict on every case but the documented exceptions."""
        wrong = [
            f"{v.case.name}: {v.outcome} {v.problems[:1]}"
            for v in _verdicts()["strict"]
            if v.outcome != "pass" and v.case.name not in KNOWN
        ]
        self.assertEqual(wrong, [])

    def test_known_exceptions_are_still_exceptions(self) -> None:
        """Each documented exception still differs (so the list stays honest)."""
        outcome = {v.case.name: v.outcome for v in _verdicts()["strict"]}
        for name in KNOWN:
            self.assertNotEqual(outcome[name], "pass", name)

    def test_every_rejecting_family_is_fixed_by_strict(self) -> None:
        """Every family of wrongly accepted certificates has a case rfc5280 accepts and strict refuses."""
        rfc, strict = _verdicts()["rfc5280"], _verdicts()["strict"]
        fixed = {a.case.family for a, b in zip(rfc, strict) if a.outcome == "false accept" and b.outcome == "pass"}
        rejecting = {c.family for c in cases() if c.expected == "reject" and c.family not in ("validity",)}
        self.assertEqual(sorted(rejecting - fixed), [])

    def test_strict_never_rejects_what_rfc5280_rightly_accepts(self) -> None:
        """No valid case that rfc5280 accepts is refused by strict (no new false rejects)."""
        rfc, strict = _verdicts()["rfc5280"], _verdicts()["strict"]
        added = [a.case.name for a, b in zip(rfc, strict) if a.outcome == "pass" and b.outcome == "false reject"]
        self.assertEqual(added, [])

    def test_families_cover_the_issue(self) -> None:
        """Every family of issue 13 has at least one case."""
        self.assertEqual(sorted({c.family for c in cases()}), sorted(FAMILIES))


class SurfaceTests(SynchronousTestCase):
    """The profile's switch in endpoint strings and in ``twistls verify``."""

    def test_endpoint_string_key(self) -> None:
        """pkiProfile= picks the profile of a twistls: client string; strict is the default; others are refused."""
        from twisted.internet.endpoints import clientFromString
        from twisted.internet.testing import MemoryReactor

        base = f"twistls:host=localhost:port=443:caFile={pki().cafile}"
        self.assertEqual(clientFromString(MemoryReactor(), base).context_factory.pki_profile, "strict")
        endpoint = clientFromString(MemoryReactor(), base + ":pkiProfile=rfc5280")
        self.assertEqual(endpoint.context_factory.pki_profile, "rfc5280")
        exc = self.assertRaises(ConfigurationError, clientFromString, MemoryReactor(), base + ":pkiProfile=lax")
        self.assertIn("pkiProfile", str(exc))

    def _verify(self, *argv: str) -> tuple[int, str]:
        import contextlib
        import io

        from twistls.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(["verify", *argv])
        return status, out.getvalue()

    def test_verify_lists_every_problem_and_takes_the_flag(self) -> None:
        """`twistls verify` lists every broken rule under the strict default and accepts with --pki-profile rfc5280."""
        case = {c.name: c for c in cases()}["nc-leaf-san-invalid"]
        d = _tmpdir(self)
        chain = _write(d, "chain.pem", case.pem_chain())
        anchors = _write(d, "anchors.pem", case.pem_anchors())
        at = case.at.isoformat()
        status, out = self._verify(chain, "--cafile", anchors, "--host", case.host, "--at", at)
        self.assertEqual(status, 1)
        self.assertIn("san-dns-syntax", out)
        self.assertIn("path-validation", out)
        self.assertGreaterEqual(out.count("problem"), 2)
        status, out = self._verify(chain, "--cafile", anchors, "--host", case.host, "--at", at, "--pki-profile", "rfc5280")
        self.assertEqual(status, 0, out)


class LegacyCommonNameTests(SynchronousTestCase):
    """allow_common_name=True and the strict profile."""

    def test_san_less_certificate_names_the_opt_out(self) -> None:
        """A SAN-less certificate fails the strict profile with rule san-missing, naming the opt-out."""
        from tests._pki import self_signed

        der, _ = self_signed("localhost")
        ca_der, _ = self_signed("some CA")
        anchors = [_pkix.load_der(ca_der)]
        profile = _pkix.StrictProfile(_pkix.TrustAnchors(_pkix._pyca.Store(anchors), tuple(anchors), 0, "test"))
        exc = self.assertRaises(PKIProfileError, profile.verify, der, [], "localhost")
        self.assertIn("san-missing", [p.rule for p in exc.problems])
        self.assertIn('pki_profile="rfc5280"', str(exc.problems[[p.rule for p in exc.problems].index("san-missing")]))


class LiveAgreementTests(SynchronousTestCase):
    """The live client (a real in-memory handshake) and `twistls verify` agree on every case they can both run."""

    def test_live_client_agrees_with_verify(self) -> None:
        """For each case a server can present, both profiles give the same verdict live and offline."""
        from tests.conformance.cases import NOW, leaf_key_pem, served_by_leaf_key

        d = _tmpdir(self)
        key = _write(d, "leaf.key", leaf_key_pem())
        offline = {profile: {v.case.name: v for v in vs} for profile, vs in _verdicts().items()}
        disagree, ran = [], 0
        for case in cases():
            if case.at != NOW or not served_by_leaf_key(case):
                continue  # another validation time, or a key no server holds
            chain = _write(d, f"{case.name}.pem", case.pem_chain())
            anchors = _write(d, f"{case.name}-ca.pem", case.pem_anchors())
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    server = ServerContextFactory(chain, key)
            except ConfigurationError:
                continue  # OpenSSL will not serve it at all
            ran += 1
            for profile in ("rfc5280", "strict"):
                client = ClientContextFactory(case.host, cafile=anchors, pki_profile=profile, session_cache_size=0)
                pair = EnginePair(client.create_engine(), server.create_engine()).start()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pair.pump()
                live = bool(pair.client.handshake_done)
                if live != offline[profile][case.name].accepted:
                    disagree.append(f"{case.name} ({profile}): live {live}, verify {not live}: {_failure(pair)}")
        print(f"live agreement: {ran} cases served, both profiles")
        self.assertGreater(ran, 30)
        self.assertEqual(disagree, [])


class ReverificationTests(SynchronousTestCase):
    """`twistls verify` takes the alternatives a live client takes: pyca's path
    verified again by OpenSSL, and a certificate at exactly its notAfter."""

    def _files(self, name: str) -> tuple[Any, str, str]:
        case = {c.name: c for c in cases()}[name]
        d = _tmpdir(self)
        return case, _write(d, "chain.pem", case.pem_chain()), _write(d, "anchors.pem", case.pem_anchors())

    def _verify(self, name: str, profile: str, **kw: Any) -> Any:
        from twistls._verify import verify_certificate

        case, chain, anchors = self._files(name)
        kw.setdefault("at", case.at)
        return verify_certificate(chain, hostname=case.host, cafile=anchors, pki_profile=profile, **kw)

    def test_alternate_path_reverified_by_openssl(self) -> None:
        """strict: the chain reported is the one OpenSSL re-verified on pyca's path (through the
        open root); rfc5280 has no second path builder and refuses, naming the excluded subtree."""
        result = self._verify("alternate-path-constrained-first", "strict")
        self.assertEqual(result.problems, [])
        self.assertEqual(result.chain[-1].subject.rfc4514_string(), "CN=Open Root,O=twistls conformance")
        result = self._verify("alternate-path-constrained-first", "rfc5280")
        self.assertFalse(result.accepted)
        self.assertIn("excluded", str(result.problems[0]))

    def test_at_not_after_accepted_and_one_second_later_refused(self) -> None:
        """Both profiles accept at exactly notAfter (RFC 5280) and refuse one second later."""
        for profile in ("strict", "rfc5280"):
            self.assertTrue(self._verify("at-not-after", profile).accepted, profile)
            result = self._verify("after-not-after", profile)
            self.assertFalse(result.accepted, profile)
            self.assertEqual(result.problems[0].verify_code, 10)

    def test_depth_zero(self) -> None:
        """--depth 0 accepts a leaf issued by the anchor itself and refuses one below an intermediate."""
        for profile in ("strict", "rfc5280"):
            self.assertTrue(self._verify("ok-leaf-under-root", profile, depth=0).accepted, profile)
            result = self._verify("ok-dns", profile, depth=0)
            self.assertFalse(result.accepted, profile)
            self.assertTrue(self._verify("ok-dns", profile, depth=1).accepted, profile)

    def test_negative_depth_is_a_configuration_error(self) -> None:
        """A negative depth is refused before anything is verified."""
        self.assertRaises(ConfigurationError, self._verify, "ok-dns", "strict", depth=-1)
