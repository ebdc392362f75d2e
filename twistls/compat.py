"""Drop-in replacements for ``M2Crypto.SSL.TwistedProtocolWrapper``, with secure defaults.

Code written for M2Crypto's wrapper moves over by changing one import::

    # from M2Crypto.SSL.TwistedProtocolWrapper import connectSSL, listenSSL, connectTCP
    from twistls.compat import connectSSL, listenSSL, connectTCP

and by passing twistls context factories instead of M2Crypto ``SSL.Context``
objects (see below).  The functions keep M2Crypto's names, argument order,
defaults for ``timeout``/``bindAddress``/``backlog``/``interface`` and return
values (an ``IConnector`` or an ``IListeningPort``), so call sites need no
other change.

## Differences

Every way these functions behave differently from M2Crypto 0.51's
``TwistedProtocolWrapper``, and why:

1. **Context objects.**  ``contextFactory`` must be a
   :class:`twistls.ClientContextFactory` (``connectSSL``; ``startTLS`` after
   ``connectTCP``) or :class:`twistls.ServerContextFactory` (``listenSSL``;
   ``startTLS`` after ``listenTCP``).  An M2Crypto ``SSL.Context`` raises
   :class:`~twistls.errors.ConfigurationError` at once: its verify mode, CA
   list and options cannot be read back from OpenSSL reliably, and M2Crypto's
   defaults (``SSL_VERIFY_NONE``, stale ``SSL_OP_ALL`` bits) are exactly what
   twistls exists to replace.  Build the equivalent with
   ``ClientContextFactory(cafile=...)`` /
   ``ServerContextFactory(certificate, private_key, client_cafile=...)``.
2. **Verification is on by default.**  The client verifies the server's
   chain against the system trust store (or ``cafile``/``capath``), with TLS
   1.2 as the minimum; M2Crypto verified nothing unless the ``Context`` was
   set up to.  Only ``ClientContextFactory(insecure_skip_verify=True)``
   turns it off.
3. **The hostname checked is the one you asked for.**  ``connectSSL(host,
   ...)`` checks the certificate against ``host`` as passed (through
   service-identity, RFC 6125: subjectAltName only, no commonName unless
   ``allow_common_name=True``), never against the address the socket ended
   up connected to (M2Crypto used ``transport.addr[0]``).  A factory that
   already names a host (``ClientContextFactory("db.example")``) keeps that
   name, so you can dial ``10.0.0.5`` and expect ``db.example``.  The name is
   also sent as SNI (M2Crypto sent none).
4. **postConnectionCheck.**  The default is no longer a shared, mutable
   M2Crypto ``Checker()`` instance: the twistls Checker (built into the
   context factory) always runs.  A callable you pass runs *in addition*,
   after it, as ``check(peer_x509, expected_host)`` where ``peer_x509`` is an
   ``M2Crypto.X509.X509`` (or ``None``) and ``expected_host`` is the
   ``host`` given to ``connectSSL``/``connectTCP`` (for servers: the
   client's IP address, as M2Crypto did).  It can only reject: a false
   return value or any exception fails the connection with
   :class:`~twistls.errors.VerificationError`.  ``postConnectionCheck=None``
   (which disabled checking in M2Crypto) raises ``ConfigurationError``:
   use ``insecure_skip_verify=True`` on the factory if you really mean it.
5. **Nothing reaches the application before the check.**  M2Crypto called
   the protocol's ``connectionMade`` and could deliver data before its
   check; twistls holds every byte in both directions until the handshake
   and the checks passed.  (``connectionMade`` is still called at TCP
   connect, so that protocols may write early; those writes are buffered.)
6. **Failures are typed.**  They arrive as ``connectionLost(Failure(e))``
   with ``e`` a :mod:`twistls.errors` type (``HostnameMismatchError``,
   ``UntrustedCertificateError``, ``HandshakeTimeoutError``, ...), never as a
   bare ``IOError``/``SSLVerificationError`` raised out of a reactor
   callback.
7. **Clean close.**  ``loseConnection`` sends close_notify; a peer that
   closes without one is reported as
   :class:`~twistls.errors.ConnectionTruncatedError` (M2Crypto never sent
   nor noticed close_notify).
8. **Handshake timeout.**  A handshake that has not finished after the
   factory's ``handshake_timeout`` (30 s by default) is aborted; M2Crypto had
   none.
9. **STARTTLS** (``connectTCP``/``listenTCP``): ``transport.startTLS(ctx)``
   takes a twistls factory; a client factory without a hostname is bound to
   the ``host`` given to ``connectTCP``.  Calling it twice raises
   :class:`~twistls.errors.EngineStateError` (M2Crypto raised a bare
   ``Exception``).  ``connectTCP`` also accepts a factory as its fourth
   positional argument (``connectTCP(host, port, factory, ctx)``, in place
   of ``timeout``); the protocol may then call ``startTLS(None)`` to use it.
10. **listenSSL without a check.**  As in M2Crypto, servers do not check the
    client's name; client certificates are requested, required and verified
    only when the ``ServerContextFactory`` has ``client_cafile``/``client_capath``.
11. **Transport features** M2Crypto lacked are present: ``getPeerCertificate()``
    (a ``cryptography`` certificate, not an M2Crypto one),
    ``abortConnection``, producers with real TLS-level flow control,
    ``IHandshakeListener``, ``when_handshake_done()``, ``connection_info()``.
12. ``TLSProtocolWrapper``'s int flags (``startPassThrough``, ``client``) and
    the module-level ``debug`` switch do not exist; use
    :class:`twistls.TLSWrappingFactory` for anything beyond these functions.

.. versionadded:: 0.1
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twistls.context import ClientContextFactory, ServerContextFactory
from twistls.errors import ConfigurationError, TLSError, VerificationError
from twistls.protocol import TLSProtocolWrapper, TLSWrappingFactory

__all__ = ["connectSSL", "connectTCP", "listenSSL", "listenTCP"]

PostConnectionCheck = Callable[[Any, "str | None"], Any]


class _Default:
    """Marks "no postConnectionCheck given": the twistls Checker alone."""

    def __repr__(self) -> str:
        return "<the twistls Checker, on the host passed in>"


DEFAULT_CHECK: Any = _Default()


def _reactor(reactor: Any) -> Any:
    if reactor is None:
        from twisted.internet import reactor as default

        return default
    return reactor


def _refuse_m2(ctx: Any, where: str, wanted: str) -> None:
    if type(ctx).__module__.startswith("M2Crypto"):
        raise ConfigurationError(
            f"{where} got an M2Crypto {type(ctx).__name__}; twistls cannot take its settings over safely "
            f"(its verify mode and trust store cannot be read back). Pass a twistls.{wanted} instead, e.g. "
            + (
                "ClientContextFactory(cafile='ca.pem')"
                if wanted == "ClientContextFactory"
                else "ServerContextFactory('server.pem', 'key.pem')"
            )
        )


def _client_factory(ctx: Any, host: str, where: str) -> ClientContextFactory:
    _refuse_m2(ctx, where, "ClientContextFactory")
    if not isinstance(ctx, ClientContextFactory):
        raise ConfigurationError(f"{where} needs a twistls.ClientContextFactory, not {type(ctx).__name__}")
    if ctx.hostname is None:
        return ctx.with_hostname(host)
    return ctx


def _server_factory(ctx: Any, where: str) -> ServerContextFactory:
    _refuse_m2(ctx, where, "ServerContextFactory")
    if not isinstance(ctx, ServerContextFactory):
        raise ConfigurationError(f"{where} needs a twistls.ServerContextFactory, not {type(ctx).__name__}")
    return ctx


def _check_argument(check: Any, where: str, *, client: bool = True) -> PostConnectionCheck | None:
    if check is DEFAULT_CHECK or (check is None and not client):
        return None
    if check is None:
        raise ConfigurationError(
            f"{where}(postConnectionCheck=None) would skip checking the peer; twistls never does that "
            "silently. Leave postConnectionCheck out (the twistls Checker runs), or build the context "
            "factory with insecure_skip_verify=True if you really mean it."
        )
    if not callable(check):
        raise ConfigurationError(f"{where}: postConnectionCheck must be callable, not {type(check).__name__}")
    return check  # type: ignore[no-any-return]


def _run_check(check: PostConnectionCheck, peer_chain: Sequence[bytes], expected: str | None) -> None:
    der = peer_chain[0] if peer_chain else None
    peer = None
    if der:
        from M2Crypto import X509

        peer = X509.load_cert_der_string(der)
    name = getattr(check, "__name__", type(check).__name__)
    try:
        accepted = check(peer, expected)
    except TLSError:
        raise
    except Exception as exc:
        raise VerificationError(
            f"postConnectionCheck {name} rejected the peer (expected {expected!r}): {type(exc).__name__}: {exc}",
            verify_message="postConnectionCheck rejected the peer",
            depth=0,
        ) from exc
    if not accepted:
        raise VerificationError(
            f"postConnectionCheck {name} rejected the peer (expected {expected!r})",
            verify_message="postConnectionCheck rejected the peer",
            depth=0,
        )


class _Checked:
    """A context factory plus one extra post-connection check (delegates everything else)."""

    def __init__(self, inner: Any, check: PostConnectionCheck, expected: str | None) -> None:
        self._inner = inner
        self._check = check
        self._expected = expected

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def create_engine(self, *args: Any, **kwargs: Any) -> Any:
        engine = self._inner.create_engine(*args, **kwargs)
        first = engine._verifier
        check, expected = self._check, self._expected

        def verifier(peer_chain: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> None:
            if first is not None:
                first(peer_chain, verified_chain)
            _run_check(check, peer_chain, expected)

        engine._verifier = verifier
        return engine


class _CompatWrapper(TLSProtocolWrapper):
    """Starts TLS at connect (SSL modes) or on ``startTLS`` (TCP modes),
    with the context and check the compat function was given."""

    factory: _CompatFactory

    def connectionMade(self) -> None:
        super().connectionMade()  # the factory is in start_tls mode: nothing starts here
        factory = self.factory
        if factory.tls_on_connect and not self._lost:
            try:
                self.start_tls(factory.context_factory)
            except ConfigurationError as exc:
                from twisted.logger import Logger

                Logger(namespace="twistls").error("twistls.compat: {error}", error=str(exc))
                self.abortConnection()

    def start_tls(self, context_factory: Any = None, normal: bool = True) -> None:
        factory = self.factory
        if context_factory is None:
            context_factory = factory.context_factory
        if context_factory is None:
            raise ConfigurationError("startTLS needs a twistls context factory")
        if factory.client:
            cf: Any = _client_factory(context_factory, factory.hostname or "", "startTLS")
            expected = factory.hostname if cf.hostname is None else cf.hostname
        else:
            cf = _server_factory(context_factory, "startTLS")
            expected = _peer_host(self.transport)
        if factory.check is not None:
            cf = _Checked(cf, factory.check, expected)
        super().start_tls(cf, normal)

    startTLS = start_tls


def _peer_host(transport: Any) -> str | None:
    try:
        return getattr(transport.getPeer(), "host", None)
    except Exception:
        return None


class _CompatFactory(TLSWrappingFactory):
    protocol = _CompatWrapper

    def __init__(
        self,
        wrapped: Any,
        context_factory: Any,
        *,
        client: bool,
        tls_on_connect: bool,
        hostname: str | None,
        check: PostConnectionCheck | None,
        clock: Any,
    ) -> None:
        super().__init__(wrapped, context_factory, start_tls=True, clock=clock)
        self.client = client
        self.tls_on_connect = tls_on_connect
        self.hostname = hostname
        self.check = check


def connectSSL(
    host: str,
    port: int,
    factory: Any,
    contextFactory: Any,
    timeout: int = 30,
    bindAddress: Any = None,
    reactor: Any = None,
    postConnectionCheck: Any = DEFAULT_CHECK,
) -> Any:
    """Connect with TLS from the first byte (M2Crypto's ``connectSSL`` shape).

    Args:
        host: the host to dial, and the name the certificate must hold
            (unless ``contextFactory`` already names one).
        port: the TCP port.
        factory: the application's protocol factory.
        contextFactory: a :class:`twistls.ClientContextFactory`.
        timeout: TCP connect timeout in seconds.
        bindAddress: ``(host, port)`` to bind the local end to.
        reactor: the reactor (default: the global one).
        postConnectionCheck: an extra ``check(peer_x509, host)`` that can only
            reject (see *Differences* 4).

    Returns:
        The ``IConnector`` of ``reactor.connectTCP``.

    Raises:
        ConfigurationError: an M2Crypto ``Context`` or another non-twistls
            factory, ``postConnectionCheck=None``, or an invalid hostname.

    .. versionadded:: 0.1
    """
    reactor = _reactor(reactor)
    cf = _client_factory(contextFactory, host, "connectSSL")
    check = _check_argument(postConnectionCheck, "connectSSL")
    wrapping = _CompatFactory(
        factory, cf, client=True, tls_on_connect=True, hostname=cf.hostname, check=check, clock=reactor
    )
    return reactor.connectTCP(host, port, wrapping, timeout, bindAddress)


def connectTCP(
    host: str,
    port: int,
    factory: Any,
    timeout: Any = 30,
    bindAddress: Any = None,
    reactor: Any = None,
    postConnectionCheck: Any = DEFAULT_CHECK,
) -> Any:
    """Connect in the clear; TLS starts when the protocol calls
    ``self.transport.startTLS(ctx)`` (M2Crypto's ``connectTCP`` shape).

    ``ctx`` is a :class:`twistls.ClientContextFactory`; without a hostname of
    its own it checks ``host``.  A factory may also be given as the fourth
    positional argument (in place of ``timeout``); ``startTLS(None)`` then
    uses it.

    Returns:
        The ``IConnector`` of ``reactor.connectTCP``.

    Raises:
        ConfigurationError: ``postConnectionCheck=None`` or a non-twistls factory.

    .. versionadded:: 0.1
    """
    reactor = _reactor(reactor)
    cf = None
    if not isinstance(timeout, (int, float)):
        cf = _client_factory(timeout, host, "connectTCP")
        timeout = 30
    check = _check_argument(postConnectionCheck, "connectTCP")
    wrapping = _CompatFactory(factory, cf, client=True, tls_on_connect=False, hostname=host, check=check, clock=reactor)
    return reactor.connectTCP(host, port, wrapping, timeout, bindAddress)


def listenSSL(
    port: int,
    factory: Any,
    contextFactory: Any,
    backlog: int = 5,
    interface: str = "",
    reactor: Any = None,
    postConnectionCheck: Any = DEFAULT_CHECK,
) -> Any:
    """Listen with TLS from the first byte (M2Crypto's ``listenSSL`` shape).

    Args:
        port: the TCP port (0: any free port).
        factory: the application's protocol factory.
        contextFactory: a :class:`twistls.ServerContextFactory`.
        backlog: listen backlog.
        interface: address to listen on (``""``: all IPv4 addresses).
        reactor: the reactor (default: the global one).
        postConnectionCheck: an extra ``check(peer_x509_or_None, client_ip)``
            that can only reject.

    Returns:
        The ``IListeningPort`` of ``reactor.listenTCP``.

    Raises:
        ConfigurationError: an M2Crypto ``Context`` or another non-twistls
            factory, or a ``postConnectionCheck`` that is not callable.

    .. versionadded:: 0.1
    """
    reactor = _reactor(reactor)
    cf = _server_factory(contextFactory, "listenSSL")
    check = _check_argument(postConnectionCheck, "listenSSL", client=False)
    wrapping = _CompatFactory(factory, cf, client=False, tls_on_connect=True, hostname=None, check=check, clock=reactor)
    return reactor.listenTCP(port, wrapping, backlog, interface)


def listenTCP(
    port: int,
    factory: Any,
    backlog: int = 5,
    interface: str = "",
    reactor: Any = None,
    postConnectionCheck: Any = DEFAULT_CHECK,
) -> Any:
    """Listen in the clear; TLS starts when the protocol calls
    ``self.transport.startTLS(server_context_factory)`` (M2Crypto's ``listenTCP`` shape).

    Returns:
        The ``IListeningPort`` of ``reactor.listenTCP``.

    Raises:
        ConfigurationError: ``postConnectionCheck`` is not callable.

    .. versionadded:: 0.1
    """
    reactor = _reactor(reactor)
    check = _check_argument(postConnectionCheck, "listenTCP", client=False)
    wrapping = _CompatFactory(factory, None, client=False, tls_on_connect=False, hostname=None, check=check, clock=reactor)
    return reactor.listenTCP(port, wrapping, backlog, interface)
