"""PROXY protocol v1/v2 in front of TLS: the header is read before the handshake.

:class:`_ProxyHeaderFactory` wraps a (TLS) wrapping factory; each connection
first reads one PROXY header (bounded in size and time, parsed by
``twisted.protocols.haproxy``), then connects the wrapped protocol, whose
``getPeer()``/``getHost()`` are the addresses the header names.  Used by
:class:`~twistls.endpoints.TLSServerEndpoint` (``proxy_protocol=True``,
``proxyProtocol=yes``) and ``twistd twistls``.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

__all__ = ["_PROXY_HEADER_TIMEOUT", "_ProxyHeaderFactory", "_ProxyHeaderWrapper"]

_PROXY_HEADER_TIMEOUT = 30.0
#: The longest PROXY header accepted: v1 lines are at most 107 bytes; v2
#: headers carry 16 bytes plus addresses and TLVs (a few hundred bytes from
#: the common load balancers).
_PROXY_HEADER_MAX = 1024
_V1_SIGNATURE = b"PROXY "
#: The longest v1 header, CRLF included (the PROXY protocol specification).
_V1_MAX = 107
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
        if self._started:
            self.wrappedProtocol.dataReceived(data)
            return
        if not self.connected:
            return
        from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
        from twisted.protocols.haproxy._v1parser import V1Parser
        from twisted.protocols.haproxy._v2parser import V2Parser

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
                if len(line) + len(newline) > _V1_MAX or (not newline and len(buffer) >= _V1_MAX):
                    self._refuse(f"a PROXY v1 header longer than {_V1_MAX} bytes")
                    return
                if not newline:
                    return
                info = V1Parser.parse(line)
                _check_v1_addresses(line)
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


def _check_v1_addresses(line: bytes) -> None:
    """Refuse what twisted's v1 parser lets through: its addresses are
    taken as any text (control characters included, which then reach logs
    and applications as the peer's host) and its ports as any integer.

    Raises:
        ValueError: an address is not one of the header's family, or a
            port is not 0-65535 in decimal digits.
    """
    fields = line.split(b" ")
    if fields[1] == b"UNKNOWN":
        return  # the receiver ignores the rest of the line
    if len(fields) != 6:
        raise ValueError("a PROXY v1 header has six fields")
    family = socket.AF_INET if fields[1] == b"TCP4" else socket.AF_INET6
    for host in fields[2:4]:
        try:
            socket.inet_pton(family, host.decode("ascii"))
        except OSError:
            raise ValueError("a PROXY v1 address is not one of its family") from None
    for port in fields[4:6]:
        if not (port.isdigit() and len(port) <= 5 and int(port) <= 65535):
            raise ValueError("a PROXY v1 port is not 0-65535")


def _peer_text(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "an unknown peer"
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)
