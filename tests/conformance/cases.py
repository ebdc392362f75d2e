"""The conformance cases: one generated certificate chain per rule, with its verdict.

Each :class:`Case` is a server certificate, the intermediates the server
would send, the trust anchors, the name the client expects and the
validation time, all made here with :mod:`cryptography` (a few encodings
that its builder refuses, a zero serial or a fractional notAfter, are made
by re-signing a patched TBSCertificate).  ``expected`` is what a careful
verifier following RFC 5280 and the CA/Browser Forum Baseline Requirements
says.  The families are those of issue 13.

Nothing is written to disk and no key is committed: :func:`cases` builds the
whole set (about a second) once per process.
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import secrets
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Case", "NOW", "cases", "FAMILIES", "leaf_key_pem", "served_by_leaf_key"]

#: The validation time of every case (unless the case says otherwise): the
#: start of the current hour, so that the live client (which verifies at the
#: real time) can run the same cases.
NOW = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)

FAMILIES = (
    "baseline",
    "cn-san",
    "name-constraints",
    "eku",
    "key-identifiers",
    "basic-constraints-key-usage",
    "serial",
    "san",
    "public-suffix",
    "weak-keys",
    "policy-constraints",
    "path-building",
    "validity",
)


@dataclass(frozen=True)
class Case:
    """One conformance case.

    Attributes:
        name: a short unique identifier.
        family: one of :data:`FAMILIES`.
        expected: ``"accept"`` or ``"reject"``.
        host: the DNS name or IP address the client expects.
        leaf: the server certificate (DER).
        intermediates: what the server sends after it (DER), in order.
        anchors: the trust anchors (DER).
        at: the validation time.
        note: what the case is about.
    """

    name: str
    family: str
    expected: str
    host: str
    leaf: bytes
    intermediates: tuple[bytes, ...]
    anchors: tuple[bytes, ...]
    at: datetime.datetime = NOW
    note: str = ""

    def pem_chain(self) -> bytes:
        """The leaf followed by the intermediates, PEM."""
        return b"".join(_pem(d) for d in (self.leaf, *self.intermediates))

    def pem_anchors(self) -> bytes:
        """The trust anchors, PEM."""
        return b"".join(_pem(d) for d in self.anchors)


def _pem(der: bytes) -> bytes:
    """PEM without parsing (some cases are certificates cryptography refuses)."""
    text = base64.encodebytes(der).replace(b"\n", b"")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


# --- keys -------------------------------------------------------------------

_Key = Any  # an EC, RSA or DSA private key


@functools.lru_cache(maxsize=None)
def _key(name: str) -> _Key:
    """A P-256 key per name (cached: the same name is the same key)."""
    return ec.generate_private_key(ec.SECP256R1())


def _rsa_public(bits: int) -> rsa.RSAPublicKey:
    """An RSA public key with a modulus of exactly ``bits`` bits (not a real
    key: the leaf's private key is never needed to verify its certificate)."""
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return rsa.RSAPublicNumbers(65537, n).public_key()


# --- certificates -----------------------------------------------------------

_DEFAULT = object()


def _name(cn: str | None, org: str = "twistls conformance") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _ku(*, ca: bool, cert_sign: bool | None = None) -> x509.KeyUsage:
    sign = ca if cert_sign is None else cert_sign
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass
class _Spec:
    """How to build one certificate; ``extensions`` maps a type to
    ``(value, critical)`` or ``None`` (left out)."""

    subject: x509.Name
    key: _Key
    public_key: Any = None
    issuer: tuple[x509.Name, _Key] | None = None  # None: self-signed
    serial: int = 0
    not_before: datetime.datetime = NOW - datetime.timedelta(days=30)
    not_after: datetime.datetime = NOW + datetime.timedelta(days=60)
    extensions: dict[type, tuple[x509.ExtensionType, bool] | None] = field(default_factory=dict)

    def public(self) -> Any:
        return self.public_key if self.public_key is not None else self.key.public_key()


def _ca_spec(cn: str, key_name: str, issuer: tuple[x509.Name, _Key] | None = None, **ext: Any) -> _Spec:
    key = _key(key_name)
    spec = _Spec(
        subject=_name(cn),
        key=key,
        issuer=issuer,
        not_before=NOW - datetime.timedelta(days=365),
        not_after=NOW + datetime.timedelta(days=3650),
    )
    spec.extensions = {
        x509.BasicConstraints: (x509.BasicConstraints(ca=True, path_length=None), True),
        x509.KeyUsage: (_ku(ca=True), True),
        x509.SubjectKeyIdentifier: (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    }
    if issuer is not None:
        spec.extensions[x509.AuthorityKeyIdentifier] = (
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            False,
        )
    spec.extensions.update(ext)
    return spec


def _leaf_spec(
    issuer: tuple[x509.Name, _Key], *names: str, cn: str | None | object = _DEFAULT, key_name: str = "leaf"
) -> _Spec:
    key = _key(key_name)
    general: list[x509.GeneralName] = []
    for n in names or ("example.com",):
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            general.append(x509.DNSName(n))
    first = (names or ("example.com",))[0]
    spec = _Spec(subject=_name(first if cn is _DEFAULT else cn), key=key, issuer=issuer)  # type: ignore[arg-type]
    spec.extensions = {
        x509.BasicConstraints: (x509.BasicConstraints(ca=False, path_length=None), True),
        x509.KeyUsage: (_ku(ca=False), True),
        x509.ExtendedKeyUsage: (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        x509.SubjectAlternativeName: (x509.SubjectAlternativeName(general), False),
        x509.SubjectKeyIdentifier: (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        x509.AuthorityKeyIdentifier: (
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()),
            False,
        ),
    }
    return spec


def _sign(spec: _Spec) -> x509.Certificate:
    issuer_name, issuer_key = spec.issuer if spec.issuer is not None else (spec.subject, spec.key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(spec.subject)
        .issuer_name(issuer_name)
        .public_key(spec.public())
        .serial_number(spec.serial or x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
    )
    for value in spec.extensions.values():
        if value is not None:
            builder = builder.add_extension(value[0], critical=value[1])
    return builder.sign(issuer_key, hashes.SHA256())


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _ident(cert_spec: _Spec) -> tuple[x509.Name, _Key]:
    return (cert_spec.subject, cert_spec.key)


# --- DER patching (what the builder refuses to make) ------------------------


def _tlv(data: bytes, pos: int) -> tuple[int, int]:
    """(start of content, end of element) of the DER element at ``pos``."""
    length = data[pos + 1]
    start = pos + 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    return start, start + length


def _elements(data: bytes, start: int, end: int) -> list[bytes]:
    out = []
    pos = start
    while pos < end:
        _, stop = _tlv(data, pos)
        out.append(data[pos:stop])
        pos = stop
    return out


def _encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _patched(cert: x509.Certificate, issuer_key: _Key, patch: Callable[[list[bytes]], None]) -> bytes:
    """Re-sign ``cert`` after ``patch`` changed its TBSCertificate's elements
    (0 version, 1 serial, 2 signature, 3 issuer, 4 validity, ...)."""
    der = _der(cert)
    start, end = _tlv(der, 0)
    tbs, alg, _sig = _elements(der, start, end)
    t_start, t_end = _tlv(tbs, 0)
    parts = _elements(tbs, t_start, t_end)
    patch(parts)
    new_tbs = _encode(0x30, b"".join(parts))
    signature = issuer_key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return _encode(0x30, new_tbs + alg + _encode(0x03, b"\x00" + signature))


def _set_serial(value: bytes) -> Callable[[list[bytes]], None]:
    def patch(parts: list[bytes]) -> None:
        parts[1] = _encode(0x02, value)

    return patch


def _fractional_not_after(when: datetime.datetime) -> Callable[[list[bytes]], None]:
    def patch(parts: list[bytes]) -> None:
        validity = parts[4]
        v_start, v_end = _tlv(validity, 0)
        not_before, _ = _elements(validity, v_start, v_end)
        text = when.strftime("%Y%m%d%H%M%S") + ".5Z"
        parts[4] = _encode(0x30, not_before + _encode(0x18, text.encode("ascii")))

    return patch


# --- the cases --------------------------------------------------------------


class _Builder:
    """The default PKI (root -> intermediate -> leaf) and the case list."""

    def __init__(self) -> None:
        self.root_spec = _ca_spec("Conformance Root", "root")
        self.root = _sign(self.root_spec)
        self.int_spec = _ca_spec("Conformance Intermediate", "int", _ident(self.root_spec))
        self.int = _sign(self.int_spec)
        self.out: list[Case] = []

    def add(
        self,
        name: str,
        family: str,
        expected: str,
        leaf: x509.Certificate | bytes,
        *,
        host: str = "example.com",
        intermediates: Sequence[x509.Certificate | bytes] | None = None,
        anchors: Sequence[x509.Certificate] | None = None,
        at: datetime.datetime = NOW,
        note: str = "",
    ) -> None:
        inters = [self.int] if intermediates is None else list(intermediates)
        self.out.append(
            Case(
                name=name,
                family=family,
                expected=expected,
                host=host,
                leaf=leaf if isinstance(leaf, bytes) else _der(leaf),
                intermediates=tuple(c if isinstance(c, bytes) else _der(c) for c in inters),
                anchors=tuple(_der(c) for c in (anchors or [self.root])),
                at=at,
                note=note,
            )
        )

    def leaf(self, *names: str, cn: str | None | object = _DEFAULT, **ext: Any) -> x509.Certificate:
        spec = _leaf_spec(_ident(self.int_spec), *names, cn=cn)
        spec.extensions.update(ext)
        return _sign(spec)

    def build(self) -> list[Case]:
        self.baseline()
        self.cn_san()
        self.name_constraints()
        self.eku()
        self.key_identifiers()
        self.basic_constraints()
        self.serials()
        self.san()
        self.public_suffix()
        self.weak_keys()
        self.policy_constraints()
        self.path_building()
        self.validity()
        return self.out

    def baseline(self) -> None:
        self.add("ok-dns", "baseline", "accept", self.leaf("example.com"))
        self.add("ok-ip", "baseline", "accept", self.leaf("192.0.2.1"), host="192.0.2.1")
        self.add("ok-ipv6", "baseline", "accept", self.leaf("2001:db8::1"), host="2001:db8::1")
        self.add("ok-wildcard", "baseline", "accept", self.leaf("*.example.com"), host="www.example.com")
        self.add("ok-no-cn", "baseline", "accept", self.leaf("example.com", cn=None))
        self.add(
            "ok-eku-server-and-client",
            "baseline",
            "accept",
            self._leaf_ext(
                x509.ExtendedKeyUsage,
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            ),
        )
        direct = _sign(_leaf_spec(_ident(self.root_spec), "example.com"))
        self.add("ok-leaf-under-root", "baseline", "accept", direct, intermediates=[], note="depth 0 below the anchor")
        nc_int = self._nc_int(x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None), True)
        self.add(
            "ok-name-constraints",
            "baseline",
            "accept",
            _sign(_leaf_spec(_ident(nc_int[1]), "www.example.com")),
            host="www.example.com",
            intermediates=[nc_int[0]],
        )

    def _leaf_ext(self, kind: type, value: tuple[x509.ExtensionType, bool] | None, *names: str, cn: Any = _DEFAULT) -> x509.Certificate:
        spec = _leaf_spec(_ident(self.int_spec), *names, cn=cn)
        spec.extensions[kind] = value
        return _sign(spec)

    def _nc_int(self, nc: x509.NameConstraints, critical: bool) -> tuple[x509.Certificate, _Spec]:
        spec = _ca_spec("Constrained Intermediate", "nc-int", _ident(self.root_spec))
        spec.extensions[x509.NameConstraints] = (nc, critical)
        return _sign(spec), spec

    def cn_san(self) -> None:
        f = "cn-san"
        self.add("cn-not-in-san", f, "reject", self._leaf_ext(x509.KeyUsage, (_ku(ca=False), True), "example.com", cn="other.example"))
        self.add("cn-case-mismatch", f, "reject", self.leaf("example.com", cn="Example.COM"))
        self.add(
            "cn-unicode-vs-punycode",
            f,
            "reject",
            self.leaf("xn--bcher-kva.example", cn="bücher.example"),
            host="xn--bcher-kva.example",
        )
        self.add("cn-ip-leading-zeros", f, "reject", self.leaf("192.0.2.1", cn="192.000.002.001"), host="192.0.2.1")
        self.add("cn-ip-hex", f, "reject", self.leaf("192.0.2.1", cn="0xC0000201"), host="192.0.2.1")
        self.add(
            "cn-ipv6-uncompressed",
            f,
            "reject",
            self.leaf("2001:db8::1", cn="2001:0db8:0000:0000:0000:0000:0000:0001"),
            host="2001:db8::1",
        )
        self.add("cn-ipv6-upper-case", f, "reject", self.leaf("2001:db8::1", cn="2001:DB8::1"), host="2001:db8::1")
        self.add("cn-ip-as-dns", f, "reject", self.leaf("example.com", "192.0.2.1", cn="192.0.2.2"))

    def name_constraints(self) -> None:
        f = "name-constraints"
        permitted = x509.NameConstraints(permitted_subtrees=[x509.DNSName("example.com")], excluded_subtrees=None)
        self.add(
            "nc-on-leaf",
            f,
            "reject",
            self._leaf_ext(x509.NameConstraints, (permitted, True)),
            note="nameConstraints on a non-CA certificate",
        )
        inter, spec = self._nc_int(permitted, False)
        self.add(
            "nc-non-critical", f, "reject", _sign(_leaf_spec(_ident(spec), "www.example.com")), host="www.example.com", intermediates=[inter]
        )
        dotted = x509.NameConstraints(permitted_subtrees=[x509.DNSName(".example.com")], excluded_subtrees=None)
        inter, spec = self._nc_int(dotted, True)
        self.add(
            "nc-leading-period", f, "reject", _sign(_leaf_spec(_ident(spec), "www.example.com")), host="www.example.com", intermediates=[inter]
        )
        invalid = x509.NameConstraints(
            permitted_subtrees=[x509.DNSName("example.com"), x509.DNSName("exa mple..com")], excluded_subtrees=None
        )
        inter, spec = self._nc_int(invalid, True)
        self.add(
            "nc-permits-invalid-name", f, "reject", _sign(_leaf_spec(_ident(spec), "www.example.com")), host="www.example.com", intermediates=[inter]
        )
        inter, spec = self._nc_int(permitted, True)
        self.add(
            "nc-leaf-san-invalid",
            f,
            "reject",
            _sign(_leaf_spec(_ident(spec), "www.example.com", "bad_name!.example.com")),
            host="www.example.com",
            intermediates=[inter],
        )

    def eku(self) -> None:
        f = "eku"
        self.add(
            "eku-any-on-leaf",
            f,
            "reject",
            self._leaf_ext(x509.ExtendedKeyUsage, (x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.5.29.37.0")]), False)),
        )
        self.add("eku-missing-on-leaf", f, "reject", self._leaf_ext(x509.ExtendedKeyUsage, None))
        root_spec = _ca_spec("EKU Root", "eku-root")
        root_spec.extensions[x509.ExtendedKeyUsage] = (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        root = _sign(root_spec)
        int_spec = _ca_spec("EKU Intermediate", "eku-int", _ident(root_spec))
        self.add(
            "eku-on-root",
            f,
            "reject",
            _sign(_leaf_spec(_ident(int_spec), "example.com")),
            intermediates=[_sign(int_spec)],
            anchors=[root],
        )
        self.add(
            "eku-critical",
            f,
            "reject",
            self._leaf_ext(x509.ExtendedKeyUsage, (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), True)),
        )

    def key_identifiers(self) -> None:
        f = "key-identifiers"
        self.add("leaf-without-aki", f, "reject", self._leaf_ext(x509.AuthorityKeyIdentifier, None))
        spec = _ca_spec("Conformance Intermediate", "int", _ident(self.root_spec))
        spec.extensions[x509.AuthorityKeyIdentifier] = None
        self.add("intermediate-without-aki", f, "reject", self.leaf(), intermediates=[_sign(spec)])
        spec = _ca_spec("Conformance Intermediate", "int", _ident(self.root_spec))
        spec.extensions[x509.SubjectKeyIdentifier] = None
        self.add("intermediate-without-ski", f, "reject", self.leaf(), intermediates=[_sign(spec)])
        root_spec = _ca_spec("No SKI Root", "noski-root")
        root_spec.extensions[x509.SubjectKeyIdentifier] = None
        int_spec = _ca_spec("No SKI Intermediate", "noski-int", _ident(root_spec))
        int_spec.extensions[x509.AuthorityKeyIdentifier] = (
            x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(root_spec.subject)], 1),
            False,
        )
        self.add(
            "root-without-ski",
            f,
            "reject",
            _sign(_leaf_spec(_ident(int_spec), "example.com")),
            intermediates=[_sign(int_spec)],
            anchors=[_sign(root_spec)],
        )
        self.add(
            "aki-without-key-identifier",
            f,
            "reject",
            self._leaf_ext(
                x509.AuthorityKeyIdentifier,
                (x509.AuthorityKeyIdentifier(None, [x509.DirectoryName(self.root_spec.subject)], self.int.serial_number), False),
            ),
        )

    def _root_variant(self, key_name: str, **change: Any) -> tuple[x509.Certificate, _Spec]:
        spec = _ca_spec(f"Root {key_name}", key_name)
        for kind, value in change.items():
            spec.extensions[getattr(x509, kind)] = value
        return _sign(spec), spec

    def _under_root(self, root: tuple[x509.Certificate, _Spec], case: str, expected: str, family: str) -> None:
        int_spec = _ca_spec(f"Intermediate of {case}", f"{case}-int", _ident(root[1]))
        self.add(
            case,
            family,
            expected,
            _sign(_leaf_spec(_ident(int_spec), "example.com")),
            intermediates=[_sign(int_spec)],
            anchors=[root[0]],
        )

    def basic_constraints(self) -> None:
        f = "basic-constraints-key-usage"
        self._under_root(self._root_variant("nobc-root", BasicConstraints=None), "root-without-basic-constraints", "reject", f)
        self._under_root(
            self._root_variant("bcnc-root", BasicConstraints=(x509.BasicConstraints(ca=True, path_length=None), False)),
            "root-basic-constraints-non-critical",
            "reject",
            f,
        )
        spec = _ca_spec("Conformance Intermediate", "int", _ident(self.root_spec))
        spec.extensions[x509.KeyUsage] = None
        self.add("intermediate-without-key-usage", f, "reject", self.leaf(), intermediates=[_sign(spec)])
        self.add("leaf-key-cert-sign", f, "reject", self._leaf_ext(x509.KeyUsage, (_ku(ca=False, cert_sign=True), True)))
        self.add(
            "leaf-ca-true", f, "reject", self._leaf_ext(x509.BasicConstraints, (x509.BasicConstraints(ca=True, path_length=None), True))
        )

    def serials(self) -> None:
        f = "serial"
        int_key = self.int_spec.key
        self.add("serial-zero", f, "reject", _patched(self.leaf(), int_key, _set_serial(b"\x00")))
        self.add("serial-21-octets", f, "reject", _patched(self.leaf(), int_key, _set_serial(b"\x01" + bytes(range(1, 21)))))
        self.add("ok-serial-20-octets", f, "accept", _patched(self.leaf(), int_key, _set_serial(b"\x01" + bytes(range(1, 20)))))

    def san(self) -> None:
        f = "san"
        self.add("san-underscore", f, "reject", self.leaf("example.com", "my_host.example.com"))
        spec = _leaf_spec(_ident(self.int_spec), "example.com")
        spec.subject = x509.Name([])
        self.add("san-non-critical-empty-subject", f, "reject", _sign(spec))
        self.add(
            "san-critical-non-empty-subject",
            f,
            "reject",
            self._leaf_ext(x509.SubjectAlternativeName, (x509.SubjectAlternativeName([x509.DNSName("example.com")]), True)),
        )
        spec = _leaf_spec(_ident(self.int_spec), "example.com")
        spec.subject = x509.Name([])
        spec.extensions[x509.SubjectAlternativeName] = (x509.SubjectAlternativeName([x509.DNSName("example.com")]), True)
        self.add("ok-san-critical-empty-subject", f, "accept", _sign(spec))

    def public_suffix(self) -> None:
        f = "public-suffix"
        self.add("wildcard-co-uk", f, "reject", self.leaf("*.co.uk", cn=None), host="example.co.uk")
        self.add("wildcard-com-au", f, "reject", self.leaf("*.com.au", cn=None), host="example.com.au")
        self.add("ok-wildcard-under-registrable", f, "accept", self.leaf("*.example.co.uk", cn=None), host="www.example.co.uk")

    def weak_keys(self) -> None:
        f = "weak-keys"
        for name, public in (
            ("leaf-dsa-2048", dsa.generate_private_key(2048).public_key()),
            ("leaf-rsa-1024", _rsa_public(1024)),
            ("leaf-rsa-2047-bits", _rsa_public(2047)),
            ("leaf-rsa-2049-bits", _rsa_public(2049)),
        ):
            spec = _leaf_spec(_ident(self.int_spec), "example.com")
            spec.public_key = public
            spec.extensions[x509.SubjectKeyIdentifier] = (x509.SubjectKeyIdentifier.from_public_key(public), False)
            self.add(name, f, "reject", _sign(spec))
        spec = _leaf_spec(_ident(self.int_spec), "example.com")
        spec.public_key = public = _rsa_public(2048)
        spec.extensions[x509.SubjectKeyIdentifier] = (x509.SubjectKeyIdentifier.from_public_key(public), False)
        self.add("ok-leaf-rsa-2048", f, "accept", _sign(spec))

    def policy_constraints(self) -> None:
        spec = _ca_spec("Conformance Intermediate", "int", _ident(self.root_spec))
        spec.extensions[x509.PolicyConstraints] = (x509.PolicyConstraints(require_explicit_policy=None, inhibit_policy_mapping=0), False)
        self.add("policy-constraints-non-critical", "policy-constraints", "reject", self.leaf(), intermediates=[_sign(spec)])

    def path_building(self) -> None:
        f = "path-building"
        # A cross-signed root: the server sends [intermediate, new root signed
        # by an old root]; only the new root (self-signed) is trusted.
        new_root = _ca_spec("Cross Root", "cross-new")
        old_root = _ca_spec("Old Root", "cross-old")
        cross = _ca_spec("Cross Root", "cross-new", _ident(old_root))
        inter = _ca_spec("Cross Intermediate", "cross-int", _ident(new_root))
        self.add(
            "cross-signed-root",
            f,
            "accept",
            _sign(_leaf_spec(_ident(inter), "example.com")),
            intermediates=[_sign(inter), _sign(cross), _sign(old_root)],
            anchors=[_sign(new_root)],
        )
        # Two intermediates sent in the wrong order.
        upper = _ca_spec("Upper Intermediate", "upper", _ident(self.root_spec))
        lower = _ca_spec("Lower Intermediate", "lower", _ident(upper))
        self.add(
            "swapped-intermediates",
            f,
            "accept",
            _sign(_leaf_spec(_ident(lower), "example.com")),
            intermediates=[_sign(upper), _sign(lower)],
        )
        # The intermediate is sent twice: cross-signed by a root whose name
        # constraints exclude the host, and by one without constraints.
        for case, order in (("alternate-path-around-constraint", 0), ("alternate-path-constrained-first", 1)):
            root_a = _ca_spec("Constraining Root", "alt-a")
            root_a.extensions[x509.NameConstraints] = (
                x509.NameConstraints(permitted_subtrees=None, excluded_subtrees=[x509.DNSName("example.com")]),
                True,
            )
            root_b = _ca_spec("Open Root", "alt-b")
            via_a = _ca_spec("Shared Intermediate", "alt-int", _ident(root_a))
            via_b = _ca_spec("Shared Intermediate", "alt-int", _ident(root_b))
            sent = [_sign(via_a), _sign(via_b)] if order else [_sign(via_b), _sign(via_a)]
            self.add(
                case,
                f,
                "accept",
                _sign(_leaf_spec(_ident(via_a), "example.com")),
                intermediates=sent,
                anchors=[_sign(root_a), _sign(root_b)],
                note="one intermediate (same name and key) issued by two roots",
            )

    def validity(self) -> None:
        f = "validity"
        leaf = self.leaf()
        self.add("at-not-after", f, "accept", leaf, at=leaf.not_valid_after_utc, note="RFC 5280: valid through notAfter")
        self.add("after-not-after", f, "reject", leaf, at=leaf.not_valid_after_utc + datetime.timedelta(seconds=1))
        self.add("at-not-before", f, "accept", leaf, at=leaf.not_valid_before_utc)
        far = NOW + datetime.timedelta(days=365 * 30)  # 2056: GeneralizedTime territory
        spec = _leaf_spec(_ident(self.int_spec), "example.com")
        spec.not_after = far
        base = _sign(spec)
        self.add(
            "not-after-fractional-seconds",
            f,
            "accept",
            _patched(base, self.int_spec.key, _fractional_not_after(far)),
            note="GeneralizedTime notAfter with .5 seconds",
        )


def leaf_key_pem() -> bytes:
    """The private key (PEM) of every case's leaf whose key was not replaced."""
    return _key("leaf").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def served_by_leaf_key(case: Case) -> bool:
    """Whether a server can present ``case`` with :func:`leaf_key_pem` (its
    leaf parses and holds that key)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            leaf = x509.load_der_x509_certificate(case.leaf)
            return bool(leaf.public_key() == _key("leaf").public_key())
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def cases() -> tuple[Case, ...]:
    """Every conformance case (built once per process).

    Returns:
        The cases, grouped by family.
    """
    return tuple(_Builder().build())
