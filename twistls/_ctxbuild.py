"""Building OpenSSL ``SSL_CTX``es from validated settings.

:mod:`twistls.context` holds the policy (plain data, validation,
``create_engine``); this module turns it into contexts: protocol settings
(versions, ciphers, groups, options, security level), trust anchors and
peer verification, CRLs, ALPN, session caches and tickets, the key log, and
the per-name contexts of SNI.  :func:`build_client_context` and
:func:`build_server_context` are the two entry points.

Contracts: every refusal is a :class:`~twistls.errors.ConfigurationError`
raised while building, never at a handshake, with OpenSSL's reason and
OpenSSL's error queue drained; a context is returned fully configured or not
at all; nothing here imports Twisted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from twistls import _openssl as _ossl
from twistls._engine import ContextHandle
from twistls._pemfiles import Passphrase, Secret, load_identity, require_dir, require_file
from twistls._sni import SniTable
from twistls._ticketkeys import read_key_file
from twistls.errors import ConfigurationError

__all__ = [
    "DEFAULT_CIPHERS",
    "DEFAULT_CIPHERSUITES",
    "DEFAULT_GROUPS",
    "HYBRID_GROUPS",
    "DEFAULT_OPTIONS",
    "DEFAULT_SECURITY_LEVEL",
    "ProtocolSettings",
    "ClientCertificates",
    "PROFILES",
    "default_groups",
    "check_depth",
    "check_cache_size",
    "alpn_list",
    "keylog_path",
    "crl_files",
    "build_client_context",
    "build_server_context",
]

log = logging.getLogger("twistls")

#: TLS 1.2 ciphers: ECDHE key exchange with AEAD only (Mozilla "intermediate").
DEFAULT_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
#: TLS 1.3 ciphersuites.
DEFAULT_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#: Key-exchange groups, most preferred first: the classic list, used as the
#: default where the libssl has no ML-KEM (OpenSSL < 3.5).
DEFAULT_GROUPS = "X25519:P-256:P-384"
#: The default where the libssl has ML-KEM (OpenSSL >= 3.5): the hybrid
#: post-quantum X25519MLKEM768 first (a server picks it whenever a client
#: offers it), then the classic list; clients send key shares for both
#: X25519MLKEM768 and X25519, so a classic-only server costs no extra round trip.
HYBRID_GROUPS = "*X25519MLKEM768/*X25519:P-256:P-384"
#: The exact ``SSL_OP_*`` bits of a default client context (servers add
#: ``SSL_OP_CIPHER_SERVER_PREFERENCE``).
DEFAULT_OPTIONS = _ossl.OP_NO_COMPRESSION | _ossl.OP_NO_RENEGOTIATION | _ossl.OP_ENABLE_MIDDLEBOX_COMPAT
DEFAULT_SECURITY_LEVEL = 2

#: Version names OpenSSL knows that twistls refuses (RFC 8996 deprecates them).
_REFUSED_VERSIONS = ("TLSv1", "TLSv1.1")
#: Mozilla's server-side TLS profiles twistls offers.
PROFILES = ("intermediate", "modern")
#: How far CRLs are checked: the peer's own certificate, or every one.
CRL_CHECKS = ("leaf", "chain")


@dataclass(frozen=True)
class ProtocolSettings:
    """Protocol policy shared by both roles (plain data)."""

    minimum_version: str = "TLSv1.2"
    maximum_version: str | None = None
    ciphers: str = DEFAULT_CIPHERS
    ciphersuites: str = DEFAULT_CIPHERSUITES
    groups: str | None = None  # None: default_groups()
    security_level: int = DEFAULT_SECURITY_LEVEL

    @classmethod
    def for_profile(
        cls,
        profile: str,
        minimum_version: str,
        maximum_version: str | None,
        ciphers: str,
        ciphersuites: str,
        groups: str | None,
    ) -> ProtocolSettings:
        """The settings of Mozilla's ``profile`` (:data:`PROFILES`): ``"modern"``
        raises the floor to TLS 1.3, ``"intermediate"`` keeps ``minimum_version``.

        Raises:
            ConfigurationError: an unknown profile (the rest is checked by
                :func:`new_context`).
        """
        if profile not in PROFILES:
            raise ConfigurationError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
        minimum = "TLSv1.3" if profile == "modern" else minimum_version
        return cls(minimum, maximum_version, ciphers, ciphersuites, groups)


@dataclass(frozen=True)
class ClientCertificates:
    """How a server verifies client certificates (plain data).

    The CRL sources are listed again at each build, so that a reload picks
    up new files in ``crl_path``.
    """

    required: bool
    verify_depth: int
    cafile: str | None
    capath: str | None
    crlfile: str | os.PathLike[str] | None = None
    crl_path: str | os.PathLike[str] | None = None
    crl_check: str = "leaf"


@contextlib.contextmanager
def _scratch_context() -> Iterator[int]:
    """An ``SSL_CTX`` address to try settings on; freed, with OpenSSL's error
    queue cleared, on leaving."""
    scratch = ContextHandle()
    try:
        yield scratch.address
    finally:
        _ossl.ERR_clear_error()
        scratch.free()


@functools.cache
def default_groups() -> str:
    """The key-exchange groups a context gets when ``groups`` is not given:
    :data:`HYBRID_GROUPS` if the loaded libssl accepts them (OpenSSL >= 3.5),
    else :data:`DEFAULT_GROUPS`.

    .. versionadded:: 0.2
    """
    with _scratch_context() as ctx:
        try:
            _ossl.set_groups(ctx, HYBRID_GROUPS)
        except ValueError:
            return DEFAULT_GROUPS
        return HYBRID_GROUPS


def _ssl_call_failed(what: str) -> ConfigurationError:
    reasons = _ossl.drain_errors()
    return ConfigurationError(f"{what}: {'; '.join(reasons) or 'OpenSSL refused it'}")


@contextlib.contextmanager
def _refusals_as_configuration_errors() -> Iterator[None]:
    """The ValueError an ``_openssl`` setter raises for a refused setting,
    as a ConfigurationError with the same text."""
    try:
        yield
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _check_versions(protocol: ProtocolSettings) -> None:
    for bound, name in (("minimum_version", protocol.minimum_version), ("maximum_version", protocol.maximum_version)):
        if name in _REFUSED_VERSIONS:
            # They could never be negotiated: security level 2 refuses them and
            # none of the AEAD ciphers works below TLS 1.2.  Say so now, not
            # at each handshake.
            raise ConfigurationError(
                f"{bound} {name!r}: TLS 1.0 and 1.1 are deprecated (RFC 8996) and twistls does not "
                "negotiate them; use 'TLSv1.2' or 'TLSv1.3'"
            )
    low = _ossl.VERSIONS.get(protocol.minimum_version)
    high = _ossl.VERSIONS.get(protocol.maximum_version or "", 0)
    if low is not None and high and low > high:
        raise ConfigurationError(
            f"minimum_version {protocol.minimum_version!r} is above maximum_version {protocol.maximum_version!r}"
        )


def new_context(protocol: ProtocolSettings, *, server: bool) -> ContextHandle:
    """A new ``SSL_CTX`` with ``protocol`` applied, twistls' option bits (and
    only those) set, and buffers released when idle.

    Raises:
        ConfigurationError: a refused or unknown version, cipher, ciphersuite
            or group, or a security level outside 0..5.
    """
    _check_versions(protocol)
    if protocol.groups is not None or protocol.ciphersuites != DEFAULT_CIPHERSUITES:
        # OpenSSL skips unknown TLS 1.3 ciphersuites silently when one other is known.
        unknown = _name_rejected(protocol)
        if unknown:
            raise ConfigurationError(f"invalid TLS 1.3 settings{unknown}")
    handle = ContextHandle()
    ctx = handle.address
    _ossl.SSL_CTX_clear_options(ctx, _ossl.OP_ALL_BITS)
    options = DEFAULT_OPTIONS | (_ossl.OP_CIPHER_SERVER_PREFERENCE if server else 0)
    _ossl.SSL_CTX_set_options(ctx, options)
    try:
        _ossl.set_min_max_version(ctx, protocol.minimum_version, protocol.maximum_version)
        _ossl.set_cipher_list(ctx, protocol.ciphers)
        _ossl.set_ciphersuites(ctx, protocol.ciphersuites)
        _ossl.set_groups(ctx, protocol.groups if protocol.groups is not None else default_groups())
    except ValueError as exc:
        handle.free()
        raise ConfigurationError(str(exc) + _name_rejected(protocol)) from None
    if not 0 <= protocol.security_level <= 5:
        handle.free()
        raise ConfigurationError(f"security_level must be 0..5, not {protocol.security_level!r}")
    _ossl.SSL_CTX_set_security_level(ctx, protocol.security_level)
    # Idle connections give their 34 KiB of record buffers back.
    _ossl.set_mode(ctx, _ossl.MODE_RELEASE_BUFFERS)
    return handle


def _name_rejected(protocol: ProtocolSettings) -> str:
    """Which single entry of a rejected groups/ciphersuites list OpenSSL does not know."""
    settings: list[tuple[str, str, Callable[[int, str], None]]] = [
        ("ciphersuites", protocol.ciphersuites, _ossl.set_ciphersuites)
    ]
    if protocol.groups is not None:
        settings.insert(0, ("groups", protocol.groups, _ossl.set_groups))
    with _scratch_context() as ctx:
        for setting, value, setter in settings:
            for item in value.split(":"):
                try:
                    setter(ctx, item)
                except ValueError:
                    return f": {item!r} in {setting} is not one OpenSSL knows"
    return ""


def _load_trust(handle: ContextHandle, cafile: str | None, capath: str | None, *, what: str) -> None:
    """Trust ``cafile``/``capath``, or the system store when both are ``None``."""
    if cafile is None and capath is None:
        if _ossl.SSL_CTX_set_default_verify_paths(handle.address) != 1:
            raise _ssl_call_failed("could not load the system trust store")
        return
    if cafile is not None:
        cafile = require_file(cafile, f"{what} CA file")
    if capath is not None:
        capath = require_dir(capath, f"{what} CA directory")
    ok = _ossl.SSL_CTX_load_verify_locations(
        handle.address,
        None if cafile is None else os.fsencode(cafile),
        None if capath is None else os.fsencode(capath),
    )
    if ok != 1:
        raise _ssl_call_failed(f"could not load the {what} CA certificates from {cafile or capath!r}")


def check_depth(depth: object) -> None:
    """Raises: ConfigurationError: ``depth`` is not a whole number >= 1."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigurationError(f"verify_depth must be a whole number >= 1, not {depth!r}")


def check_cache_size(size: object) -> None:
    """Raises: ConfigurationError: ``size`` is not a whole number >= 0."""
    if not isinstance(size, int) or size < 0:
        raise ConfigurationError(f"session_cache_size must be a whole number >= 0, not {size!r}")


def alpn_list(protocols: Sequence[str | bytes]) -> tuple[bytes, ...]:
    """ALPN protocol names as bytes.

    Raises:
        ConfigurationError: a single name instead of a sequence, or a name
            not 1..255 bytes long.
    """
    if isinstance(protocols, (str, bytes)):
        raise ConfigurationError(f"alpn_protocols must be a sequence of names, not the single value {protocols!r}")
    result = []
    for proto in protocols:
        raw = proto.encode("ascii") if isinstance(proto, str) else proto
        if not isinstance(raw, bytes) or not 1 <= len(raw) <= 255:
            raise ConfigurationError(f"ALPN protocol names must be 1..255 bytes, not {proto!r}")
        result.append(raw)
    return tuple(result)


def _verify_peer(
    handle: ContextHandle, mode: int, depth: int, cafile: str | None, capath: str | None, *, what: str
) -> None:
    """Verify the peer with ``mode`` up to ``depth`` against the given (or system) CAs."""
    check_depth(depth)
    _ossl.SSL_CTX_set_verify(handle.address, mode, _ossl.verify_callback)
    _ossl.SSL_CTX_set_verify_depth(handle.address, depth)
    handle.verifying = mode != _ossl.VERIFY_NONE
    _load_trust(handle, cafile, capath, what=what)


def crl_files(
    crlfile: str | os.PathLike[str] | None, crl_path: str | os.PathLike[str] | None, crl_check: str
) -> list[str]:
    """The CRL files to load: ``crlfile`` and every file in ``crl_path``.

    Raises:
        ConfigurationError: a bad ``crl_check``, a missing file or
            directory, an empty directory.
    """
    if crl_check not in CRL_CHECKS:
        raise ConfigurationError(f"crl_check must be 'leaf' or 'chain', not {crl_check!r}")
    files: list[str] = []
    if crlfile is not None:
        files.append(require_file(crlfile, "CRL file"))
    if crl_path is not None:
        directory = require_dir(crl_path, "CRL directory")
        found = sorted(
            os.path.join(directory, name)
            for name in os.listdir(directory)
            if os.path.isfile(os.path.join(directory, name))
        )
        if not found:
            raise ConfigurationError(f"CRL directory {directory!r} holds no files")
        files += found
    return files


def _load_crls(handle: ContextHandle, files: list[str], crl_check: str) -> None:
    if files:
        with _refusals_as_configuration_errors():
            _ossl.load_crls(handle.address, files, crl_check == "chain")


def keylog_path(keylog_file: str | os.PathLike[str] | None) -> str | None:
    """The key-log file to write: ``keylog_file``, else ``$SSLKEYLOGFILE`` if set."""
    if keylog_file is not None:
        return os.fspath(keylog_file)
    return os.environ.get("SSLKEYLOGFILE") or None


def _enable_keylog(handle: ContextHandle, path: str | None, role: str) -> None:
    if path is None:
        return
    try:
        _ossl.set_keylog(handle.address, handle.hooks, path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot open the key-log file {path!r} safely: {exc.strerror} "
            "(it must be a regular file, not a symlink, owned by this user)"
        ) from None
    log.warning(
        "twistls %s context writes TLS secrets to the key-log file %r: anyone who can read it can "
        "decrypt the traffic; use only for debugging",
        role,
        path,
    )


def build_client_context(
    protocol: ProtocolSettings,
    *,
    insecure_skip_verify: bool,
    verify_depth: int,
    cafile: str | None,
    capath: str | None,
    certificate: str | None,
    private_key: str | None,
    passphrase: Passphrase | None,
    crls: Sequence[str],
    crl_check: str,
    alpn_protocols: Sequence[bytes],
    session_cache: bool,
    keylog_file: str | None,
) -> ContextHandle:
    """The ``SSL_CTX`` of a client: ``VERIFY_PEER | FAIL_IF_NO_PEER_CERT``
    against ``cafile``/``capath`` (the system store when both are ``None``),
    TLS 1.2 servers held to the extended master secret, the client
    certificate if given, CRLs, ALPN offer, client session caching.

    With ``insecure_skip_verify`` chain errors do not fail the handshake
    (a warning is logged), but the verify callback's own verdict (pins)
    stays fatal.

    Raises:
        ConfigurationError: see :func:`new_context`; a missing or bad CA,
            certificate, key, CRL or key-log file.
    """
    handle = new_context(protocol, server=False)
    if protocol.minimum_version != "TLSv1.3":  # TLS 1.2 servers must agree to EMS, or get an alert
        _ossl.watch_server_hello(handle.address)
    if insecure_skip_verify:
        # OpenSSL still verifies (the result is in connection_info) but
        # chain errors do not fail the handshake; VERIFY_PEER keeps the
        # verify callback's verdict fatal, so a pin mismatch, checked
        # inside the handshake on the peer's own certificate, sends an alert.
        handle.verifying = False
        handle.accept_unverified = True
        _ossl.SSL_CTX_set_verify(handle.address, _ossl.VERIFY_PEER, _ossl.verify_callback)
        log.warning(
            "twistls client context with insecure_skip_verify=True: peer certificates and names are NOT checked"
        )
    else:
        mode = _ossl.VERIFY_PEER | _ossl.VERIFY_FAIL_IF_NO_PEER_CERT
        _verify_peer(handle, mode, verify_depth, cafile, capath, what="trusted")
    if certificate is not None:
        load_identity(handle, certificate, private_key, passphrase)
    _load_crls(handle, list(crls), crl_check)
    if alpn_protocols:
        with _refusals_as_configuration_errors():
            _ossl.set_client_alpn(handle.address, list(alpn_protocols))
    if session_cache:
        _ossl.enable_client_session_cache(handle.address)
    _enable_keylog(handle, keylog_file, "client")
    return handle


def build_server_context(
    protocol: ProtocolSettings,
    certificate: str,
    private_key: str | None,
    *,
    passphrase: Secret | None,
    sni_certificates: SniTable,
    max_peer_chain_size: int,
    client_certificates: ClientCertificates | None,
    alpn_protocols: Sequence[bytes],
    session_cache_size: int,
    session_timeout: int | None,
    session_tickets: bool,
    ticket_key_file: str | None,
    keylog_file: str | None,
) -> ContextHandle:
    """The ``SSL_CTX`` of a server presenting ``certificate``, and one more per
    distinct certificate of ``sni_certificates``, chosen by the client's
    server_name (kept alive by the default context).  Every context shares
    the settings and one session ID context (derived from ``certificate``'s
    path).  The ticket-key file is read again at each build.

    Raises:
        ConfigurationError: see :func:`new_context`; a missing or bad
            certificate, key, CA, CRL, ticket-key or key-log file.
    """
    ticket_keys: list[tuple[bytes, bytes, bytes]] = []
    if ticket_key_file is not None:
        keys, warning = read_key_file(ticket_key_file)
        if warning:
            log.warning("twistls: %s", warning)
        ticket_keys = [(k.name, k.hmac_key, k.aes_key) for k in keys]
    # One session ID context for the factory, whichever certificate SNI picks.
    # It covers the client-certificate policy too: a session (or a ticket,
    # under a key file shared with other servers) carries the client
    # certificate verified when it was made, and only a server that would
    # verify that certificate the same way may resume it.
    session_id_context = hashlib.sha256(
        b"twistls:" + os.fsencode(certificate) + _client_policy_digest(client_certificates)
    ).digest()[:32]

    def one(cert: str, key: str | None) -> ContextHandle:
        handle = new_context(protocol, server=True)
        load_identity(handle, cert, key, passphrase)
        _ossl.SSL_CTX_set_session_id_context(handle.address, session_id_context, len(session_id_context))
        _ossl.set_max_cert_list(handle.address, max_peer_chain_size)
        _ossl.require_extended_master_secret(handle.address)
        if client_certificates is not None:
            _verify_client_certificates(handle, client_certificates)
        _ossl.set_server_alpn(handle.address, handle.hooks, list(alpn_protocols))
        _ossl.set_server_session_cache(handle.address, session_cache_size, session_timeout, session_tickets)
        if ticket_keys:
            with _refusals_as_configuration_errors():
                _ossl.set_ticket_keys(handle.address, handle.hooks, ticket_keys)
        _enable_keylog(handle, keylog_file, "server")
        return handle

    handle = one(certificate, private_key)
    if sni_certificates:
        _serve_by_name(handle, sni_certificates, one)
    return handle


def _client_policy_digest(policy: ClientCertificates | None) -> bytes:
    """A digest of how a server verifies client certificates: its settings
    and the content of its CA and CRL files (a reload that changes them
    changes it, so that sessions verified under the old ones are not
    resumed).  Files that cannot be read are left to the build to report."""
    if policy is None:
        return b""
    digest = hashlib.sha256()
    digest.update(repr((policy.required, policy.verify_depth, policy.capath, policy.crl_check)).encode())

    def add(path: str | os.PathLike[str]) -> None:
        digest.update(b"\0" + os.fsencode(path) + b"\0")
        try:
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
        except OSError:
            pass

    if policy.cafile is not None:
        add(policy.cafile)
    if policy.capath is not None:
        try:
            names = sorted(os.listdir(policy.capath))
        except OSError:
            names = []
        for name in names:
            if os.path.isfile(os.path.join(policy.capath, name)):
                add(os.path.join(policy.capath, name))
    try:
        crls = crl_files(policy.crlfile, policy.crl_path, policy.crl_check)
    except ConfigurationError:
        crls = []
    for path in crls:
        add(path)
    return b"clients:" + digest.digest()


def _verify_client_certificates(handle: ContextHandle, policy: ClientCertificates) -> None:
    """Ask for (and verify) client certificates; send the CA names of ``policy.cafile``."""
    mode = _ossl.VERIFY_PEER | (_ossl.VERIFY_FAIL_IF_NO_PEER_CERT if policy.required else 0)
    _verify_peer(handle, mode, policy.verify_depth, policy.cafile, policy.capath, what="client")
    if policy.cafile is not None:
        names = _ossl.SSL_load_client_CA_file(os.fsencode(policy.cafile))
        if names:
            _ossl.SSL_CTX_set_client_CA_list(handle.address, names)
        _ossl.ERR_clear_error()
    _load_crls(handle, crl_files(policy.crlfile, policy.crl_path, policy.crl_check), policy.crl_check)


def _serve_by_name(
    handle: ContextHandle, table: SniTable, make: Callable[[str, str | None], ContextHandle]
) -> None:
    """Switch ``handle``'s connections to the context of their server_name
    (exact names first, then one-label wildcards); one context per distinct
    (certificate, key), made with ``make``."""
    exact: dict[str, int] = {}
    wild: dict[str, int] = {}
    by_files: dict[tuple[str, str | None], ContextHandle] = {}
    for name, (cert, key) in table.items():
        target = by_files.get((cert, key))
        if target is None:
            target = by_files[(cert, key)] = make(cert, key)
            handle.keepalive.append(target)  # the callback may pick it at any time
        if name.startswith("*."):
            wild[name[2:]] = target.address
        else:
            exact[name] = target.address
    with _refusals_as_configuration_errors():
        _ossl.set_sni(handle.address, handle.hooks, exact, wild)
