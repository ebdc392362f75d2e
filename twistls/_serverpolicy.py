"""The server policy: :class:`ServerContextFactory` (public as
``twistls.ServerContextFactory`` and ``twistls.context.ServerContextFactory``).

A certificate chain and key from PEM files (or a directory of them, chosen
by SNI), client certificates when client CAs are given, a bounded session
cache and optional shared session-ticket keys; one ``SSL_CTX`` built at
construction and rebuilt by :meth:`ServerContextFactory.reload`.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Mapping, Sequence

from cryptography import x509

from twistls._ctxbuild import (
    DEFAULT_CIPHERS,
    DEFAULT_CIPHERSUITES,
    ClientCertificates,
    ProtocolSettings,
    alpn_list,
    build_server_context,
    check_cache_size,
    check_depth,
    crl_files,
    keylog_path,
)
from twistls._engine import ContextHandle, TLSEngine
from twistls._pemfiles import Passphrase, Secret, fspath_or_none, require_dir
from twistls._sni import scan_directory, scan_sni_directory, sni_table
from twistls.checker import Checker
from twistls._policybase import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_PEER_CHAIN_SIZE,
    DEFAULT_SESSION_CACHE_MEMORY,
    DEFAULT_VERIFY_DEPTH,
    _ContextFactory,
    log,
)
from twistls.errors import ConfigurationError

__all__ = ["ServerContextFactory"]


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
            from twistls._info import certificate_status, served_certificates

            log.info(
                "twistls: reloaded the server certificate from %r: %s%s",
                self.certificate,
                certificate_status(self.certificate)[0],
                f" (and {len(self.sni_certificates)} SNI names)" if self.sni_certificates else "",
            )
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
