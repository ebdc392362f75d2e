"""Structural types for the Twisted objects twistls calls, and the wrapper's seams.

Twisted declares its interfaces with zope.interface, whose methods have no
``self``; without the mypy-zope plugin mypy reads ``transport.write(data)`` on
an ``ITransport`` as a call with one argument too many, and
``BaseProtocol.transport`` is ``ITransport | None``.  These
:class:`typing.Protocol` classes state what twistls actually uses, so the
call sites are checked instead of ignored.  Classes that narrow
``transport`` to one of them do so with a single
``# type: ignore[assignment]`` (a zope interface cannot be subclassed by a
typing Protocol, so the narrowed type is not a subtype in mypy's eyes).

:class:`EngineFactory` (checked at run time) is the seam between the wrapper
and a context factory; :data:`FROM_CONTEXT` is the default of the wrapping
factory's ``handshake_timeout``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, Final, Literal, Protocol, Union, runtime_checkable

from twistls.errors import ConfigurationError

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from twistls._engine import ConnectionInfo, TLSEngine

__all__ = [
    "ClientEndpoint",
    "Clock",
    "DelayedCall",
    "EngineFactory",
    "FROM_CONTEXT",
    "HandshakeTimeout",
    "ServerEndpoint",
    "TLSTransport",
    "Transport",
    "check_handshake_timeout",
    "handshake_timeout_of",
]


class DelayedCall(Protocol):
    """What twistls calls on :class:`~twisted.internet.interfaces.IDelayedCall`."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """What twistls calls on :class:`~twisted.internet.interfaces.IReactorTime`."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: Any, **kw: Any) -> DelayedCall: ...


class Transport(Protocol):
    """What twistls calls on a connection's transport
    (:class:`~twisted.internet.interfaces.ITCPTransport` and its producer/consumer side)."""

    bufferSize: int

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def getPeer(self) -> Any: ...

    def registerProducer(self, producer: Any, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


class TLSTransport(Transport, Protocol):
    """A :class:`~twistls.protocol.TLSProtocolWrapper` as the wrapped protocol sees it."""

    tls_started: bool

    def startTLS(self, context_factory: Any, normal: bool = True) -> None: ...

    def when_handshake_done(self) -> Deferred[ConnectionInfo]: ...


class ClientEndpoint(Protocol):
    """Any :class:`~twisted.internet.interfaces.IStreamClientEndpoint` provider
    (``HostnameEndpoint``, ``TCP4ClientEndpoint``, a ``TLSClientEndpoint``...)."""

    def connect(self, protocolFactory: Any) -> Deferred[Any]: ...


class ServerEndpoint(Protocol):
    """Any :class:`~twisted.internet.interfaces.IStreamServerEndpoint` provider."""

    def listen(self, protocolFactory: Any) -> Deferred[Any]: ...


@runtime_checkable
class EngineFactory(Protocol):
    """The seam between the wrapper and a context factory: everything
    :class:`~twistls.protocol.TLSProtocolWrapper` and
    :class:`~twistls.protocol.TLSWrappingFactory` use of one
    (:class:`~twistls.context.ClientContextFactory`,
    :class:`~twistls.context.ServerContextFactory`, and what wraps them).
    """

    #: The role of the engines it makes.
    client: bool
    #: Seconds before a stalled handshake is abandoned (``None``: never); the
    #: wrapper reads it only when its wrapping factory was given no
    #: ``handshake_timeout`` of its own (:data:`FROM_CONTEXT`).
    handshake_timeout: float | None
    #: ALPN protocols (a server with none uses the wrapped factory's).
    alpn_protocols: tuple[bytes, ...]

    def create_engine(self, peer_address: tuple[str, int] | None = None) -> TLSEngine:
        """A new engine for one connection to or from ``peer_address``."""
        ...

    def check_usable(self) -> None:
        """Raise ConfigurationError if no connection could ever succeed."""
        ...


class _FromContext(enum.Enum):
    FROM_CONTEXT = "the context factory's handshake_timeout"

    def __repr__(self) -> str:
        return "FROM_CONTEXT"


#: The default ``handshake_timeout`` of :class:`~twistls.protocol.TLSWrappingFactory`
#: and the endpoints: use the context factory's (:attr:`EngineFactory.handshake_timeout`).
#: A number (seconds) or ``None`` (never) given to the wrapping factory wins.
FROM_CONTEXT: Final = _FromContext.FROM_CONTEXT

#: What a ``handshake_timeout`` argument of the wrapping side accepts.
HandshakeTimeout = Union[float, None, Literal[_FromContext.FROM_CONTEXT]]


def check_handshake_timeout(handshake_timeout: HandshakeTimeout) -> None:
    """The one check of a wrapping-side ``handshake_timeout`` (the wrapping
    factory's and the endpoints').

    Raises:
        ConfigurationError: neither :data:`FROM_CONTEXT`, ``None`` nor > 0 seconds.
    """
    if handshake_timeout is not FROM_CONTEXT and handshake_timeout is not None and not handshake_timeout > 0:
        raise ConfigurationError(f"handshake_timeout must be > 0 seconds or None, not {handshake_timeout!r}")


def handshake_timeout_of(handshake_timeout: HandshakeTimeout, context_factory: EngineFactory) -> float | None:
    """The handshake timeout in force: ``handshake_timeout``, unless it is
    :data:`FROM_CONTEXT`, then ``context_factory``'s."""
    if handshake_timeout is FROM_CONTEXT:
        return context_factory.handshake_timeout
    return handshake_timeout
