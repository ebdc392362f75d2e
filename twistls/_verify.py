"""``twistls verify``: check a certificate offline exactly as a twistls client would.

The trust store, verification depth and security level come from a real
:class:`~twistls.context.ClientContextFactory` built with the same arguments a
client would use (so the system store is loaded the same way, a CA file or
directory the same way).  The chain is then verified by OpenSSL's
``X509_verify_cert`` set up as libssl's ``ssl_verify_cert_chain`` sets it up
for a client: the context's ``X509_STORE``, the untrusted certificates the
server would send, the ``ssl_server`` purpose and trust, the context's
``X509_VERIFY_PARAM`` (depth, flags) and its security level as the
authentication level.  Finally the same :class:`~twistls.checker.Checker`
matches the name.  Nothing cryptographic is reimplemented here.

Unlike a live client, which stops at the first problem, every problem is
collected (the verify callback lets OpenSSL continue); the first one is the
one a client would report, with the same error type and ``X509_V_ERR`` code.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import inspect
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from twistls import _openssl as _ossl
from twistls._peercheck import alternatives, verification_failure
from twistls._info import printable
from twistls.errors import ConfigurationError, PKIProfileError, VerificationError, _raw_message

__all__ = ["VerifyResult", "verify_certificate", "parse_time", "load_certificates"]


@dataclass
class VerifyResult:
    """What :func:`verify_certificate` found.

    Attributes:
        problems: the errors a client would raise, most relevant (the one a
            live client reports) first; empty when the certificate is accepted.
        chain: the certificates OpenSSL built, leaf first, as cryptography objects
            (or the given ones when no chain could be built).
        at: the verification time (``None``: now).
    """

    hostname: str
    problems: list[VerificationError] = field(default_factory=list)
    chain: list[x509.Certificate] = field(default_factory=list)
    at: datetime.datetime | None = None
    trust: str = "system trust store"
    depth: int = 9
    pki_profile: str = "strict"

    @property
    def accepted(self) -> bool:
        return not self.problems


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 time (``2030-01-01``, ``2030-01-01T12:00:00Z``,
    ``...+02:00``); a time without a zone is UTC.  ``@SECONDS`` (seconds
    since the epoch, what ``openssl verify -attime`` takes) is accepted too.

    Raises:
        ConfigurationError: not an ISO 8601 time.
    """
    value = text.strip()
    if value.startswith("@") and value[1:].isdigit():
        return datetime.datetime.fromtimestamp(int(value[1:]), datetime.timezone.utc)
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(f"--at {text!r} is not an ISO 8601 time (e.g. 2030-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (or the one in a DER file).

    Raises:
        ConfigurationError: unreadable, or no certificate in it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path!r}: {exc.strerror}") from None
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ConfigurationError(f"{path!r} holds no readable certificate: {exc}") from None
    if not certs:
        raise ConfigurationError(f"{path!r} holds no certificate")
    return certs


# --- the verify callback: records every failure, lets OpenSSL continue ------

#: The (code, depth, subject) failures of the X509_verify_cert call running
#: on this thread (it calls the callback synchronously), or none.
_collecting = threading.local()


def _collect(preverify_ok: int, store_ctx: int | None) -> int:
    try:
        seen: list[tuple[int, int, str]] | None = getattr(_collecting, "found", None)
        if not preverify_ok and store_ctx and seen is not None:
            code = _ossl.X509_STORE_CTX_get_error(store_ctx)
            depth = _ossl.X509_STORE_CTX_get_error_depth(store_ctx)
            subject = _ossl.subject_line(_ossl.X509_STORE_CTX_get_current_cert(store_ctx))
            if (code, depth) not in [(c, d) for c, d, _ in seen]:
                seen.append((code, depth, subject))
    except BaseException:  # never raise into C
        return 0
    return 1


_collect_callback = _ossl.VERIFY_CB(_collect)


def verify_certificate(
    certificate: str,
    *,
    hostname: str,
    chain: str | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    at: datetime.datetime | None = None,
    depth: int | None = None,
    allow_common_name: bool = False,
    crlfile: str | None = None,
    pki_profile: str = "strict",
) -> VerifyResult:
    """Verify ``certificate`` for ``hostname`` as a twistls client would.

    Args:
        certificate: PEM (or DER) file; its first certificate is the leaf,
            any further ones are intermediates the server would send.
        hostname: the DNS name or IP address the client expects.
        chain: a PEM file of further intermediates.
        cafile, capath: trust anchors instead of the system store.
        at: verify as of this time instead of now.
        depth: maximum chain depth (the client default otherwise).
        allow_common_name: the client's legacy commonName fallback.
        crlfile: CRLs the client would load (``crlfile=``).
        pki_profile: the client's ``pki_profile`` (``"strict"``, the
            default, or ``"rfc5280"``); with ``"strict"`` every rule of the
            profile that the chain breaks is listed.

    Returns:
        A :class:`VerifyResult`; ``accepted`` is true only when a client
        would accept the certificate.

    Raises:
        ConfigurationError: unreadable files, bad depth, bad hostname.
    """
    from twistls.context import DEFAULT_VERIFY_DEPTH

    certs = load_certificates(certificate)
    if chain is not None:
        certs += load_certificates(chain)
    depth = DEFAULT_VERIFY_DEPTH if depth is None else depth
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ConfigurationError(f"--depth must be a whole number >= 0, not {depth!r}")
    factory = _client_factory(hostname, cafile, capath, depth, allow_common_name, crlfile, pki_profile)
    result = VerifyResult(
        hostname=hostname,
        at=at,
        trust=f"CA file {cafile}" if cafile else f"CA directory {capath}" if capath else "system trust store",
        depth=depth,
        pki_profile=pki_profile,
    )
    try:
        ctx = factory.context_address
        checker = _checker_as_of(factory, hostname, allow_common_name, at, depth)
        sent = [c.public_bytes(serialization.Encoding.DER) for c in certs]

        def check(verified: list[bytes] | None) -> list[VerificationError]:
            return _checker_problems(checker, sent, verified)

        found, built_der, crls = _openssl_verify(ctx, certs, at)
        result.problems.extend(verification_failure(c, d, s) for c, d, s in found)
        result.problems.extend(check(built_der or None))
        if result.problems:
            # As a live client does (see PeerCheck.reverify_during_handshake):
            # another path, or the same a second earlier, verified again by
            # OpenSSL and accepted by the Checker, stands instead.
            store = _ossl.SSL_CTX_get_cert_store(ctx)
            alternative = _alternative(ctx, store, checker, sent, found if not crls else [], built_der, at, check)
            if alternative is not None:
                result.problems.clear()
                built_der = alternative
    finally:
        factory._handle.free()
    result.chain = [x509.load_der_x509_certificate(der) for der in built_der] or certs
    return result


def _client_factory(
    hostname: str,
    cafile: str | None,
    capath: str | None,
    depth: int,
    allow_common_name: bool,
    crlfile: str | None,
    pki_profile: str,
) -> Any:
    """The :class:`~twistls.context.ClientContextFactory` a client would use
    (its ``SSL_CTX``: trust store, depth, flags, security level)."""
    from twistls.context import ClientContextFactory

    crl_option: dict[str, Any] = {"crlfile": crlfile} if crlfile is not None else {}
    factory = ClientContextFactory(
        hostname,
        cafile=cafile,
        capath=capath,
        # A client needs at least one intermediate; depth 0 (a leaf issued
        # by the anchor itself) is set on this private context below.
        verify_depth=max(depth, 1),
        allow_common_name=allow_common_name,
        handshake_timeout=None,
        pki_profile=pki_profile,
        **crl_option,
    )
    if depth == 0:
        _ossl.SSL_CTX_set_verify_depth(factory.context_address, 0)
    return factory


def _checker_as_of(factory: Any, hostname: str, allow_common_name: bool, at: datetime.datetime | None, depth: int) -> Any:
    """The Checker the client would run after OpenSSL, on the chain the
    server would send (and the chain OpenSSL built, for name constraints),
    with its strict profile as of ``at`` and ``depth``."""
    from twistls.checker import Checker

    checker = getattr(factory, "_checker", None) or Checker(hostname=hostname, allow_common_name=allow_common_name)
    profile = getattr(checker, "pki", None)
    if profile is not None and (at is not None or depth == 0):
        profile = profile.at_time(at)
        if depth == 0:
            profile = dataclasses.replace(profile, max_depth=0)
        checker = dataclasses.replace(checker, pki=profile)  # the strict profile, as of --at
    return checker


def _checker_problems(checker: Any, sent: list[bytes], verified: list[bytes] | None) -> list[VerificationError]:
    """What the Checker refuses in the ``sent`` chain (``verified``: the
    chain OpenSSL built, or ``None``): every rule of the strict profile the
    chain breaks, or the one error; empty when it accepts."""
    try:
        if "verified_chain" in inspect.signature(checker.check).parameters:
            checker.check(sent, verified_chain=verified)
        else:
            checker.check(sent)
    except PKIProfileError as exc:
        return list(exc.problems)  # every rule the chain breaks
    except VerificationError as exc:
        return [exc]
    return []


def _openssl_verify(
    ctx: int, certs: list[x509.Certificate], at: datetime.datetime | None
) -> tuple[list[tuple[int, int, str]], list[bytes], bool]:
    """Verify ``certs`` (leaf first, then what the server would send) with
    ``X509_verify_cert``, set up as libssl's ``ssl_verify_cert_chain()``
    sets it up for a client of ``ctx``, collecting every failure.

    Returns:
        The failures (code, depth, subject) in the order OpenSSL met them,
        the chain it built (DER, leaf first) and whether it checked CRLs.

    Raises:
        ConfigurationError: OpenSSL could not set the verification up.
    """
    from M2Crypto import X509

    # M2Crypto objects own the certificates and the untrusted stack for the call.
    def to_m2(cert: x509.Certificate) -> Any:
        return X509.load_cert_der_string(cert.public_bytes(serialization.Encoding.DER))

    leaf = to_m2(certs[0])
    untrusted = X509.X509_Stack()
    extra = [to_m2(c) for c in certs[1:]]
    for c in extra:
        untrusted.push(c)
    store = _ossl.SSL_CTX_get_cert_store(ctx)
    store_ctx = _ossl.X509_STORE_CTX_new()
    if not store_ctx:
        raise ConfigurationError("OpenSSL could not allocate an X509_STORE_CTX")
    found: list[tuple[int, int, str]] = []
    try:
        _ossl.ERR_clear_error()
        # X509_Stack._ptr() is a SWIG pointer (it has __int__); its stub says list[X509].
        untrusted_ptr = int(untrusted._ptr())  # type: ignore[call-overload]
        if _ossl.X509_STORE_CTX_init(store_ctx, store, int(leaf._ptr()), untrusted_ptr) != 1:
            raise ConfigurationError("X509_STORE_CTX_init failed: " + "; ".join(_ossl.drain_errors()))
        param = _ossl.X509_STORE_CTX_get0_param(store_ctx)
        # The same steps, in the same order, as libssl's ssl_verify_cert_chain().
        _ossl.X509_VERIFY_PARAM_set_auth_level(param, _ossl.SSL_CTX_get_security_level(ctx))
        if _ossl.X509_STORE_CTX_set_default(store_ctx, b"ssl_server") != 1:
            raise ConfigurationError("X509_STORE_CTX_set_default(ssl_server) failed")
        if _ossl.X509_VERIFY_PARAM_set1(param, _ossl.SSL_CTX_get0_param(ctx)) != 1:
            raise ConfigurationError("X509_VERIFY_PARAM_set1 failed")
        if at is not None:
            _ossl.X509_VERIFY_PARAM_set_time(param, int(at.timestamp()))
        _ossl.X509_STORE_CTX_set_verify_cb(store_ctx, ctypes.cast(_collect_callback, ctypes.c_void_p))
        _collecting.found = found
        ret = _ossl.X509_verify_cert(store_ctx)
        _collecting.found = None
        if ret != 1 and not found:
            code = _ossl.X509_STORE_CTX_get_error(store_ctx)
            found.append((code, _ossl.X509_STORE_CTX_get_error_depth(store_ctx), ""))
        _ossl.drain_errors()
        built_der = _ossl.stack_der(_ossl.X509_STORE_CTX_get0_chain(store_ctx), limit=None)
        return found, built_der, _ossl.checks_crls(store_ctx)
    finally:
        _collecting.found = None
        _ossl.X509_STORE_CTX_free(store_ctx)


def _expires_exactly(der: bytes, when: int) -> bool:
    try:
        return int(x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()) == when
    except ValueError:
        return False


def _alternative(
    ctx: int,
    store: int,
    checker: Any,
    sent: list[bytes],
    found: list[tuple[int, int, str]],
    built: list[bytes],
    at: datetime.datetime | None,
    check: Any,
) -> list[bytes] | None:
    """The chain of the first alternative that OpenSSL verifies and the
    Checker accepts, or ``None`` (the same alternatives, in the same order,
    as a live client tries)."""
    when = int(at.timestamp()) if at is not None else int(time.time())
    expired_at = None
    for code, depth, _ in found:
        if code == _ossl.X509_V_ERR_CERT_HAS_EXPIRED and 0 <= depth < len(built) and _expires_exactly(built[depth], when):
            expired_at = when
            break
    finder = getattr(checker, "alternate_path", None)
    attempts = alternatives(sent, expired_at, finder, None if at is None else int(at.timestamp()))
    param = _ossl.SSL_CTX_get0_param(ctx)
    level = _ossl.SSL_CTX_get_security_level(ctx)
    for chain, when_at in attempts:
        try:
            verified = _ossl.reverify(store, param, level, b"ssl_server", chain[0], chain[1:], when_at)
        except MemoryError:
            return None  # fail closed: the first verdict stands
        if verified is not None and not check(verified):
            return verified
    return None


def format_result(result: VerifyResult, certificate: str) -> str:
    """The human report for ``twistls verify``.

    Every value is escaped with :func:`~twistls._info.printable`: subjects
    and the problems' messages (which quote the certificate's names) are
    chosen by whoever made the certificate, and a control character in them
    could forge or hide rows."""
    rows: list[tuple[str, str]] = [
        ("certificate", certificate),
        ("expected name", result.hostname),
        ("trust anchors", result.trust),
        ("depth limit", str(result.depth)),
        ("PKI profile", result.pki_profile),
        ("verified at", "now" if result.at is None else result.at.isoformat()),
    ]
    for i, cert in enumerate(result.chain):
        rows.append(
            (
                f"chain [{i}]",
                f"{cert.subject.rfc4514_string()} (expires {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)",
            )
        )
    for problem in result.problems:
        rows.append(("problem", f"{type(problem).__name__}: {_raw_message(problem)}"))
    if result.accepted:
        rows.append(("verdict", "accepted: a twistls client would accept this certificate"))
    else:
        n = len(result.problems)
        rows.append(("verdict", f"rejected ({n} problem{'s' if n != 1 else ''}); a client reports the first"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} : {printable(v)}" for k, v in rows)


def result_as_json(result: VerifyResult, certificate: str) -> dict[str, Any]:
    """The same as :func:`format_result`, as a JSON-ready dict of raw data
    (subjects and messages unescaped: JSON escapes control characters)."""
    return {
        "certificate": certificate,
        "hostname": result.hostname,
        "trust": result.trust,
        "depth": result.depth,
        "pki_profile": result.pki_profile,
        "at": None if result.at is None else result.at.isoformat(),
        "chain": [
            {
                "subject": c.subject.rfc4514_string(),
                "issuer": c.issuer.rfc4514_string(),
                "not_after": c.not_valid_after_utc.isoformat(),
            }
            for c in result.chain
        ],
        "problems": [
            {
                "type": type(p).__name__,
                "message": _raw_message(p),
                "verify_code": p.verify_code,
                "depth": p.depth,
            }
            for p in result.problems
        ],
        "accepted": result.accepted,
    }


def run(args: Any) -> int:
    """``twistls verify`` from parsed arguments; returns the exit status."""
    import json
    import sys

    hostname = args.host if args.host is not None else args.ip
    if args.ip is not None:
        from twistls.checker import parse_ip

        if parse_ip(args.ip) is None:
            print(f"twistls verify: --ip {args.ip!r} is not an IP address", file=sys.stderr)
            return 2
    try:
        at = None if args.at is None else parse_time(args.at)
        result = verify_certificate(
            args.certificate,
            hostname=hostname,
            chain=args.chain,
            cafile=args.cafile,
            capath=args.capath,
            at=at,
            depth=args.depth,
            allow_common_name=args.legacy_common_name,
            crlfile=getattr(args, "crlfile", None),
            pki_profile=getattr(args, "pki_profile", None) or "strict",
        )
    except ConfigurationError as exc:
        print(f"twistls verify: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(result_as_json(result, os.fspath(args.certificate)), indent=2))
    else:
        print(format_result(result, os.fspath(args.certificate)))
    return 0 if result.accepted else 1


def first_problem(result: VerifyResult) -> VerificationError | None:
    """The problem a live client would report, or ``None``."""
    return result.problems[0] if result.problems else None
