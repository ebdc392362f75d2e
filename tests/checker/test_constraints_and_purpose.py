"""Past what OpenSSL checks: name constraints against the requested host,
and the extendedKeyUsage purpose of the peer's certificate."""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.trial.unittest import TestCase

from twistls import (
    CertificatePurposeError,
    Checker,
    ClientContextFactory,
    NameConstraintsError,
    ServerContextFactory,
    TLSError,
    VerificationError,
)
from twistls._engine import Failed
from tests._pump import EnginePair

NOW = datetime.datetime.now(datetime.timezone.utc)
DER = serialization.Encoding.DER


class Cert:
    """A certificate and its key, made with cryptography."""

    def __init__(
        self,
        name: str,
        issuer: Cert | None = None,
        *,
        ca: bool = False,
        sans: list[x509.GeneralName] | None = None,
        constraints: x509.NameConstraints | None = None,
        eku: list[x509.ObjectIdentifier] | None = None,
    ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(issuer.name if issuer else self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if constraints is not None:
            builder = builder.add_extension(constraints, critical=True)
        if eku is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        signer = issuer.key if issuer else self.key
        self.cert = builder.sign(signer, hashes.SHA256())
        self.der = self.cert.public_bytes(DER)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def dns(*names: str) -> list[x509.GeneralName]:
    return [x509.DNSName(n) for n in names]


def excluding(*names: str) -> x509.NameConstraints:
    return x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=dns(*names))


def permitting(*names: str) -> x509.NameConstraints:
    return x509.NameConstraints(permitted_subtrees=dns(*names), excluded_subtrees=None)


class NameConstraintTests(TestCase):
    """The requested host must satisfy every CA's name constraints."""

    def setUp(self) -> None:
        self.root = Cert("root", ca=True)
        self.inter = Cert("no-secret intermediate", self.root, ca=True, constraints=excluding("secret.example.com"))
        self.leaf = Cert("wildcard", self.inter, sans=dns("*.example.com"), eku=[ExtendedKeyUsageOID.SERVER_AUTH])

    def chain(self) -> list[bytes]:
        return [self.leaf.der, self.inter.der]

    def verified(self) -> list[bytes]:
        return [self.leaf.der, self.inter.der, self.root.der]

    def test_wildcard_under_excluding_intermediate_fails(self):
        """A *.example.com leaf under a CA excluding secret.example.com fails for that name."""
        exc = self.assertRaises(
            NameConstraintsError, Checker("secret.example.com").check, self.chain(), verified_chain=self.verified()
        )
        self.assertEqual(exc.hostname, "secret.example.com")
        self.assertEqual(exc.depth, 1)
        self.assertIn("excluded", str(exc))
        self.assertIn("no-secret intermediate", str(exc))
        self.assertIsInstance(exc, VerificationError)

    def test_other_names_under_the_wildcard_pass(self):
        """The same chain is fine for www.example.com, and for names below an excluded one's siblings."""
        Checker("www.example.com").check(self.chain(), verified_chain=self.verified())
        Checker("WWW.Example.COM.").check(self.chain(), verified_chain=self.verified())

    def test_case_and_trailing_dot_do_not_evade(self):
        """Upper case or a trailing dot in the requested name is still excluded."""
        for host in ("SECRET.example.com", "secret.example.com."):
            self.assertRaises(NameConstraintsError, Checker(host).check, self.chain(), verified_chain=self.verified())

    def test_excluded_subtree_covers_subdomains(self):
        """Excluding example.org also excludes a.example.org but not notexample.org."""
        inter = Cert("i", self.root, ca=True, constraints=excluding("example.org"))
        leaf = Cert("l", inter, sans=dns("*.example.org", "notexample.org"))
        verified = [leaf.der, inter.der, self.root.der]
        self.assertRaises(NameConstraintsError, Checker("a.example.org").check, [leaf.der], verified_chain=verified)
        Checker("notexample.org").check([leaf.der], verified_chain=verified)

    def test_permitted_subtree(self):
        """A CA permitting only example.com rejects other.org even if the leaf names it."""
        inter = Cert("only example.com", self.root, ca=True, constraints=permitting("example.com"))
        leaf = Cert("l", inter, sans=dns("www.example.com", "www.other.org"))
        verified = [leaf.der, inter.der, self.root.der]
        Checker("www.example.com").check([leaf.der], verified_chain=verified)
        exc = self.assertRaises(NameConstraintsError, Checker("www.other.org").check, [leaf.der], verified_chain=verified)
        self.assertIn("not permitted", str(exc))

    def test_constraint_on_the_trust_anchor(self):
        """A constraint on the root (which the peer never sends) counts when the verified chain is given."""
        root = Cert("constrained root", ca=True, constraints=excluding("secret.example.com"))
        leaf = Cert("l", root, sans=dns("*.example.com"))
        self.assertRaises(
            NameConstraintsError, Checker("secret.example.com").check, [leaf.der], verified_chain=[leaf.der, root.der]
        )

    def test_ip_address_constraints(self):
        """An IP host is held against iPAddress subtrees (excluded 10.0.0.0/8)."""
        nc = x509.NameConstraints(
            permitted_subtrees=None, excluded_subtrees=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))]
        )
        inter = Cert("i", self.root, ca=True, constraints=nc)
        leaf = Cert(
            "l", inter, sans=[x509.IPAddress(ipaddress.ip_address("10.1.2.3")), x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]
        )
        verified = [leaf.der, inter.der, self.root.der]
        self.assertRaises(NameConstraintsError, Checker("10.1.2.3").check, [leaf.der], verified_chain=verified)
        Checker("192.0.2.1").check([leaf.der], verified_chain=verified)

    def test_handshake_fails_where_openssl_alone_passes(self):
        """Over a real handshake OpenSSL accepts the chain, and the twistls
        Checker refuses secret.example.com with NameConstraintsError."""
        d = tempfile.mkdtemp(prefix="twistls-nc-")

        def write(name: str, data: bytes) -> str:
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o600)
            return path

        cert = write("chain.pem", self.leaf.pem() + self.inter.pem())
        key = write("key.pem", self.leaf.key_pem())
        ca = write("root.pem", self.root.pem())
        server_cf = ServerContextFactory(cert, key)
        for host, ok in (("www.example.com", True), ("secret.example.com", False)):
            # rfc5280: the profile of OpenSSL + the Checker this test is about (these
            # hand-made certificates, without key identifiers, fail the strict profile).
            client = ClientContextFactory(host, cafile=ca, pki_profile="rfc5280").create_engine()
            pair = EnginePair(client, server_cf.create_engine()).start()
            pair.pump()
            self.assertEqual(client.handshake_done, ok, host)
            if ok:
                # OpenSSL accepts this chain (its verification does not depend on the name).
                self.assertEqual(client.verify_result(), 0)
            else:
                failures = [e for e in pair.client_events if isinstance(e, Failed)]
                self.assertEqual(len(failures), 1)
                self.assertIsInstance(failures[0].error, NameConstraintsError)
                # The Checker ran inside the handshake and failed it as an
                # application verification error (50), not OpenSSL's own
                # name-constraint codes (47, 48).
                self.assertEqual(client.verify_result(), 50)


class PurposeTests(TestCase):
    """A leaf's extendedKeyUsage must allow its role."""

    def setUp(self) -> None:
        self.root = Cert("root", ca=True)

    def leaf(self, eku: list[x509.ObjectIdentifier] | None) -> bytes:
        return Cert("leaf", self.root, sans=dns("example.com"), eku=eku).der

    def test_server_needs_server_auth(self):
        """A server leaf with only clientAuth fails purpose="server" with CertificatePurposeError."""
        exc = self.assertRaises(
            CertificatePurposeError,
            Checker("example.com", purpose="server").check,
            [self.leaf([ExtendedKeyUsageOID.CLIENT_AUTH])],
        )
        self.assertEqual(exc.purpose, "serverAuth")
        self.assertIn("serverAuth", str(exc))
        self.assertIn("clientAuth", str(exc))

    def test_client_needs_client_auth(self):
        """A client leaf with only serverAuth fails purpose="client"."""
        exc = self.assertRaises(
            CertificatePurposeError, Checker(purpose="client").check, [self.leaf([ExtendedKeyUsageOID.SERVER_AUTH])]
        )
        self.assertEqual(exc.purpose, "clientAuth")

    def test_matching_or_absent_usage_passes(self):
        """serverAuth (alone or with others) passes; no extendedKeyUsage at all passes (RFC 5280)."""
        checker = Checker("example.com", purpose="server")
        checker.check([self.leaf([ExtendedKeyUsageOID.SERVER_AUTH])])
        checker.check([self.leaf([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH])])
        checker.check([self.leaf(None)])

    def test_unknown_purpose_is_a_configuration_error(self):
        """purpose must be "server", "client" or None."""
        from twistls import ConfigurationError

        self.assertRaises(ConfigurationError, Checker, purpose="email")

    def test_client_context_checks_server_purpose(self):
        """A twistls client refuses a server certificate made for clients only."""
        d = tempfile.mkdtemp(prefix="twistls-eku-")
        leaf = Cert("leaf", self.root, sans=dns("example.com"), eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
        paths = {}
        for name, data in (("cert", leaf.pem()), ("key", leaf.key_pem()), ("ca", self.root.pem())):
            paths[name] = os.path.join(d, name + ".pem")
            with open(paths[name], "wb") as f:
                f.write(data)
            os.chmod(paths[name], 0o600)
        client = ClientContextFactory("example.com", cafile=paths["ca"]).create_engine()
        server = ServerContextFactory(paths["cert"], paths["key"]).create_engine()
        pair = EnginePair(client, server).start()
        pair.pump()
        self.assertFalse(client.handshake_done)
        failures = [e for e in pair.client_events if isinstance(e, Failed)]
        self.assertEqual(len(failures), 1)
        # OpenSSL's own purpose check (ssl_server) or the Checker: either way a VerificationError.
        self.assertIsInstance(failures[0].error, VerificationError)
        self.assertIsInstance(failures[0].error, TLSError)
