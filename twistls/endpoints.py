"""Endpoints: TLS around any Twisted stream endpoint, and the ``twistls:`` strings.

Python API:

* :func:`wrap_client_tls` wraps any ``IStreamClientEndpoint`` (TCP, UNIX,
  a proxy tunnel, ...) so that connections speak TLS and check the given
  hostname.  Unlike Twisted's ``wrapClientTLS``, the Deferred returned by
  ``connect()`` fires only once the TLS handshake finished **and** the Checker
  accepted the peer; it fails with the typed :mod:`twistls.errors` error
  (``HostnameMismatchError``, ``UntrustedCertificateError``,
  ``HandshakeTimeoutError``, ...) otherwise.  (The wrapped protocol has been
  connected by then, as with any TLS wrapper, and also receives
  ``connectionLost`` with the same failure; it never receives a byte from
  an unverified peer.)
* :func:`wrap_server_tls` wraps any ``IStreamServerEndpoint``.

Endpoint strings (registered by ``twisted/plugins/twistls_endpoints.py``, so
``clientFromString``, ``serverFromString`` and every twistd plugin's
``--listen``/``--port`` accept them).

Client, ``clientFromString(reactor, "twistls:host=example.com:port=443")``
(or positionally ``twistls:example.com:443``):

==================== ============================================================ ===========================
key                  meaning                                                       default
==================== ============================================================ ===========================
host                 name or IP address to connect to and to verify (required)
port                 TCP port (required)
caFile               PEM file of trusted CA certificates                           system trust store
caPath               OpenSSL hashed directory of trusted CAs                       system trust store
clientCertificate    PEM client certificate (chain), for mutual TLS                none
clientPrivateKey     PEM key for ``clientCertificate``                             in ``clientCertificate``
passphraseFile       file holding the passphrase of an encrypted client key        none
                     (read at each load, one trailing newline stripped)
timeout              TCP connect timeout, seconds                                  30
bindAddress          local address to connect from                                 any
handshakeTimeout     seconds the TLS handshake may take (``none``: forever)        30
pins                 comma-separated SHA-256 SPKI pins (hex or ``sha256/<b64>``)   none
legacyCommonName     ``yes``: accept a commonName match on SAN-less certificates   no
insecureSkipVerify   ``yes``: accept any certificate and name (logs a warning)     no
alpn                 comma-separated ALPN protocols, e.g. ``h2,http/1.1``          none
endpoint             another client endpoint string to tunnel through; ``host``   ``HostnameEndpoint``
                     is then only used for SNI and verification                    (host, port)
idleTimeout          close the connection after this many idle seconds             none (never)
allowTruncation      ``yes``: an end without close_notify counts as clean          no
pkiProfile           ``strict``: pyca's path builder and the strict PKI profile    ``strict``
                     must accept the chain too; ``rfc5280``: OpenSSL's checks and
                     the Checker only (see ``pki_profile``)
==================== ============================================================ ===========================

Server, ``serverFromString(reactor, "twistls:8443:certificate=server.pem")``:

=========================== ======================================================= =====================
key                         meaning                                                 default
=========================== ======================================================= =====================
port (first positional)     TCP port to listen on (``0``: any free port)            required
certificate                 PEM file: server certificate then intermediates          required (unless
                                                                                    ``sniDirectory``)
privateKey                  PEM key file                                            in ``certificate``
passphraseFile              file holding the passphrase of an encrypted key (all    none
                            keys of the server; read at each load and reload,
                            one trailing newline stripped)
proxyProtocol               ``yes``: read a PROXY v1/v2 header (HAProxy, load        no
                            balancers) before the handshake; ``getPeer()`` is
                            the client it names
endpoint                    a plain server endpoint string to listen on instead     ``tcp:PORT``
                            of ``port``/``interface``/``backlog``
                            (``endpoint=unix\\:/run/app.sock``)
caFile                      PEM CAs that client certificates must chain to;         no client certificates
                            turns client certificates on
caPath                      hashed directory of such CAs                            none
requireClientCertificate    with ``caFile``/``caPath``: ``yes`` refuses clients      yes
                            without a certificate, ``no`` makes it optional
interface                   address to listen on (an IPv6 address listens on v6)    all IPv4 addresses
backlog                     listen backlog                                          50
handshakeTimeout            seconds the TLS handshake may take (``none``: forever)  30
idleTimeout                 close connections idle this many seconds                none (never)
allowTruncation             ``yes``: an end without close_notify counts as clean    no
sniDirectory                directory of ``<hostname>.pem`` files (key + chain;      none
                            ``*.example.com.pem`` for wildcards) chosen by SNI;
                            ``certificate`` (or the directory's ``DEFAULT.pem``
                            when ``certificate`` is left out) serves other clients
reusePort                   ``yes``: listen with ``SO_REUSEPORT`` (Linux), so        no
                            several processes serve one (fixed) port
ticketKeyFile               session-ticket key file shared by every process of      none (a random key
                            this name (``twistls mkticketkey FILE``); re-read on     per process)
                            reload (SIGHUP)
=========================== ======================================================= =====================

Booleans take ``yes``/``no`` (also ``true``/``false``, ``on``/``off``,
``1``/``0``).  Nothing falls back to a weaker setting: unknown keys, a key
given twice, an empty value (``pins=``, ``handshakeTimeout=``), an empty item
in a list (``pins=,``), a timeout of zero or less (no limit is spelled
``none``), missing files, keys not matching certificates and other bad values
raise :class:`~twistls.errors.ConfigurationError` naming the key, when the
string is parsed.  Repeated keys are found by reading the string itself,
which Twisted's ``clientFromString``/``serverFromString`` (hence every
twistd ``--listen``) hold in the frame that calls the parser, and in a nested
``endpoint=`` string.

Escaping follows Twisted: a backslash makes the next character literal.  A
``:`` inside a value must always be written ``\\:`` (IPv6 addresses, Windows
paths, hex pins with colons).  An ``=`` must be written ``\\=`` only inside a
positional argument or a key; after ``key=`` the value runs to the next
unescaped ``:``, so ``=`` there is literal.  A backslash itself is ``\\\\``.
Example: ``twistls:8443:certificate=/etc/tls/a\\:b.pem:interface=\\:\\:1``.
In a shell, quote the string so the shell keeps the backslashes.

.. versionadded:: 0.1
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

# The string parsers and the PROXY header reader live in their own modules;
# their names stay importable from here (the plugin drop-in, twistd twistls).
from twistls._descriptions import _FALSE as _FALSE
from twistls._descriptions import _passphrase_file as _passphrase_file
from twistls._descriptions import _refuse_repeated_keys as _refuse_repeated_keys
from twistls._descriptions import _refuse_unreadable_encrypted_key as _refuse_unreadable_encrypted_key
from twistls._descriptions import _split_description as _split_description
from twistls._parsers import _CLIENT_KEYS as _CLIENT_KEYS
from twistls._parsers import _SERVER_KEYS as _SERVER_KEYS
from twistls._parsers import _ClientParser as _ClientParser
from twistls._parsers import _ServerParser as _ServerParser
from twistls._proxyheader import _PROXY_HEADER_TIMEOUT as _PROXY_HEADER_TIMEOUT
from twistls._proxyheader import _ProxyHeaderFactory as _ProxyHeaderFactory
from twistls._typing import FROM_CONTEXT, HandshakeTimeout, check_handshake_timeout, handshake_timeout_of
from twistls.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from twistls._typing import ClientEndpoint, ServerEndpoint
    from twistls.context import ClientContextFactory, ServerContextFactory
    from twistls.protocol import TLSProtocolWrapper

# twistls.context and twistls.protocol (hence M2Crypto) are imported on first
# use, so that loading the plugin drop-in (every getPlugins() call, every
# ``twistd --help``) stays cheap.

__all__ = ["wrap_client_tls", "wrap_server_tls", "TLSClientEndpoint", "TLSServerEndpoint", "HTTPSEndpointFactory"]

log = Logger(namespace="twistls")


def _default_clock() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


class _TLSEndpoint:
    """What both endpoint roles share: the per-connection wrapper settings."""

    context_factory: Any

    def __init__(
        self,
        *,
        clock: IReactorTime | None,
        allow_truncation: bool,
        idle_timeout: float | None,
        handshake_timeout: HandshakeTimeout = FROM_CONTEXT,
    ) -> None:
        self._clock = clock
        self._allow_truncation = allow_truncation
        self._idle_timeout = idle_timeout
        check_handshake_timeout(handshake_timeout)
        self._handshake_timeout = handshake_timeout

    @property
    def handshake_timeout(self) -> float | None:
        """Seconds the TLS handshake may take (``None``: no limit): the one
        given to the endpoint, else the context factory's.

        .. versionadded:: 0.2
        """
        return handshake_timeout_of(self._handshake_timeout, self.context_factory)

    @property
    def idle_timeout(self) -> float | None:
        """Seconds a connection may stay idle before it is closed (``None``: never)."""
        return self._idle_timeout

    @property
    def allow_truncation(self) -> bool:
        """Whether an end without close_notify counts as a clean close."""
        return self._allow_truncation

    def _wrapping(self, protocolFactory: Any) -> Any:
        """The :class:`~twistls.protocol.TLSWrappingFactory` around ``protocolFactory``."""
        from twistls.protocol import TLSWrappingFactory

        return TLSWrappingFactory(
            protocolFactory,
            self.context_factory,
            clock=self._clock or _default_clock(),
            allow_truncation=self._allow_truncation,
            idle_timeout=self._idle_timeout,
            handshake_timeout=self._handshake_timeout,
        )


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint(_TLSEndpoint):
    """A client endpoint whose connections speak TLS; made by :func:`wrap_client_tls`.

    Attributes:
        hostname: the name the peer must prove.
        context_factory: the :class:`~twistls.context.ClientContextFactory`
            bound to ``hostname``.
        wrapped_endpoint: the endpoint carrying the TLS bytes.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        hostname: str,
        context_factory: ClientContextFactory,
        wrapped_endpoint: ClientEndpoint,
        *,
        clock: IReactorTime | None = None,
        allow_truncation: bool = False,
        idle_timeout: float | None = None,
        handshake_timeout: HandshakeTimeout = FROM_CONTEXT,
    ) -> None:
        super().__init__(
            clock=clock, allow_truncation=allow_truncation, idle_timeout=idle_timeout, handshake_timeout=handshake_timeout
        )
        self.hostname = hostname
        self.context_factory = context_factory
        self.wrapped_endpoint = wrapped_endpoint

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Connect, handshake and verify.

        Returns:
            A Deferred firing with the protocol built by ``protocolFactory``
            once the handshake is done and the peer verified, or failing
            with the :class:`~twistls.errors.TLSError` (or the connection
            error of the wrapped endpoint).  Cancelling it aborts the
            connection attempt.
        """
        wrapping = self._wrapping(protocolFactory)
        wrapping.noisy = False  # one per connection: no "Starting/Stopping factory" pair each
        wrapper: list[TLSProtocolWrapper] = []
        inner: Deferred[Any]

        def cancel(_: Deferred[Any]) -> None:
            if wrapper:
                wrapper[0].abortConnection()
            else:
                inner.cancel()

        result: Deferred[Any] = Deferred(cancel)

        def fire(value: Any) -> None:
            if not result.called:
                result.callback(value)

        def fail(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        def connected(protocol: TLSProtocolWrapper) -> None:
            wrapper.append(protocol)
            done = protocol.when_handshake_done()
            done.addCallbacks(lambda _info: fire(protocol.wrappedProtocol), fail)

        inner = self.wrapped_endpoint.connect(wrapping)
        inner.addCallbacks(connected, fail)
        return result


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint(_TLSEndpoint):
    """A server endpoint whose connections speak TLS; made by :func:`wrap_server_tls`.

    Attributes:
        context_factory: the :class:`~twistls.context.ServerContextFactory`.
        wrapped_endpoint: the endpoint that accepts the TLS bytes.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        context_factory: ServerContextFactory,
        wrapped_endpoint: ServerEndpoint,
        *,
        clock: IReactorTime | None = None,
        allow_truncation: bool = False,
        idle_timeout: float | None = None,
        proxy_protocol: bool = False,
        handshake_timeout: HandshakeTimeout = FROM_CONTEXT,
    ) -> None:
        super().__init__(
            clock=clock, allow_truncation=allow_truncation, idle_timeout=idle_timeout, handshake_timeout=handshake_timeout
        )
        self.context_factory = context_factory
        self.wrapped_endpoint = wrapped_endpoint
        self.proxy_protocol = bool(proxy_protocol)

    #: Set for endpoints made from ``twistls:`` strings: while the global
    #: reactor runs, ``SIGHUP`` reloads :attr:`context_factory` (under any
    #: twistd plugin).
    _reload_on_sighup = False

    def listen(self, protocolFactory: Any) -> Deferred[Any]:
        """Listen; every accepted connection handshakes before the protocol
        sees a byte.  Returns the wrapped endpoint's Deferred (an ``IListeningPort``)."""
        if self._reload_on_sighup:
            from twisted.internet import reactor

            from twistls.context import _reload_on_sighup_when_running

            if self._clock is reactor:
                _reload_on_sighup_when_running(self.context_factory, reactor)
        wrapping = self._wrapping(protocolFactory)
        if self.proxy_protocol:
            timeout = self.handshake_timeout or _PROXY_HEADER_TIMEOUT
            wrapping = _ProxyHeaderFactory(wrapping, clock=self._clock or _default_clock(), timeout=timeout)
        listening = self.wrapped_endpoint.listen(wrapping)
        _exit_if_twistd_cannot_listen(listening, sys._getframe(1))
        listening.addCallback(log_serving, self.context_factory)
        return listening


def _exit_if_twistd_cannot_listen(listening: Deferred[Any], caller: FrameType | None) -> None:
    """When twistd starts its application (``twistd web --listen twistls:...``)
    and the port cannot be opened (in use, no permission), log one line
    naming the address and end the process with status 1: twistd would
    print a 40-line traceback.  ``twistd twistls`` (whose own services say
    which option failed) and every other caller get the failed Deferred.

    Raises:
        SystemExit: under twistd's start-up, for a port that cannot be opened.
    """
    from twisted.internet.error import CannotListenError

    failed: list[Failure] = []
    if not listening.called:
        return

    def keep(failure: Failure) -> Failure:
        failed.append(failure)
        return failure

    listening.addErrback(keep)
    if not failed or failed[0].check(CannotListenError) is None:
        return
    frame, starting = caller, False
    for _ in range(40):
        if frame is None:
            break
        module = frame.f_globals.get("__name__")
        if module == "twistls.tap":
            return  # its _Listening names the option
        if frame.f_code.co_name == "startApplication" and module in ("twisted.scripts._twistd_unix", "twisted.scripts._twistw"):
            starting = True
            break
        frame = frame.f_back
    if not starting:
        return
    exc = failed[0].value
    listening.addErrback(lambda _failure: None)  # reported here, once
    where = f"{getattr(exc, 'interface', '') or '*'}:{getattr(exc, 'port', '?')}"
    socket_error = getattr(exc, "socketError", None)
    reason = getattr(socket_error, "strerror", None) or str(socket_error)
    log.critical("twistls: cannot listen on {where}: {reason}", where=where, reason=reason)
    raise SystemExit(1)


def log_serving(port: Any, context_factory: Any, *, what: str = "TLS", warn: bool = True) -> Any:
    """Log what a new listener serves: one info line per certificate (its
    file, subject, names and notAfter), and (with ``warn``) a warning for
    each that expired or expires within
    :data:`~twistls._info.EXPIRY_WARNING_DAYS` days.  Returns ``port`` (a
    ``listen()`` callback)."""
    from twistls._info import certificate_status, printable, served_certificates

    try:
        host = port.getHost()
        where = f"{host.host}:{host.port}" if hasattr(host, "port") else str(host)
    except Exception:
        where = "a new port"
    for name, path in served_certificates(context_factory):
        status, warning = certificate_status(path)
        log.info(
            "twistls: {what} on {where} serves {which} from {path}: {status}",
            what=what,
            where=printable(where),
            which="the default certificate" if name is None else f"SNI name {printable(name)}",
            path=printable(repr(path)),
            status=status,
        )
        if warn and warning is not None:
            log.warn("twistls: {warning}", warning=warning)
    return port


def wrap_client_tls(
    hostname: str,
    client_context_factory: ClientContextFactory,
    wrapped_endpoint: ClientEndpoint,
    *,
    clock: IReactorTime | None = None,
    allow_truncation: bool = False,
    idle_timeout: float | None = None,
    handshake_timeout: HandshakeTimeout = FROM_CONTEXT,
) -> TLSClientEndpoint:
    """Wrap a client endpoint with TLS for ``hostname`` (like Twisted's ``wrapClientTLS``).

    Args:
        hostname: the name (or IP address) the server must prove; also the
            SNI name.  It need not be the address ``wrapped_endpoint`` dials.
        client_context_factory: the client policy (trust, client certificate,
            pins...); it is bound to ``hostname`` with
            :meth:`~twistls.context.ClientContextFactory.with_hostname`, sharing
            its ``SSL_CTX``.
        wrapped_endpoint: any ``IStreamClientEndpoint``.
        clock: reactor for the handshake timeout (default: the global reactor).
        allow_truncation: treat an end without close_notify as a clean close.
        idle_timeout: close established connections idle this many seconds
            (``None``: never); see :class:`~twistls.protocol.TLSWrappingFactory`.
        handshake_timeout: seconds the TLS handshake may take (``None``: no
            limit); it wins over the context factory's ``handshake_timeout``,
            which applies when this is left out.  (``.. versionadded:: 0.2``)

    Returns:
        An endpoint whose ``connect()`` Deferred fires with the protocol only
        after the handshake finished and the peer was verified, and fails with
        the typed :mod:`twistls.errors` error otherwise.

    Raises:
        ConfigurationError: ``hostname`` is not a valid name,
            ``client_context_factory`` is not a twistls client factory, or
            ``handshake_timeout`` is zero or less.

    .. versionadded:: 0.1
    """
    from twistls.context import ClientContextFactory

    if not isinstance(client_context_factory, ClientContextFactory):
        raise ConfigurationError(
            "wrap_client_tls needs a twistls.ClientContextFactory, not " f"{type(client_context_factory).__name__}"
        )
    if not isinstance(hostname, str) or not hostname:
        raise ConfigurationError(f"wrap_client_tls needs the hostname to verify as a non-empty str, not {hostname!r}")
    bound = client_context_factory.with_hostname(hostname)
    return TLSClientEndpoint(
        hostname,
        bound,
        wrapped_endpoint,
        clock=clock,
        allow_truncation=allow_truncation,
        idle_timeout=idle_timeout,
        handshake_timeout=handshake_timeout,
    )


class HTTPSEndpointFactory:
    """An ``IAgentEndpointFactory`` that makes :class:`twisted.web.client.Agent`
    speak HTTPS through twistls: ``https://`` URIs get a verifying TLS
    endpoint for the URI's host (chain, hostname, pins as configured),
    ``http://`` URIs a plain one.

    Use it as ``Agent.usingEndpointFactory(reactor, HTTPSEndpointFactory(reactor))``.

    Args:
        reactor: the reactor to connect with.
        context_factory: the client policy (default: a fresh
            :class:`~twistls.context.ClientContextFactory`: system trust
            store, secure defaults); it is bound to each URI's host.
        connect_timeout: seconds for the TCP connection.

    Raises:
        ConfigurationError: ``context_factory`` is not a twistls client factory.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        reactor: Any,
        context_factory: ClientContextFactory | None = None,
        *,
        connect_timeout: float | None = None,
    ) -> None:
        from twisted.web.iweb import IAgentEndpointFactory
        from zope.interface import alsoProvides

        from twistls.context import ClientContextFactory

        if context_factory is None:
            context_factory = ClientContextFactory()
        if not isinstance(context_factory, ClientContextFactory):
            raise ConfigurationError(
                f"HTTPSEndpointFactory needs a twistls.ClientContextFactory, not {type(context_factory).__name__}"
            )
        self.reactor = reactor
        self.context_factory = context_factory
        self.connect_timeout = connect_timeout
        alsoProvides(self, IAgentEndpointFactory)

    def endpointForURI(self, uri: Any) -> ClientEndpoint:
        """The endpoint for a ``twisted.web.client.URI``.

        Raises:
            twisted.web.error.SchemeNotSupported: the scheme is neither http nor https.
        """
        from twisted.internet.endpoints import HostnameEndpoint
        from twisted.web.error import SchemeNotSupported

        host = uri.host.decode("idna") if isinstance(uri.host, bytes) else str(uri.host)
        kwargs: dict[str, Any] = {}
        if self.connect_timeout is not None:
            kwargs["timeout"] = self.connect_timeout
        plain = HostnameEndpoint(self.reactor, uri.host, uri.port, **kwargs)
        if uri.scheme == b"http":
            return plain
        if uri.scheme != b"https":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return wrap_client_tls(host, self.context_factory, plain, clock=self.reactor)


def wrap_server_tls(
    server_context_factory: ServerContextFactory,
    wrapped_endpoint: ServerEndpoint,
    *,
    clock: IReactorTime | None = None,
    allow_truncation: bool = False,
    idle_timeout: float | None = None,
    proxy_protocol: bool = False,
    handshake_timeout: HandshakeTimeout = FROM_CONTEXT,
) -> TLSServerEndpoint:
    """Wrap a server endpoint with TLS.

    Args:
        server_context_factory: the server policy (certificate, key, client CAs).
        wrapped_endpoint: any ``IStreamServerEndpoint``.
        clock: reactor for the handshake timeout (default: the global reactor).
        allow_truncation: treat an end without close_notify as a clean close.
        idle_timeout: close established connections idle this many seconds
            (``None``: never); see :class:`~twistls.protocol.TLSWrappingFactory`.
        proxy_protocol: every connection starts with a PROXY protocol v1 or
            v2 header (from HAProxy or a load balancer), read before the TLS
            handshake; ``getPeer()``/``getHost()`` then give the addresses it
            names.  A connection without a valid header within the handshake
            timeout (30 seconds without one) is closed and logged.
            (``.. versionadded:: 0.2``)
        handshake_timeout: seconds the TLS handshake may take (``None``: no
            limit); it wins over the context factory's ``handshake_timeout``,
            which applies when this is left out.  (``.. versionadded:: 0.2``)

    Returns:
        An endpoint whose connections handshake (and verify client
        certificates, if asked) before the protocol sees any byte.

    Raises:
        ConfigurationError: ``server_context_factory`` is not a twistls server
            factory, or ``handshake_timeout`` is zero or less.

    .. versionadded:: 0.1
    """
    from twistls.context import ServerContextFactory

    if not isinstance(server_context_factory, ServerContextFactory):
        raise ConfigurationError(
            "wrap_server_tls needs a twistls.ServerContextFactory, not " f"{type(server_context_factory).__name__}"
        )
    return TLSServerEndpoint(
        server_context_factory,
        wrapped_endpoint,
        clock=clock,
        allow_truncation=allow_truncation,
        idle_timeout=idle_timeout,
        proxy_protocol=proxy_protocol,
        handshake_timeout=handshake_timeout,
    )
