"""The strict PKI profile: pyca's path builder and the rules neither it nor OpenSSL checks.

Pure: certificates in, a verified chain or a :class:`~twistls.errors.PKIProfileError`
out; no Twisted, no OpenSSL handle.  A twistls client with
``pki_profile="strict"`` (the default) accepts a server only when OpenSSL's
RFC 5280 verification, the :class:`~twistls.checker.Checker` *and* this
profile accept it:

* :func:`~twistls._anchors.load_trust_anchors` (:mod:`twistls._anchors`,
  re-exported here) reads the same anchors OpenSSL uses (a CA file, a CA
  directory, or the system store at OpenSSL's default paths) into a
  :class:`cryptography.x509.verification.Store`, once per (cafile, capath);
* :class:`StrictProfile` runs pyca's server verifier (CA/Browser Forum
  Baseline Requirements: key identifiers, basicConstraints and keyUsage,
  name constraints, extension criticality, signature algorithms, path
  building with backtracking) on the certificates the server sent, for the
  expected name, and adds the rules pyca leaves out: commonName consistency
  (:func:`common_name_problems`), a leaf without extendedKeyUsage, a
  syntactically invalid DNS name in subjectAltName, a wildcard directly on
  a public suffix, weak or unusual keys, serial numbers that are zero or
  longer than 20 octets, key identifiers on intermediates, criticality of nameConstraints
  and policyConstraints, and an extendedKeyUsage on the trust anchor.

Deliberate departures from the Baseline Requirements, each for a real PKI
that must keep working (see ``doc/howto/security.rst``):

* a critical subjectAltName with a non-empty subject, and a critical
  extendedKeyUsage, are accepted (RFC 5280 allows both; trustme issues them);
* a server certificate that is itself a configured trust anchor (a
  self-signed certificate given as ``cafile``) is trusted as configured,
  without the rules, which are about what a CA issued;
* a trust anchor without keyUsage is accepted (``openssl req -x509`` makes
  such CAs; every intermediate still needs a critical keyUsage);
* the trust anchors themselves are trusted as configured: only an
  extendedKeyUsage on an anchor is refused (no root of the system store has
  one, while several have a zero serial or lack a subjectKeyIdentifier).

.. versionadded:: 0.2
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification as _pyca
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from twistls._anchors import TrustAnchors, load_trust_anchors, read_file, system_paths
from twistls.errors import PKIProfileError

__all__ = [
    "PKI_PROFILES",
    "TrustAnchors",
    "StrictProfile",
    "load_trust_anchors",
    "system_paths",
    "common_name_problems",
    "load_der",
]

#: The profiles a client may choose: ``"strict"`` (the default) and
#: ``"rfc5280"`` (OpenSSL's verification and the Checker only).
PKI_PROFILES = ("strict", "rfc5280")

#: The opt-out, as the error messages name it.
OPT_OUT = 'pki_profile="rfc5280"'

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", re.IGNORECASE)
_ANY_EKU = x509.ObjectIdentifier("2.5.29.37.0")
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_PSL_FILE = "/usr/share/publicsuffix/public_suffix_list.dat"
#: Used when the system has no public suffix list (package ``publicsuffix``):
#: the most used multi-label ICANN suffixes.  Every single label is a suffix.
_PSL_FALLBACK = (
    "co.uk org.uk ac.uk gov.uk ltd.uk plc.uk me.uk net.uk com.au net.au org.au edu.au gov.au "
    "co.jp ne.jp or.jp ac.jp go.jp co.nz org.nz net.nz com.br net.br org.br com.cn net.cn org.cn "
    "co.in net.in org.in co.za org.za com.mx com.tr com.tw co.kr or.kr com.sg com.hk com.ar"
).split()


def load_der(der: bytes) -> x509.Certificate:
    """Parse a DER certificate without cryptography's deprecation warning for
    a zero or negative serial (this profile reports it as a problem).

    Raises:
        ValueError: not a certificate.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return x509.load_der_x509_certificate(der)


# --- the rules pyca does not check ------------------------------------------


def _subject(cert: x509.Certificate) -> str:
    text = cert.subject.rfc4514_string()
    return text if text else "<empty subject>"


def _problem(cert: x509.Certificate | None, rule: str, text: str, depth: int | None, subject: str | None = None) -> PKIProfileError:
    who = subject if subject is not None else (_subject(cert) if cert is not None else "the chain")
    return PKIProfileError(
        f"{who}: {text} (strict PKI profile rule {rule!r}; opt out with {OPT_OUT})",
        rule=rule,
        subject=who,
        depth=depth,
    )


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def common_name_problems(cert: x509.Certificate, depth: int = 0) -> list[PKIProfileError]:
    """The commonName rules (CA/Browser Forum BR 7.1.4.3): a subject
    commonName, if present, is exactly one of the subjectAltName values: a
    DNS name byte for byte (same case, A-labels), or an IP address in its
    canonical text form (dotted decimal without leading zeros; RFC 5952 for
    IPv6: lower case, compressed).

    Args:
        cert: the server certificate.
        depth: its position in the chain (for the error).

    Returns:
        One :class:`~twistls.errors.PKIProfileError` per broken rule (empty:
        consistent, or no subjectAltName, which pyca refuses itself).
    """
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    san = _san(cert)
    if not cns or san is None:
        return []
    problems: list[PKIProfileError] = []
    if len(cns) > 1:
        problems.append(_problem(cert, "cn-multiple", f"the subject has {len(cns)} commonNames; at most one is allowed", depth))
    dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    ips = [ip for ip in san.get_values_for_type(x509.IPAddress) if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))]
    canonical_ips = [str(ip) for ip in ips]
    for cn in cns:
        if cn in dns or cn in canonical_ips:
            continue
        held = ", ".join([f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in canonical_ips]) or "nothing"
        if any(cn.lower() == d.lower() for d in dns):
            rule, why = "cn-case", f"the commonName {cn!r} differs in case from its subjectAltName ({held})"
        elif _idna(cn) is not None and _idna(cn) in [d.lower() for d in dns]:
            rule, why = "cn-idna", f"the commonName {cn!r} is the Unicode form of a subjectAltName A-label ({held}); it must be the same A-label"
        elif _same_ip(cn, ips):
            rule, why = "cn-ip-not-canonical", f"the commonName {cn!r} is an IP address of the subjectAltName ({held}) but not in canonical form"
        else:
            rule, why = "cn-not-in-san", f"the commonName {cn!r} is not one of the subjectAltName values ({held})"
        problems.append(_problem(cert, rule, why, depth))
    return problems


def _idna(text: str) -> str | None:
    try:
        text.encode("ascii")
        return None
    except UnicodeEncodeError:
        pass
    try:
        import idna

        return str(idna.encode(text, uts46=True).decode("ascii")).lower()
    except Exception:  # idna's errors: not a valid IDN at all
        return None


def _same_ip(text: str, ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    """Whether ``text`` is some spelling of one of ``ips`` (leading zeros,
    hex, upper case, uncompressed IPv6)."""
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    try:
        candidates.append(ipaddress.ip_address(text.lower()))
    except ValueError:
        pass
    parts = text.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        try:
            candidates.append(ipaddress.IPv4Address(".".join(str(int(p)) for p in parts)))
        except ValueError:
            pass
    if text.lower().startswith("0x"):
        try:
            candidates.append(ipaddress.IPv4Address(int(text, 16)))
        except ValueError:
            pass
    return any(c in ips for c in candidates)


def valid_dns_name(name: str, *, wildcard: bool) -> bool:
    """Whether ``name`` is a DNS name in preferred syntax (letters, digits and
    hyphens; labels of 1 to 63 characters; at most 253 in all), with an
    optional left-most ``*`` label when ``wildcard``."""
    text = name[:-1] if name.endswith(".") else name
    if not text or len(text) > 253:
        return False
    labels = text.split(".")
    if wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    return all(_LABEL.match(label) for label in labels)


@functools.lru_cache(maxsize=1)
def _public_suffixes() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(rules, wildcard rules' parents, exceptions) of the ICANN section of the
    public suffix list, or of :data:`_PSL_FALLBACK`."""
    data = read_file(_PSL_FILE)
    rules: set[str] = set()
    wild: set[str] = set()
    exceptions: set[str] = set()
    if data is None:
        return frozenset(_PSL_FALLBACK), frozenset(), frozenset()
    text = data.decode("utf-8", "replace")
    if "===BEGIN ICANN DOMAINS===" in text:
        text = text.split("===BEGIN ICANN DOMAINS===", 1)[1].split("===END ICANN DOMAINS===", 1)[0]
    for line in text.splitlines():
        rule = line.strip().split(" ", 1)[0].lower()
        if not rule or rule.startswith("//"):
            continue
        ascii_rule = _idna(rule) or rule
        if ascii_rule.startswith("!"):
            exceptions.add(ascii_rule[1:])
        elif ascii_rule.startswith("*."):
            wild.add(ascii_rule[2:])
        else:
            rules.add(ascii_rule)
    return frozenset(rules), frozenset(wild), frozenset(exceptions)


def is_public_suffix(name: str) -> bool:
    """Whether ``name`` (A-labels) is a public suffix (``com``, ``co.uk``):
    a name under which anyone can register."""
    text = name.lower().rstrip(".")
    rules, wild, exceptions = _public_suffixes()
    if text in exceptions:
        return False
    if "." not in text or text in rules:
        return True
    return text.split(".", 1)[1] in wild


def _leaf_problems(cert: x509.Certificate) -> list[PKIProfileError]:
    problems = common_name_problems(cert)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if _ANY_EKU in eku:
            problems.append(_problem(cert, "eku-any", "its extendedKeyUsage holds anyExtendedKeyUsage", 0))
    except x509.ExtensionNotFound:
        problems.append(
            _problem(
                cert,
                "eku-missing",
                "the server certificate has no extendedKeyUsage; the strict PKI profile requires one "
                "with serverAuth (a private CA that issues leaves without it needs the opt-out)",
                0,
            )
        )
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        if not san_ext.critical and not cert.subject.rdns:
            problems.append(
                _problem(cert, "san-not-critical", "its subject is empty but its subjectAltName is not critical", 0)
            )
    except x509.ExtensionNotFound:
        problems.append(
            _problem(
                cert,
                "san-missing",
                "it has no subjectAltName; the strict PKI profile never matches the commonName "
                "(allow_common_name=True works only with the opt-out)",
                0,
            )
        )
    san = _san(cert)
    for name in san.get_values_for_type(x509.DNSName) if san is not None else ():
        if not valid_dns_name(name, wildcard=True):
            problems.append(_problem(cert, "san-dns-syntax", f"the subjectAltName DNS name {name!r} is not a valid DNS name", 0))
        elif name.startswith("*.") and is_public_suffix(name[2:]):
            problems.append(
                _problem(cert, "wildcard-public-suffix", f"the wildcard {name!r} covers every name under the public suffix {name[2:]!r}", 0)
            )
    return problems


def _key_problems(cert: x509.Certificate, depth: int) -> list[PKIProfileError]:
    try:
        key = cert.public_key()
    except (ValueError, TypeError) as exc:  # an unsupported or malformed key
        return [_problem(cert, "weak-key", f"its public key cannot be used: {exc}", depth)]
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < 2048:
            return [_problem(cert, "weak-key", f"its RSA key has {bits} bits; at least 2048 are required", depth)]
        if bits % 8:
            return [_problem(cert, "weak-key", f"its RSA modulus has {bits} bits, not a multiple of 8", depth)]
    elif isinstance(key, dsa.DSAPublicKey):
        return [_problem(cert, "weak-key", "it has a DSA key; only RSA and ECDSA P-256/P-384/P-521 keys are allowed", depth)]
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _EC_CURVES):
            return [_problem(cert, "weak-key", f"its EC key is on {key.curve.name}; only P-256, P-384 and P-521 are allowed", depth)]
    return []


def _serial_problems(cert: x509.Certificate, depth: int) -> list[PKIProfileError]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        serial = cert.serial_number
    if serial <= 0:
        return [_problem(cert, "serial-not-positive", f"its serial number is {serial}; it must be positive", depth)]
    octets = (serial.bit_length() + 8) // 8
    if octets > 20:
        return [_problem(cert, "serial-too-long", f"its serial number is {octets} octets long; at most 20 are allowed", depth)]
    return []


def _identifier_problems(cert: x509.Certificate, depth: int, *, ca: bool) -> list[PKIProfileError]:
    problems = []
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        if aki.key_identifier is None:
            problems.append(_problem(cert, "aki-no-key-identifier", "its authorityKeyIdentifier has no keyIdentifier", depth))
    except x509.ExtensionNotFound:
        if ca:  # pyca requires it on the leaf itself
            problems.append(_problem(cert, "aki-missing", "this intermediate CA certificate has no authorityKeyIdentifier", depth))
    if ca:
        try:
            cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except x509.ExtensionNotFound:
            problems.append(_problem(cert, "ca-no-ski", "this CA certificate has no subjectKeyIdentifier", depth))
    return problems


def _ca_problems(cert: x509.Certificate, depth: int) -> list[PKIProfileError]:
    problems = _identifier_problems(cert, depth, ca=True) + _key_problems(cert, depth) + _serial_problems(cert, depth)
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
        if not usage.critical:
            problems.append(_problem(cert, "ca-key-usage", "this intermediate CA's keyUsage is not critical", depth))
    except x509.ExtensionNotFound:
        problems.append(_problem(cert, "ca-key-usage", "this intermediate CA certificate has no keyUsage", depth))
    try:
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    except x509.ExtensionNotFound:
        nc = None
    if nc is not None:
        if not nc.critical:
            problems.append(_problem(cert, "name-constraints-non-critical", "its nameConstraints extension is not critical", depth))
        for subtree in (*(nc.value.permitted_subtrees or ()), *(nc.value.excluded_subtrees or ())):
            if isinstance(subtree, x509.DNSName) and subtree.value and not valid_dns_name(subtree.value, wildcard=False):
                problems.append(
                    _problem(cert, "name-constraints-invalid-name", f"its name constraint {subtree.value!r} is not a valid DNS name", depth)
                )
    try:
        pc = cert.extensions.get_extension_for_class(x509.PolicyConstraints)
        if not pc.critical:
            problems.append(_problem(cert, "policy-constraints-non-critical", "its policyConstraints extension is not critical", depth))
    except x509.ExtensionNotFound:
        pass
    return problems


def _anchor_problems(cert: x509.Certificate, depth: int) -> list[PKIProfileError]:
    try:
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return []
    return [_problem(cert, "anchor-eku", "the trust anchor has an extendedKeyUsage, which a root CA must not have", depth)]


_PYCA_SUBJECT = re.compile(r"\(encountered processing <Certificate\(subject=<Name\((.*?)\)>, \.\.\.\)>\)")


def _pyca_problem(exc: Exception) -> PKIProfileError:
    text = str(exc)
    found = _PYCA_SUBJECT.search(text)
    subject = found.group(1) if found else None
    rule_text = _PYCA_SUBJECT.sub("", text).strip()
    if rule_text.startswith("validation failed: "):
        rule_text = rule_text[len("validation failed: ") :]
    who = subject if subject else "the chain"
    return _problem(None, "path-validation", f"no valid path to a trust anchor: {rule_text}", None, subject=who)


# --- the profile ------------------------------------------------------------


def _subject_for(host: str) -> x509.DNSName | x509.IPAddress:
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        pass
    name = text.rstrip(".")
    return x509.DNSName(_idna(name) or name.lower())


def _require_server_auth(policy: _pyca.Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    """pyca's own leaf EKU check (serverAuth when an EKU is present)."""
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise ValueError("required EKU not found: the extendedKeyUsage does not allow serverAuth")


def _ee_policy() -> _pyca.ExtensionPolicy:
    """pyca's Web PKI leaf policy, but with subjectAltName and extendedKeyUsage
    of either criticality (RFC 5280 allows both; trustme marks both critical).
    An empty subject with a non-critical subjectAltName is refused by
    :func:`_leaf_problems`."""
    return (
        _pyca.ExtensionPolicy.webpki_defaults_ee()
        .require_present(x509.SubjectAlternativeName, _pyca.Criticality.AGNOSTIC, None)
        .may_be_present(x509.ExtendedKeyUsage, _pyca.Criticality.AGNOSTIC, _require_server_auth)
    )


def _ca_may_sign(policy: _pyca.Policy, cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    """A CA's keyUsage, when present, allows keyCertSign (pyca's own check)."""
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("the CA's keyUsage does not allow keyCertSign")


def _ca_policy() -> _pyca.ExtensionPolicy:
    """pyca's Web PKI CA policy, but a CA without keyUsage may still be a
    trust anchor (``openssl req -x509`` makes such CAs, and some roots of the
    system store have none); :func:`_ca_problems` requires a critical one
    on every intermediate."""
    return _pyca.ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.KeyUsage, _pyca.Criticality.AGNOSTIC, _ca_may_sign
    )


@functools.lru_cache(maxsize=1)
def _policies() -> tuple[_pyca.ExtensionPolicy, _pyca.ExtensionPolicy]:
    return _ca_policy(), _ee_policy()


@dataclass(frozen=True)
class StrictProfile:
    """The strict PKI profile for one set of trust anchors.

    Args:
        anchors: from :func:`load_trust_anchors`.
        max_depth: the most intermediates a path may have (pyca's
            ``max_chain_depth``; OpenSSL's ``verify_depth`` still applies).
        at: verify as of this time instead of now (the offline CLI).

    .. versionadded:: 0.2
    """

    anchors: TrustAnchors
    max_depth: int = 9
    at: datetime.datetime | None = None
    _builder: _pyca.PolicyBuilder | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.anchors.store is not None:
            ca, ee = _policies()
            builder = (
                _pyca.PolicyBuilder()
                .store(self.anchors.store)
                .max_chain_depth(min(max(self.max_depth, 0), 255))
                .extension_policies(ca_policy=ca, ee_policy=ee)
            )
            object.__setattr__(self, "_builder", builder)

    def at_time(self, when: datetime.datetime | None) -> StrictProfile:
        """This profile, verifying as of ``when`` (``None``: now)."""
        return replace(self, at=when)

    def verify(self, leaf: bytes | x509.Certificate, intermediates: Iterable[bytes | x509.Certificate], hostname: str) -> list[x509.Certificate]:
        """Verify a server chain for ``hostname`` under the strict profile.

        Args:
            leaf: the server's certificate.
            intermediates: untrusted certificates that may complete a path
                (what the server sent after its own, in any order).
            hostname: the DNS name or IP address the client expects.

        Returns:
            The path pyca built: leaf first, trust anchor last.

        Raises:
            PKIProfileError: any rule is broken; ``problems`` lists every
                one found (the rules on the leaf, pyca's verdict, then the
                rules on the built path's CAs and anchor).
        """
        leaf_cert = leaf if isinstance(leaf, x509.Certificate) else load_der(leaf)
        leaf_der = leaf if isinstance(leaf, bytes) else leaf.public_bytes(serialization.Encoding.DER)
        if leaf_der in self.anchors.ders:
            # The server's own certificate is a configured anchor (a
            # self-signed certificate given as cafile): trusted as configured.
            return [leaf_cert]
        pool = [c if isinstance(c, x509.Certificate) else load_der(c) for c in intermediates]
        problems = _leaf_problems(leaf_cert) + _key_problems(leaf_cert, 0) + _serial_problems(leaf_cert, 0)
        problems += _identifier_problems(leaf_cert, 0, ca=False)
        chain: list[x509.Certificate] | None = None
        builder = self._builder
        if builder is None:
            problems.append(_problem(None, "no-trust-anchors", f"no trust anchor could be loaded from the {self.anchors.source}", None))
        else:
            when = self.at or datetime.datetime.now(datetime.timezone.utc)
            try:
                verifier = builder.time(when).build_server_verifier(_subject_for(hostname))
                chain = verifier.verify(leaf_cert, pool)
            except (_pyca.VerificationError, ValueError) as exc:
                problems.append(_pyca_problem(exc))
        if chain is not None:
            for depth, ca in enumerate(chain[1:-1], start=1):
                problems += _ca_problems(ca, depth)
            problems += _anchor_problems(chain[-1], len(chain) - 1)
        else:
            for depth, ca in enumerate(pool, start=1):
                problems += _ca_problems(ca, depth)
        if problems:
            first = problems[0]
            raise PKIProfileError(first.reason, rule=first.rule, subject=first.subject, depth=first.depth, problems=problems)
        return chain or [leaf_cert]


def strict_profile(cafile: str | None, capath: str | None, max_depth: int) -> StrictProfile:
    """The strict profile over the anchors of (cafile, capath), loaded once.

    Raises:
        ConfigurationError: see :func:`load_trust_anchors`.
    """
    return StrictProfile(load_trust_anchors(cafile, capath), max_depth=max_depth)
