"""The post-connection Checker: is this certificate the one for the host we meant?

Pure: it takes DER certificates and a host, and never touches a socket, a BIO
or OpenSSL.  Matching follows RFC 6125 through service-identity:

* a DNS name is matched against subjectAltName DNS entries (one left-most
  wildcard label at most, no partial wildcards, IDNA-aware);
* an IP address (``"192.0.2.1"``, ``"::1"``, ``"[::1]"``) only against
  subjectAltName IP entries;
* the subject commonName is used **only** when the caller passes
  ``allow_common_name=True`` *and* the certificate has no subjectAltName
  extension at all;
* optional pins: SHA-256 digests of a SubjectPublicKeyInfo.  They are matched
  against the *verified* chain only (leaf to trust anchor, as OpenSSL built
  it), never against the list the peer sent, which it can pad with any
  certificate; when the connection does not verify, only against the peer's
  own certificate, whose key signed the handshake;
* past what OpenSSL checks: the requested host itself must lie within the
  name constraints of every CA in the verified chain (OpenSSL only checks the
  names the certificate holds, so a ``*.example.com`` leaf under a CA that
  excludes ``secret.example.com`` would otherwise pass for that name), and a
  leaf with an extendedKeyUsage must allow its role (``purpose``);
* with a strict PKI profile (``pki``, a :class:`twistls._pkix.StrictProfile`):
  pyca's path builder must also accept the chain for the host, and the
  profile's own rules (commonName consistency, extendedKeyUsage present,
  public-suffix wildcards, weak keys...) must hold.

.. versionadded:: 0.1
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from service_identity import CertificateError as _SICertificateError
from service_identity import VerificationError as _SIVerificationError
from service_identity.cryptography import (
    verify_certificate_hostname,
    verify_certificate_ip_address,
)
from service_identity.hazmat import (
    DNS_ID,
    DNSPattern,
    IPAddress_ID,
    IPAddressPattern,
    verify_service_identity,
)

from twistls._info import san_names

if TYPE_CHECKING:
    from twistls._pkix import StrictProfile
from twistls.errors import (
    CertificatePurposeError,
    ConfigurationError,
    HostnameMismatchError,
    NameConstraintsError,
    NoPeerCertificateError,
    PinMismatchError,
)

__all__ = ["Checker", "spki_sha256", "certificate_names", "parse_ip"]


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return ``host`` as an IP address if it is an IP literal, else ``None``.
    Brackets around IPv6 literals are accepted."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def spki_sha256(certificate_der: bytes) -> str:
    """The lower-case hex SHA-256 of a certificate's SubjectPublicKeyInfo.

    Args:
        certificate_der: the certificate in DER.

    Returns:
        64 hex digits (the pin format :class:`Checker` accepts).
    """
    cert = x509.load_der_x509_certificate(certificate_der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The identities a certificate holds, for messages: ``DNS:…``, ``IP:…``,
    and ``CN:…`` (the commonName, listed last)."""
    names = san_names(cert, uris=True)
    for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        names.append(f"CN:{attr.value!s}")
    return names


def _normalise_pin(pin: str) -> str:
    text = pin.strip()
    if text.lower().startswith("sha256/"):
        text = text[7:]
        raw = _b64(text)
    else:
        hexed = text.replace(":", "").lower()
        if len(hexed) == 64 and all(c in "0123456789abcdef" for c in hexed):
            return hexed
        raw = _b64(text)
    if raw is None or len(raw) != 32:
        raise ConfigurationError(
            f"pin {pin!r} is not a SHA-256 digest: give 64 hex digits or 'sha256/<base64>'"
        )
    return raw.hex()


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


#: How many accepted chains a Checker remembers (see :meth:`Checker.check`).
_ACCEPTED_MAX = 128


@dataclass(frozen=True)
class Checker:
    """Checks a peer certificate chain against the expected identity.

    Args:
        hostname: the DNS name or IP address the caller meant to reach (not
            the address that was dialled).  ``None`` checks no name (only pins).
        allow_common_name: legacy fallback: accept a match on the subject
            commonName, and only for certificates without any
            subjectAltName extension.
        pins: SHA-256 SPKI pins (64 hex digits, or ``sha256/<base64>``).
        purpose: the role the peer's certificate must allow when it has an
            extendedKeyUsage: ``"server"`` (serverAuth) or ``"client"``
            (clientAuth); ``None`` checks none.
        pki: the strict PKI profile to hold a server chain to (with
            :attr:`hostname`), or ``None`` for OpenSSL's RFC 5280 checks
            and this Checker's only.  ``ClientContextFactory`` sets it for
            ``pki_profile="strict"``.

            .. versionadded:: 0.2

    Raises:
        ConfigurationError: a pin is malformed, the hostname is empty or the
            purpose unknown.

    .. versionadded:: 0.1
    """

    hostname: str | None = None
    allow_common_name: bool = False
    pins: Sequence[str] = field(default=())
    purpose: str | None = None
    pki: StrictProfile | None = None
    _accepted: dict[tuple[tuple[bytes, ...], tuple[bytes, ...] | None], float] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.hostname is not None and not self.hostname.strip():
            raise ConfigurationError("the expected hostname is empty")
        if self.hostname is not None and parse_ip(self.hostname) is None:
            try:  # refuse now what service-identity would raise ValueError for at handshake time
                DNS_ID(self.hostname.rstrip("."))
            except ValueError as exc:  # idna's errors are ValueErrors too
                raise ConfigurationError(f"the expected hostname {self.hostname!r} is not a valid DNS name: {exc}") from None
        if self.purpose not in (None, "server", "client"):
            raise ConfigurationError(f"purpose must be 'server', 'client' or None, not {self.purpose!r}")
        object.__setattr__(self, "pins", tuple(_normalise_pin(p) for p in self.pins))

    def check(self, chain_der: Sequence[bytes], *, verified_chain: Sequence[bytes] | None = None) -> None:
        """Accept or reject a peer chain.

        Args:
            chain_der: the certificates the peer sent, its own first, in DER.
                Only its first certificate (the peer's own) is trusted for
                anything; the rest is what the peer chose to send.
            verified_chain: the chain OpenSSL verified, peer first and trust
                anchor last, in DER, or ``None`` when the peer was not
                verified.  Pins must match a key of this chain (without it:
                the peer's own certificate); its CAs' name constraints are
                held against the hostname (without it: those of the CAs the
                peer sent, which can only make the check stricter).

        Raises:
            HostnameMismatchError: the certificate does not name the host.
            NameConstraintsError: a CA's name constraints exclude the host.
            CertificatePurposeError: the certificate's extendedKeyUsage
                does not allow :attr:`purpose`.
            PinMismatchError: no certificate of the verified chain (or, for
                an unverified peer, its own certificate) has a pinned key.
            PKIProfileError: the strict PKI profile (:attr:`pki`) refuses
                the chain; its ``problems`` lists every rule broken.
            NoPeerCertificateError: the chain is empty.

        The verdict depends on nothing but the chains, this Checker's fields
        and, with :attr:`pki`, the time (through the validity of the path
        pyca built), so a :class:`Checker` (not a subclass) remembers the
        last :data:`_ACCEPTED_MAX` chains it accepted, until the first
        notAfter of that path, and accepts them again without parsing:
        repeat connections to the same server skip the certificate parsing,
        the name matching and the path building.
        """
        key = None
        if type(self) is Checker and chain_der:
            key = (tuple(chain_der), tuple(verified_chain) if verified_chain else None)
            until = self._accepted.get(key)
            if until is not None and (until == math.inf or time.time() <= until):
                return
        until = self._check(chain_der, verified_chain)
        if key is not None:
            accepted = self._accepted
            accepted.pop(key, None)
            if len(accepted) >= _ACCEPTED_MAX:
                del accepted[next(iter(accepted))]
            accepted[key] = until

    def _check(self, chain_der: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> float:
        """Run every check; return until when the verdict holds (a POSIX
        time, or ``math.inf``)."""
        if not chain_der:
            raise NoPeerCertificateError(
                "the peer sent no certificate", verify_message="no peer certificate", depth=0
            )
        leaf = None
        if self.purpose is not None:
            leaf = x509.load_der_x509_certificate(chain_der[0])
            self.check_purpose(leaf)
        if self.hostname is not None:
            leaf = leaf or x509.load_der_x509_certificate(chain_der[0])
            self.check_hostname(leaf)
            cas = verified_chain[1:] if verified_chain else chain_der[1:]
            self.check_name_constraints([x509.load_der_x509_certificate(der) for der in cas])
        if self.pins:
            self.check_pins(verified_chain if verified_chain else chain_der[:1])
        if self.pki is not None and self.hostname is not None:
            return self.check_profile(chain_der, verified_chain)
        return math.inf

    def check_profile(self, chain_der: Sequence[bytes], verified_chain: Sequence[bytes] | None = None) -> float:
        """Hold the chain to the strict PKI profile (:attr:`pki`) for :attr:`hostname`.

        pyca builds its own path from the peer's certificate to one of the
        profile's trust anchors, using as untrusted intermediates what the
        peer sent after its certificate and the CAs of ``verified_chain``
        (a resumed session knows only the latter).

        Args:
            chain_der: the certificates the peer sent, its own first (DER).
            verified_chain: the chain OpenSSL verified, if any (DER).

        Returns:
            Until when the verdict holds: the earliest notAfter of the path
            pyca built (a POSIX time), or ``math.inf`` for a profile fixed
            at a given time, or without :attr:`pki`.

        Raises:
            PKIProfileError: the profile refuses the chain.
            NoPeerCertificateError: the chain is empty.
            ConfigurationError: the Checker has no hostname.
        """
        if self.pki is None:
            return math.inf
        if self.hostname is None:
            raise ConfigurationError("this Checker has no hostname to check")
        if not chain_der:
            raise NoPeerCertificateError(
                "the peer sent no certificate", verify_message="no peer certificate", depth=0
            )
        pool: list[bytes] = []
        for der in (*chain_der[1:], *(verified_chain[1:] if verified_chain else ())):
            if der not in pool:
                pool.append(der)
        path = self.pki.verify(chain_der[0], pool, self.hostname)
        if self.pki.at is not None:
            return math.inf
        return min(c.not_valid_after_utc.timestamp() for c in path)

    def alternate_path(self, chain_der: Sequence[bytes]) -> list[bytes] | None:
        """The path the strict PKI profile builds from the certificates the
        peer sent to a trust anchor, for a verifier whose own path failed.

        pyca's builder backtracks where OpenSSL's does not: when OpenSSL
        fails (or this Checker refuses the chain OpenSSL built), the engine
        has OpenSSL verify this path again, and runs :meth:`check` on what
        OpenSSL then verified (see ``doc/howto/security.rst``).

        Args:
            chain_der: the certificates the peer sent, its own first (DER).

        Returns:
            The path (peer first, trust anchor last, DER), or ``None``
            without :attr:`pki` or a hostname, or when the profile refuses
            every path.  Never raises.

        .. versionadded:: 0.2
        """
        if self.pki is None or self.hostname is None or not chain_der:
            return None
        try:
            path = self.pki.verify(chain_der[0], list(chain_der[1:]), self.hostname)
            return [c.public_bytes(serialization.Encoding.DER) for c in path]
        except Exception:  # a refusal, or a certificate pyca cannot parse: no alternative
            return None

    def check_hostname(self, cert: x509.Certificate) -> None:
        """Match :attr:`hostname` against ``cert``.

        Raises:
            HostnameMismatchError: it does not match.
            ConfigurationError: the Checker has no hostname.
        """
        host = self.hostname
        if host is None:
            raise ConfigurationError("this Checker has no hostname to check")
        ip = parse_ip(host)
        errors: list[object] = []
        try:
            if ip is not None:
                verify_certificate_ip_address(cert, str(ip))
            else:
                verify_certificate_hostname(cert, host.rstrip("."))
            return
        except _SIVerificationError as exc:
            errors = list(exc.errors)
        except _SICertificateError as exc:
            # No subjectAltName at all: the only case where commonName may count.
            if self.allow_common_name and self._common_name_matches(cert, host, ip):
                return
            errors = [str(exc)]
        names = certificate_names(cert)
        held = ", ".join(names) if names else "no names at all"
        hint = ""
        if not any(n.startswith(("DNS:", "IP:")) for n in names) and not self.allow_common_name:
            hint = " (the certificate has no subjectAltName; commonName is only used with allow_common_name=True)"
        raise HostnameMismatchError(
            f"certificate is not valid for {host!r}: it holds {held}{hint}",
            hostname=host,
            names=names,
            errors=errors,
            subject=cert.subject.rfc4514_string(),
        )

    @staticmethod
    def _common_name_matches(cert: x509.Certificate, host: str, ip: object) -> bool:
        try:
            cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            return False  # a SAN extension exists: commonName never counts
        except x509.ExtensionNotFound:
            pass
        for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
            cn = str(attr.value)
            try:
                if ip is not None:
                    cn_ip = parse_ip(cn)
                    if cn_ip is None:
                        continue
                    verify_service_identity(
                        [IPAddressPattern(pattern=cn_ip)], obligatory_ids=[IPAddress_ID(str(ip))], optional_ids=[]
                    )
                else:
                    verify_service_identity(
                        [DNSPattern.from_bytes(cn.encode("utf-8"))],
                        obligatory_ids=[DNS_ID(host.rstrip("."))],
                        optional_ids=[],
                    )
                return True
            except (_SIVerificationError, _SICertificateError, ValueError):
                continue
        return False

    def check_purpose(self, cert: x509.Certificate) -> None:
        """Require serverAuth (``purpose="server"``) or clientAuth
        (``"client"``) when ``cert`` has an extendedKeyUsage extension
        (RFC 5280: without one, every usage is allowed).

        Raises:
            CertificatePurposeError: the usage is missing.
        """
        if self.purpose is None:
            return
        try:
            usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return
        wanted, name = (
            (ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth")
            if self.purpose == "server"
            else (ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth")
        )
        if wanted in usages:
            return
        held = ", ".join(getattr(u, "_name", None) or u.dotted_string for u in usages) or "none"
        raise CertificatePurposeError(
            f"the {self.purpose} certificate does not allow {name} (its extendedKeyUsage holds {held})",
            purpose=name,
            subject=cert.subject.rfc4514_string(),
        )

    def check_name_constraints(self, cas: Sequence[x509.Certificate]) -> None:
        """Hold :attr:`hostname` against the name constraints of each CA.

        Args:
            cas: the CA certificates of the verified chain, nearest the
                leaf first.

        Raises:
            NameConstraintsError: a CA does not permit, or excludes, the host.
        """
        host = self.hostname
        if host is None:
            return
        ip = parse_ip(host)
        name = None if ip is not None else _ascii_host(host)
        for depth, ca in enumerate(cas, start=1):
            try:
                nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
            except x509.ExtensionNotFound:
                continue
            verdict = _ip_within(ip, nc) if ip is not None else _dns_within(name or "", nc)
            if verdict is None:
                continue
            subject = ca.subject.rfc4514_string()
            raise NameConstraintsError(
                f"{host!r} is {verdict} by the name constraints of the CA at depth {depth} ({subject})",
                hostname=host,
                depth=depth,
                subject=subject,
            )

    def check_pins(self, chain_der: Iterable[bytes]) -> None:
        """Require a pinned key somewhere in ``chain_der``: pass only the
        verified chain, or the peer's own certificate (see :meth:`check`).

        Raises:
            PinMismatchError: none of the keys is pinned.
        """
        actual = [spki_sha256(der) for der in chain_der]
        if any(a in self.pins for a in actual):
            return
        raise PinMismatchError(
            "no verified certificate of the peer has a pinned public key: pinned "
            + ", ".join(self.pins)
            + "; the peer's keys are "
            + ", ".join(actual),
            pins=self.pins,
            actual=actual,
        )



def _ascii_host(host: str) -> str:
    name = host.rstrip(".").lower()
    try:
        name.encode("ascii")
        return name
    except UnicodeEncodeError:
        import idna

        try:
            return idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError:
            return name


def _dns_in_subtree(name: str, base: str) -> bool:
    base = base.lower().rstrip(".")
    if base.startswith("."):  # ".example.com": strict subdomains only
        return name.endswith(base)
    if not base:
        return True
    return name == base or name.endswith("." + base)


def _dns_within(name: str, nc: x509.NameConstraints) -> str | None:
    """``None`` if ``name`` passes, else ``"excluded"`` / ``"not permitted"``."""
    for subtree in nc.excluded_subtrees or ():
        if isinstance(subtree, x509.DNSName) and _dns_in_subtree(name, subtree.value):
            return "excluded"
    permitted = [s.value for s in nc.permitted_subtrees or () if isinstance(s, x509.DNSName)]
    if permitted and not any(_dns_in_subtree(name, base) for base in permitted):
        return "not permitted"
    return None


def _ip_within(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, nc: x509.NameConstraints) -> str | None:
    for subtree in nc.excluded_subtrees or ():
        if isinstance(subtree, x509.IPAddress) and isinstance(subtree.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            if subtree.value.version == ip.version and ip in subtree.value:
                return "excluded"
    permitted = [
        s.value
        for s in nc.permitted_subtrees or ()
        if isinstance(s, x509.IPAddress) and isinstance(s.value, (ipaddress.IPv4Network, ipaddress.IPv6Network))
    ]
    if permitted and not any(net.version == ip.version and ip in net for net in permitted):
        return "not permitted"
    return None
