"""The ``twistls:`` endpoint-string parsers (registered by ``twisted/plugins/twistls_endpoints.py``).

:class:`_ClientParser` and :class:`_ServerParser` build a
:class:`~twistls.endpoints.TLSClientEndpoint` or
:class:`~twistls.endpoints.TLSServerEndpoint` from the string's keys
(:data:`_CLIENT_KEYS`, :data:`_SERVER_KEYS`; their reference is the
:mod:`twistls.endpoints` docstring).  The options each key turns into are
typed (:class:`_ClientOptions`, :class:`_ServerOptions`), so that mypy checks
them against the context factories' keywords.  Reading the string and its
values is :mod:`twistls._descriptions`.  twistls.context (hence M2Crypto) is
imported when a string is parsed, not when the plugin loads.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypedDict, TypeVar

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor, IStreamServerEndpointStringParser
from twisted.plugin import IPlugin
from zope.interface import implementer

from twistls._descriptions import _bool, _collect, _description_from_twisted, _directory, _exit_if_twistd_is_starting
from twistls._descriptions import _file, _int, _list, _naming_the_key, _passphrase_file, _refuse_repeated_keys
from twistls._descriptions import _refuse_unreadable_encrypted_key, _seconds, _split_description
from twistls.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from twistls._pemfiles import Passphrase
    from twistls.context import ServerContextFactory
    from twistls.endpoints import TLSClientEndpoint, TLSServerEndpoint

__all__ = ["_ClientParser", "_ServerParser", "_CLIENT_KEYS", "_SERVER_KEYS"]


class _ClientOptions(TypedDict, total=False):
    """The :class:`~twistls.context.ClientContextFactory` keywords a client string sets."""

    handshake_timeout: float | None
    allow_common_name: bool
    insecure_skip_verify: bool
    cafile: str
    capath: str
    certificate: str
    private_key: str
    passphrase: Passphrase
    pins: Sequence[str]
    alpn_protocols: Sequence[str]
    pki_profile: str


class _ServerOptions(TypedDict, total=False):
    """The :class:`~twistls.context.ServerContextFactory` keywords a server string sets."""

    handshake_timeout: float | None
    passphrase: Passphrase
    ticket_key_file: str
    client_cafile: str
    client_capath: str
    require_client_certificate: bool
    sni_certificates: dict[str, Any]


class _ConnectionOptions(TypedDict):
    """The per-connection keywords of both roles (``idleTimeout``, ``allowTruncation``)."""

    idle_timeout: float | None
    allow_truncation: bool


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


def _client_endpoint_from_parameters(reactor: Any, *args: str | bytes, **kwargs: str | bytes) -> TLSClientEndpoint:
    """Build a client endpoint from ``twistls:`` string parameters (see the module docstring).

    Raises:
        ConfigurationError: unknown or missing keys, bad values, missing files.
    """
    from twistls.context import ClientContextFactory
    from twistls.endpoints import wrap_client_tls

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
    options = _client_options(v)
    try:
        context_factory = ClientContextFactory(host, **options)
    except ConfigurationError as exc:
        keys = ("passphraseFile", "caFile", "caPath", "clientPrivateKey", "clientCertificate")
        raise _naming_the_key("client", exc, v, keys) from None
    wrapped = _client_transport(reactor, v, host, port, timeout)
    return wrap_client_tls(host, context_factory, wrapped, clock=reactor, **_connection_options(v))


def _client_options(v: dict[str, str]) -> _ClientOptions:
    """The :class:`~twistls.context.ClientContextFactory` keywords of a client string's keys.

    Raises:
        ConfigurationError: a bad value, a missing file, a key without the one it needs.
    """
    options: _ClientOptions = {
        "handshake_timeout": _seconds("handshakeTimeout", v.get("handshakeTimeout", "30"), allow_none=True),
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
        options["alpn_protocols"] = _list("alpn", v["alpn"])
    if "pkiProfile" in v:
        from twistls._pkix import PKI_PROFILES

        if v["pkiProfile"] not in PKI_PROFILES:
            raise ConfigurationError(
                f"twistls client endpoint: pkiProfile= must be {' or '.join(PKI_PROFILES)}, not {v['pkiProfile']!r}"
            )
        options["pki_profile"] = v["pkiProfile"]
    return options


def _client_transport(reactor: Any, v: dict[str, str], host: str, port: int, timeout: float) -> Any:
    """The endpoint that carries a client's TLS bytes: ``endpoint=``, else
    a ``HostnameEndpoint`` to ``host``/``port`` (``timeout``, ``bindAddress``).

    Raises:
        ConfigurationError: ``timeout``/``bindAddress`` beside ``endpoint=``, or a bad ``endpoint=``.
    """
    from twisted.internet.endpoints import HostnameEndpoint, clientFromString

    if "endpoint" in v:
        if "bindAddress" in v or "timeout" in v:
            raise ConfigurationError("twistls client endpoint: give timeout/bindAddress in endpoint=, not beside it")
        return _nested_endpoint("client", clientFromString, reactor, v["endpoint"])
    bind = v.get("bindAddress")
    return HostnameEndpoint(
        reactor,
        host.encode("idna") if not _is_ip(host) else host.encode("ascii"),
        port,
        timeout=timeout,
        bindAddress=None if bind is None else (bind, 0),
    )


def _connection_options(v: dict[str, str]) -> _ConnectionOptions:
    """The per-connection keys both roles take: idleTimeout, allowTruncation."""
    return {
        "idle_timeout": _seconds("idleTimeout", v.get("idleTimeout", "none"), allow_none=True),
        "allow_truncation": _bool("allowTruncation", v.get("allowTruncation", "no")),
    }


def _is_ip(host: str) -> bool:
    from twistls.checker import parse_ip

    return parse_ip(host) is not None


def _nested_endpoint(kind: str, from_string: Callable[[Any, str], Any], reactor: Any, description: str) -> Any:
    """The endpoint of ``endpoint=`` (``from_string`` is Twisted's
    ``clientFromString`` or ``serverFromString``), which carries the TLS bytes.

    Raises:
        ConfigurationError: a bad string or a repeated key.
    """
    _refuse_repeated_keys(kind, description, within="endpoint=: ")
    try:
        return from_string(reactor, description)
    except ConfigurationError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(f"twistls {kind} endpoint: endpoint={description!r}: {exc}") from None


def _nested_server_endpoint(reactor: Any, description: str) -> Any:
    """The server endpoint of ``endpoint=`` (TCP, UNIX, systemd, ...), which carries the TLS bytes.

    Raises:
        ConfigurationError: a bad string, a repeated key, or a nested ``twistls:``.
    """
    from twisted.internet.endpoints import serverFromString

    args = _split_description(description)[0]
    if args and args[0].lower() in ("twistls", "ssl", "tls"):
        raise ConfigurationError(
            f"twistls server endpoint: endpoint={description!r} is TLS already: give a plain endpoint (tcp:, unix:, ...)"
        )
    return _nested_endpoint("server", serverFromString, reactor, description)


def _server_endpoint_from_parameters(reactor: Any, *args: str | bytes, **kwargs: str | bytes) -> TLSServerEndpoint:
    """Build a server endpoint from ``twistls:`` string parameters (see the module docstring).

    Raises:
        ConfigurationError: unknown or missing keys, bad values, missing
            files, a key that does not match its certificate.
    """
    from twistls.endpoints import wrap_server_tls

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
    options: _ServerOptions = {
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
    context_factory = _server_context_factory(v, certificate, private_key, options)
    wrapped = _listening_endpoint(reactor, v, port, backlog, reuse_port)
    endpoint = wrap_server_tls(
        context_factory, wrapped, clock=reactor, proxy_protocol=proxy_protocol, **_connection_options(v)
    )
    endpoint._reload_on_sighup = True
    return endpoint


def _server_context_factory(
    v: dict[str, str], certificate: str | None, private_key: str | None, options: _ServerOptions
) -> ServerContextFactory:
    """The server policy of a string: ``certificate=`` (with ``sniDirectory=``
    beside it), or ``sniDirectory=`` alone.

    Raises:
        ConfigurationError: a bad file or directory, naming its key.
    """
    from twistls.context import ServerContextFactory, _scan_sni_directory

    if certificate is None:  # sniDirectory= alone: its DEFAULT.pem serves clients without a known name
        return ServerContextFactory.from_directory(_directory("sniDirectory", v["sniDirectory"]), **options)
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
    return context_factory


def _listening_endpoint(reactor: Any, v: dict[str, str], port: int, backlog: int, reuse_port: bool) -> Any:
    """The endpoint that accepts a server's TLS bytes: ``endpoint=``, else
    TCP on ``port``/``interface`` (IPv6 for an IPv6 interface; with
    ``SO_REUSEPORT`` for ``reusePort=yes``).

    Raises:
        ConfigurationError: a bad ``endpoint=``, or ``SO_REUSEPORT`` unavailable.
    """
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    if "endpoint" in v:
        return _nested_server_endpoint(reactor, v["endpoint"])
    interface = v.get("interface", "")
    if reuse_port:
        from twistls._workers import ReusePortTCPServerEndpoint

        try:
            return ReusePortTCPServerEndpoint(reactor, port, backlog=backlog, interface=interface)
        except ValueError as exc:
            raise ConfigurationError(f"twistls server endpoint: reusePort=yes: {exc}") from None
    endpoint_class: Callable[..., Any] = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
    return endpoint_class(reactor, port, backlog=backlog, interface=interface)


_Endpoint = TypeVar("_Endpoint")


def _parse_string(
    kind: str,
    caller: FrameType | None,
    build: Callable[..., _Endpoint],
    reactor: Any,
    args: tuple[str, ...],
    kwargs: dict[str, str],
) -> _Endpoint:
    """What both parsers do: refuse a repeated key of the string being
    parsed (read from the calling ``clientFromString``/``serverFromString``
    frame, ``caller``: Twisted hands over only ``*args, **kwargs``, where a
    repeated key has already lost its first value), ``build`` the endpoint,
    and under twistd's start-up turn a ConfigurationError into one line.

    Raises:
        ConfigurationError: from ``build``, or a repeated key.
        SystemExit: under twistd's start-up, instead of the ConfigurationError.
    """
    description = _description_from_twisted(caller, f"{kind}FromString")
    try:
        if description is not None:
            _refuse_repeated_keys(kind, description)
        return build(reactor, *args, **kwargs)
    except ConfigurationError as exc:
        _exit_if_twistd_is_starting(caller, description, exc)
        raise


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class _ClientParser:
    """``twistls:host=NAME:port=PORT[:key=value...]`` for ``clientFromString``."""

    prefix = "twistls"

    def parseStreamClient(self, reactor: Any, *args: str, **kwargs: str) -> TLSClientEndpoint:
        """Build the endpoint; see the :mod:`twistls.endpoints` docstring for the keys.

        The string itself is read from the calling ``clientFromString``
        frame to refuse repeated keys.

        Raises:
            ConfigurationError: a repeated, unknown, missing or empty key, a
                bad value, a missing file.
        """
        return _parse_string("client", sys._getframe(1), _client_endpoint_from_parameters, reactor, args, kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _ServerParser:
    """``twistls:PORT:certificate=FILE[:key=value...]`` for ``serverFromString``."""

    prefix = "twistls"

    def parseStreamServer(self, reactor: Any, *args: str, **kwargs: str) -> TLSServerEndpoint:
        """Build the endpoint; see the :mod:`twistls.endpoints` docstring for the keys.

        As for the client, the string is read from the calling
        ``serverFromString`` frame (which ``twistd --listen`` and
        ``strports`` go through) to refuse repeated keys.

        Raises:
            ConfigurationError: a repeated, unknown, missing or empty key, a
                bad value, a missing file, a key not matching its certificate.
        """
        return _parse_string("server", sys._getframe(1), _server_endpoint_from_parameters, reactor, args, kwargs)
