"""The Checker: pure hostname/IP/pin matching over DER certificates."""

from __future__ import annotations

import base64
import ipaddress

from cryptography import x509
from twisted.trial.unittest import SynchronousTestCase

from tests._pki import pki, self_signed
from twistls.checker import Checker, certificate_names, parse_ip, spki_sha256
from twistls.errors import (
    ConfigurationError,
    HostnameMismatchError,
    NoPeerCertificateError,
    PinMismatchError,
)


def _cert(cn: str = "ignored.example", *names: str) -> bytes:
    """A self-signed DER certificate whose SAN holds ``names`` ("DNS:..", "IP:..");
    with no names, the certificate has no subjectAltName extension at all."""
    if not names:
        return self_signed(cn)[0]
    san: list[x509.GeneralName] = []
    for name in names:
        kind, _, value = name.partition(":")
        if kind == "DNS":
            san.append(x509.DNSName(value))
        elif kind == "IP":
            san.append(x509.IPAddress(ipaddress.ip_address(value)))
        else:
            raise ValueError(name)
    return self_signed(cn, san=san)[0]


class DNSNameTests(SynchronousTestCase):
    """DNS names against subjectAltName DNS entries."""

    def test_exact_name_matches(self) -> None:
        """A name listed in the SAN is accepted."""
        Checker("www.example.com").check([_cert("x", "DNS:www.example.com")])

    def test_other_name_rejected(self) -> None:
        """A name not in the SAN fails with HostnameMismatchError naming the host and the SAN."""
        with self.assertRaises(HostnameMismatchError) as cm:
            Checker("evil.example").check([_cert("x", "DNS:www.example.com")])
        error = cm.exception
        self.assertEqual(error.hostname, "evil.example")
        self.assertIn("DNS:www.example.com", error.names)
        self.assertIn("'evil.example'", str(error))
        self.assertIn("DNS:www.example.com", str(error))
        self.assertTrue(error.errors)
        self.assertEqual(error.depth, 0)

    def test_case_insensitive(self) -> None:
        """Name matching ignores ASCII case."""
        Checker("WWW.Example.COM").check([_cert("x", "DNS:www.example.com")])

    def test_trailing_dot_accepted(self) -> None:
        """A fully qualified name with a trailing dot matches the SAN without it."""
        Checker("www.example.com.").check([_cert("x", "DNS:www.example.com")])

    def test_second_san_entry_matches(self) -> None:
        """Any one of several SAN entries may match."""
        Checker("b.example").check([_cert("x", "DNS:a.example", "DNS:b.example")])

    def test_suffix_is_not_a_match(self) -> None:
        """A SAN for a parent domain does not match a subdomain."""
        with self.assertRaises(HostnameMismatchError):
            Checker("www.example.com").check([_cert("x", "DNS:example.com")])

    def test_trustme_certificate(self) -> None:
        """The shared test PKI's server certificate matches the names it was issued for."""
        for host in ("localhost", "example.com", "127.0.0.1", "::1"):
            Checker(host).check([pki().server.der])

    def test_trustme_certificate_wrong_name(self) -> None:
        """The shared test PKI's server certificate is rejected for a name it lacks."""
        with self.assertRaises(HostnameMismatchError) as cm:
            Checker("other.example").check([pki().server.der])
        self.assertIn("DNS:localhost", str(cm.exception))


class WildcardTests(SynchronousTestCase):
    """RFC 6125 wildcard rules."""

    def test_left_most_label_wildcard_matches(self) -> None:
        """*.example.com matches one left-most label."""
        Checker("www.example.com").check([_cert("x", "DNS:*.example.com")])

    def test_wildcard_does_not_match_bare_domain(self) -> None:
        """*.example.com does not match example.com."""
        with self.assertRaises(HostnameMismatchError):
            Checker("example.com").check([_cert("x", "DNS:*.example.com")])

    def test_wildcard_does_not_match_two_labels(self) -> None:
        """*.example.com does not match a.b.example.com."""
        with self.assertRaises(HostnameMismatchError):
            Checker("a.b.example.com").check([_cert("x", "DNS:*.example.com")])

    def test_partial_wildcard_rejected(self) -> None:
        """A partial wildcard (w*.example.com) matches nothing."""
        with self.assertRaises(HostnameMismatchError):
            Checker("www.example.com").check([_cert("x", "DNS:w*.example.com")])

    def test_non_left_most_wildcard_rejected(self) -> None:
        """A wildcard in a label other than the left-most (www.*.com) matches nothing."""
        with self.assertRaises(HostnameMismatchError):
            Checker("www.example.com").check([_cert("x", "DNS:www.*.com")])

    def test_wildcard_does_not_match_ip(self) -> None:
        """A DNS wildcard never matches an IP address."""
        with self.assertRaises(HostnameMismatchError):
            Checker("192.0.2.1").check([_cert("x", "DNS:*.0.2.1")])


class IPAddressTests(SynchronousTestCase):
    """IP addresses only against subjectAltName IP entries."""

    def test_ipv4_matches_ip_san(self) -> None:
        """An IPv4 address matches an IP SAN entry."""
        Checker("192.0.2.7").check([_cert("x", "IP:192.0.2.7")])

    def test_ipv4_other_address_rejected(self) -> None:
        """A different IPv4 address fails with HostnameMismatchError naming both."""
        with self.assertRaises(HostnameMismatchError) as cm:
            Checker("192.0.2.8").check([_cert("x", "IP:192.0.2.7")])
        self.assertIn("192.0.2.8", str(cm.exception))
        self.assertIn("IP:192.0.2.7", str(cm.exception))

    def test_ipv6_matches_ip_san(self) -> None:
        """An IPv6 address matches an IP SAN entry, whatever its textual form."""
        cert = _cert("x", "IP:2001:db8::1")
        Checker("2001:db8::1").check([cert])
        Checker("2001:0db8:0000:0000:0000:0000:0000:0001").check([cert])

    def test_bracketed_ipv6_matches(self) -> None:
        """A bracketed IPv6 literal ([::1]) matches the IP SAN entry ::1."""
        Checker("[::1]").check([_cert("x", "IP:::1")])

    def test_ipv6_other_address_rejected(self) -> None:
        """A different IPv6 address fails with HostnameMismatchError."""
        with self.assertRaises(HostnameMismatchError):
            Checker("[::2]").check([_cert("x", "IP:::1")])

    def test_ip_never_matches_dns_san(self) -> None:
        """An IP address is not matched against a DNS SAN holding the same text."""
        with self.assertRaises(HostnameMismatchError):
            Checker("192.0.2.7").check([_cert("x", "DNS:192.0.2.7")])

    def test_name_never_matches_ip_san(self) -> None:
        """A DNS name is not matched against IP SAN entries."""
        with self.assertRaises(HostnameMismatchError):
            Checker("localhost").check([_cert("x", "IP:127.0.0.1")])

    def test_parse_ip(self) -> None:
        """parse_ip recognises v4, v6 and bracketed v6 literals, and nothing else."""
        self.assertEqual(parse_ip("127.0.0.1"), ipaddress.ip_address("127.0.0.1"))
        self.assertEqual(parse_ip("[::1]"), ipaddress.ip_address("::1"))
        self.assertEqual(parse_ip("::1"), ipaddress.ip_address("::1"))
        self.assertIsNone(parse_ip("localhost"))
        self.assertIsNone(parse_ip("[localhost]"))


class IDNTests(SynchronousTestCase):
    """Internationalised names: U-label expected name against A-label SAN."""

    def test_u_label_matches_a_label_san(self) -> None:
        """The U-label name bücher.example matches the SAN xn--bcher-kva.example."""
        Checker("bücher.example").check([_cert("x", "DNS:xn--bcher-kva.example")])

    def test_a_label_matches_a_label_san(self) -> None:
        """The A-label name matches the same SAN."""
        Checker("xn--bcher-kva.example").check([_cert("x", "DNS:xn--bcher-kva.example")])

    def test_u_label_other_name_rejected(self) -> None:
        """The U-label name bücher.example does not match the SAN for buecher.example."""
        with self.assertRaises(HostnameMismatchError) as cm:
            Checker("bücher.example").check([_cert("x", "DNS:buecher.example")])
        self.assertIn("bücher.example", str(cm.exception))


class CommonNameTests(SynchronousTestCase):
    """The legacy commonName fallback."""

    def test_no_san_rejected_even_if_cn_matches(self) -> None:
        """A certificate without SAN fails with HostnameMismatchError although its CN is the host."""
        with self.assertRaises(HostnameMismatchError) as cm:
            Checker("legacy.example").check([_cert("legacy.example")])
        message = str(cm.exception)
        self.assertIn("'legacy.example'", message)
        self.assertIn("CN:legacy.example", message)
        self.assertIn("allow_common_name=True", message)

    def test_cn_accepted_with_option_and_no_san(self) -> None:
        """With allow_common_name=True a certificate without any SAN matches on its CN."""
        Checker("legacy.example", allow_common_name=True).check([_cert("legacy.example")])

    def test_cn_other_name_rejected_with_option(self) -> None:
        """With allow_common_name=True a CN for another name still fails with HostnameMismatchError."""
        with self.assertRaises(HostnameMismatchError) as cm:
            Checker("other.example", allow_common_name=True).check([_cert("legacy.example")])
        self.assertIn("CN:legacy.example", str(cm.exception))

    def test_cn_ignored_when_san_exists(self) -> None:
        """With allow_common_name=True the CN is still ignored when a SAN extension exists."""
        with self.assertRaises(HostnameMismatchError) as cm:
            Checker("legacy.example", allow_common_name=True).check([_cert("legacy.example", "DNS:other.example")])
        self.assertIn("DNS:other.example", cm.exception.names)

    def test_cn_ignored_when_san_has_only_ips(self) -> None:
        """With allow_common_name=True a SAN holding only IP entries still disables the CN."""
        with self.assertRaises(HostnameMismatchError):
            Checker("legacy.example", allow_common_name=True).check([_cert("legacy.example", "IP:192.0.2.1")])

    def test_cn_ip_accepted_with_option(self) -> None:
        """With allow_common_name=True an IP address matches a CN holding that address."""
        Checker("192.0.2.9", allow_common_name=True).check([_cert("192.0.2.9")])

    def test_cn_ip_not_matched_as_name(self) -> None:
        """With allow_common_name=True an IP address does not match a CN holding a DNS name."""
        with self.assertRaises(HostnameMismatchError):
            Checker("192.0.2.9", allow_common_name=True).check([_cert("legacy.example")])

    def test_cn_wildcard_rules_apply(self) -> None:
        """With allow_common_name=True a wildcard CN follows the same wildcard rules."""
        cert = _cert("*.legacy.example")
        Checker("www.legacy.example", allow_common_name=True).check([cert])
        with self.assertRaises(HostnameMismatchError):
            Checker("legacy.example", allow_common_name=True).check([cert])

    def test_certificate_names(self) -> None:
        """certificate_names lists DNS and IP SANs, then the CN."""
        cert = x509.load_der_x509_certificate(_cert("cn.example", "DNS:a.example", "IP:192.0.2.1"))
        self.assertEqual(certificate_names(cert), ["DNS:a.example", "IP:192.0.2.1", "CN:cn.example"])


class CheckerMiscTests(SynchronousTestCase):
    """Empty chains and construction errors."""

    def test_empty_chain(self) -> None:
        """An empty chain fails with NoPeerCertificateError."""
        self.assertRaises(NoPeerCertificateError, Checker("a.example").check, [])

    def test_nonempty_chain_accepted(self) -> None:
        """A chain with a matching certificate is accepted (the twin of the empty chain)."""
        Checker("a.example").check([_cert("x", "DNS:a.example")])

    def test_empty_hostname_rejected(self) -> None:
        """An empty expected hostname raises ConfigurationError at construction."""
        self.assertRaises(ConfigurationError, Checker, "  ")

    def test_invalid_hostnames_rejected(self) -> None:
        """Expected hostnames that are not valid DNS names raise ConfigurationError at construction, not at check time."""
        for bad in ("*.example.com", "exa mple.com", ".", "[a.example]", "\u200b.example"):
            with self.assertRaises(ConfigurationError, msg=bad) as cm:
                Checker(bad)
            self.assertIn(repr(bad), str(cm.exception))

    def test_valid_hostnames_accepted(self) -> None:
        """DNS names, U-labels and IP literals (bracketed or not) are accepted at construction."""
        for good in ("a.example", "a.example.", "bücher.example", "localhost", "192.0.2.1", "::1", "[::1]"):
            Checker(good)

    def test_no_hostname_checks_nothing(self) -> None:
        """A Checker without hostname or pins accepts any certificate."""
        Checker().check([_cert("x", "DNS:a.example")])

    def test_check_hostname_without_hostname(self) -> None:
        """check_hostname on a Checker without hostname raises ConfigurationError."""
        cert = x509.load_der_x509_certificate(_cert("x", "DNS:a.example"))
        self.assertRaises(ConfigurationError, Checker().check_hostname, cert)


class PinTests(SynchronousTestCase):
    """SHA-256 SubjectPublicKeyInfo pins."""

    def setUp(self) -> None:
        self.leaf = _cert("x", "DNS:a.example")
        self.other = _cert("y", "DNS:a.example")
        self.digest = spki_sha256(self.leaf)

    def test_hex_pin(self) -> None:
        """A lower-case hex pin of the leaf key is accepted."""
        Checker("a.example", pins=[self.digest]).check([self.leaf])

    def test_upper_colon_hex_pin(self) -> None:
        """An upper-case colon-separated hex pin is accepted and normalised."""
        colon = ":".join(self.digest[i : i + 2] for i in range(0, 64, 2)).upper()
        checker = Checker("a.example", pins=[colon])
        self.assertEqual(checker.pins, (self.digest,))
        checker.check([self.leaf])

    def test_base64_pin(self) -> None:
        """A 'sha256/<base64>' pin (the HPKP form) is accepted and normalised."""
        pin = "sha256/" + base64.b64encode(bytes.fromhex(self.digest)).decode("ascii")
        checker = Checker("a.example", pins=[pin])
        self.assertEqual(checker.pins, (self.digest,))
        checker.check([self.leaf])

    def test_malformed_pins(self) -> None:
        """Malformed pins raise ConfigurationError at construction."""
        for bad in ("", "abc", "zz" * 32, self.digest[:-2], "sha256/notbase64!", "sha256/" + base64.b64encode(b"short").decode(), "sha1/" + "A" * 28):
            with self.assertRaises(ConfigurationError, msg=bad):
                Checker("a.example", pins=[bad])

    def test_pin_on_intermediate(self) -> None:
        """A pin on an intermediate's key accepts a chain whose leaf key is not pinned."""
        p = pki()
        with open(p.chained_server.cert, "rb") as f:
            pems = x509.load_pem_x509_certificates(f.read())
        from cryptography.hazmat.primitives.serialization import Encoding

        chain = [c.public_bytes(Encoding.DER) for c in pems]
        self.assertEqual(len(chain), 2)
        Checker("localhost", pins=[spki_sha256(chain[1])]).check(chain, verified_chain=chain)
        with self.assertRaises(PinMismatchError):
            Checker("localhost", pins=[spki_sha256(self.leaf)]).check(chain, verified_chain=chain)
        with self.assertRaises(PinMismatchError):  # sent but not verified: the peer could have added it
            Checker("localhost", pins=[spki_sha256(chain[1])]).check(chain)

    def test_any_of_several_pins(self) -> None:
        """One matching pin among several is enough."""
        Checker("a.example", pins=[spki_sha256(self.other), self.digest]).check([self.leaf])

    def test_pin_mismatch(self) -> None:
        """A chain without a pinned key fails with PinMismatchError listing the pins and the actual digests."""
        wanted = spki_sha256(self.other)
        with self.assertRaises(PinMismatchError) as cm:
            Checker("a.example", pins=[wanted]).check([self.leaf])
        error = cm.exception
        self.assertEqual(error.pins, (wanted,))
        self.assertEqual(error.actual, (self.digest,))
        self.assertIn(self.digest, str(error))
        self.assertIn(wanted, str(error))

    def test_pins_checked_after_hostname(self) -> None:
        """A pinned key on a certificate for the wrong name still fails with HostnameMismatchError."""
        with self.assertRaises(HostnameMismatchError):
            Checker("b.example", pins=[self.digest]).check([self.leaf])

    def test_pins_without_hostname(self) -> None:
        """A Checker with pins and no hostname checks only the pins."""
        Checker(pins=[self.digest]).check([self.leaf])
        with self.assertRaises(PinMismatchError):
            Checker(pins=[self.digest]).check([self.other])

    def test_spki_sha256_stable(self) -> None:
        """spki_sha256 gives 64 lower-case hex digits, equal for the same key."""
        self.assertEqual(len(self.digest), 64)
        self.assertEqual(self.digest, self.digest.lower())
        self.assertEqual(spki_sha256(self.leaf), self.digest)
        self.assertNotEqual(spki_sha256(self.other), self.digest)


class AcceptedChainMemoryTests(SynchronousTestCase):
    """Checker.check remembers accepted chains, never rejected ones, within a bound."""

    def test_accepted_chain_is_remembered_rejected_is_not(self) -> None:
        good = _cert("x", "DNS:good.example")
        checker = Checker("good.example")
        checker.check([good])
        self.assertEqual(len(checker._accepted), 1)
        checker.check([bytes(good)])  # equal bytes, new object: remembered
        self.assertEqual(len(checker._accepted), 1)
        bad = _cert("x", "DNS:other.example")
        for _ in range(2):  # rejected every time, with the full error
            with self.assertRaises(HostnameMismatchError):
                checker.check([bad])
        self.assertEqual(len(checker._accepted), 1)

    def test_same_chain_other_checker_is_checked_afresh(self) -> None:
        good = _cert("x", "DNS:good.example")
        Checker("good.example").check([good])
        with self.assertRaises(HostnameMismatchError):
            Checker("other.example").check([good])

    def test_bounded(self) -> None:
        from twistls import checker as checker_module

        checker = Checker(None)
        for i in range(checker_module._ACCEPTED_MAX + 20):
            checker.check([b"not parsed without a hostname %d" % i])
        self.assertEqual(len(checker._accepted), checker_module._ACCEPTED_MAX)

    def test_subclasses_are_not_remembered(self) -> None:
        calls = []

        class Counting(Checker):
            def check_hostname(self, cert: x509.Certificate) -> None:
                calls.append(cert)
                super().check_hostname(cert)

        good = _cert("x", "DNS:good.example")
        checker = Counting("good.example")
        checker.check([good])
        checker.check([good])
        self.assertEqual(len(calls), 2)
