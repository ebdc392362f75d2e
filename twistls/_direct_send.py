"""Direct send: ciphertext straight to the socket of Twisted's TCP transports.

This is the one module that reads Twisted's ``tcp.Connection`` internals
(:data:`INTERNALS`).  :func:`missing_internals` names any that a Twisted
release no longer has; the wrapper then falls back to ``transport.write``,
and ``tests/protocol/test_direct_send.py`` fails loudly so that the change is seen.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp

__all__ = ["ciphertext_writer", "missing_internals", "INTERNALS"]

#: The attributes of ``tcp.Connection`` the direct path relies on.
INTERNALS = (
    "socket",
    "TLS",
    "_tempDataLen",
    "offset",
    "dataBuffer",
    "connected",
    "disconnecting",
    "_writeDisconnected",
    "_aborting",
    "producer",
    "streamingProducer",
)


def missing_internals(transport: Any) -> list[str]:
    """The :data:`INTERNALS` that ``transport`` lacks (empty: direct send works)."""
    return [name for name in INTERNALS if not hasattr(transport, name)]


def ciphertext_writer(transport: Any) -> Any:
    """The fastest correct way to hand ciphertext to *transport*.

    For Twisted's own TCP connections (``tcp.Server``/``tcp.Client`` with no
    Twisted TLS of their own) this returns a function that sends straight to
    the socket when the transport has nothing buffered, as asyncio does, and
    hands only what the kernel did not take (or everything, on any doubt or
    error) to ``transport.write``.  That saves Twisted's buffer join, the
    epoll registration and one reactor iteration per write, while keeping
    order, flow control and error reporting Twisted's: a byte is never sent
    ahead of bytes already queued, and with a pull (non-streaming) producer
    registered on the transport every byte goes through Twisted, whose
    ``doWrite`` is what asks that producer for more.  For any other transport
    it is ``transport.write``.
    """
    if not isinstance(transport, tcp.Connection) or getattr(transport, "_sendmsgQueue", None) is not None:
        return transport.write  # (UNIX sockets that pass descriptors attach them to queued bytes)
    if missing_internals(transport):  # a Twisted without this state gets plain writes
        return transport.write
    sock = transport.socket
    t: Any = transport

    def send(data: bytes) -> None:
        if (
            t.TLS  # Twisted's own startTLS on this transport: its write encrypts
            or t._tempDataLen
            or t.offset != len(t.dataBuffer)
            or not t.connected
            or t.disconnecting
            or t._writeDisconnected
            or t._aborting  # abortConnection: Twisted drops what is queued; so must we
            or (t.producer is not None and not t.streamingProducer)  # pulled: resumed from Twisted's doWrite
        ):
            t.write(data)
            return
        try:
            sent = sock.send(data)
        except OSError:  # EAGAIN, or an error Twisted then reports on its own path
            sent = 0
        if sent < len(data):
            t.write(data[sent:] if sent else data)

    return send
