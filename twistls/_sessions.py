"""The client session cache: TLS sessions kept for resumption, each with the
certificate chain verified when it was made.

A resumed handshake carries no certificates, so a session is only offered to
a connection whose checks (hostname, pins, PKI profile) the session's
verified chain passes now: see :meth:`SessionCache.offer`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Union

from twistls import _openssl as _ossl

if TYPE_CHECKING:  # pragma: no cover
    from twistls._engine import Verifier

__all__ = ["Cached", "SessionCache"]

#: A cached client session: the ``SSL_SESSION*`` and the chain verified when
#: it was made (``None``: the connection verified none).
Cached = tuple[int, Union[tuple[bytes, ...], None]]


class SessionCache:
    """A bounded LRU of client ``SSL_SESSION*`` keyed by (host, port,
    server_name, expected hostname), each with the chain verified when it
    was made, so that a resumed connection is held to the same checks.

    Owns one reference per stored session, released on eviction, replacement
    and garbage collection.  Thread-safe: OpenSSL calls are made outside the
    lock.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._sessions: OrderedDict[tuple[Any, ...], Cached] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: tuple[Any, ...]) -> Cached | None:
        """The session stored under ``key`` if it is still resumable (the
        cache keeps its reference); one that is not is dropped."""
        return self._get(key, take=False)

    def _get(self, key: tuple[Any, ...], *, take: bool) -> Cached | None:
        """:meth:`get`; with ``take``, the caller gets a reference of its
        own, taken under the lock (another thread may replace, evict or
        clear the entry, and free the cache's reference, at any time)."""
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None:
                return None
            if not _ossl.SSL_SESSION_is_resumable(entry[0]):
                # e.g. its connection ended without close_notify
                del self._sessions[key]
            else:
                self._sessions.move_to_end(key)
                if take and _ossl.SSL_SESSION_up_ref(entry[0]) != 1:
                    return None
                return entry
        _ossl.SSL_SESSION_free(entry[0])
        return None

    def offer(self, key: tuple[Any, ...], verifier: Verifier | None) -> Cached | None:
        """The session to offer for ``key``: :meth:`get`'s, unless
        ``verifier`` refuses the chain it was made with (then it is
        dropped and a full handshake decides).  A session made by a
        connection that verified nothing is offered: the engine checks it
        after resumption.

        The caller owns one reference to the session it gets and frees it
        (``SSL_SESSION_free``) once it has handed it to the engine, which
        takes its own."""
        cached = self._get(key, take=True)
        if cached is None or verifier is None or not cached[1]:
            return cached
        chain = cached[1]
        try:
            verifier(chain[:1], chain)
        except Exception:  # any refusal (or bug): do not offer the session
            _ossl.SSL_SESSION_free(cached[0])
            self._discard(key, cached[0])
            return None
        return cached

    def put(self, key: tuple[Any, ...], session: int, verified_chain: tuple[bytes, ...] | None = None) -> None:
        """Store ``session`` (taking over the caller's reference) under
        ``key``, replacing and freeing an older one; evicts the least
        recently used beyond :attr:`size`."""
        with self._lock:
            old = self._sessions.pop(key, None)
            self._sessions[key] = (session, verified_chain)
            evicted = [old[0]] if old is not None and old[0] != session else []
            while len(self._sessions) > self.size:
                evicted.append(self._sessions.popitem(last=False)[1][0])
        for item in evicted:
            _ossl.SSL_SESSION_free(item)

    def discard(self, key: tuple[Any, ...]) -> None:
        """Forget (and free) the session under ``key``, if any."""
        self._discard(key, None)

    def _discard(self, key: tuple[Any, ...], session: int | None) -> None:
        """:meth:`discard`, only if the session under ``key`` is ``session``
        (``None``: any)."""
        with self._lock:
            entry = self._sessions.get(key)
            if entry is None or (session is not None and entry[0] != session):
                return
            del self._sessions[key]
        _ossl.SSL_SESSION_free(entry[0])

    def clear(self) -> None:
        """Forget (and free) every session."""
        with self._lock:
            sessions = [entry[0] for entry in self._sessions.values()]
            self._sessions.clear()
        for item in sessions:
            _ossl.SSL_SESSION_free(item)

    def __del__(self) -> None:
        try:
            self.clear()
        except Exception:  # interpreter shutdown
            pass
