"""Context factories: a small policy in, one OpenSSL ``SSL_CTX`` out.

:class:`ClientContextFactory` and :class:`ServerContextFactory` each build one
``SSL_CTX`` when constructed (every configuration mistake is raised then, as a
:class:`~twistls.errors.ConfigurationError`) and reuse it for every
connection.  They are what :class:`twistls.protocol.TLSWrappingFactory`, the
endpoints and ``transport.startTLS(...)`` take.

Defaults, for both roles: TLS 1.2 minimum (1.3 preferred), TLS 1.2 ciphers
ECDHE with AEAD only, key exchange X25519/P-256/P-384 (led by the hybrid
post-quantum X25519MLKEM768 where the libssl has it), OpenSSL security
level 2, no compression, no renegotiation, extended master secret required,
``SSL_OP_IGNORE_UNEXPECTED_EOF`` off (so truncation is detected).

Client: verify the peer chain (``VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT``,
depth 9) against the system trust store unless ``cafile``/``capath`` is given,
send SNI, and check the expected hostname with the :class:`~twistls.checker.Checker`.
Verification can only be switched off with ``insecure_skip_verify=True``,
which logs a warning.

Server: certificate chain and key from PEM files (a key that does not match
the certificate is refused at construction); client certificates only when
``client_cafile``/``client_capath`` is given, then required and verified
unless ``require_client_certificate=False``; TLS 1.2 clients that do not
offer the extended master secret are refused in the ClientHello, with a
``handshake_failure`` alert.

.. versionadded:: 0.1
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import logging
import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import idna
from cryptography import x509
from M2Crypto import BIO, EVP, m2

from twistls import _openssl as _ossl
from twistls._engine import ContextHandle, TLSEngine
from twistls._pkix import PKI_PROFILES, StrictProfile, strict_profile
from twistls._ticketkeys import read_key_file
from twistls.checker import Checker, parse_ip
from twistls.errors import ConfigurationError

__all__ = [
    "ClientContextFactory",
    "ServerContextFactory",
    "DEFAULT_CIPHERS",
    "DEFAULT_CIPHERSUITES",
    "DEFAULT_GROUPS",
    "HYBRID_GROUPS",
    "default_groups",
    "DEFAULT_OPTIONS",
    "reload_on_sighup",
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
DEFAULT_VERIFY_DEPTH = 9
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: The largest client certificate chain a server accepts (OpenSSL's default
#: is 100 KiB, which lets one client pad every cached session with junk).
DEFAULT_MAX_PEER_CHAIN_SIZE = 32 * 1024
#: What a server's session cache may hold in client chains, at most.
DEFAULT_SESSION_CACHE_MEMORY = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Protocol:
    """Protocol policy shared by both roles (plain data)."""

    minimum_version: str = "TLSv1.2"
    maximum_version: str | None = None
    ciphers: str = DEFAULT_CIPHERS
    ciphersuites: str = DEFAULT_CIPHERSUITES
    groups: str | None = None  # None: default_groups()
    security_level: int = DEFAULT_SECURITY_LEVEL


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


def _require_file(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ConfigurationError(f"{what} {text!r} does not exist or is not a file")
    if not os.access(text, os.R_OK):
        raise ConfigurationError(f"{what} {text!r} is not readable")
    return text


def _require_dir(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if not os.path.isdir(text):
        raise ConfigurationError(f"{what} {text!r} does not exist or is not a directory")
    return text


def _ssl_call_failed(what: str) -> ConfigurationError:
    reasons = _ossl.drain_errors()
    return ConfigurationError(f"{what}: {'; '.join(reasons) or 'OpenSSL refused it'}")


#: Version names OpenSSL knows that twistls refuses (RFC 8996 deprecates them).
_REFUSED_VERSIONS = ("TLSv1", "TLSv1.1")


def _build(protocol: _Protocol, *, server: bool) -> ContextHandle:
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


def _name_rejected(protocol: _Protocol) -> str:
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
    if cafile is None and capath is None:
        if _ossl.SSL_CTX_set_default_verify_paths(handle.address) != 1:
            raise _ssl_call_failed("could not load the system trust store")
        return
    if cafile is not None:
        cafile = _require_file(cafile, f"{what} CA file")
    if capath is not None:
        capath = _require_dir(capath, f"{what} CA directory")
    ok = _ossl.SSL_CTX_load_verify_locations(
        handle.address,
        None if cafile is None else os.fsencode(cafile),
        None if capath is None else os.fsencode(capath),
    )
    if ok != 1:
        raise _ssl_call_failed(f"could not load the {what} CA certificates from {cafile or capath!r}")


Passphrase = Union[bytes, str, Callable[[], Union[bytes, str]]]


class _Secret:
    """Holds a passphrase so that ``repr()``/``vars()`` of a factory never show it."""

    __slots__ = ("value",)

    def __init__(self, value: Passphrase) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


def _passphrase_bytes(passphrase: Passphrase | _Secret | None) -> bytes | None:
    if isinstance(passphrase, _Secret):
        passphrase = passphrase.value
    if passphrase is None:
        return None
    value = passphrase() if callable(passphrase) else passphrase
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise ConfigurationError("passphrase must be bytes, str, or a callable returning one of them")
    return bytes(value)


def _use_private_key(handle: ContextHandle, key_path: str, passphrase: Passphrase | _Secret | None) -> None:
    """Load the key through OpenSSL with a password callback that never
    prompts on a terminal: an encrypted key needs ``passphrase``."""
    try:
        with open(key_path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise ConfigurationError(f"could not read the private key file {key_path!r}: {exc.strerror}") from None
    secret = _passphrase_bytes(passphrase)
    asked: list[int] = []

    def callback(*_: object) -> bytes:  # OpenSSL calls it only for an encrypted key
        asked.append(1)
        return secret or b""

    bio = BIO.MemoryBuffer(pem)
    del pem
    try:
        # BIO._ptr is unannotated in M2Crypto.
        pkey = EVP.PKey(m2.pkey_read_pem(bio._ptr(), callback), 1)  # type: ignore[no-untyped-call]
    except Exception:
        _ossl.drain_errors()
        if asked and secret is None:
            raise ConfigurationError(
                f"the private key in {key_path!r} is encrypted: give passphrase=... (bytes, str or a callable)"
            ) from None
        if asked:
            raise ConfigurationError(f"could not decrypt the private key in {key_path!r}: wrong passphrase?") from None
        raise ConfigurationError(f"no readable PEM private key in {key_path!r}") from None
    finally:
        bio.close()
    try:
        m2.ssl_ctx_use_pkey_privkey(handle.ptr, pkey.pkey)
    finally:
        del pkey


def _load_identity(
    handle: ContextHandle, certificate: str, private_key: str | None, passphrase: Passphrase | _Secret | None = None
) -> None:
    cert_path = _require_file(certificate, "certificate file")
    key_path = _require_file(private_key, "private key file") if private_key else cert_path
    _ossl.ERR_clear_error()
    try:
        m2.ssl_ctx_use_cert_chain(handle.ptr, cert_path)
    except Exception as exc:  # M2Crypto raises SSLError
        _ossl.drain_errors()
        raise ConfigurationError(f"could not load the certificate chain from {cert_path!r}: {exc}") from None
    try:
        _use_private_key(handle, key_path, passphrase)
    except ConfigurationError:
        raise
    except Exception as exc:
        _ossl.drain_errors()
        if "mismatch" in str(exc):  # OpenSSL checks the pair while loading the key
            raise ConfigurationError(
                f"the private key in {key_path!r} does not match the certificate in {cert_path!r}"
            ) from None
        # Never echo key material: only the path and OpenSSL's reason.
        raise ConfigurationError(f"could not load the private key from {key_path!r}: {exc}") from None
    try:
        m2.ssl_ctx_check_privkey(handle.ptr)
    except Exception:
        _ossl.drain_errors()
        raise ConfigurationError(
            f"the private key in {key_path!r} does not match the certificate in {cert_path!r}"
        ) from None
    _warn_if_key_exposed(key_path)


def _warn_if_key_exposed(key_path: str) -> None:
    try:
        mode = os.stat(key_path).st_mode
    except OSError:
        return
    if mode & 0o004:
        log.warning("private key file %r is readable by every user; chmod 600 it", key_path)


PROFILES = ("intermediate", "modern")


def _profile_minimum(profile: str, minimum_version: str) -> str:
    """The protocol floor a Mozilla profile asks for."""
    if profile not in PROFILES:
        raise ConfigurationError(f"profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    return "TLSv1.3" if profile == "modern" else minimum_version


def _check_depth(depth: object) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigurationError(f"verify_depth must be a whole number >= 1, not {depth!r}")


def _check_cache_size(size: object) -> None:
    if not isinstance(size, int) or size < 0:
        raise ConfigurationError(f"session_cache_size must be a whole number >= 0, not {size!r}")


def _set_verify(handle: ContextHandle, mode: int, depth: int) -> None:
    _check_depth(depth)
    _ossl.SSL_CTX_set_verify(handle.address, mode, _ossl.verify_callback)
    _ossl.SSL_CTX_set_verify_depth(handle.address, depth)
    handle.verifying = mode != _ossl.VERIFY_NONE


def _sni_name(hostname: str) -> str | None:
    if parse_ip(hostname) is not None:
        return None
    name = hostname.rstrip(".")
    try:
        return name.encode("ascii").decode("ascii").lower()
    except UnicodeEncodeError:
        try:
            return idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ConfigurationError(f"hostname {hostname!r} is not a valid IDNA name: {exc}") from None


def _alpn_list(protocols: Sequence[str | bytes]) -> tuple[bytes, ...]:
    """Validate ALPN protocol names (1..255 bytes each) into bytes."""
    if isinstance(protocols, (str, bytes)):
        raise ConfigurationError(f"alpn_protocols must be a sequence of names, not the single value {protocols!r}")
    result = []
    for proto in protocols:
        raw = proto.encode("ascii") if isinstance(proto, str) else proto
        if not isinstance(raw, bytes) or not 1 <= len(raw) <= 255:
            raise ConfigurationError(f"ALPN protocol names must be 1..255 bytes, not {proto!r}")
        result.append(raw)
    return tuple(result)


_CRL_CHECKS = ("leaf", "chain")


def _crl_files(crlfile: Any, crl_path: Any, crl_check: str) -> list[str]:
    if crl_check not in _CRL_CHECKS:
        raise ConfigurationError(f"crl_check must be 'leaf' or 'chain', not {crl_check!r}")
    files: list[str] = []
    if crlfile is not None:
        files.append(_require_file(crlfile, "CRL file"))
    if crl_path is not None:
        directory = _require_dir(crl_path, "CRL directory")
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
    if not files:
        return
    try:
        _ossl.load_crls(handle.address, files, crl_check == "chain")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def _keylog_path(keylog_file: Any) -> str | None:
    if keylog_file is not None:
        path: str = os.fspath(keylog_file)
        return path
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


#: A cached client session: the ``SSL_SESSION*`` and the chain verified when
#: it was made (``None``: the connection verified none).
_Cached = tuple[int, Union[tuple[bytes, ...], None]]


class _SessionCache:
    """A bounded LRU of client ``SSL_SESSION*`` keyed by (host, port,
    server_name, expected hostname), each with the chain verified when it
    was made, so that a resumed connection is held to the same checks.

    Owns one reference per stored session, released on eviction, replacement
    and garbage collection.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._sessions: OrderedDict[tuple[Any, ...], _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: tuple[Any, ...]) -> _Cached | None:
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None:
                return None
            if not _ossl.SSL_SESSION_is_resumable(entry[0]):
                # e.g. its connection ended without close_notify
                del self._sessions[key]
            else:
                self._sessions.move_to_end(key)
                return entry
        _ossl.SSL_SESSION_free(entry[0])
        return None

    def put(self, key: tuple[Any, ...], session: int, verified_chain: tuple[bytes, ...] | None = None) -> None:
        with self._lock:
            old = self._sessions.pop(key, None)
            self._sessions[key] = (session, verified_chain)
            evicted = [old[0]] if old is not None and old[0] != session else []
            while len(self._sessions) > self.size:
                evicted.append(self._sessions.popitem(last=False)[1][0])
        for item in evicted:
            _ossl.SSL_SESSION_free(item)

    def discard(self, key: tuple[Any, ...]) -> None:
        with self._lock:
            entry = self._sessions.pop(key, None)
        if entry is not None:
            _ossl.SSL_SESSION_free(entry[0])

    def clear(self) -> None:
        with self._lock:
            sessions = [entry[0] for entry in self._sessions.values()]
            self._sessions.clear()
        for item in sessions:
            _ossl.SSL_SESSION_free(item)

    def __del__(self) -> None:
        try:
            self.clear()
        except Exception:  # interpreter shutdown
            pass


class _ContextFactory:
    """What both roles share: one SSL_CTX, reused, and plain-data settings."""

    client: bool
    _handle: ContextHandle

    def __init__(self, *, handshake_timeout: float | None) -> None:
        if handshake_timeout is not None and handshake_timeout <= 0:
            raise ConfigurationError(f"handshake_timeout must be > 0 seconds or None, not {handshake_timeout!r}")
        self.handshake_timeout = handshake_timeout

    @property
    def context_address(self) -> int:
        """The ``SSL_CTX *`` as an int (for tests and :mod:`twistls._openssl`)."""
        return self._handle.address

    def options(self) -> int:
        """The ``SSL_OP_*`` bits set on the context."""
        return int(_ossl.SSL_CTX_get_options(self._handle.address))

    def check_usable(self) -> None:
        """Raise :class:`~twistls.errors.ConfigurationError` if no connection
        made from this factory could succeed (a verifying client without a
        hostname); wrapping factories call it when they are made."""


class ClientContextFactory(_ContextFactory):
    """Client-side TLS policy; builds one ``SSL_CTX``, reused for every connection.

    Args:
        hostname: the name (or IP address) the peer must prove; also sent as
            SNI when it is a name.  May be left out here and given per
            connection with :meth:`with_hostname` (endpoints do that).
        cafile: PEM file of trusted CA certificates (instead of the system store).
        capath: OpenSSL hashed directory of trusted CAs (instead of the system store).
        verify_depth: maximum chain length below the trust anchor (default 9).
        certificate: PEM client certificate (chain) for mutual TLS.
        private_key: PEM key for ``certificate`` (default: in the same file).
        passphrase: for an encrypted private key: bytes, str, or a callable
            returning one (called at each load).  An encrypted key without
            it is a ConfigurationError; OpenSSL never prompts on a terminal.
        allow_common_name: legacy: accept a commonName match on certificates
            with no subjectAltName extension at all.
        pins: SHA-256 SPKI pins (see :class:`~twistls.checker.Checker`).
        minimum_version, maximum_version: ``"TLSv1.2"`` or ``"TLSv1.3"``
            (``"TLSv1"`` and ``"TLSv1.1"`` are a ConfigurationError).
        ciphers: TLS 1.2 OpenSSL cipher string.
        ciphersuites: TLS 1.3 ciphersuites.
        groups: key-exchange groups, most preferred first, in OpenSSL's
            syntax (``"X25519:P-256"``).  Default (``None``):
            :func:`default_groups`: the hybrid post-quantum X25519MLKEM768
            first where the libssl has it (OpenSSL >= 3.5), then X25519,
            P-256, P-384.
        handshake_timeout: seconds before a stalled handshake is abandoned
            (``None``: never).
        profile: Mozilla's server-side TLS profile: ``"intermediate"``
            (the default: TLS 1.2 and 1.3) or ``"modern"`` (TLS 1.3 only).
        insecure_skip_verify: accept any certificate chain and any name
            (pins, if given, are still enforced, on the server's own
            certificate only: nothing else it sends is vouched for).  Logs
            a warning.
        alpn_protocols: ALPN protocols to offer, most preferred first
            (``("h2", "http/1.1")``); the agreed one is
            ``transport.negotiatedProtocol``.
        session_cache_size: how many sessions to keep for resumption, one per
            (host, port, server_name); ``0`` turns resumption off.
        crlfile: PEM file of CRLs; certificates they revoke fail with
            :class:`~twistls.errors.CertificateRevokedError`.
        crl_path: directory whose files are all PEM CRLs.
        crl_check: ``"leaf"`` (only the peer's certificate) or ``"chain"``
            (every certificate; each CA then needs a CRL).
        keylog_file: append the NSS key log (for Wireshark) to this file;
            by default ``$SSLKEYLOGFILE`` if set.  Logs a warning.
        pki_profile: ``"strict"`` (the default): a server chain must also
            pass pyca's path builder over the same trust anchors and the
            strict profile's rules (commonName consistent with
            subjectAltName, an extendedKeyUsage with serverAuth, no wildcard
            on a public suffix, no weak key...; see
            :mod:`twistls._pkix`), refusals raising
            :class:`~twistls.errors.PKIProfileError`.  ``"rfc5280"``:
            OpenSSL's verification and the Checker only (twistls 0.1's
            behaviour), for private PKIs the strict profile refuses.
            The strict profile requires a subjectAltName, so
            ``allow_common_name=True`` only helps with ``"rfc5280"``.

            .. versionadded:: 0.2

    Raises:
        ConfigurationError: any bad value, missing or unreadable file, a key
            that does not match its certificate.

    .. versionadded:: 0.1
    """

    client = True

    def __init__(
        self,
        hostname: str | None = None,
        *,
        cafile: str | os.PathLike[str] | None = None,
        capath: str | os.PathLike[str] | None = None,
        verify_depth: int = DEFAULT_VERIFY_DEPTH,
        certificate: str | os.PathLike[str] | None = None,
        private_key: str | os.PathLike[str] | None = None,
        passphrase: Passphrase | None = None,
        allow_common_name: bool = False,
        pins: Sequence[str] = (),
        minimum_version: str = "TLSv1.2",
        maximum_version: str | None = None,
        ciphers: str = DEFAULT_CIPHERS,
        ciphersuites: str = DEFAULT_CIPHERSUITES,
        groups: str | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        profile: str = "intermediate",
        insecure_skip_verify: bool = False,
        alpn_protocols: Sequence[str | bytes] = (),
        session_cache_size: int = 32,
        crlfile: str | os.PathLike[str] | None = None,
        crl_path: str | os.PathLike[str] | None = None,
        crl_check: str = "leaf",
        keylog_file: str | os.PathLike[str] | None = None,
        pki_profile: str = "strict",
    ) -> None:
        super().__init__(handshake_timeout=handshake_timeout)
        if pki_profile not in PKI_PROFILES:
            raise ConfigurationError(
                f"pki_profile must be one of {', '.join(repr(p) for p in PKI_PROFILES)}, not {pki_profile!r}"
            )
        self.pki_profile = pki_profile
        self.alpn_protocols = _alpn_list(alpn_protocols)
        _check_cache_size(session_cache_size)
        crl_files = _crl_files(crlfile, crl_path, crl_check)
        if crl_files and insecure_skip_verify:
            raise ConfigurationError("CRLs need verification: drop insecure_skip_verify=True or the CRL options")
        if hostname is not None and not isinstance(hostname, str):
            raise ConfigurationError(f"hostname must be a str, not {type(hostname).__name__}")
        self.insecure_skip_verify = bool(insecure_skip_verify)
        self.allow_common_name = bool(allow_common_name)
        self.pins = tuple(Checker(pins=pins).pins)  # validates and normalises
        _check_depth(verify_depth)  # also when verification is off: bad config is bad config
        self.verify_depth = verify_depth
        minimum_version = _profile_minimum(profile, minimum_version)
        self.profile = profile
        self.protocol = _Protocol(minimum_version, maximum_version, ciphers, ciphersuites, groups)
        self._handle = handle = _build(self.protocol, server=False)
        if self.protocol.minimum_version != "TLSv1.3":  # TLS 1.2 servers must agree to EMS, or get an alert
            _ossl.watch_server_hello(handle.address)
        if self.insecure_skip_verify:
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
            _set_verify(handle, _ossl.VERIFY_PEER | _ossl.VERIFY_FAIL_IF_NO_PEER_CERT, verify_depth)
            _load_trust(
                handle,
                None if cafile is None else os.fspath(cafile),
                None if capath is None else os.fspath(capath),
                what="trusted",
            )
        # The strict profile's anchors: the same file, directory or system
        # store, loaded once per process for each (cafile, capath).
        self._pki: StrictProfile | None = None
        if pki_profile == "strict" and not self.insecure_skip_verify:
            self._pki = strict_profile(
                None if cafile is None else os.fspath(cafile),
                None if capath is None else os.fspath(capath),
                verify_depth,
            )
        if certificate is not None:
            _load_identity(
                handle, os.fspath(certificate), None if private_key is None else os.fspath(private_key), passphrase
            )
        elif private_key is not None:
            raise ConfigurationError("private_key given without certificate")
        _load_crls(handle, crl_files, crl_check)
        if self.alpn_protocols:
            try:
                _ossl.set_client_alpn(handle.address, list(self.alpn_protocols))
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        self.session_cache_size = session_cache_size
        self._sessions = _SessionCache(session_cache_size) if session_cache_size else None
        if self._sessions is not None:
            _ossl.enable_client_session_cache(handle.address)
        _enable_keylog(handle, _keylog_path(keylog_file), "client")
        self.hostname: str | None = None
        self._sni: str | None = None
        self._checker: Checker | None = None
        self._set_hostname(hostname)

    def _set_hostname(self, hostname: str | None) -> None:
        self.hostname = hostname
        self._sni = None if hostname is None else _sni_name(hostname)
        checked = None if self.insecure_skip_verify else hostname
        if checked is None and not self.pins:
            self._checker = None
        else:
            self._checker = Checker(
                hostname=checked,
                allow_common_name=self.allow_common_name,
                pins=self.pins,
                purpose=None if self.insecure_skip_verify else "server",
                pki=self._pki,
            )

    def check_usable(self) -> None:
        """Refuse a factory no connection could succeed with.

        Raises:
            ConfigurationError: verification is on but no hostname was given.
        """
        if self.hostname is None and not self.insecure_skip_verify:
            raise ConfigurationError(
                "a verifying TLS client needs the hostname to check: pass hostname=... "
                "(or use with_hostname())"
            )

    def with_hostname(self, hostname: str) -> ClientContextFactory:
        """A factory for another expected host, sharing this one's ``SSL_CTX``.

        Raises:
            ConfigurationError: the name is not a valid hostname.
        """
        other = copy.copy(self)
        other._set_hostname(hostname)
        return other

    def create_engine(self, peer_address: tuple[str, int] | None = None) -> TLSEngine:
        """A new client engine for one connection.

        Args:
            peer_address: the (host, port) dialled, the key (with the SNI
                name) of the session cache; without it the expected hostname
                stands for the host.  A resumed session is still checked.

        Raises:
            ConfigurationError: no hostname was configured while verification is on.
        """
        self.check_usable()
        checker = self._checker
        verifier = None if checker is None else _verifier(checker)
        engine = TLSEngine(self._handle, client=True, server_hostname=self._sni, verifier=verifier)
        cache = self._sessions
        if cache is not None:
            host, port = peer_address if peer_address is not None else (self.hostname, None)
            key = (host, port, self._sni, self.hostname)
            cached = cache.get(key)
            if cached is not None:
                session, chain = cached
                # Offer a session only if the chain it was made with passes
                # this factory's checks now; else a full handshake decides.
                if verifier is not None and _refused(verifier, chain):
                    cache.discard(key)
                else:
                    engine.use_session(session, chain)
            engine.on_new_session(lambda new, chain: cache.put(key, new, chain))
        return engine

    def clear_sessions(self) -> None:
        """Forget every cached session (the next connections do full handshakes)."""
        if self._sessions is not None:
            self._sessions.clear()

    def getContext(self, *args: object) -> None:
        """Refuse Twisted's own TLS: always raises.

        Twisted calls this on an object that declares none of its TLS
        interfaces, at once: ``reactor.connectSSL``, ``endpoints.wrapClientTLS``
        (at ``connect()``), ``transport.startTLS`` on a Twisted transport (as
        ``ESMTPSenderFactory`` does) and, with ``(hostname, port)``, an
        ``Agent(contextFactory=...)`` on its first ``https://`` request.

        Raises:
            TypeError: always, naming the twistls API to use instead.

        .. versionadded:: 0.1
        """
        if args:  # Agent(contextFactory=policy) calls getContext(hostname, port)
            raise TypeError(
                "a twistls.ClientContextFactory is not a Twisted HTTPS policy: use "
                "Agent.usingEndpointFactory(reactor, twistls.HTTPSEndpointFactory(reactor, policy)) "
                "instead of Agent(reactor, contextFactory=policy)"
            )
        raise TypeError(
            "a twistls.ClientContextFactory cannot be used by Twisted's own TLS "
            "(reactor.connectSSL, endpoints.wrapClientTLS, ssl: endpoints, startTLS on a Twisted transport): use "
            "reactor.connectTCP(host, port, twistls.TLSWrappingFactory(factory, policy)), "
            "twistls.wrap_client_tls(hostname, policy, endpoint), "
            "TLSWrappingFactory(factory, start_tls=True) for STARTTLS protocols such as ESMTPSenderFactory, "
            "twistls.HTTPSEndpointFactory for Agent, or twistls.compat.connectSSL as a drop-in"
        )


def _verifier(checker: Checker) -> Callable[[Sequence[bytes], Sequence[bytes] | None], None]:
    """The engine verifier that runs ``checker`` on the handshake's chains."""

    def verify(peer_chain: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> None:
        checker.check(peer_chain, verified_chain=verified_chain)

    return verify


def _refused(verifier: Callable[[Sequence[bytes], Sequence[bytes] | None], None], chain: Sequence[bytes] | None) -> bool:
    """Whether ``verifier`` refuses a cached session's verified ``chain``."""
    if not chain:
        return False  # made by a non-verifying connection: checked after resumption
    try:
        verifier(chain[:1], chain)
    except Exception:  # any refusal (or bug): do not offer the session
        return True
    return False


class ServerContextFactory(_ContextFactory):
    """Server-side TLS policy; builds one ``SSL_CTX``, reused for every connection.

    Args:
        certificate: PEM file with the server certificate followed by its
            intermediates.
        private_key: PEM key file (default: the key is in ``certificate``).
        passphrase: for an encrypted private key (all keys of this factory):
            bytes, str, or a callable returning one (called at each load and
            :meth:`reload`).  Never logged nor put in error messages.
        client_cafile: PEM file of CAs that client certificates must chain
            to; enables client certificates.
        client_capath: hashed directory of such CAs.
        require_client_certificate: whether a client without a certificate
            is refused.  Default (``None``): yes when client CAs are given.
            ``True`` without ``client_cafile``/``client_capath`` is a
            ConfigurationError (there would be nothing to verify against);
            ``False`` with client CAs makes the certificate optional (a
            client that sends one is still verified).
        max_peer_chain_size: the largest client certificate chain (the
            Certificate message, in bytes) accepted; bigger ones fail the
            handshake.  It also bounds what one cached session holds.
        session_cache_memory: with client certificates, the session cache
            holds each client's chain: its entries are capped at
            ``session_cache_memory // max_peer_chain_size`` so that the
            cache cannot grow past this many bytes of chains.
        verify_depth: maximum client chain length.
        minimum_version, maximum_version, ciphers, ciphersuites, groups: as
            for :class:`ClientContextFactory`.
        handshake_timeout: seconds before a stalled handshake is abandoned.
        profile: Mozilla's server-side TLS profile: ``"intermediate"``
            (the default: TLS 1.2 and 1.3, ECDHE + AEAD ciphers) or
            ``"modern"`` (TLS 1.3 only).
        alpn_protocols: ALPN protocols to accept, most preferred first.  When
            empty, the wrapped protocol factory's ``acceptableProtocols()``
            (``IProtocolNegotiationFactory``, e.g. a ``twisted.web`` ``Site``)
            is used.
        sni_certificates: server names (exact, or one-label wildcards
            ``"*.example.com"``) mapped to a PEM file holding key and chain, or
            to a ``(certificate, private_key)`` pair; chosen by the client's
            server_name.  ``certificate`` serves clients that send no name or
            an unknown one.  See :meth:`from_directory`.
        session_cache_size: bounded server session cache (TLS 1.2 session
            IDs, stateful TLS 1.3 tickets); ``0`` disables it.
        session_tickets: issue stateless session tickets (default ``True``).
        session_timeout: session lifetime in seconds (OpenSSL's default: 300).
        ticket_key_file: a session-ticket key file shared by every process
            serving this name (see :mod:`twistls._ticketkeys`; make one with
            ``twistls mkticketkey FILE``): its first key encrypts new
            tickets and every key decrypts, so processes resume each other's
            sessions.  Re-read by :meth:`reload`.  Without it each process
            has its own random key.
        crlfile, crl_path, crl_check: CRLs for client certificates, as for
            :class:`ClientContextFactory` (need ``client_cafile``/``client_capath``).
        keylog_file: as for :class:`ClientContextFactory`.

    Raises:
        ConfigurationError: any bad value, missing file, a key that does not
            match the certificate.

    .. versionadded:: 0.1
    """

    client = False
    _directory: str | None = None
    _directory_default: str | None = None
    #: A directory of ``<hostname>.pem`` files re-scanned by :meth:`reload`
    #: beside a fixed default ``certificate`` (``twistls:`` strings with
    #: ``certificate=`` and ``sniDirectory=``).
    _sni_directory: str | None = None

    def __init__(
        self,
        certificate: str | os.PathLike[str],
        private_key: str | os.PathLike[str] | None = None,
        *,
        passphrase: Passphrase | None = None,
        client_cafile: str | os.PathLike[str] | None = None,
        client_capath: str | os.PathLike[str] | None = None,
        require_client_certificate: bool | None = None,
        verify_depth: int = DEFAULT_VERIFY_DEPTH,
        max_peer_chain_size: int = DEFAULT_MAX_PEER_CHAIN_SIZE,
        session_cache_memory: int = DEFAULT_SESSION_CACHE_MEMORY,
        minimum_version: str = "TLSv1.2",
        maximum_version: str | None = None,
        ciphers: str = DEFAULT_CIPHERS,
        ciphersuites: str = DEFAULT_CIPHERSUITES,
        groups: str | None = None,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        profile: str = "intermediate",
        alpn_protocols: Sequence[str | bytes] = (),
        sni_certificates: Mapping[str, Any] | None = None,
        session_cache_size: int = 20480,
        session_tickets: bool = True,
        session_timeout: int | None = None,
        ticket_key_file: str | os.PathLike[str] | None = None,
        crlfile: str | os.PathLike[str] | None = None,
        crl_path: str | os.PathLike[str] | None = None,
        crl_check: str = "leaf",
        keylog_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(handshake_timeout=handshake_timeout)
        if ticket_key_file is not None and not session_tickets:
            raise ConfigurationError("ticket_key_file given with session_tickets=False: drop one of them")
        self.ticket_key_file = None if ticket_key_file is None else os.fspath(ticket_key_file)
        self._ticket_keys: list[tuple[bytes, bytes, bytes]] = []
        minimum_version = _profile_minimum(profile, minimum_version)
        self.profile = profile
        self.protocol = _Protocol(minimum_version, maximum_version, ciphers, ciphersuites, groups)
        _check_depth(verify_depth)
        self.certificate = os.fspath(certificate)
        self.private_key = None if private_key is None else os.fspath(private_key)
        self._passphrase = None if passphrase is None else _Secret(passphrase)
        self.client_cafile = None if client_cafile is None else os.fspath(client_cafile)
        self.client_capath = None if client_capath is None else os.fspath(client_capath)
        self.verifies_clients = client_cafile is not None or client_capath is not None
        if require_client_certificate and not self.verifies_clients:
            raise ConfigurationError(
                "require_client_certificate=True needs client_cafile or client_capath: "
                "the CAs that client certificates must chain to"
            )
        self.require_client_certificate = (
            self.verifies_clients if require_client_certificate is None else bool(require_client_certificate)
        )
        self.verify_depth = verify_depth
        for name, value, low in (
            ("max_peer_chain_size", max_peer_chain_size, 1024),
            ("session_cache_memory", session_cache_memory, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigurationError(f"{name} must be a whole number of bytes >= {low}, not {value!r}")
        self.max_peer_chain_size = max_peer_chain_size
        self.session_cache_memory = session_cache_memory
        self.alpn_protocols = _alpn_list(alpn_protocols)
        self.sni_certificates = _sni_table(sni_certificates or {})
        _check_cache_size(session_cache_size)
        if session_timeout is not None and (not isinstance(session_timeout, int) or session_timeout < 1):
            raise ConfigurationError(f"session_timeout must be a whole number of seconds >= 1, not {session_timeout!r}")
        self.session_cache_size = session_cache_size
        self.session_tickets = bool(session_tickets)
        self.session_timeout = session_timeout
        self._crl = (crlfile, crl_path, crl_check)
        _crl_files(crlfile, crl_path, crl_check)  # validate now
        if (crlfile is not None or crl_path is not None) and not self.verifies_clients:
            raise ConfigurationError("server CRLs check client certificates: give client_cafile or client_capath too")
        self.keylog_file = _keylog_path(keylog_file)
        self._handle = self._make_handle()
        self._reload_lock = threading.Lock()

    @classmethod
    def from_directory(
        cls, directory: str | os.PathLike[str], *, default: str | None = None, **kwargs: Any
    ) -> ServerContextFactory:
        """A server choosing its certificate by SNI from ``<hostname>.pem`` files
        (each holding key and chain, like txsni; ``*.example.com.pem`` for a
        wildcard).  Clients sending no or an unknown name get ``DEFAULT.pem``,
        or the file of ``default``.  :meth:`reload` re-reads the directory.

        Raises:
            ConfigurationError: no PEM files, no default, or any bad file.
        """
        path = _require_dir(directory, "certificate directory")
        table, fallback = _scan_directory(path, default)
        factory = cls(fallback, sni_certificates=table, **kwargs)
        factory._directory, factory._directory_default = path, default
        return factory

    def _make_handle(self) -> ContextHandle:
        """Build the default SSL_CTX and, for SNI, one per certificate."""
        if self.ticket_key_file is not None:
            keys, warning = read_key_file(self.ticket_key_file)
            if warning:
                log.warning("twistls: %s", warning)
            self._ticket_keys = [(k.name, k.hmac_key, k.aes_key) for k in keys]
        handle = self._make_one(self.certificate, self.private_key)
        if self.sni_certificates:
            exact: dict[str, int] = {}
            wild: dict[str, int] = {}
            by_files: dict[tuple[str, str | None], ContextHandle] = {}
            for name, (cert, key) in self.sni_certificates.items():
                target = by_files.get((cert, key))
                if target is None:
                    target = by_files[(cert, key)] = self._make_one(cert, key)
                    handle.keepalive.append(target)  # the callback may pick it at any time
                if name.startswith("*."):
                    wild[name[2:]] = target.address
                else:
                    exact[name] = target.address
            try:
                _ossl.set_sni(handle.address, handle.hooks, exact, wild)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        return handle

    def _make_one(self, certificate: str, private_key: str | None) -> ContextHandle:
        handle = _build(self.protocol, server=True)
        _load_identity(handle, certificate, private_key, self._passphrase)
        # One session ID context for the factory, whichever certificate SNI picks.
        sid = hashlib.sha256(b"twistls:" + os.fsencode(self.certificate)).digest()[:32]
        _ossl.SSL_CTX_set_session_id_context(handle.address, sid, len(sid))
        _ossl.set_max_cert_list(handle.address, self.max_peer_chain_size)
        _ossl.require_extended_master_secret(handle.address)
        if self.verifies_clients:
            mode = _ossl.VERIFY_PEER | (_ossl.VERIFY_FAIL_IF_NO_PEER_CERT if self.require_client_certificate else 0)
            _set_verify(handle, mode, self.verify_depth)
            _load_trust(handle, self.client_cafile, self.client_capath, what="client")
            if self.client_cafile is not None:
                names = _ossl.SSL_load_client_CA_file(os.fsencode(self.client_cafile))
                if names:
                    _ossl.SSL_CTX_set_client_CA_list(handle.address, names)
                _ossl.ERR_clear_error()
            crlfile, crl_path, crl_check = self._crl
            _load_crls(handle, _crl_files(crlfile, crl_path, crl_check), crl_check)
        _ossl.set_server_alpn(handle.address, handle.hooks, list(self.alpn_protocols))
        _ossl.set_server_session_cache(
            handle.address, self.effective_session_cache_size, self.session_timeout, self.session_tickets
        )
        if self._ticket_keys:
            try:
                _ossl.set_ticket_keys(handle.address, handle.hooks, self._ticket_keys)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
        _enable_keylog(handle, self.keylog_file, "server")
        return handle

    def reload(
        self,
        certificate: str | os.PathLike[str] | None = None,
        private_key: str | os.PathLike[str] | None = None,
        *,
        client_cafile: str | os.PathLike[str] | None = None,
        sni_certificates: Mapping[str, Any] | None = None,
    ) -> None:
        """Re-read the certificate, key, CA and CRL files (or switch to new
        ones) into a new ``SSL_CTX`` and swap it in: new connections get the
        new certificate, established ones continue on the old one.  A factory
        made by :meth:`from_directory` (or a ``twistls:`` string with
        ``sniDirectory=``) re-scans its directory: a vanished file drops its
        name, a new one adds it.

        If anything fails the old context stays in use, the reason is logged
        (one line) and the error raised.  A success is logged with the new
        certificate's subject, names and notAfter.

        Raises:
            ConfigurationError: a missing or bad file, a key that does not
                match; nothing was changed.
        """
        with self._reload_lock:
            saved = (self.certificate, self.private_key, self.client_cafile, self.sni_certificates)
            try:
                if self._directory is not None and certificate is None and sni_certificates is None:
                    table, fallback = _scan_directory(self._directory, self._directory_default)
                    self.certificate, self.private_key, self.sni_certificates = fallback, None, table
                elif self._sni_directory is not None and sni_certificates is None:
                    self.sni_certificates = _scan_sni_directory(self._sni_directory)
                if certificate is not None:
                    self.certificate = os.fspath(certificate)
                    self.private_key = None if private_key is None else os.fspath(private_key)
                elif private_key is not None:
                    self.private_key = os.fspath(private_key)
                if client_cafile is not None:
                    if not self.verifies_clients:
                        raise ConfigurationError("client_cafile given to reload() of a server that verifies no clients")
                    self.client_cafile = os.fspath(client_cafile)
                if sni_certificates is not None:
                    self.sni_certificates = _sni_table(sni_certificates)
                handle = self._make_handle()
            except Exception as exc:
                self.certificate, self.private_key, self.client_cafile, self.sni_certificates = saved
                reason = " ".join(str(exc).split()) or type(exc).__name__
                if not isinstance(exc, ConfigurationError):
                    reason = f"{type(exc).__name__}: {reason}"
                log.error("twistls: reload failed, still serving the previous certificate: %s", reason)
                raise
            self._handle = handle
            log.info(
                "twistls: reloaded the server certificate from %r: %s%s",
                self.certificate,
                _describe_pem(self.certificate),
                f" (and {len(self.sni_certificates)} SNI names)" if self.sni_certificates else "",
            )

    @property
    def effective_session_cache_size(self) -> int:
        """The server session cache's capacity: ``session_cache_size``, capped
        by ``session_cache_memory`` when cached sessions hold client chains."""
        if not self.verifies_clients:
            return self.session_cache_size
        return min(self.session_cache_size, self.session_cache_memory // self.max_peer_chain_size)

    def create_engine(self, peer_address: tuple[str, int] | None = None) -> TLSEngine:
        """A new server engine for one connection (``peer_address`` is not used)."""
        if self.verifies_clients:
            return TLSEngine(self._handle, client=False, verifier=_check_client_purpose)
        return TLSEngine(self._handle, client=False)

    def getContext(self, *args: object) -> None:
        """Refuse Twisted's own TLS: always raises.

        Twisted calls this on an object that declares none of its TLS
        interfaces, at once: ``reactor.listenSSL``, ``endpoints.wrapServerTLS``
        (at ``listen()``) and ``transport.startTLS`` on a Twisted transport.

        Raises:
            TypeError: always, naming the twistls API to use instead.

        .. versionadded:: 0.1
        """
        raise TypeError(
            "a twistls.ServerContextFactory cannot be used by Twisted's own TLS "
            "(reactor.listenSSL, endpoints.wrapServerTLS, ssl: endpoints, startTLS on a Twisted transport): use "
            "reactor.listenTCP(port, twistls.TLSWrappingFactory(factory, policy)), "
            "twistls.wrap_server_tls(policy, endpoint), "
            "TLSWrappingFactory(factory, start_tls=True) for STARTTLS protocols, "
            "or twistls.compat.listenSSL as a drop-in"
        )


_CLIENT_PURPOSE = Checker(purpose="client")


def _check_client_purpose(peer_chain: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> None:
    """A client certificate with an extendedKeyUsage must allow clientAuth."""
    if peer_chain:
        _CLIENT_PURPOSE.check_purpose(x509.load_der_x509_certificate(peer_chain[0]))


def _sni_table(entries: Mapping[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Validate ``{server name: path | (certificate, key)}``."""
    table: dict[str, tuple[str, str | None]] = {}
    for name, value in entries.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"SNI names must be non-empty strings, not {name!r}")
        wildcard = name.startswith("*.")
        base = _sni_name(name[2:] if wildcard else name)
        if base is None or "*" in base or (wildcard and "." not in base):
            raise ConfigurationError(
                f"SNI name {name!r} must be a host name or a one-label wildcard like '*.example.com'"
            )
        if isinstance(value, (str, os.PathLike)):
            cert, key = os.fspath(value), None
        else:
            try:
                cert_raw, key_raw = value
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"SNI entry for {name!r} must be a PEM path or (certificate, key), not {value!r}"
                ) from None
            cert, key = os.fspath(cert_raw), None if key_raw is None else os.fspath(key_raw)
        table[("*." if wildcard else "") + base] = (cert, key)
    return table


def _scan_directory(directory: str, default: str | None) -> tuple[dict[str, tuple[str, str | None]], str]:
    """``<hostname>.pem`` files of ``directory`` and the default's path."""
    table: dict[str, tuple[str, str | None]] = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(".pem") and os.path.isfile(path) and name != "DEFAULT.pem":
            table[name[: -len(".pem")]] = (path, None)
    if default is not None:
        fallback = os.path.join(directory, default + ".pem")
        if not os.path.isfile(fallback):
            raise ConfigurationError(f"the default {default!r} has no file {fallback!r}")
    else:
        fallback = os.path.join(directory, "DEFAULT.pem")
        if not os.path.isfile(fallback):
            if len(table) != 1:
                raise ConfigurationError(
                    f"{directory!r} needs a DEFAULT.pem (or pass default=<hostname>) for clients that send no name"
                )
            fallback = next(iter(table.values()))[0]
    if not table and not os.path.isfile(fallback):
        raise ConfigurationError(f"no <hostname>.pem files in {directory!r}")
    return _sni_table({k: v for k, v in table.items()}), fallback


def _scan_sni_directory(directory: str) -> dict[str, tuple[str, str | None]]:
    """The ``<hostname>.pem`` files of ``directory`` (``DEFAULT.pem`` left
    out), as an SNI table.

    Raises:
        ConfigurationError: the directory cannot be read, or a bad name.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigurationError(f"could not read the SNI directory {directory!r}: {exc.strerror}") from None
    return _sni_table(
        {
            name[: -len(".pem")]: os.path.join(directory, name)
            for name in names
            if name.endswith(".pem") and name != "DEFAULT.pem" and os.path.isfile(os.path.join(directory, name))
        }
    )


def _describe_pem(path: str) -> str:
    """``subject ..., names ..., notAfter ...`` of the first certificate in
    ``path``, for the reload log line (printable: certificate text is escaped)."""
    from twistls._info import printable, san_names

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as exc:
        return f"(certificate not described: {type(exc).__name__})"
    names = ", ".join(san_names(cert, uris=False)) or "none"
    return printable(
        f"subject {cert.subject.rfc4514_string()}, names {names}, notAfter {cert.not_valid_after_utc.isoformat()}"
    )


def _reload_each(factories: Any) -> None:
    """Reload every factory; one that fails (with any exception, logged by
    :meth:`ServerContextFactory.reload`) keeps its old certificate and does
    not stop the others."""
    for factory in list(factories):
        try:
            factory.reload()
        except Exception:  # noqa: S110  # reload() logged it; the old certificate stays
            pass


# Server factories reloaded on SIGHUP by the process-wide handler (those of
# ``twistls:`` server strings, and of ``twistd twistls``); weak, so that a
# factory nobody serves with any more is dropped.
_sighup_factories: weakref.WeakSet[ServerContextFactory] = weakref.WeakSet()
_sighup_installed: list[Any] = []  # the reactor it is scheduled for, while it is


def _reload_on_sighup_when_running(factory: ServerContextFactory, reactor: Any) -> None:
    """Reload ``factory`` on every ``SIGHUP`` this process gets while
    ``reactor`` runs (under any twistd plugin).  The handler is installed by
    the reactor's main thread when it starts running (at once if it runs);
    it chains to a handler installed before it.  Without a logging
    configuration of their own, twistls' records then go to Twisted's log
    in the ``twistls`` namespace (``[twistls#error]``), not to stderr."""
    _sighup_factories.add(factory)
    if not _sighup_installed:
        _sighup_installed.append(reactor)
        reactor.callWhenRunning(_install_sighup_handler, reactor)


def _install_sighup_handler(reactor: Any) -> None:
    import signal

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        log.warning("twistls: SIGHUP reloads need the reactor in the main thread; not installed")
        return
    previous = signal.getsignal(signal.SIGHUP)

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(_reload_each, _sighup_factories)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGHUP, handler)
    _log_to_twisted()

    def restore() -> None:
        if signal.getsignal(signal.SIGHUP) is handler:
            signal.signal(signal.SIGHUP, previous)
        _sighup_installed.clear()

    reactor.addSystemEventTrigger("after", "shutdown", restore)


class _TwistedLogHandler(logging.Handler):
    """Hands stdlib ``twistls`` records to :mod:`twisted.logger` (namespace ``twistls``)."""

    def emit(self, record: logging.LogRecord) -> None:
        from twisted.logger import Logger, LogLevel

        if record.levelno >= logging.CRITICAL:
            level = LogLevel.critical
        elif record.levelno >= logging.ERROR:
            level = LogLevel.error
        elif record.levelno >= logging.WARNING:
            level = LogLevel.warn
        elif record.levelno >= logging.INFO:
            level = LogLevel.info
        else:
            level = LogLevel.debug
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break the caller
            message = str(record.msg)
        Logger(namespace="twistls").emit(level, "{message}", message=message)


def _log_to_twisted() -> None:
    """Send stdlib ``twistls`` records to Twisted's log, unless logging is configured."""
    std = logging.getLogger("twistls")
    if std.hasHandlers():
        return
    std.addHandler(_TwistedLogHandler())
    if std.level == logging.NOTSET:
        std.setLevel(logging.INFO)


def reload_on_sighup(*factories: ServerContextFactory, reactor: Any = None) -> Callable[[], None]:
    """Reload ``factories`` (:meth:`ServerContextFactory.reload`) whenever the
    process gets ``SIGHUP``; the reload runs in the reactor thread, a failure
    is logged and the old certificate kept.  For twistd plugins.

    Returns:
        A function that restores the previous ``SIGHUP`` handler.

    .. versionadded:: 0.1
    """
    import signal

    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor

    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(_reload_each, factories)

    previous = signal.signal(signal.SIGHUP, handler)

    def restore() -> None:
        signal.signal(signal.SIGHUP, previous)

    return restore
