"""Per-connection and per-context state that OpenSSL's callbacks reach.

Each engine owns one :class:`ConnectionHooks` (each context handle one
:class:`ContextHooks`); OpenSSL's ex_data slot of the ``SSL*``/``SSL_CTX*``
holds a token that the one registry here maps to it.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable

from twistls._libssl.lib import (
    CRYPTO_EX_INDEX_SSL,
    CRYPTO_EX_INDEX_SSL_CTX,
    CRYPTO_get_ex_new_index,
    drain_errors,
    SSL_CTX_get_ex_data,
    SSL_CTX_set_ex_data,
    SSL_get_ex_data,
    SSL_set_ex_data,
)


if TYPE_CHECKING:
    from twistls._libssl.sessions import TicketKeyMaterial


# --- per-object hooks ------------------------------------------------------------
# What a C callback needs of one SSL (or SSL_CTX) lives on one hooks object
# owned by the engine (or context handle).  OpenSSL's own ex_data slot of the
# SSL/SSL_CTX holds a token (a counter value, never a pointer) that the one
# registry below maps to that object.  The owner attaches it when the object
# is made and detaches it right after freeing the object, so a callback can
# never reach the state of a freed connection, and a new SSL that OpenSSL
# places at a freed one's address starts with an empty slot.
_SSL_SLOT = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, None, None, None, None)
_CTX_SLOT = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, None, None, None, None)
if _SSL_SLOT < 0 or _CTX_SLOT < 0:  # pragma: no cover - only when OpenSSL is out of memory
    raise ImportError("OpenSSL refused an ex_data index for twistls' callback hooks")


class ConnectionHooks:
    """What OpenSSL's callbacks need of one ``SSL*`` (owned by its engine).

    Attributes:
        check: run once, inside the handshake, when OpenSSL reaches the
            peer's certificate (depth 0) with the chain verified: called with
            (peer's certificates, verified chain or ``None`` when the
            connection does not verify) and returns 0 to accept or the
            ``X509_V_ERR_*`` code to fail the handshake (and alert) with.
        accept_unverified: chain errors do not fail the handshake (the
            ``insecure_skip_verify`` client); ``check`` still runs.
        verify_failure: the first chain error seen: (code, depth, subject).
        alpn: a server's ALPN preference list for this connection (a ctypes
            array in wire format), or ``None`` for the context's.
        session_sink: a client's consumer of new ``SSL_SESSION*`` (it owns one
            reference).
        refusal: why a callback refused the handshake by policy (text).
        error: the exception a callback swallowed (the handshake failed).
        reverify: tried once per handshake at the first failure (OpenSSL's,
            or ``check`` refusing OpenSSL's chain): called with (the store
            context, the check time when the failure is a certificate
            expiring exactly then, else ``None``); verifies another path
            (or the same a second earlier) with :func:`reverify_in_handshake`
            and runs the check on it.  Returns whether both accepted; when
            not, the first failure stands, with its error.
        reverified: the ``X509_STORE_CTX*`` whose verification an
            alternative replaced (the peer was accepted on the alternative):
            every later failure of that verification is overridden; any
            other verification (there is none: no renegotiation) is not.
    """

    __slots__ = (
        "check",
        "accept_unverified",
        "verify_failure",
        "alpn",
        "session_sink",
        "refusal",
        "error",
        "reverify",
        "reverify_tried",
        "reverified",
    )

    def __init__(self) -> None:
        self.check: Callable[[list[bytes], list[bytes] | None], int] | None = None
        self.accept_unverified = False
        self.verify_failure: tuple[int, int, str] | None = None
        self.alpn: Any = None
        self.session_sink: Callable[[int], None] | None = None
        self.refusal: str | None = None
        self.error: BaseException | None = None
        self.reverify: Callable[[int, int | None], bool] | None = None
        self.reverify_tried = False
        self.reverified: int | None = None


class ContextHooks:
    """What OpenSSL's callbacks need of one ``SSL_CTX*`` (owned by its handle).

    Attributes:
        alpn: the server's ALPN preference list (ctypes array, wire format).
        sni: (exact names -> SSL_CTX*, wildcard parents -> SSL_CTX*); a
            wildcard ``*.example.com`` is stored under ``example.com``.
        keylog: the open key-log file, or ``None``.
        ticket_keys: session-ticket keys from a shared key file (the first
            encrypts), or ``None`` for OpenSSL's own per-process key.
    """

    __slots__ = ("alpn", "sni", "keylog", "ticket_keys")

    def __init__(self) -> None:
        self.alpn: Any = None
        self.sni: tuple[dict[str, int], dict[str, int]] | None = None
        self.keylog: Any = None
        self.ticket_keys: list[TicketKeyMaterial] | None = None


_registry: dict[int, ConnectionHooks | ContextHooks] = {}
_tokens = itertools.count(1)


def _attach(set_ex_data: Any, address: int, slot: int, hooks: ConnectionHooks | ContextHooks, what: str) -> int:
    token = next(_tokens)
    _registry[token] = hooks
    if set_ex_data(address, slot, token) != 1:
        del _registry[token]
        drain_errors()
        raise MemoryError(f"OpenSSL could not attach twistls' hooks to the {what}")
    return token


def attach_ssl(ssl: int, hooks: ConnectionHooks) -> int:
    """Make ``hooks`` reachable from ``ssl``'s callbacks; returns the token
    to :func:`detach` with once the ``SSL*`` is freed.

    Raises:
        MemoryError: OpenSSL could not store the token.
    """
    return _attach(SSL_set_ex_data, ssl, _SSL_SLOT, hooks, "SSL object")


def attach_ctx(ctx: int, hooks: ContextHooks) -> int:
    """As :func:`attach_ssl`, for an ``SSL_CTX*``."""
    return _attach(SSL_CTX_set_ex_data, ctx, _CTX_SLOT, hooks, "SSL_CTX")


def detach(token: int) -> None:
    """Forget the hooks behind ``token`` (after its object was freed)."""
    hooks = _registry.pop(token, None)
    if isinstance(hooks, ContextHooks) and hooks.keylog is not None:
        hooks.keylog.close()
        hooks.keylog = None


def ssl_hooks(ssl: int | None) -> ConnectionHooks | None:
    """The hooks of a live ``SSL*`` (``None``: none attached)."""
    token = SSL_get_ex_data(ssl, _SSL_SLOT) if ssl else None
    hooks = _registry.get(token) if token else None
    return hooks if isinstance(hooks, ConnectionHooks) else None


def ctx_hooks(ctx: int | None) -> ContextHooks | None:
    """The hooks of a live ``SSL_CTX*`` (``None``: none attached)."""
    token = SSL_CTX_get_ex_data(ctx, _CTX_SLOT) if ctx else None
    hooks = _registry.get(token) if token else None
    return hooks if isinstance(hooks, ContextHooks) else None
