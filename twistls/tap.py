"""``twistd twistls``: a TLS-terminating proxy and a TLS/STARTTLS echo server.

Registered by ``twisted/plugins/twistls_service.py``.  Sub-commands:

``proxy``
    ``twistd -n twistls proxy --listen twistls:8443:certificate=server.pem
    --connect tcp:127.0.0.1:8080`` accepts TLS and forwards the plaintext to
    a backend (stunnel's server mode).  The reverse,
    ``--listen tcp:8080:interface=127.0.0.1 --connect twistls:host=db.example:port=443:caFile=ca.pem``,
    accepts plaintext and connects out over verified TLS (stunnel's client
    mode).  Any endpoint strings work on either side.  The backend is
    dialled only after the incoming TLS handshake succeeded; bytes flow only
    after the outgoing TLS connection was verified; each side's reading is
    paused while the other side's send buffer is full (flow control both
    ways); a close on one side closes the other cleanly (close_notify).

``echo``
    A TLS echo server for testing clients: ``--listen`` (a server endpoint
    string) or ``--certificate``/``--private-key``/``--port``/``--interface``;
    with ``--starttls-port`` it also listens in the clear, where a client
    sends ``STARTTLS\\r\\n``, reads ``OK begin TLS\\r\\n``, and then handshakes;
    after that everything is echoed.  The STARTTLS port always uses the TLS
    port's policy (certificate, ``--client-ca``, timeouts, truncation), so
    every option reaches every port: with ``--listen twistls:...``,
    ``--client-ca`` is added to that string as ``caFile=``, and
    ``--certificate``/``--private-key`` (a second certificate) are refused.

Options that could reach only some listeners, or none (``--client-ca`` or a
timeout with a non-``twistls:`` ``--listen``), are refused rather than
ignored, and so is any endpoint string that gives a key twice.

Bad options (a missing certificate file, a key that does not match the
certificate, an unknown endpoint keyword) end twistd with exit status 1 and
one line naming the option and the file (no usage dump), and so does a port
that cannot be opened.  ``SIGHUP`` reloads every TLS certificate (the same
process-wide handler as every ``twistls:`` string, see
:mod:`twistls.context`).  ``--passphrase-file`` opens encrypted keys;
``--proxy-protocol`` reads a PROXY v1/v2 header before the handshake.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, cast

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twistls._typing import TLSTransport, Transport

__all__ = ["Options", "makeService"]

log = Logger(namespace="twistls.tap")

_TIMEOUT_HELP = (
    "Seconds a TLS handshake may take before the connection is dropped "
    "(applies to twistls: endpoints that do not set handshakeTimeout= "
    "themselves) [default: 30]"
)


def _positive_seconds_for(option: str) -> Any:
    """A usage.Options coerce function for a positive number of seconds,
    whose error names ``option``."""

    def coerce(value: str) -> float:
        number = float(value)
        if not number > 0 or number == float("inf"):
            raise ValueError(f"{option} must be a positive number of seconds, not {value!r}")
        return number

    coerce.coerceDoc = "A positive number of seconds."  # type: ignore[attr-defined]
    return coerce


_positive_seconds = _positive_seconds_for("--handshake-timeout")
_positive_idle_seconds = _positive_seconds_for("--idle-timeout")


_PASSPHRASE_HELP = (
    "File holding the passphrase of an encrypted private key (read at start-up and at each SIGHUP reload; "
    "one trailing newline is stripped); added to twistls: strings that load a key as passphraseFile="
)

_PROXY_PROTOCOL_HELP = (
    "Every connection starts with a PROXY protocol v1/v2 header from HAProxy or a load balancer, read before "
    "the TLS handshake (getPeer() and logs show the client it names); added to a twistls: --listen as "
    "proxyProtocol=yes."
)


def _add_proxy_protocol(option: str, description: str, keys: dict[str, str] | None, defaults: dict[str, str | None]) -> None:
    """Add ``proxyProtocol=yes`` to a ``twistls:`` string's ``defaults``, or refuse."""
    if keys is None:
        raise usage.UsageError(
            f"--proxy-protocol needs a twistls: {option} string, not {description!r} "
            "(for a plaintext listener, use Twisted's haproxy: prefix)"
        )
    if "proxyProtocol" in keys and _is_no(keys["proxyProtocol"]):
        raise usage.UsageError(f"--proxy-protocol conflicts with proxyProtocol={keys['proxyProtocol']} in {option} {description!r}")
    defaults["proxyProtocol"] = "yes"


_IDLE_HELP = (
    "Seconds an established TLS connection may carry no data before it is closed "
    "(applies to twistls: endpoints that do not set idleTimeout= themselves) [default: never]"
)


def _escape(value: str) -> str:
    """``value`` written as an endpoint-string value (``\\`` and ``:`` escaped)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _keys(option: str, description: str) -> dict[str, str] | None:
    """The ``key=value`` pairs of ``description`` if it is a ``twistls:``
    string (any case, as Twisted matches prefixes), else ``None``.

    Raises:
        usage.UsageError: the string gives a key twice or ends with a lone
            backslash.
    """
    from twistls.endpoints import _refuse_repeated_keys, _split_description
    from twistls.errors import ConfigurationError

    try:
        _refuse_repeated_keys("", description)
        args, pairs = _split_description(description)
    except ConfigurationError as exc:
        raise _one_line(option, description, exc) from None
    if not args or args[0].lower() != "twistls":
        return None
    return dict(pairs)


def _with_defaults(description: str, keys: dict[str, str], defaults: dict[str, str | None]) -> str:
    """Add each of ``defaults`` that is set to a ``twistls:`` string whose
    ``keys`` lack it."""
    for key, value in defaults.items():
        if value is not None and key not in keys:
            description = f"{description}:{key}={_escape(value)}"
    return description


def _seconds_text(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def _one_line(option: str, value: str, exc: BaseException) -> usage.UsageError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith(f"{option} {value!r}"):  # already names it
        return usage.UsageError(text)
    return usage.UsageError(f"{option} {value!r}: {text}")


def _blame(exc: BaseException, candidates: tuple[tuple[str, str | None], ...]) -> usage.UsageError:
    """The one-line error for ``exc``, naming the first option whose file the
    error names (a key mismatch names the key before the certificate), or the
    last candidate."""
    text = str(exc)
    given: list[tuple[str, str]] = [(option, value) for option, value in candidates if value]
    for option, value in given:
        if option == "--passphrase-file" and "wrong passphrase" in text:  # the key is fine; its passphrase is not
            return _one_line(option, value, exc)
    for option, value in given:
        if repr(os.path.expanduser(value)) in text or repr(value) in text:
            return _one_line(option, value, exc)
    option, value = given[-1]
    return _one_line(option, value, exc)


def _refuse_idle_options(where: str, timeout: float | None, idle: float | None) -> None:
    """Refuse ``--handshake-timeout``/``--idle-timeout`` when no TLS endpoint would take them."""
    for option, value in (("--handshake-timeout", timeout), ("--idle-timeout", idle)):
        if value is not None:
            raise usage.UsageError(f"{option} applies to no TLS endpoint: {where} (use twistls: strings)")


def _server_endpoint(option: str, description: str, defaults: dict[str, str | None]) -> Any:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    keys = _keys(option, description)
    if keys is not None:
        description = _with_defaults(description, keys, defaults)
    try:
        return serverFromString(reactor, description)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise _one_line(option, description, exc) from None


def _client_endpoint(option: str, description: str, defaults: dict[str, str | None]) -> Any:
    from twisted.internet import reactor
    from twisted.internet.endpoints import clientFromString

    keys = _keys(option, description)
    if keys is not None:
        description = _with_defaults(description, keys, defaults)
    try:
        return clientFromString(reactor, description)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise _one_line(option, description, exc) from None


def _timeouts(timeout: float | None, idle: float | None) -> dict[str, str | None]:
    return {"handshakeTimeout": _seconds_text(timeout), "idleTimeout": _seconds_text(idle)}


def _check_passphrase_file(path: str) -> None:
    if not os.path.isfile(os.path.expanduser(path)):
        raise usage.UsageError(f"--passphrase-file {path!r}: no such file")


def _refuse_second_passphrase(option: str, description: str, keys: dict[str, str], passphrase: str) -> str:
    """``passphrase`` for a ``twistls:`` string, unless it names its own."""
    if "passphraseFile" in keys:
        raise usage.UsageError(
            f"--passphrase-file conflicts with passphraseFile= in {option} {description!r}: name the passphrase once"
        )
    return passphrase


_SCALE_OPTIONS = [
    ["workers", None, 1, "Run this many worker processes on the same port(s) (SO_REUSEPORT, Linux): the "
     "twistd process supervises them, replaces one that dies and forwards SIGHUP and SIGTERM "
     "[default: 1, no workers].", int],
    ["ticket-key-file", None, None, "Session-ticket key file shared by the workers (and by other servers of "
     "the same name): clients resume on any of them. Make and rotate it with 'twistls mkticketkey FILE "
     "[--rotate]', then SIGHUP. [default: a random key per process]"],
    ["drain-timeout", None, 30.0, "On SIGTERM, seconds established connections may go on before they are "
     "closed with close_notify [default: 30].", float],
]


def _scale_defaults(opts: usage.Options, option: str, description: str | None, keys: dict[str, str] | None,
                    defaults: dict[str, str | None]) -> None:
    """Add ``reusePort``/``ticketKeyFile`` for ``--workers``/``--ticket-key-file``
    to a ``twistls:`` string's ``defaults``, or refuse."""
    workers, tickets = opts["workers"], opts["ticket-key-file"]
    if workers > 1 or tickets is not None:
        if keys is None:
            wants = "--workers" if workers > 1 else "--ticket-key-file"
            raise usage.UsageError(f"{wants} needs a twistls: {option} string, not {description!r}")
        if workers > 1:
            if "endpoint" in keys:
                raise usage.UsageError(f"--workers needs a port in {option}, not endpoint= (SO_REUSEPORT)")
            defaults["reusePort"] = "yes"
        if tickets is not None:
            if "ticketKeyFile" in keys:
                raise usage.UsageError(f"--ticket-key-file conflicts with ticketKeyFile= in {option} {description!r}")
            defaults["ticketKeyFile"] = tickets


def _check_scale_options(opts: usage.Options) -> None:
    if opts["workers"] < 1:
        raise usage.UsageError(f"--workers must be 1 or more, not {opts['workers']}")
    if opts["workers"] > 1:
        from twistls._workers import reuse_port_supported

        if not reuse_port_supported():
            raise usage.UsageError("--workers needs Linux (SO_REUSEPORT)")
    if not opts["drain-timeout"] >= 0:
        raise usage.UsageError(f"--drain-timeout must be 0 or more seconds, not {opts['drain-timeout']}")
    if opts["ticket-key-file"] is not None and not os.path.isfile(os.path.expanduser(opts["ticket-key-file"])):
        raise usage.UsageError(
            f"--ticket-key-file {opts['ticket-key-file']!r}: no such file (make one with 'twistls mkticketkey FILE')"
        )


# -- proxy --------------------------------------------------------------------------


@implementer(IPushProducer)
class _ReadSide:
    """The reading half of one transport, as a producer for the other side.

    Pausing stops reading; ``stopProducing`` does nothing, because the proxy
    closes each side itself (a TLS side with close_notify), rather than
    letting the other transport drop it.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class _ProxyPeer(Protocol):
    """Shared by both halves: forward bytes and closes to ``peer``."""

    transport: Transport  # type: ignore[assignment]  # set by makeConnection (see twistls._typing)
    peer: _ProxyPeer | None = None
    closed = False

    def pair(self, other: _ProxyPeer) -> None:
        self.peer = other
        other.peer = self
        # Each side's send buffer throttles the other side's reading.
        self.transport.registerProducer(_ReadSide(other.transport), True)
        other.transport.registerProducer(_ReadSide(self.transport), True)

    def dataReceived(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            if not peer.closed:
                peer.transport.unregisterProducer()
                peer.transport.loseConnection()


class _ProxyClient(_ProxyPeer):
    """The outgoing (backend) half."""


@implementer(IHandshakeListener)
class _ProxyServer(_ProxyPeer):
    """The incoming half: dials the backend once its own TLS handshake is
    done, on any TLS listener: twistls' (``when_handshake_done``) or
    Twisted's own ``ssl:``/``tls:`` (``handshakeCompleted``), so that an idle
    TCP client never holds a backend connection."""

    _awaiting_handshake = False

    def connectionMade(self) -> None:
        from twisted.internet.interfaces import INegotiated

        self._pending: list[bytes] = []
        self._connecting: Any = None
        transport = self.transport
        if getattr(transport, "tls_started", False):
            cast("TLSTransport", transport).when_handshake_done().addCallbacks(self._ready, lambda _failure: None)
        elif INegotiated.providedBy(transport):  # Twisted's TLS: it calls handshakeCompleted()
            self._awaiting_handshake = True
        else:
            self._ready(None)

    def handshakeCompleted(self) -> None:
        """Twisted's TLS finished its handshake (twistls' is awaited in ``connectionMade``)."""
        if self._awaiting_handshake:
            self._awaiting_handshake = False
            self._ready(None)

    def _ready(self, _info: Any) -> None:
        if self.closed:
            return
        self.transport.pauseProducing()
        backend_factory = ClientFactory.forProtocol(_ProxyClient)
        backend_factory.noisy = False  # one per connection: no "Starting/Stopping factory" pair each
        d = self.factory.backend.connect(backend_factory)
        self._connecting = d
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, client: _ProxyClient) -> None:
        self._connecting = None
        if self.closed:
            client.transport.loseConnection()
            return
        self.pair(client)
        pending, self._pending = self._pending, []
        for chunk in pending:
            client.transport.write(chunk)
        self.transport.resumeProducing()

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if self.closed:
            return
        from twistls.errors import TLSError

        if failure.check(TLSError) is None:  # a TLS failure was logged by the backend's TLS layer
            self._log_backend_failure(failure)
        self.transport.loseConnection()

    def _log_backend_failure(self, failure: Failure) -> None:
        log.warn(
            "proxy: backend connection failed: {reason}",
            # A Failure made from an exception always has its type.
            reason=" ".join(str(failure.value).split()) or failure.type.__name__,  # type: ignore[union-attr]
        )

    def dataReceived(self, data: bytes) -> None:
        if self.peer is None:
            self._pending.append(data)  # arrived with the end of the handshake
        else:
            self.peer.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        super().connectionLost(reason)
        connecting, self._connecting = getattr(self, "_connecting", None), None
        if connecting is not None:
            connecting.cancel()


class _ProxyFactory(Factory):
    protocol = _ProxyServer

    def __init__(self, backend: Any) -> None:
        self.backend = backend


class ProxyOptions(usage.Options):
    """``twistd twistls proxy``."""

    synopsis = (
        "--listen SERVER-ENDPOINT --connect CLIENT-ENDPOINT [--handshake-timeout SECONDS] [--idle-timeout SECONDS]"
    )
    longdesc = (
        "Forward every connection accepted on --listen to --connect, both ways, "
        "with flow control. TLS termination: --listen twistls:8443:certificate=server.pem "
        "--connect tcp:127.0.0.1:8080. The reverse (plaintext in, verified TLS out): "
        "--listen tcp:8080:interface=127.0.0.1 "
        "--connect twistls:host=db.example:port=443:caFile=ca.pem. "
        "See doc/howto/endpoint-strings.rst for the twistls: keys."
    )
    optParameters = [
        ["listen", "l", None, "Server endpoint string to accept connections on (required), "
         "e.g. twistls:8443:certificate=server.pem:privateKey=key.pem or tcp:8080:interface=127.0.0.1."],
        ["connect", "c", None, "Client endpoint string of the backend (required), "
         "e.g. tcp:127.0.0.1:8080 or twistls:host=backend.example:port=443:caFile=ca.pem."],
        ["handshake-timeout", "t", None, _TIMEOUT_HELP, _positive_seconds],
        ["idle-timeout", None, None, _IDLE_HELP, _positive_idle_seconds],
        ["passphrase-file", None, None, _PASSPHRASE_HELP],
        *_SCALE_OPTIONS,
    ]
    optFlags = [["proxy-protocol", None, _PROXY_PROTOCOL_HELP]]

    def postOptions(self) -> None:
        for name in ("listen", "connect"):
            if not self[name]:
                raise usage.UsageError(f"proxy needs --{name} (see --help)")
        _check_scale_options(self)
        timeout, idle = self["handshake-timeout"], self["idle-timeout"]
        if _keys("--listen", self["listen"]) is None and _keys("--connect", self["connect"]) is None:
            _refuse_idle_options("neither --listen nor --connect is a twistls: string", timeout, idle)
        listen_defaults, connect_defaults = _timeouts(timeout, idle), _timeouts(timeout, idle)
        passphrase = self["passphrase-file"]
        if passphrase is not None:
            _check_passphrase_file(passphrase)
            listen_keys, connect_keys = _keys("--listen", self["listen"]), _keys("--connect", self["connect"])
            takers = 0
            if listen_keys is not None:
                listen_defaults["passphraseFile"] = _refuse_second_passphrase("--listen", self["listen"], listen_keys, passphrase)
                takers += 1
            if connect_keys is not None and "clientCertificate" in connect_keys:
                connect_defaults["passphraseFile"] = _refuse_second_passphrase(
                    "--connect", self["connect"], connect_keys, passphrase
                )
                takers += 1
            if not takers:
                raise usage.UsageError(
                    "--passphrase-file applies to no private key: neither a twistls: --listen nor a twistls: --connect "
                    "with clientCertificate="
                )
        if self["proxy-protocol"]:
            _add_proxy_protocol("--listen", self["listen"], _keys("--listen", self["listen"]), listen_defaults)
        _scale_defaults(self, "--listen", self["listen"], _keys("--listen", self["listen"]), listen_defaults)
        self["listen-endpoint"] = _server_endpoint("--listen", self["listen"], listen_defaults)
        self["connect-endpoint"] = _client_endpoint("--connect", self["connect"], connect_defaults)


# -- echo ---------------------------------------------------------------------------


class _Echo(Protocol):
    transport: Transport  # type: ignore[assignment]  # set by makeConnection (see twistls._typing)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _StartTLSEcho(LineReceiver):
    """Plaintext line protocol: ``STARTTLS`` upgrades to TLS, then echo.

    The cleartext phase is bounded by the TLS port's handshake timeout: a
    client that has not sent ``STARTTLS`` by then is told so and closed (the
    TLS handshake then has its own timeout)."""

    transport: TLSTransport  # type: ignore[assignment]  # set by makeConnection (see twistls._typing)
    delimiter = b"\r\n"
    MAX_LENGTH = 1024
    _deadline: Any = None

    def connectionMade(self) -> None:
        timeout = self.factory.context_factory.handshake_timeout
        if timeout is not None:
            from twisted.internet import reactor

            self._deadline = reactor.callLater(timeout, self._no_starttls, timeout)

    def _no_starttls(self, timeout: float) -> None:
        self._deadline = None
        log.info(
            "STARTTLS port: {peer} sent no STARTTLS within {timeout:g} s; closing",
            peer=str(self.transport.getPeer()),
            timeout=timeout,
        )
        self.sendLine(b"ERR timed out waiting for STARTTLS")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        self.transport.loseConnection()

    def _cancel_deadline(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._cancel_deadline()
        super().connectionLost(reason)

    def lineReceived(self, line: bytes) -> None:
        if line.strip().upper() != b"STARTTLS":
            self.sendLine(b"ERR send STARTTLS first")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
            return
        self._cancel_deadline()  # from here the TLS handshake timeout applies
        self.sendLine(b"OK begin TLS")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        # Bytes the client sent after STARTTLS in the clear are dropped, not
        # fed into the TLS stream (the STARTTLS command-injection class).
        self.clearLineBuffer()  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        self.transport.startTLS(self.factory.context_factory)
        self.setRawMode()  # type: ignore[no-untyped-call]  # LineReceiver is unannotated

    def rawDataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(b"ERR line too long")  # type: ignore[no-untyped-call]  # LineReceiver is unannotated
        self.transport.loseConnection()


class EchoOptions(usage.Options):
    """``twistd twistls echo``."""

    synopsis = (
        "[--listen SERVER-ENDPOINT | --certificate FILE [--private-key FILE] [--port N] [--interface ADDR]] "
        "[--starttls-port N] [--client-ca FILE] [--handshake-timeout SECONDS] [--idle-timeout SECONDS]"
    )
    longdesc = (
        "A TLS echo server for testing clients. Everything a client sends after the "
        "handshake is sent back. With --starttls-port it also listens in the clear: "
        "a client sends 'STARTTLS\\r\\n', the server answers 'OK begin TLS\\r\\n' and the "
        "connection switches to TLS, then echoes."
    )
    optParameters = [
        ["listen", "l", None, "Server endpoint string for TLS, instead of --certificate/--private-key/--port "
         "(default: twistls:PORT:certificate=...:privateKey=...:interface=INTERFACE built from those options); "
         "the STARTTLS port uses its policy."],
        ["certificate", "c", None, "PEM server certificate (then intermediates); required unless --listen "
         "is given (which carries its own certificate)."],
        ["private-key", "k", None, "PEM private key [default: in the certificate file]."],
        ["port", "p", 8443, "TLS port when --listen is not given.", int],
        ["interface", "i", "127.0.0.1", "Address to listen on for --port and --starttls-port."],
        ["starttls-port", None, None, "Also listen in the clear on this port and offer STARTTLS "
         "[default: off].", int],
        ["client-ca", None, None, "Require client certificates issued by the CAs in this PEM file, on the "
         "TLS port and the STARTTLS port (added to a twistls: --listen as caFile=) "
         "[default: no client certificates]."],
        ["handshake-timeout", "t", None, _TIMEOUT_HELP, _positive_seconds],
        ["idle-timeout", None, None, _IDLE_HELP, _positive_idle_seconds],
        ["passphrase-file", None, None, _PASSPHRASE_HELP],
        *_SCALE_OPTIONS,
    ]
    optFlags = [["proxy-protocol", None, _PROXY_PROTOCOL_HELP + " Applies to the --starttls-port too."]]

    def postOptions(self) -> None:
        from twistls.endpoints import TLSServerEndpoint

        timeout, idle, client_ca = self["handshake-timeout"], self["idle-timeout"], self["client-ca"]
        if client_ca is not None and not os.path.isfile(os.path.expanduser(client_ca)):
            raise usage.UsageError(f"--client-ca {client_ca!r}: no such file")
        if self["passphrase-file"] is not None:
            _check_passphrase_file(self["passphrase-file"])
        _check_scale_options(self)
        if self["listen"]:
            endpoint = self._listen_endpoint(timeout, idle, client_ca)
        else:
            endpoint = self._own_endpoint(timeout, idle, client_ca)
        self["listen-endpoint"] = endpoint
        # The STARTTLS port takes the TLS port's whole policy: its context
        # factory (certificate, client CAs, handshake timeout) and its
        # per-connection settings.
        self["context-factory"] = endpoint.context_factory if isinstance(endpoint, TLSServerEndpoint) else None
        self["starttls-endpoint"] = None
        if self["starttls-port"] is not None:
            if not 0 <= self["starttls-port"] <= 65535:
                raise usage.UsageError(f"--starttls-port {self['starttls-port']} is not a TCP port")
            if self["context-factory"] is None:
                raise usage.UsageError("--starttls-port needs --certificate (or --listen twistls:...)")
            self["starttls-endpoint"] = _plain_endpoint(
                self["starttls-port"], self["interface"], reuse_port=self["workers"] > 1
            )

    def _listen_endpoint(self, timeout: float | None, idle: float | None, client_ca: str | None) -> Any:
        """The endpoint of ``--listen``, with every TLS option added to it, or refused."""
        for option in ("certificate", "private-key"):
            if self[option]:
                raise usage.UsageError(
                    f"--{option} conflicts with --listen (the TLS port's certificate): give certificate=/privateKey= "
                    "in a twistls: --listen string, or use --port instead of --listen"
                )
        keys = _keys("--listen", self["listen"])
        if keys is None:
            if client_ca is not None:
                raise usage.UsageError(
                    "--client-ca needs a twistls: --listen string (or --certificate and --port), "
                    f"not {self['listen']!r}, so that every port requires client certificates"
                )
            _refuse_idle_options("--listen is not a twistls: string", timeout, idle)
            if self["passphrase-file"] is not None:
                raise usage.UsageError(f"--passphrase-file needs a twistls: --listen string, not {self['listen']!r}")
        elif client_ca is not None:
            for key in ("caFile", "caPath"):
                if key in keys:
                    raise usage.UsageError(
                        f"--client-ca conflicts with {key}= in --listen {self['listen']!r}: name the client CAs once"
                    )
            if "requireClientCertificate" in keys and _is_no(keys["requireClientCertificate"]):
                raise usage.UsageError(
                    "--client-ca requires client certificates, but --listen says requireClientCertificate="
                    f"{keys['requireClientCertificate']}: leave one out"
                )
        defaults = {**_timeouts(timeout, idle), "caFile": client_ca}
        if keys is not None and self["passphrase-file"] is not None:
            defaults["passphraseFile"] = _refuse_second_passphrase("--listen", self["listen"], keys, self["passphrase-file"])
        if self["proxy-protocol"]:
            _add_proxy_protocol("--listen", self["listen"], keys, defaults)
        _scale_defaults(self, "--listen", self["listen"], keys, defaults)
        return _server_endpoint("--listen", self["listen"], defaults)

    def _own_endpoint(self, timeout: float | None, idle: float | None, client_ca: str | None) -> Any:
        """The TLS endpoint built from ``--certificate``/``--private-key``/``--port``."""
        from twistls.context import ServerContextFactory
        from twistls.endpoints import _passphrase_file, _refuse_unreadable_encrypted_key
        from twistls.errors import ConfigurationError

        if not self["certificate"]:
            if self["private-key"] or client_ca or self["passphrase-file"]:
                raise usage.UsageError("--private-key, --client-ca and --passphrase-file need --certificate")
            raise usage.UsageError("echo needs --certificate (or --listen twistls:PORT:certificate=FILE)")
        options: dict[str, Any] = {}
        if timeout is not None:
            options["handshake_timeout"] = timeout
        if client_ca:
            options["client_cafile"] = client_ca
        if self["ticket-key-file"] is not None:
            options["ticket_key_file"] = self["ticket-key-file"]
        passphrase = self["passphrase-file"]
        key_option, key_path = (
            ("--private-key", self["private-key"]) if self["private-key"] else ("--certificate", self["certificate"])
        )
        try:
            if passphrase is not None:
                options["passphrase"] = _passphrase_file("passphraseFile", passphrase, label=f"--passphrase-file {passphrase!r}")
            _refuse_unreadable_encrypted_key(
                os.path.expanduser(key_path), passphrase is not None, label="", option="--passphrase-file FILE"
            )
            context_factory = ServerContextFactory(self["certificate"], self["private-key"], **options)
        except ConfigurationError as exc:
            raise _blame(exc, (
                ("--ticket-key-file", self["ticket-key-file"]),
                ("--passphrase-file", passphrase),
                ("--client-ca", client_ca),
                (key_option, key_path),
                ("--certificate", self["certificate"]),
            )) from None
        if not 0 <= self["port"] <= 65535:
            raise usage.UsageError(f"--port {self['port']} is not a TCP port")
        return _tls_endpoint(
            context_factory, self["port"], self["interface"], idle, bool(self["proxy-protocol"]), self["workers"] > 1
        )


def _is_no(value: str) -> bool:
    from twistls.endpoints import _FALSE

    return value.strip().lower() in _FALSE


def _tls_endpoint(
    context_factory: Any,
    port: int,
    interface: str,
    idle: float | None = None,
    proxy_protocol: bool = False,
    reuse_port: bool = False,
) -> Any:
    from twistls.endpoints import wrap_server_tls

    return wrap_server_tls(
        context_factory, _plain_endpoint(port, interface, reuse_port=reuse_port), idle_timeout=idle,
        proxy_protocol=proxy_protocol,
    )


def _plain_endpoint(port: int, interface: str, *, reuse_port: bool = False) -> Any:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    if reuse_port:
        from twistls._workers import ReusePortTCPServerEndpoint

        try:
            return ReusePortTCPServerEndpoint(reactor, port, interface=interface)
        except ValueError as exc:
            raise usage.UsageError(f"--workers: {exc}") from None
    cls = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
    return cls(reactor, port, interface=interface)


# -- the plugin -----------------------------------------------------------------------


class Options(usage.Options):
    """``twistd twistls``."""

    synopsis = "(proxy | echo) [options]"
    longdesc = (
        "twistls services: 'proxy' terminates TLS in front of a plaintext backend (or "
        "originates verified TLS for a plaintext client); 'echo' is a TLS and STARTTLS "
        "echo server for testing clients. Run 'twistd twistls proxy --help' or "
        "'twistd twistls echo --help' for their options."
    )
    subCommands = [
        ["proxy", None, ProxyOptions, "TLS-terminating proxy (and the reverse) between two endpoints"],
        ["echo", None, EchoOptions, "TLS echo server, optionally with a STARTTLS plaintext port"],
    ]

    def opt_version(self) -> None:
        """Print the versions of twistls, Twisted and OpenSSL, and exit."""
        from twistls.commands.cli import version_text

        print(version_text())
        raise SystemExit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose a sub-command: proxy or echo (see --help)")

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse; under ``twistd`` (which sets ``parent``) a bad option ends
        the process with one line naming it, instead of twistd's full usage
        text followed by the message.

        Raises:
            usage.UsageError: a bad option, when not run by twistd.
            SystemExit: a bad option under twistd (status 1), or ``--help``.
        """
        #: The arguments as given (the supervisor of --workers runs its workers with them).
        self.arguments = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]  # usage.Options is unannotated
        except usage.UsageError as exc:
            if getattr(self, "parent", None) is None:
                raise
            command = " ".join(["twistd twistls", *([self.subCommand] if self.subCommand else [])])
            raise SystemExit(f"{command}: {' '.join(str(exc).split())}") from None


class _Listening(StreamServerEndpointService):
    """Listens on ``endpoint``; a port that cannot be opened (in use, no
    permission) ends twistd at once with one line naming it, instead of a
    logged error and a server that serves nothing."""

    def __init__(self, option: str, endpoint: Any, factory: Any, *, starttls_of: Any = None) -> None:
        super().__init__(endpoint, factory)  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.option = option
        #: The context factory a STARTTLS port upgrades with (its status is logged on start).
        self.starttls_of = starttls_of

    def privilegedStartService(self) -> None:
        from twisted.internet.error import CannotListenError

        self._raiseSynchronously = True
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
            waiting = self._waitingForPort
            if waiting is not None:
                waiting.addCallback(self._listening)
        except CannotListenError as exc:
            where = f"{exc.interface or '*'}:{exc.port}"
            reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
            log.critical("{option}: cannot listen on {where}: {reason}", option=self.option, where=where, reason=reason)
            raise SystemExit(1) from None

    port: Any = None

    def _listening(self, port: Any) -> Any:
        self.port = port
        if self.starttls_of is not None:  # a twistls: endpoint logs its own
            from twistls.endpoints import log_serving

            log_serving(port, self.starttls_of, what="STARTTLS", warn=False)  # the TLS port warned
        return port

    def factories(self) -> list[Any]:
        """The factory of the listening port (whose ``protocols`` are its connections)."""
        factory = getattr(self.port, "factory", None)
        return [factory] if factory is not None else []


class _Draining(service.Service):
    """Drains the connections of the ``listeners`` when the process stops."""

    def __init__(self, listeners: list[_Listening], drain_timeout: float) -> None:
        self.listeners = listeners
        self.drain_timeout = drain_timeout

    def stopService(self) -> Any:
        from twistls._workers import DrainService

        service.Service.stopService(self)
        drain = DrainService([f for listener in self.listeners for f in listener.factories()], self.drain_timeout)
        drain.running = True
        return drain.stopService()


class _ReloadOnSighup(service.Service):
    """While running, ``SIGHUP`` reloads the server certificates and keys from
    their files (new connections get them; a failed reload keeps the old ones
    and is logged).  It uses the same process-wide handler as every
    ``twistls:`` server string, so each factory is reloaded once per signal."""

    def __init__(self, factories: list[Any]) -> None:
        self.factories = factories

    def startService(self) -> None:
        from twisted.internet import reactor

        from twistls.context import _reload_on_sighup_when_running

        service.Service.startService(self)
        for factory in self.factories:
            _reload_on_sighup_when_running(factory, reactor)

    def stopService(self) -> None:
        from twistls.context import _sighup_factories

        service.Service.stopService(self)
        for factory in self.factories:
            _sighup_factories.discard(factory)


def _server_factories(*candidates: Any) -> list[Any]:
    found: list[Any] = []
    for candidate in candidates:
        factory = getattr(candidate, "context_factory", candidate)
        if callable(getattr(factory, "reload", None)) and factory not in found:
            found.append(factory)
    return found


class _Supervising(service.MultiService):
    """The twistd process of ``--workers N``: runs the workers, forwards SIGHUP."""

    def __init__(self, supervisor: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.supervisor = supervisor
        supervisor.setServiceParent(self)

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # unannotated in Twisted
        self.supervisor.install_signal_handlers()


def _worker_command(arguments: list[str]) -> list[str]:
    """``twistd -n twistls ...`` as a worker: the same arguments, ``--workers``
    included (it makes the worker listen with ``SO_REUSEPORT``); the
    ``TWISTLS_WORKER`` variable the supervisor sets keeps it from
    supervising in turn."""
    launcher = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    return [sys.executable, "-c", launcher, "--nodaemon", "--pidfile=", "twistls", *arguments]


def makeService(options: Options) -> service.MultiService:
    """Build the service for ``twistd twistls``; ``SIGHUP`` reloads certificates.
    With ``--workers N`` (N > 1) this process supervises N workers instead."""
    from twistls._workers import WORKER_ENV, WorkerSupervisor
    from twistls.protocol import TLSWrappingFactory

    sub = options.subOptions
    if sub["workers"] > 1 and WORKER_ENV not in os.environ:
        return _Supervising(
            WorkerSupervisor(_worker_command(options.arguments), sub["workers"], stop_timeout=sub["drain-timeout"] + 10)
        )
    top = service.MultiService()
    listeners: list[_Listening] = []
    if options.subCommand == "proxy":
        factory = _ProxyFactory(sub["connect-endpoint"])
        listening = _Listening(f"--listen {sub['listen']}", sub["listen-endpoint"], factory)
        listeners.append(listening)
        listening.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
        reloader = _ReloadOnSighup(_server_factories(sub["listen-endpoint"]))
        reloader.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
    else:
        reloader = _ReloadOnSighup(_server_factories(sub["listen-endpoint"], sub["context-factory"]))
        reloader.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
        where = f"--listen {sub['listen']}" if sub["listen"] else f"--port {sub['port']}"
        listening = _Listening(where, sub["listen-endpoint"], Factory.forProtocol(_Echo))
        listeners.append(listening)
        listening.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
        if sub["starttls-endpoint"] is not None:
            tls = sub["listen-endpoint"]  # a TLSServerEndpoint: STARTTLS needs a context factory
            plain = Factory.forProtocol(_StartTLSEcho)
            plain.context_factory = sub["context-factory"]  # type: ignore[attr-defined]
            wrapping: Any = TLSWrappingFactory(
                plain, None, start_tls=True, idle_timeout=tls.idle_timeout, allow_truncation=tls.allow_truncation
            )
            if tls.proxy_protocol:  # the STARTTLS port takes the TLS port's whole policy
                from twisted.internet import reactor

                from twistls.endpoints import _PROXY_HEADER_TIMEOUT, _ProxyHeaderFactory

                timeout = sub["context-factory"].handshake_timeout or _PROXY_HEADER_TIMEOUT
                wrapping = _ProxyHeaderFactory(wrapping, clock=reactor, timeout=timeout)
            listening = _Listening(
                f"--starttls-port {sub['starttls-port']}", sub["starttls-endpoint"], wrapping,
                starttls_of=sub["context-factory"],
            )
            listeners.append(listening)
            listening.setServiceParent(top)  # type: ignore[no-untyped-call]  # Service.setServiceParent is unannotated
    _Draining(listeners, sub["drain-timeout"]).setServiceParent(top)  # type: ignore[no-untyped-call]
    return top
