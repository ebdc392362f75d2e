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

import copy
import os
from typing import TYPE_CHECKING, Any, Sequence

from twistls._ctxbuild import (
    DEFAULT_CIPHERS as DEFAULT_CIPHERS,
    DEFAULT_CIPHERSUITES as DEFAULT_CIPHERSUITES,
    DEFAULT_GROUPS as DEFAULT_GROUPS,
    DEFAULT_OPTIONS as DEFAULT_OPTIONS,
    HYBRID_GROUPS as HYBRID_GROUPS,
    ProtocolSettings,
    alpn_list,
    build_client_context,
    check_cache_size,
    check_depth,
    crl_files,
    default_groups as default_groups,
    keylog_path,
)
from twistls import _openssl as _ossl
from twistls._engine import TLSEngine, Verifier
from twistls._pemfiles import Passphrase as Passphrase, fspath_or_none
from twistls._policybase import (
    DEFAULT_HANDSHAKE_TIMEOUT as DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_VERIFY_DEPTH as DEFAULT_VERIFY_DEPTH,
    _ContextFactory as _ContextFactory,
)
from twistls._pkix import PKI_PROFILES, StrictProfile, strict_profile
from twistls._serverpolicy import ServerContextFactory as ServerContextFactory
from twistls._sessions import SessionCache
from twistls._sni import scan_sni_directory, sni_name
from twistls.checker import Checker
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
    _instead_of_twisted_tls = (
        "a twistls.ClientContextFactory cannot be used by Twisted's own TLS "
        "(reactor.connectSSL, endpoints.wrapClientTLS, ssl: endpoints, startTLS on a Twisted transport): use "
        "reactor.connectTCP(host, port, twistls.TLSWrappingFactory(factory, policy)), "
        "twistls.wrap_client_tls(hostname, policy, endpoint), "
        "TLSWrappingFactory(factory, start_tls=True) for STARTTLS protocols such as ESMTPSenderFactory, "
        "twistls.HTTPSEndpointFactory for Agent, or twistls.compat.connectSSL as a drop-in"
    )

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
        self.alpn_protocols = alpn_list(alpn_protocols)
        check_cache_size(session_cache_size)
        crls = crl_files(crlfile, crl_path, crl_check)
        if crls and insecure_skip_verify:
            raise ConfigurationError("CRLs need verification: drop insecure_skip_verify=True or the CRL options")
        if hostname is not None and not isinstance(hostname, str):
            raise ConfigurationError(f"hostname must be a str, not {type(hostname).__name__}")
        self.insecure_skip_verify = bool(insecure_skip_verify)
        self.allow_common_name = bool(allow_common_name)
        self.pins = tuple(Checker(pins=pins).pins)  # validates and normalises
        check_depth(verify_depth)  # also when verification is off: bad config is bad config
        self.verify_depth = verify_depth
        if private_key is not None and certificate is None:
            raise ConfigurationError("private_key given without certificate")
        self.protocol = ProtocolSettings.for_profile(
            profile, minimum_version, maximum_version, ciphers, ciphersuites, groups
        )
        self.profile = profile
        self.session_cache_size = session_cache_size
        cafile, capath = fspath_or_none(cafile), fspath_or_none(capath)
        self._handle = build_client_context(
            self.protocol,
            insecure_skip_verify=self.insecure_skip_verify,
            verify_depth=verify_depth,
            cafile=cafile,
            capath=capath,
            certificate=fspath_or_none(certificate),
            private_key=fspath_or_none(private_key),
            passphrase=passphrase,
            crls=crls,
            crl_check=crl_check,
            alpn_protocols=self.alpn_protocols,
            session_cache=bool(session_cache_size),
            keylog_file=keylog_path(keylog_file),
        )
        self._sessions = SessionCache(session_cache_size) if session_cache_size else None
        # The strict profile's anchors: the same file, directory or system
        # store, loaded once per process for each (cafile, capath).
        self._pki: StrictProfile | None = None
        if pki_profile == "strict" and not self.insecure_skip_verify:
            self._pki = strict_profile(cafile, capath, verify_depth)
        self.hostname: str | None = None
        self._sni: str | None = None
        self._checker: Checker | None = None
        self._set_hostname(hostname)

    def _set_hostname(self, hostname: str | None) -> None:
        self.hostname = hostname
        self._sni = None if hostname is None else sni_name(hostname)
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
        engine = TLSEngine(
            self._handle,
            client=True,
            server_hostname=self._sni,
            verifier=verifier,
            alternate_path=None if checker is None else checker.alternate_path,
        )
        cache = self._sessions
        if cache is not None:
            host, port = peer_address if peer_address is not None else (self.hostname, None)
            key = (host, port, self._sni, self.hostname)
            # Only a session whose chain passes this factory's checks now.
            cached = cache.offer(key, verifier)
            if cached is not None:
                try:
                    engine.use_session(*cached)  # the engine's SSL* takes its own reference
                finally:
                    _ossl.SSL_SESSION_free(cached[0])  # the one offer() gave us
            engine.on_new_session(lambda new, chain: cache.put(key, new, chain))
        return engine

    def clear_sessions(self) -> None:
        """Forget every cached session (the next connections do full handshakes)."""
        if self._sessions is not None:
            self._sessions.clear()


def _verifier(checker: Checker) -> Verifier:
    """The engine verifier that runs ``checker`` on the handshake's chains."""

    def verify(peer_chain: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> None:
        checker.check(peer_chain, verified_chain=verified_chain)

    return verify


#: For twistls.endpoints (``sniDirectory=``), which imports it from here.
_scan_sni_directory = scan_sni_directory

# The SIGHUP reloads live in the Twisted layer (twistls._reload); these
# names stay importable from here, resolved on first use so that importing
# this module never imports that one.  New code imports them from _reload.
_RELOAD_NAMES = {
    "reload_on_sighup": "reload_on_sighup",
    "_reload_on_sighup_when_running": "reload_on_sighup_when_running",
    "_sighup_factories": "sighup_factories",
    "_reload_each": "reload_each",
}

if TYPE_CHECKING:  # pragma: no cover
    from twistls import _reload

    reload_on_sighup = _reload.reload_on_sighup
    _reload_on_sighup_when_running = _reload.reload_on_sighup_when_running
    _sighup_factories = _reload.sighup_factories
    _reload_each = _reload.reload_each
else:

    def __getattr__(name: str) -> Any:
        target = _RELOAD_NAMES.get(name)
        if target is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from twistls import _reload

        return getattr(_reload, target)
