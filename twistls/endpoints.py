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

import inspect
import os
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Literal, overload

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IReactorTime,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from twistls.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from twistls._typing import ClientEndpoint, ServerEndpoint
    from twistls.context import ClientContextFactory, ServerContextFactory
    from twistls.protocol import TLSProtocolWrapper

# twistls.context and twistls.protocol (hence M2Crypto) are imported on first
# use, so that loading the plugin drop-in (every getPlugins() call, every
# ``twistd --help``) stays cheap.

__all__ = ["wrap_client_tls", "wrap_server_tls", "TLSClientEndpoint", "TLSServerEndpoint", "HTTPSEndpointFactory"]


def _default_clock() -> IReactorTime:
    from twisted.internet import reactor

    return reactor


class _TLSEndpoint:
    """What both endpoint roles share: the per-connection wrapper settings."""

    context_factory: Any

    def __init__(
        self, *, clock: IReactorTime | None, allow_truncation: bool, idle_timeout: float | None
    ) -> None:
        self._clock = clock
        self._allow_truncation = allow_truncation
        self._idle_timeout = idle_timeout

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
    ) -> None:
        super().__init__(clock=clock, allow_truncation=allow_truncation, idle_timeout=idle_timeout)
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
    ) -> None:
        super().__init__(clock=clock, allow_truncation=allow_truncation, idle_timeout=idle_timeout)
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
            timeout = self.context_factory.handshake_timeout or _PROXY_HEADER_TIMEOUT
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
    _proxy_log.critical("twistls: cannot listen on {where}: {reason}", where=where, reason=reason)
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
        _proxy_log.info(
            "twistls: {what} on {where} serves {which} from {path}: {status}",
            what=what,
            where=printable(where),
            which="the default certificate" if name is None else f"SNI name {printable(name)}",
            path=printable(repr(path)),
            status=status,
        )
        if warn and warning is not None:
            _proxy_log.warn("twistls: {warning}", warning=warning)
    return port


def wrap_client_tls(
    hostname: str,
    client_context_factory: ClientContextFactory,
    wrapped_endpoint: ClientEndpoint,
    *,
    clock: IReactorTime | None = None,
    allow_truncation: bool = False,
    idle_timeout: float | None = None,
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

    Returns:
        An endpoint whose ``connect()`` Deferred fires with the protocol only
        after the handshake finished and the peer was verified, and fails with
        the typed :mod:`twistls.errors` error otherwise.

    Raises:
        ConfigurationError: ``hostname`` is not a valid name, or
            ``client_context_factory`` is not a twistls client factory.

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
        hostname, bound, wrapped_endpoint, clock=clock, allow_truncation=allow_truncation, idle_timeout=idle_timeout
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

    Returns:
        An endpoint whose connections handshake (and verify client
        certificates, if asked) before the protocol sees any byte.

    Raises:
        ConfigurationError: ``server_context_factory`` is not a twistls server factory.

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
    )


# -- PROXY protocol ---------------------------------------------------------------

_PROXY_HEADER_TIMEOUT = 30.0
#: The longest PROXY header accepted: v1 lines are at most 107 bytes; v2
#: headers carry 16 bytes plus addresses and TLVs (a few hundred bytes from
#: the common load balancers).
_PROXY_HEADER_MAX = 1024
_V1_SIGNATURE = b"PROXY "
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_proxy_log = Logger(namespace="twistls")


class _ProxyHeaderWrapper(ProtocolWrapper):
    """Reads one PROXY v1/v2 header (bounded in size and time, parsed by
    ``twisted.protocols.haproxy``), then connects the wrapped (TLS) protocol,
    whose ``getPeer()``/``getHost()`` are then the addresses the header names.
    A connection without a valid header is refused with one log line."""

    transport: Any
    wrappedProtocol: Any
    factory: Any
    _info: Any = None
    _started = False
    _deadline: Any = None

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection, except that the wrapped protocol is
        # connected only once the header has been read.
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        self._buffer = b""
        self.transport = transport
        self.connected = 1
        self.factory.registerProtocol(self)
        self._deadline = self.factory.clock.callLater(self.factory.timeout, self._too_slow)

    def _refuse(self, reason: str) -> None:
        self._cancel()
        self._buffer = b""
        _proxy_log.warn(
            "PROXY protocol: connection from {peer} refused: {reason}", peer=_peer_text(self.transport), reason=reason
        )
        self.transport.abortConnection()

    def _too_slow(self) -> None:
        self._deadline = None
        self._refuse(f"no complete PROXY header within {self.factory.timeout:g} s")

    def _cancel(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def dataReceived(self, data: bytes) -> None:
        from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
        from twisted.protocols.haproxy._v1parser import V1Parser
        from twisted.protocols.haproxy._v2parser import V2Parser

        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        if not self.connected:
            return
        self._buffer += data
        buffer = self._buffer
        head = buffer[: len(_V2_SIGNATURE)]
        try:
            if _V2_SIGNATURE.startswith(head):
                if len(buffer) < 16:
                    return
                if buffer[12] & 0xF0 != 0x20:
                    raise InvalidProxyHeader()
                size = 16 + int.from_bytes(buffer[14:16], "big")
                if size > _PROXY_HEADER_MAX:
                    self._refuse(f"a PROXY v2 header of {size} bytes (at most {_PROXY_HEADER_MAX})")
                    return
                if len(buffer) < size:
                    return
                info, rest = V2Parser.parse(buffer[:size]), buffer[size:]
            elif _V1_SIGNATURE.startswith(buffer[: len(_V1_SIGNATURE)]):
                line, newline, rest = buffer.partition(b"\r\n")
                if not newline:
                    if len(buffer) > 107:
                        self._refuse("a PROXY v1 header longer than 107 bytes")
                    return
                info = V1Parser.parse(line)
            else:
                self._refuse("no PROXY header (the load balancer must send PROXY v1 or v2)")
                return
        except (InvalidProxyHeader, ValueError, IndexError) as exc:
            self._refuse(f"an invalid PROXY header ({type(exc).__name__})")
            return
        self._cancel()
        self._buffer = b""
        self._info = info
        self._started = True
        self.wrappedProtocol.makeConnection(self)
        if rest and self.connected:
            self.wrappedProtocol.dataReceived(rest)

    def getPeer(self) -> Any:
        if self._info is not None and self._info.source is not None:
            return self._info.source
        return self.transport.getPeer()

    def getHost(self) -> Any:
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return self.transport.getHost()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._cancel()
        if self._started:
            super().connectionLost(reason)  # type: ignore[no-untyped-call]  # ProtocolWrapper is partly unannotated
        else:
            self.connected = 0
            self.factory.unregisterProtocol(self)


class _ProxyHeaderFactory(WrappingFactory):
    """Connections read a PROXY header (within ``timeout`` seconds) before ``wrappedFactory`` sees them."""

    protocol = _ProxyHeaderWrapper

    def __init__(self, wrappedFactory: Any, *, clock: IReactorTime, timeout: float) -> None:
        super().__init__(wrappedFactory)  # type: ignore[no-untyped-call]  # WrappingFactory is partly unannotated
        self.clock = clock
        self.timeout = timeout


def _peer_text(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "an unknown peer"
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)


# -- endpoint-string parsing ------------------------------------------------------

_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off"}


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"twistls endpoint: {key}={value!r} must be yes or no (or true/false, on/off, 1/0)")


def _int(key: str, value: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} is not a whole number") from None
    if number < minimum or (maximum is not None and number > maximum):
        upper = "" if maximum is None else f"..{maximum}"
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} is out of range ({minimum}{upper})")
    return number


@overload
def _seconds(key: str, value: str, *, allow_none: Literal[False]) -> float: ...


@overload
def _seconds(key: str, value: str, *, allow_none: bool) -> float | None: ...


def _seconds(key: str, value: str, *, allow_none: bool) -> float | None:
    """A positive, finite number of seconds; with ``allow_none``, ``none``
    (or ``never``) means no limit.  Empty, zero and negative values are
    errors: "no limit" must be spelled out."""
    if allow_none and value.strip().lower() in ("none", "never"):
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} is not a number of seconds") from None
    if not number > 0 or number != number or number == float("inf"):
        hint = f" ({key}=none for no limit)" if allow_none else ""
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} must be a positive number of seconds{hint}")
    return number


def _file(key: str, value: str) -> str:
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise ConfigurationError(f"twistls endpoint: {key}={value!r}: no such file")
    return path


def _passphrase_file(key: str, value: str, *, label: str | None = None) -> Callable[[], bytes]:
    """A passphrase callable for ``passphrase=``: it reads the file named by
    ``key=value`` at each key load (so a reload picks up a new passphrase),
    without one trailing newline.  The passphrase itself never appears in an
    error or a log line; only the file's name does.

    Raises:
        ConfigurationError: no such file (now); unreadable or empty (at a load).
    """
    name = label or f"twistls endpoint: {key}={value!r}"
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise ConfigurationError(f"{name}: no such file")
    _warn_if_readable_by_all(key, path)

    def read() -> bytes:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigurationError(f"{name}: could not read it: {exc.strerror}") from None
        for newline in (b"\r\n", b"\n"):
            if data.endswith(newline):
                data = data[: -len(newline)]
                break
        if not data:
            raise ConfigurationError(f"{name}: holds no passphrase (the file is empty)")
        return data

    return read


def _warn_if_readable_by_all(key: str, path: str) -> None:
    import logging
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        logging.getLogger("twistls").warning("%s %r is readable by every user; chmod 600 it", key, path)


def _refuse_unreadable_encrypted_key(key_path: str, has_passphrase: bool, *, label: str, option: str) -> None:
    """An encrypted PEM key without a passphrase file gets the error a string
    user can act on (the Python API's error names ``passphrase=``, which
    strings do not take)."""
    if has_passphrase:
        return
    try:
        with open(key_path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return  # the context factory reports it
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in head or b"Proc-Type: 4,ENCRYPTED" in head:
        prefix = f"{label}: " if label else ""
        raise ConfigurationError(
            f"{prefix}the private key in {key_path!r} is encrypted: give {option} (a file holding the passphrase)"
        )


def _naming_the_key(kind: str, exc: ConfigurationError, v: dict[str, str], keys: tuple[str, ...]) -> ConfigurationError:
    """``exc`` (from a context factory, which names files, not keys) with the
    first of ``keys`` whose file it names in front: ``privateKey='k.pem': the
    private key in 'k.pem' does not match ...``."""
    text = str(exc)
    if "wrong passphrase" in text and "passphraseFile" in v:  # the key file is fine; its passphrase is not
        return ConfigurationError(f"twistls {kind} endpoint: passphraseFile={v['passphraseFile']!r}: {text}")
    for key in keys:
        value = v.get(key)
        if value is not None and (repr(os.path.expanduser(value)) in text or repr(value) in text):
            return ConfigurationError(f"twistls {kind} endpoint: {key}={value!r}: {text}")
    return exc


def _directory(key: str, value: str) -> str:
    path = os.path.expanduser(value)
    if not os.path.isdir(path):
        raise ConfigurationError(f"twistls endpoint: {key}={value!r}: no such directory")
    return path


def _list(key: str, value: str) -> list[str]:
    """The items of a comma-separated value; an empty item (``pins=,``,
    ``alpn=h2,``) is an error, so that a list never silently shrinks."""
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} lists nothing (leave {key} out instead)")
    if not all(items):
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} has an empty item (a stray ',')")
    return items


def _split_description(description: str | bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """Split an endpoint string exactly as Twisted's ``_parse`` does, but keep
    every ``key=value`` pair in order, repeats included.

    Twisted splits at each ``:`` and, before the first ``=`` of each part, at
    ``=``; a backslash makes the next character literal.

    Returns:
        The positional arguments (the prefix first) and the ``(key, value)``
        pairs.

    Raises:
        ConfigurationError: the string ends with a lone backslash.
    """
    text = description.decode("utf-8", "surrogateescape") if isinstance(description, bytes) else description
    args: list[str] = []
    pairs: list[tuple[str, str]] = []
    part: list[str] = []
    current: list[str] = []
    ops = ":="
    characters = iter(text)
    for character in characters:
        if character in ops:
            part.append("".join(current))
            current = []
            if character == ":":
                _add_part(part, args, pairs)
                part = []
                ops = ":="
            else:
                ops = ":"
        elif character == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise ConfigurationError(f"endpoint string {text!r} ends with a lone backslash (a backslash is \\\\)")
            current.append(escaped)
        else:
            current.append(character)
    part.append("".join(current))
    _add_part(part, args, pairs)
    return args, pairs


def _add_part(part: list[str], args: list[str], pairs: list[tuple[str, str]]) -> None:
    if len(part) == 1:
        args.append(part[0])
    else:
        pairs.append((part[0], part[1]))


def _refuse_repeated_keys(kind: str, description: str | bytes, *, within: str = "") -> None:
    """Refuse an endpoint string (of any type; ``kind`` is ``client`` or
    ``server`` for ``twistls:`` ones) that gives a key more than once.

    Twisted turns the keys into a ``dict``, where a repeated key silently
    keeps its last value (``insecureSkipVerify=no:...:insecureSkipVerify=yes``);
    only the string itself shows the repeat.

    Raises:
        ConfigurationError: naming the repeated key.
    """
    label = f"twistls {kind} endpoint" if kind else "endpoint string"
    seen: set[str] = set()
    for key, _value in _split_description(description)[1]:
        if key in seen:
            raise ConfigurationError(f"{label}: {within}{key}= is given more than once (give each key once)")
        seen.add(key)


def _exit_if_twistd_is_starting(caller: FrameType | None, description: str | bytes | None, exc: Exception) -> None:
    """When a twistd plugin's ``makeService`` parses the string (``twistd web
    --listen``), end the process with one line naming the string and the
    problem: twistd would print a traceback for any exception there.

    Raises:
        SystemExit: under twistd's start-up (status 1).
    """
    frame = caller
    for _ in range(40):
        if frame is None:
            return
        if frame.f_code.co_name == "createOrGetApplication" and frame.f_globals.get("__name__") == "twisted.application.app":
            text = _text(description) if description is not None else "twistls:..."
            raise SystemExit(f"twistd: {text!r}: {' '.join(str(exc).split())}") from None
        frame = frame.f_back


def _description_from_twisted(caller: FrameType | None, function: str) -> str | bytes | None:
    """The endpoint string being parsed, when ``caller`` is Twisted's
    ``clientFromString``/``serverFromString`` (named ``function``) calling a
    plugin parser; ``None`` for any other caller (a direct call with
    arguments has no string, hence no repeats)."""
    if caller is None or caller.f_code.co_name != function:
        return None
    if caller.f_globals.get("__name__") != "twisted.internet.endpoints":
        return None
    description = caller.f_locals.get("description")
    if not isinstance(description, (str, bytes)):
        return None
    args = _split_description(description)[0]
    if not args or args[0].lower() != "twistls":
        return None
    return description


def _collect(
    kind: str,
    positional_names: tuple[str, ...],
    known: frozenset[str],
    args: tuple[str | bytes, ...],
    kwargs: dict[str, str | bytes],
) -> dict[str, str]:
    """Merge positional and keyword parameters, refusing unknown, nameless,
    empty or doubly given ones."""
    values: dict[str, str] = {}
    if len(args) > len(positional_names):
        rest = [_text(a) for a in args[len(positional_names) :]]
        if not all(item.strip() for item in rest):
            raise ConfigurationError(f"twistls {kind} endpoint: an empty part (a stray ':')")
        raise ConfigurationError(
            f"twistls {kind} endpoint: unexpected positional argument(s) {':'.join(rest)!r} "
            f"(positional: {', '.join(positional_names)}; use key=value for the rest)"
        )
    for name, value in zip(positional_names, args):
        values[name] = _text(value)
    if "" in kwargs:
        raise ConfigurationError(f"twistls {kind} endpoint: an empty key (={_text(kwargs[''])!r} has no name)")
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigurationError(
            f"twistls {kind} endpoint: unknown keyword(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    for key, value in kwargs.items():
        if key in values:
            raise ConfigurationError(f"twistls {kind} endpoint: {key} given both positionally and as {key}=")
        values[key] = _text(value)
    for key, value in values.items():
        if not value.strip():
            raise ConfigurationError(f"twistls {kind} endpoint: {key}= is empty (leave {key} out for its default)")
    return values


_CLIENT_KEYS = frozenset(
    {
        "host",
        "port",
        "caFile",
        "caPath",
        "clientCertificate",
        "clientPrivateKey",
        "timeout",
        "bindAddress",
        "handshakeTimeout",
        "pins",
        "legacyCommonName",
        "insecureSkipVerify",
        "alpn",
        "endpoint",
        "idleTimeout",
        "allowTruncation",
        "passphraseFile",
        "pkiProfile",
    }
)

_SERVER_KEYS = frozenset(
    {
        "port",
        "certificate",
        "privateKey",
        "caFile",
        "caPath",
        "requireClientCertificate",
        "interface",
        "backlog",
        "handshakeTimeout",
        "idleTimeout",
        "allowTruncation",
        "sniDirectory",
        "passphraseFile",
        "proxyProtocol",
        "endpoint",
        "reusePort",
        "ticketKeyFile",
    }
)


def _alpn_keyword(factory_class: type, protocols: list[str]) -> dict[str, Any]:
    """The keyword a context factory takes for ALPN, if it has one."""
    parameters = inspect.signature(factory_class).parameters
    for name in ("alpn_protocols", "alpn", "acceptable_protocols"):
        if name in parameters:
            return {name: protocols}
    raise ConfigurationError("twistls endpoint: alpn= is not supported by this version of twistls")


def _client_endpoint_from_parameters(reactor: Any, *args: str | bytes, **kwargs: str | bytes) -> TLSClientEndpoint:
    """Build a client endpoint from ``twistls:`` string parameters (see the module docstring).

    Raises:
        ConfigurationError: unknown or missing keys, bad values, missing files.
    """
    from twisted.internet.endpoints import HostnameEndpoint, clientFromString

    from twistls.context import ClientContextFactory

    v = _collect("client", ("host", "port"), _CLIENT_KEYS, args, kwargs)
    host = v.get("host", "").strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ConfigurationError("twistls client endpoint: host= is required (twistls:host=NAME:port=PORT)")
    if "port" not in v:
        raise ConfigurationError("twistls client endpoint: port= is required (twistls:host=NAME:port=PORT)")
    port = _int("port", v["port"], minimum=1, maximum=65535)
    timeout = _seconds("timeout", v.get("timeout", "30"), allow_none=False)
    handshake_timeout = _seconds("handshakeTimeout", v.get("handshakeTimeout", "30"), allow_none=True)
    options: dict[str, Any] = {
        "handshake_timeout": handshake_timeout,
        "allow_common_name": _bool("legacyCommonName", v.get("legacyCommonName", "no")),
        "insecure_skip_verify": _bool("insecureSkipVerify", v.get("insecureSkipVerify", "no")),
    }
    if "caFile" in v:
        options["cafile"] = _file("caFile", v["caFile"])
    if "caPath" in v:
        options["capath"] = _directory("caPath", v["caPath"])
    if "clientCertificate" in v:
        options["certificate"] = _file("clientCertificate", v["clientCertificate"])
    if "clientPrivateKey" in v:
        if "clientCertificate" not in v:
            raise ConfigurationError("twistls client endpoint: clientPrivateKey= needs clientCertificate=")
        options["private_key"] = _file("clientPrivateKey", v["clientPrivateKey"])
    if "passphraseFile" in v:
        if "clientCertificate" not in v:
            raise ConfigurationError("twistls client endpoint: passphraseFile= needs clientCertificate= (the key it opens)")
        options["passphrase"] = _passphrase_file("passphraseFile", v["passphraseFile"])
    if "clientCertificate" in v:
        _refuse_unreadable_encrypted_key(
            options.get("private_key", options["certificate"]),
            "passphraseFile" in v,
            label="twistls client endpoint",
            option="passphraseFile=FILE",
        )
    if "pins" in v:
        options["pins"] = _list("pins", v["pins"])
    if "alpn" in v:
        options.update(_alpn_keyword(ClientContextFactory, _list("alpn", v["alpn"])))
    if "pkiProfile" in v:
        from twistls._pkix import PKI_PROFILES

        if v["pkiProfile"] not in PKI_PROFILES:
            raise ConfigurationError(
                f"twistls client endpoint: pkiProfile= must be {' or '.join(PKI_PROFILES)}, not {v['pkiProfile']!r}"
            )
        options["pki_profile"] = v["pkiProfile"]
    try:
        context_factory = ClientContextFactory(host, **options)
    except ConfigurationError as exc:
        keys = ("passphraseFile", "caFile", "caPath", "clientPrivateKey", "clientCertificate")
        raise _naming_the_key("client", exc, v, keys) from None
    if "endpoint" in v:
        if "bindAddress" in v or "timeout" in v:
            raise ConfigurationError("twistls client endpoint: give timeout/bindAddress in endpoint=, not beside it")
        _refuse_repeated_keys("client", v["endpoint"], within="endpoint=: ")
        try:
            wrapped = clientFromString(reactor, v["endpoint"])
        except ConfigurationError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigurationError(f"twistls client endpoint: endpoint={v['endpoint']!r}: {exc}") from None
    else:
        bind = v.get("bindAddress")
        wrapped = HostnameEndpoint(
            reactor,
            host.encode("idna") if not _is_ip(host) else host.encode("ascii"),
            port,
            timeout=timeout,
            bindAddress=None if bind is None else (bind, 0),
        )
    return wrap_client_tls(host, context_factory, wrapped, clock=reactor, **_connection_options(v))


def _connection_options(v: dict[str, str]) -> dict[str, Any]:
    """The per-connection keys both roles take: idleTimeout, allowTruncation."""
    return {
        "idle_timeout": _seconds("idleTimeout", v.get("idleTimeout", "none"), allow_none=True),
        "allow_truncation": _bool("allowTruncation", v.get("allowTruncation", "no")),
    }


def _is_ip(host: str) -> bool:
    from twistls.checker import parse_ip

    return parse_ip(host) is not None


def _nested_server_endpoint(reactor: Any, description: str) -> Any:
    """The server endpoint of ``endpoint=`` (TCP, UNIX, systemd, ...), which carries the TLS bytes.

    Raises:
        ConfigurationError: a bad string, a repeated key, or a nested ``twistls:``.
    """
    from twisted.internet.endpoints import serverFromString

    _refuse_repeated_keys("server", description, within="endpoint=: ")
    args = _split_description(description)[0]
    if args and args[0].lower() in ("twistls", "ssl", "tls"):
        raise ConfigurationError(
            f"twistls server endpoint: endpoint={description!r} is TLS already: give a plain endpoint (tcp:, unix:, ...)"
        )
    try:
        return serverFromString(reactor, description)
    except ConfigurationError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(f"twistls server endpoint: endpoint={description!r}: {exc}") from None


def _server_endpoint_from_parameters(reactor: Any, *args: str | bytes, **kwargs: str | bytes) -> TLSServerEndpoint:
    """Build a server endpoint from ``twistls:`` string parameters (see the module docstring).

    Raises:
        ConfigurationError: unknown or missing keys, bad values, missing
            files, a key that does not match its certificate.
    """
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    from twistls.context import ServerContextFactory, _scan_sni_directory

    v = _collect("server", ("port",), _SERVER_KEYS, args, kwargs)
    if "endpoint" in v:
        for key in ("port", "interface", "backlog", "reusePort"):
            if key in v:
                raise ConfigurationError(f"twistls server endpoint: give {key} in endpoint=, not beside it")
    elif "port" not in v:
        raise ConfigurationError("twistls server endpoint: a port is required (twistls:PORT:certificate=FILE)")
    port = _int("port", v["port"], minimum=0, maximum=65535) if "port" in v else 0
    proxy_protocol = _bool("proxyProtocol", v.get("proxyProtocol", "no"))
    if "certificate" not in v and "sniDirectory" not in v:
        raise ConfigurationError("twistls server endpoint: certificate= is required (twistls:PORT:certificate=FILE)")
    certificate = _file("certificate", v["certificate"]) if "certificate" in v else None
    private_key = _file("privateKey", v["privateKey"]) if "privateKey" in v else None
    if private_key is not None and certificate is None:
        raise ConfigurationError("twistls server endpoint: privateKey= needs certificate=")
    backlog = _int("backlog", v.get("backlog", "50"), minimum=1)
    options: dict[str, Any] = {
        "handshake_timeout": _seconds("handshakeTimeout", v.get("handshakeTimeout", "30"), allow_none=True),
    }
    if "passphraseFile" in v:
        options["passphrase"] = _passphrase_file("passphraseFile", v["passphraseFile"])
    if "ticketKeyFile" in v:
        options["ticket_key_file"] = _file("ticketKeyFile", v["ticketKeyFile"])
    reuse_port = _bool("reusePort", v.get("reusePort", "no"))
    if reuse_port and port == 0:
        raise ConfigurationError("twistls server endpoint: reusePort=yes needs a fixed port (each process would get its own)")
    if certificate is not None:
        _refuse_unreadable_encrypted_key(
            private_key or certificate, "passphraseFile" in v, label="twistls server endpoint", option="passphraseFile=FILE"
        )
    if "caFile" in v:
        options["client_cafile"] = _file("caFile", v["caFile"])
    if "caPath" in v:
        options["client_capath"] = _directory("caPath", v["caPath"])
    if "requireClientCertificate" in v:
        if "caFile" not in v and "caPath" not in v:
            raise ConfigurationError(
                "twistls server endpoint: requireClientCertificate= needs caFile= or caPath= (the client CAs)"
            )
        options["require_client_certificate"] = _bool("requireClientCertificate", v["requireClientCertificate"])
    if certificate is None:  # sniDirectory= alone: its DEFAULT.pem serves clients without a known name
        context_factory = ServerContextFactory.from_directory(_directory("sniDirectory", v["sniDirectory"]), **options)
    else:
        directory = None
        if "sniDirectory" in v:  # certificate= serves clients that send no or an unknown name
            directory = _directory("sniDirectory", v["sniDirectory"])
            options["sni_certificates"] = _scan_sni_directory(directory)
        try:
            context_factory = ServerContextFactory(certificate, private_key, **options)
        except ConfigurationError as exc:
            keys = ("passphraseFile", "ticketKeyFile", "caFile", "caPath", "privateKey", "certificate", "sniDirectory")
            raise _naming_the_key("server", exc, v, keys) from None
        context_factory._sni_directory = directory  # reload() re-scans it
    if "endpoint" in v:
        wrapped = _nested_server_endpoint(reactor, v["endpoint"])
    else:
        interface = v.get("interface", "")
        if reuse_port:
            from twistls._workers import ReusePortTCPServerEndpoint

            try:
                wrapped = ReusePortTCPServerEndpoint(reactor, port, backlog=backlog, interface=interface)
            except ValueError as exc:
                raise ConfigurationError(f"twistls server endpoint: reusePort=yes: {exc}") from None
        else:
            endpoint_class: Callable[..., Any] = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
            wrapped = endpoint_class(reactor, port, backlog=backlog, interface=interface)
    endpoint = wrap_server_tls(
        context_factory, wrapped, clock=reactor, proxy_protocol=proxy_protocol, **_connection_options(v)
    )
    endpoint._reload_on_sighup = True
    return endpoint


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class _ClientParser:
    """``twistls:host=NAME:port=PORT[:key=value...]`` for ``clientFromString``."""

    prefix = "twistls"

    def parseStreamClient(self, reactor: Any, *args: str, **kwargs: str) -> TLSClientEndpoint:
        """Build the endpoint; see the module docstring for the keys.

        Twisted hands over only ``*args, **kwargs``, where a repeated key has
        already lost its first value; the string itself is read from the
        calling ``clientFromString`` frame to refuse repeats.

        Raises:
            ConfigurationError: a repeated, unknown, missing or empty key, a
                bad value, a missing file.
        """
        caller = sys._getframe(1)
        description = _description_from_twisted(caller, "clientFromString")
        try:
            if description is not None:
                _refuse_repeated_keys("client", description)
            return _client_endpoint_from_parameters(reactor, *args, **kwargs)
        except ConfigurationError as exc:
            _exit_if_twistd_is_starting(caller, description, exc)
            raise


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _ServerParser:
    """``twistls:PORT:certificate=FILE[:key=value...]`` for ``serverFromString``."""

    prefix = "twistls"

    def parseStreamServer(self, reactor: Any, *args: str, **kwargs: str) -> TLSServerEndpoint:
        """Build the endpoint; see the module docstring for the keys.

        As for the client, the string is read from the calling
        ``serverFromString`` frame (which ``twistd --listen`` and
        ``strports`` go through) to refuse repeated keys.

        Raises:
            ConfigurationError: a repeated, unknown, missing or empty key, a
                bad value, a missing file, a key not matching its certificate.
        """
        caller = sys._getframe(1)
        description = _description_from_twisted(caller, "serverFromString")
        try:
            if description is not None:
                _refuse_repeated_keys("server", description)
            return _server_endpoint_from_parameters(reactor, *args, **kwargs)
        except ConfigurationError as exc:
            _exit_if_twistd_is_starting(caller, description, exc)
            raise
