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
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from cryptography import x509

from twistls import _openssl as _ossl
from twistls._ctxbuild import (
    DEFAULT_CIPHERS as DEFAULT_CIPHERS,
    DEFAULT_CIPHERSUITES as DEFAULT_CIPHERSUITES,
    DEFAULT_GROUPS as DEFAULT_GROUPS,
    DEFAULT_OPTIONS as DEFAULT_OPTIONS,
    HYBRID_GROUPS as HYBRID_GROUPS,
    ClientCertificates,
    ProtocolSettings,
    alpn_list,
    build_client_context,
    build_server_context,
    check_cache_size,
    check_depth,
    crl_files,
    default_groups as default_groups,
    keylog_path,
)
from twistls._engine import ContextHandle, TLSEngine, Verifier
from twistls._pemfiles import Passphrase as Passphrase, Secret, describe_pem, fspath_or_none, require_dir
from twistls._pkix import PKI_PROFILES, StrictProfile, strict_profile
from twistls._sessions import SessionCache
from twistls._sni import scan_directory, scan_sni_directory, sni_name, sni_table
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

log = logging.getLogger("twistls")

DEFAULT_VERIFY_DEPTH = 9
DEFAULT_HANDSHAKE_TIMEOUT = 30.0
#: The largest client certificate chain a server accepts (OpenSSL's default
#: is 100 KiB, which lets one client pad every cached session with junk).
DEFAULT_MAX_PEER_CHAIN_SIZE = 32 * 1024
#: What a server's session cache may hold in client chains, at most.
DEFAULT_SESSION_CACHE_MEMORY = 64 * 1024 * 1024


class _ContextFactory:
    """What both roles share: one SSL_CTX, reused, and plain-data settings."""

    client: bool
    _handle: ContextHandle
    #: What :meth:`getContext` says to use instead of Twisted's own TLS.
    _instead_of_twisted_tls: str

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

    def getContext(self, *args: object) -> None:
        """Refuse Twisted's own TLS: always raises.

        Twisted calls this on an object that declares none of its TLS
        interfaces, at once: ``reactor.connectSSL``/``listenSSL``,
        ``endpoints.wrapClientTLS``/``wrapServerTLS`` (at ``connect()``/
        ``listen()``), ``transport.startTLS`` on a Twisted transport (as
        ``ESMTPSenderFactory`` does) and, for a client, with ``(hostname,
        port)``, an ``Agent(contextFactory=...)`` on its first ``https://``
        request.

        Raises:
            TypeError: always, naming the twistls API to use instead.

        .. versionadded:: 0.1
        """
        if args and self.client:  # Agent(contextFactory=policy) calls getContext(hostname, port)
            raise TypeError(
                "a twistls.ClientContextFactory is not a Twisted HTTPS policy: use "
                "Agent.usingEndpointFactory(reactor, twistls.HTTPSEndpointFactory(reactor, policy)) "
                "instead of Agent(reactor, contextFactory=policy)"
            )
        raise TypeError(self._instead_of_twisted_tls)



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
                engine.use_session(*cached)
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
    _instead_of_twisted_tls = (
        "a twistls.ServerContextFactory cannot be used by Twisted's own TLS "
        "(reactor.listenSSL, endpoints.wrapServerTLS, ssl: endpoints, startTLS on a Twisted transport): use "
        "reactor.listenTCP(port, twistls.TLSWrappingFactory(factory, policy)), "
        "twistls.wrap_server_tls(policy, endpoint), "
        "TLSWrappingFactory(factory, start_tls=True) for STARTTLS protocols, "
        "or twistls.compat.listenSSL as a drop-in"
    )
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
        self.ticket_key_file = fspath_or_none(ticket_key_file)
        self.protocol = ProtocolSettings.for_profile(
            profile, minimum_version, maximum_version, ciphers, ciphersuites, groups
        )
        self.profile = profile
        check_depth(verify_depth)
        self.certificate = os.fspath(certificate)
        self.private_key = fspath_or_none(private_key)
        self._passphrase = None if passphrase is None else Secret(passphrase)
        self.client_cafile = fspath_or_none(client_cafile)
        self.client_capath = fspath_or_none(client_capath)
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
        self.alpn_protocols = alpn_list(alpn_protocols)
        self.sni_certificates = sni_table(sni_certificates or {})
        check_cache_size(session_cache_size)
        if session_timeout is not None and (not isinstance(session_timeout, int) or session_timeout < 1):
            raise ConfigurationError(f"session_timeout must be a whole number of seconds >= 1, not {session_timeout!r}")
        self.session_cache_size = session_cache_size
        self.session_tickets = bool(session_tickets)
        self.session_timeout = session_timeout
        self._crl = (crlfile, crl_path, crl_check)
        crl_files(crlfile, crl_path, crl_check)  # validate now
        if (crlfile is not None or crl_path is not None) and not self.verifies_clients:
            raise ConfigurationError("server CRLs check client certificates: give client_cafile or client_capath too")
        self.keylog_file = keylog_path(keylog_file)
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
        path = require_dir(directory, "certificate directory")
        table, fallback = scan_directory(path, default)
        factory = cls(fallback, sni_certificates=table, **kwargs)
        factory._directory, factory._directory_default = path, default
        return factory

    def _make_handle(self) -> ContextHandle:
        """Build the default SSL_CTX and, for SNI, one per certificate, from
        the current settings (files are read again)."""
        client_certificates = None
        if self.verifies_clients:
            client_certificates = ClientCertificates(
                self.require_client_certificate, self.verify_depth, self.client_cafile, self.client_capath, *self._crl
            )
        return build_server_context(
            self.protocol,
            self.certificate,
            self.private_key,
            passphrase=self._passphrase,
            sni_certificates=self.sni_certificates,
            max_peer_chain_size=self.max_peer_chain_size,
            client_certificates=client_certificates,
            alpn_protocols=self.alpn_protocols,
            session_cache_size=self.effective_session_cache_size,
            session_timeout=self.session_timeout,
            session_tickets=self.session_tickets,
            ticket_key_file=self.ticket_key_file,
            keylog_file=self.keylog_file,
        )

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
                    table, fallback = scan_directory(self._directory, self._directory_default)
                    self.certificate, self.private_key, self.sni_certificates = fallback, None, table
                elif self._sni_directory is not None and sni_certificates is None:
                    self.sni_certificates = scan_sni_directory(self._sni_directory)
                if certificate is not None:
                    self.certificate = os.fspath(certificate)
                    self.private_key = fspath_or_none(private_key)
                elif private_key is not None:
                    self.private_key = os.fspath(private_key)
                if client_cafile is not None:
                    if not self.verifies_clients:
                        raise ConfigurationError("client_cafile given to reload() of a server that verifies no clients")
                    self.client_cafile = os.fspath(client_cafile)
                if sni_certificates is not None:
                    self.sni_certificates = sni_table(sni_certificates)
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
                describe_pem(self.certificate),
                f" (and {len(self.sni_certificates)} SNI names)" if self.sni_certificates else "",
            )
            from twistls._info import certificate_status, served_certificates

            for _name, path in served_certificates(self):
                warning = certificate_status(path)[1]
                if warning is not None:
                    log.warning("twistls: %s", warning)

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


_CLIENT_PURPOSE = Checker(purpose="client")


def _check_client_purpose(peer_chain: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> None:
    """A client certificate with an extendedKeyUsage must allow clientAuth."""
    if peer_chain:
        _CLIENT_PURPOSE.check_purpose(x509.load_der_x509_certificate(peer_chain[0]))


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
