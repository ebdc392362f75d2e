"""Context factories: a small policy in, one OpenSSL ``SSL_CTX`` out.

:class:`ClientContextFactory` and :class:`ServerContextFactory` each build one
``SSL_CTX`` when constructed (every configuration mistake is raised then, as a
:class:`~twistls.errors.ConfigurationError`) and reuse it for every
connection.  They are what :class:`twistls.protocol.TLSWrappingFactory`, the
endpoints and ``transport.startTLS(...)`` take.

Defaults, for both roles: TLS 1.2 minimum (1.3 preferred), TLS 1.2 ciphers
ECDHE with AEAD only, key exchange X25519/P-256/P-384, OpenSSL security
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
unless ``require_client_certificate=False``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Sequence

import idna
from M2Crypto import m2

from twistls import _openssl as _ossl
from twistls._engine import ContextHandle, TLSEngine
from twistls.checker import Checker, parse_ip
from twistls.errors import ConfigurationError

__all__ = [
    "ClientContextFactory",
    "ServerContextFactory",
    "DEFAULT_CIPHERS",
    "DEFAULT_CIPHERSUITES",
    "DEFAULT_GROUPS",
    "DEFAULT_OPTIONS",
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
#: Key-exchange groups, most preferred first.
DEFAULT_GROUPS = "X25519:P-256:P-384"
#: The exact ``SSL_OP_*`` bits of a default client context (servers add
#: ``SSL_OP_CIPHER_SERVER_PREFERENCE``).
DEFAULT_OPTIONS = _ossl.OP_NO_COMPRESSION | _ossl.OP_NO_RENEGOTIATION | _ossl.OP_ENABLE_MIDDLEBOX_COMPAT
DEFAULT_SECURITY_LEVEL = 2
DEFAULT_VERIFY_DEPTH = 9
DEFAULT_HANDSHAKE_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Protocol:
    """Protocol policy shared by both roles (plain data)."""

    minimum_version: str = "TLSv1.2"
    maximum_version: str | None = None
    ciphers: str = DEFAULT_CIPHERS
    ciphersuites: str = DEFAULT_CIPHERSUITES
    groups: str = DEFAULT_GROUPS
    security_level: int = DEFAULT_SECURITY_LEVEL


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


def _build(protocol: _Protocol, *, server: bool) -> ContextHandle:
    handle = ContextHandle()
    ctx = handle.address
    _ossl.SSL_CTX_clear_options(ctx, _ossl.OP_ALL_BITS)
    options = DEFAULT_OPTIONS | (_ossl.OP_CIPHER_SERVER_PREFERENCE if server else 0)
    _ossl.SSL_CTX_set_options(ctx, options)
    try:
        _ossl.set_min_max_version(ctx, protocol.minimum_version, protocol.maximum_version)
        _ossl.set_cipher_list(ctx, protocol.ciphers)
        _ossl.set_ciphersuites(ctx, protocol.ciphersuites)
        _ossl.set_groups(ctx, protocol.groups)
    except ValueError as exc:
        handle.free()
        raise ConfigurationError(str(exc)) from None
    if not 0 <= protocol.security_level <= 5:
        handle.free()
        raise ConfigurationError(f"security_level must be 0..5, not {protocol.security_level!r}")
    _ossl.SSL_CTX_set_security_level(ctx, protocol.security_level)
    # Idle connections give their 34 KiB of record buffers back.
    _ossl.set_mode(ctx, _ossl.MODE_RELEASE_BUFFERS)
    return handle


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


def _load_identity(handle: ContextHandle, certificate: str, private_key: str | None) -> None:
    cert_path = _require_file(certificate, "certificate file")
    key_path = _require_file(private_key, "private key file") if private_key else cert_path
    _ossl.ERR_clear_error()
    try:
        m2.ssl_ctx_use_cert_chain(handle.ptr, cert_path)
    except Exception as exc:  # M2Crypto raises SSLError
        _ossl.drain_errors()
        raise ConfigurationError(f"could not load the certificate chain from {cert_path!r}: {exc}") from None
    try:
        m2.ssl_ctx_use_privkey(handle.ptr, key_path)
    except Exception as exc:
        _ossl.drain_errors()
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


def _set_verify(handle: ContextHandle, mode: int, depth: int) -> None:
    if not isinstance(depth, int) or depth < 1:
        raise ConfigurationError(f"verify_depth must be a whole number >= 1, not {depth!r}")
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
        allow_common_name: legacy: accept a commonName match on certificates
            with no subjectAltName extension at all.
        pins: SHA-256 SPKI pins (see :class:`~twistls.checker.Checker`).
        minimum_version, maximum_version: ``"TLSv1.2"`` or ``"TLSv1.3"``.
        ciphers: TLS 1.2 OpenSSL cipher string.
        ciphersuites: TLS 1.3 ciphersuites.
        groups: key-exchange groups.
        handshake_timeout: seconds before a stalled handshake is abandoned
            (``None``: never).
        insecure_skip_verify: accept any certificate chain and any name
            (pins, if given, are still enforced).  Logs a warning.

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
        allow_common_name: bool = False,
        pins: Sequence[str] = (),
        minimum_version: str = "TLSv1.2",
        maximum_version: str | None = None,
        ciphers: str = DEFAULT_CIPHERS,
        ciphersuites: str = DEFAULT_CIPHERSUITES,
        groups: str = DEFAULT_GROUPS,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        insecure_skip_verify: bool = False,
    ) -> None:
        super().__init__(handshake_timeout=handshake_timeout)
        if hostname is not None and not isinstance(hostname, str):
            raise ConfigurationError(f"hostname must be a str, not {type(hostname).__name__}")
        self.insecure_skip_verify = bool(insecure_skip_verify)
        self.allow_common_name = bool(allow_common_name)
        self.pins = tuple(Checker(pins=pins).pins)  # validates and normalises
        self.verify_depth = verify_depth
        self.protocol = _Protocol(minimum_version, maximum_version, ciphers, ciphersuites, groups)
        self._handle = handle = _build(self.protocol, server=False)
        if self.insecure_skip_verify:
            handle.verifying = False
            _ossl.SSL_CTX_set_verify(handle.address, _ossl.VERIFY_NONE, _ossl.verify_callback)
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
        if certificate is not None:
            _load_identity(handle, os.fspath(certificate), None if private_key is None else os.fspath(private_key))
        elif private_key is not None:
            raise ConfigurationError("private_key given without certificate")
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
            self._checker = Checker(hostname=checked, allow_common_name=self.allow_common_name, pins=self.pins)

    def with_hostname(self, hostname: str) -> ClientContextFactory:
        """A factory for another expected host, sharing this one's ``SSL_CTX``.

        Raises:
            ConfigurationError: the name is not a valid hostname.
        """
        other = copy.copy(self)
        other._set_hostname(hostname)
        return other

    def create_engine(self) -> TLSEngine:
        """A new client engine for one connection.

        Raises:
            ConfigurationError: no hostname was configured while verification is on.
        """
        if self.hostname is None and not self.insecure_skip_verify:
            raise ConfigurationError(
                "a verifying TLS client needs the hostname to check: pass hostname=... "
                "(or use with_hostname())"
            )
        checker = self._checker
        verifier = None if checker is None else (lambda engine: checker.check(engine.peer_chain_der()))
        return TLSEngine(self._handle, client=True, server_hostname=self._sni, verifier=verifier)


class ServerContextFactory(_ContextFactory):
    """Server-side TLS policy; builds one ``SSL_CTX``, reused for every connection.

    Args:
        certificate: PEM file with the server certificate followed by its
            intermediates.
        private_key: PEM key file (default: the key is in ``certificate``).
        client_cafile: PEM file of CAs that client certificates must chain
            to; enables client certificates.
        client_capath: hashed directory of such CAs.
        require_client_certificate: with client CAs given, whether a client
            without a certificate is refused (default ``True``).
        verify_depth: maximum client chain length.
        minimum_version, maximum_version, ciphers, ciphersuites, groups: as
            for :class:`ClientContextFactory`.
        handshake_timeout: seconds before a stalled handshake is abandoned.

    Raises:
        ConfigurationError: any bad value, missing file, a key that does not
            match the certificate.

    .. versionadded:: 0.1
    """

    client = False

    def __init__(
        self,
        certificate: str | os.PathLike[str],
        private_key: str | os.PathLike[str] | None = None,
        *,
        client_cafile: str | os.PathLike[str] | None = None,
        client_capath: str | os.PathLike[str] | None = None,
        require_client_certificate: bool = True,
        verify_depth: int = DEFAULT_VERIFY_DEPTH,
        minimum_version: str = "TLSv1.2",
        maximum_version: str | None = None,
        ciphers: str = DEFAULT_CIPHERS,
        ciphersuites: str = DEFAULT_CIPHERSUITES,
        groups: str = DEFAULT_GROUPS,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(handshake_timeout=handshake_timeout)
        self.protocol = _Protocol(minimum_version, maximum_version, ciphers, ciphersuites, groups)
        self.certificate = os.fspath(certificate)
        self.private_key = None if private_key is None else os.fspath(private_key)
        self._handle = handle = _build(self.protocol, server=True)
        _load_identity(handle, self.certificate, self.private_key)
        sid = hashlib.sha256(b"twistls:" + os.fsencode(self.certificate)).digest()[:32]
        _ossl.SSL_CTX_set_session_id_context(handle.address, sid, len(sid))
        self.verifies_clients = client_cafile is not None or client_capath is not None
        if self.verifies_clients:
            mode = _ossl.VERIFY_PEER | (_ossl.VERIFY_FAIL_IF_NO_PEER_CERT if require_client_certificate else 0)
            _set_verify(handle, mode, verify_depth)
            _load_trust(
                handle,
                None if client_cafile is None else os.fspath(client_cafile),
                None if client_capath is None else os.fspath(client_capath),
                what="client",
            )
            if client_cafile is not None:
                names = _ossl.SSL_load_client_CA_file(os.fsencode(os.fspath(client_cafile)))
                if names:
                    _ossl.SSL_CTX_set_client_CA_list(handle.address, names)
                _ossl.ERR_clear_error()

    def create_engine(self) -> TLSEngine:
        """A new server engine for one connection."""
        return TLSEngine(self._handle, client=False)
