"""The wrapper's zope declarations, made once per (wrapper class, transport class).

A :class:`~twistls.protocol.TLSProtocolWrapper` provides what its transport
provides (as Twisted's ``ProtocolWrapper`` does), and ``ISSLTransport`` and
``INegotiated`` from the moment TLS starts (as Twisted's own ``startTLS``
does: ``ESMTPClient`` and others treat an ``ISSLTransport`` as already secure
and would skip STARTTLS).  zope computes such a declaration in ~50 us;
cached, it costs a dict look-up.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import INegotiated, ISSLTransport
from zope.interface import alsoProvides, directlyProvides, implementedBy, providedBy
from zope.interface.declarations import Provides

__all__ = ["provide_like", "provide_tls"]

#: (wrapper class, transport class) -> the wrapper's instance declarations
#: (class + transport's interfaces, and the same + ISSLTransport + INegotiated).
_provides_cache: dict[tuple[type, type], tuple[Any, Any]] = {}


def provide_like(wrapper: Any, transport: Any) -> tuple[Any, Any] | None:
    """Declare that ``wrapper`` provides what ``transport`` provides.

    Returns:
        The cached pair of declarations (before and after TLS starts), or
        ``None`` when the transport declares something of its own (then
        nothing is cached).
    """
    cls, tcls = type(wrapper), type(transport)
    spec = providedBy(transport)
    pair = None
    if spec is implementedBy(tcls):
        pair = _provides_cache.get((cls, tcls))
        if pair is None and len(_provides_cache) < 256:
            pair = _provides_cache[(cls, tcls)] = (Provides(cls, spec), Provides(cls, spec, ISSLTransport, INegotiated))
    if pair is None:
        directlyProvides(wrapper, spec)
    else:
        wrapper.__provides__ = pair[0]
    return pair


def provide_tls(wrapper: Any, pair: tuple[Any, Any] | None) -> None:
    """Add ``ISSLTransport`` and ``INegotiated`` to ``wrapper``'s declaration
    (``pair`` is what :func:`provide_like` returned for it)."""
    if pair is not None and wrapper.__dict__.get("__provides__") is pair[0]:
        wrapper.__provides__ = pair[1]  # what alsoProvides computes, made once
    else:  # no cached pair, or something else declared on this instance since
        alsoProvides(wrapper, ISSLTransport, INegotiated)
