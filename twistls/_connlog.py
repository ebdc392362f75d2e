"""How a connection's end is reported: the peer and the one log line.

* :func:`log_connection_end` writes the one line of a connection that ends
  for a :mod:`twistls.errors` error (``twistls`` namespace), naming the
  peer, the SNI name and the error's class, peer-chosen text escaped::

      TLS connection from 192.0.2.7:51514 (SNI "www.example") failed: PeerAlertError: ...

Whether an end without close_notify came inside a TLS record (a cut
message, logged) or between two (how curl, browsers and HTTP/2 clients end
after a response, not logged on a server that answered) is the engine's to
say: :attr:`twistls._events.Truncated.mid_record` (see :mod:`twistls._framing`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

if TYPE_CHECKING:
    from twistls._engine import TLSEngine
    from twistls.errors import TwistlsError

__all__ = ["log_connection_end", "peer_address", "peer_text"]

log = Logger(namespace="twistls")


def peer_address(transport: Any) -> tuple[str, int] | None:
    """The (host, port) of the peer, if the transport is an IP connection."""
    try:
        peer = transport.getPeer()
    except Exception:
        return None
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return (host, port) if isinstance(host, str) and isinstance(port, int) else None


def peer_text(transport: Any) -> str:
    """``host:port`` of the peer (``[v6]:port``), or a description of it."""
    try:
        peer = transport.getPeer()
    except Exception:
        return "(peer unknown)"
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def log_connection_end(
    error: TwistlsError, *, transport: Any, engine: TLSEngine | None, client: bool, level: str, outcome: str
) -> None:
    """The one log line of a connection that ends for ``error``: who
    (``from``/``to`` the peer's address), the SNI name (or ``no SNI``), then
    the error's class and text, all escaped with
    :func:`~twistls._info.printable` (the SNI name and the reason can hold
    peer-chosen text).

    Args:
        error: why the connection ends.
        transport: the connection's transport (for the peer's address).
        engine: its engine, if TLS started (the role and the SNI name).
        client: the role when no engine was made.
        level: ``"info"`` or ``"warn"``.
        outcome: the verb of the line (``"failed"``, ``"closed"``).
    """
    from twistls._info import printable

    if engine is not None:
        client = engine.client
    try:
        name = engine.server_name() if engine is not None else None
    except Exception:  # a freed engine: no name to report
        name = None
    emit = log.info if level == "info" else log.warn
    emit(
        "TLS connection {direction} {peer} ({sni}) {outcome}: {error_type}: {reason}",
        direction="to" if client else "from",
        peer=printable(peer_text(transport)),
        sni="no SNI" if not name else f'SNI "{printable(name)}"',
        outcome=outcome,
        error_type=type(error).__name__,
        reason=printable(" ".join(str(error).split())),
    )
