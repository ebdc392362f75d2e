"""``twistd twistls proxy``: its options and the proxy protocol (two
halves that forward bytes and closes to each other, each side's send buffer
throttling the other side's reading; the backend dialled only after the
incoming TLS handshake)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from twistls.commands._tapoptions import (
    _IDLE_HELP,
    _PASSPHRASE_HELP,
    _PROXY_PROTOCOL_HELP,
    _SCALE_OPTIONS,
    _TIMEOUT_HELP,
    _add_proxy_protocol,
    _check_passphrase_file,
    _check_scale_options,
    _client_endpoint,
    _keys,
    _positive_idle_seconds,
    _positive_seconds,
    _refuse_idle_options,
    _refuse_second_passphrase,
    _scale_defaults,
    _server_endpoint,
    _timeouts,
    log,
)

if TYPE_CHECKING:
    from twistls._typing import TLSTransport, Transport


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
        listen_keys = _keys("--listen", self["listen"])
        if listen_keys is None and _keys("--connect", self["connect"]) is None:
            _refuse_idle_options("neither --listen nor --connect is a twistls: string", timeout, idle)
        listen_defaults, connect_defaults = _timeouts(timeout, idle), _timeouts(timeout, idle)
        passphrase = self["passphrase-file"]
        if passphrase is not None:
            _check_passphrase_file(passphrase)
            connect_keys = _keys("--connect", self["connect"])
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
            _add_proxy_protocol("--listen", self["listen"], listen_keys, listen_defaults)
        _scale_defaults(self, "--listen", self["listen"], listen_keys, listen_defaults)
        self["listen-endpoint"] = _server_endpoint("--listen", self["listen"], listen_defaults)
        self["connect-endpoint"] = _client_endpoint("--connect", self["connect"], connect_defaults)
