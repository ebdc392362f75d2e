"""A narrow ctypes binding to the libssl/libcrypto that M2Crypto is linked to.

M2Crypto 0.51 lacks some OpenSSL calls twistls needs (clearing options,
minimum/maximum protocol version, TLS 1.3 ciphersuites, groups, the security
level, ``SSL_get_error`` after ``SSL_do_handshake``, a verify callback that
records the failing depth).  This module reaches exactly those symbols in the
*same* shared library instance M2Crypto's extension loaded (resolved through
the handle of M2Crypto's extension module), so pointers taken from M2Crypto
objects (``int(ptr)``) are valid here.

Rules kept here (see ``shared/LIBSSL.md``):

* every symbol has explicit ``argtypes``/``restype``; pointers are ``c_void_p``;
* callbacks are module-level ``CFUNCTYPE`` objects that live as long as the
  process, catch ``BaseException`` and never raise into C;
* every call that can fail is checked by the caller.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import stat
import time
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_char_p,
    c_int,
    c_long,
    c_size_t,
    c_ubyte,
    c_uint,
    c_uint64,
    c_ulong,
    c_void_p,
)
from typing import Any, Callable

import M2Crypto._m2crypto  # noqa: F401  (loads libssl into the process first)

__all__: list[str] = []


def _open_m2crypto() -> ctypes.CDLL:
    """A handle on M2Crypto's own extension module.

    ``dlsym`` on it searches the module and then the libraries it depends on,
    so every symbol resolves in the very libssl/libcrypto M2Crypto is linked
    against, on any POSIX system, and pointers taken from M2Crypto objects are
    valid here by construction.
    """
    return ctypes.CDLL(M2Crypto._m2crypto.__file__)


#: Both names resolve through the same handle (kept apart for readability).
libssl = libcrypto = _open_m2crypto()

_vp = c_void_p


def _fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    try:
        func = getattr(lib, name)
    except AttributeError:
        raise ImportError(
            f"the libssl that M2Crypto is linked against lacks {name} (twistls needs OpenSSL >= 3.0)"
        ) from None
    func.restype = restype
    func.argtypes = list(argtypes)
    return func


# --- SSL_CTX ---------------------------------------------------------------
SSL_CTX_ctrl = _fn(libssl, "SSL_CTX_ctrl", c_long, _vp, c_int, c_long, _vp)
SSL_CTX_callback_ctrl: Any = None  # bound lazily by the features that need it
SSL_CTX_set_options = _fn(libssl, "SSL_CTX_set_options", c_uint64, _vp, c_uint64)
SSL_CTX_clear_options = _fn(libssl, "SSL_CTX_clear_options", c_uint64, _vp, c_uint64)
SSL_CTX_get_options = _fn(libssl, "SSL_CTX_get_options", c_uint64, _vp)
SSL_CTX_set_ciphersuites = _fn(libssl, "SSL_CTX_set_ciphersuites", c_int, _vp, c_char_p)
SSL_CTX_set_cipher_list = _fn(libssl, "SSL_CTX_set_cipher_list", c_int, _vp, c_char_p)
SSL_CTX_set_security_level = _fn(libssl, "SSL_CTX_set_security_level", None, _vp, c_int)
SSL_CTX_get_security_level = _fn(libssl, "SSL_CTX_get_security_level", c_int, _vp)
SSL_CTX_get_verify_mode = _fn(libssl, "SSL_CTX_get_verify_mode", c_int, _vp)
SSL_CTX_get_verify_depth = _fn(libssl, "SSL_CTX_get_verify_depth", c_int, _vp)
SSL_CTX_set_verify_depth = _fn(libssl, "SSL_CTX_set_verify_depth", None, _vp, c_int)
SSL_CTX_load_verify_locations = _fn(
    libssl, "SSL_CTX_load_verify_locations", c_int, _vp, c_char_p, c_char_p
)
SSL_CTX_set_default_verify_paths = _fn(libssl, "SSL_CTX_set_default_verify_paths", c_int, _vp)
SSL_CTX_get_cert_store = _fn(libssl, "SSL_CTX_get_cert_store", _vp, _vp)
SSL_CTX_set_session_id_context = _fn(
    libssl, "SSL_CTX_set_session_id_context", c_int, _vp, c_char_p, c_uint
)
SSL_CTX_set_timeout = _fn(libssl, "SSL_CTX_set_timeout", c_long, _vp, c_long)
SSL_CTX_get0_param = _fn(libssl, "SSL_CTX_get0_param", _vp, _vp)
SSL_CTX_set_client_CA_list = _fn(libssl, "SSL_CTX_set_client_CA_list", None, _vp, _vp)
SSL_load_client_CA_file = _fn(libssl, "SSL_load_client_CA_file", _vp, c_char_p)

# SSL_CTX_ctrl commands (OpenSSL 3.0 ssl.h)
CTRL_SET_SESS_CACHE_SIZE = 42
CTRL_SET_SESS_CACHE_MODE = 44
CTRL_MODE = 33
CTRL_SET_GROUPS_LIST = 92
CTRL_GET_EXTMS_SUPPORT = 122
CTRL_SET_MIN_PROTO_VERSION = 123
CTRL_SET_MAX_PROTO_VERSION = 124
CTRL_GET_MIN_PROTO_VERSION = 130
CTRL_GET_MAX_PROTO_VERSION = 131
CTRL_GET_NEGOTIATED_GROUP = 134
CTRL_GET_PEER_TMP_KEY = 109

# SSL_MODE_*
MODE_ENABLE_PARTIAL_WRITE = 0x1
MODE_ACCEPT_MOVING_WRITE_BUFFER = 0x2
MODE_AUTO_RETRY = 0x4
MODE_RELEASE_BUFFERS = 0x10

# SSL_OP_* (OpenSSL 3.0)
OP_LEGACY_SERVER_CONNECT = 1 << 2
OP_TLSEXT_PADDING = 1 << 4
OP_SAFARI_ECDHE_ECDSA_BUG = 1 << 6
OP_IGNORE_UNEXPECTED_EOF = 1 << 7
OP_ALLOW_CLIENT_RENEGOTIATION = 1 << 8
OP_DISABLE_TLSEXT_CA_NAMES = 1 << 9
OP_ALLOW_NO_DHE_KEX = 1 << 10
OP_DONT_INSERT_EMPTY_FRAGMENTS = 1 << 11
OP_NO_QUERY_MTU = 1 << 12
OP_COOKIE_EXCHANGE = 1 << 13
OP_NO_TICKET = 1 << 14
OP_CISCO_ANYCONNECT = 1 << 15
OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION = 1 << 16
OP_NO_COMPRESSION = 1 << 17
OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION = 1 << 18
OP_NO_ENCRYPT_THEN_MAC = 1 << 19
OP_ENABLE_MIDDLEBOX_COMPAT = 1 << 20
OP_PRIORITIZE_CHACHA = 1 << 21
OP_CIPHER_SERVER_PREFERENCE = 1 << 22
OP_TLS_ROLLBACK_BUG = 1 << 23
OP_NO_ANTI_REPLAY = 1 << 24
OP_NO_SSLv3 = 1 << 25
OP_NO_TLSv1 = 1 << 26
OP_NO_TLSv1_2 = 1 << 27
OP_NO_TLSv1_1 = 1 << 28
OP_NO_TLSv1_3 = 1 << 29
OP_NO_RENEGOTIATION = 1 << 30
OP_CRYPTOPRO_TLSEXT_BUG = 1 << 31
OP_NO_EXTENDED_MASTER_SECRET = 1 << 0  # SSL_OP_BIT(0) in OpenSSL 3.0's ssl.h
OP_CLEANSE_PLAINTEXT = 1 << 1
OP_ENABLE_KTLS = 1 << 3
OP_ALL_BITS = (1 << 64) - 1

# Protocol version numbers for min/max.
VERSIONS = {
    "TLSv1": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}

# SSL_VERIFY_*
VERIFY_NONE = 0
VERIFY_PEER = 1
VERIFY_FAIL_IF_NO_PEER_CERT = 2

# --- SSL -------------------------------------------------------------------
SSL_get_error = _fn(libssl, "SSL_get_error", c_int, _vp, c_int)
# The engine's read path: decrypt straight into a reusable buffer (see _engine._read).
SSL_read_ex = _fn(libssl, "SSL_read_ex", c_int, _vp, _vp, c_size_t, POINTER(c_size_t))
SSL_ctrl = _fn(libssl, "SSL_ctrl", c_long, _vp, c_int, c_long, _vp)
SSL_session_reused = _fn(libssl, "SSL_session_reused", c_int, _vp)
SSL_get_verify_result = _fn(libssl, "SSL_get_verify_result", c_long, _vp)
SSL_get_ex_data_X509_STORE_CTX_idx = _fn(libssl, "SSL_get_ex_data_X509_STORE_CTX_idx", c_int)
SSL_get_servername = _fn(libssl, "SSL_get_servername", c_char_p, _vp, c_int)
SSL_get0_alpn_selected = _fn(
    libssl, "SSL_get0_alpn_selected", None, _vp, POINTER(POINTER(c_ubyte)), POINTER(c_uint)
)
SSL_CTX_set_alpn_protos = _fn(libssl, "SSL_CTX_set_alpn_protos", c_int, _vp, c_char_p, c_uint)
SSL_select_next_proto = _fn(
    libssl,
    "SSL_select_next_proto",
    c_int,
    POINTER(POINTER(c_ubyte)),
    POINTER(c_ubyte),
    POINTER(c_ubyte),
    c_uint,
    POINTER(c_ubyte),
    c_uint,
)
SSL_get_SSL_CTX = _fn(libssl, "SSL_get_SSL_CTX", _vp, _vp)
SSL_set_SSL_CTX = _fn(libssl, "SSL_set_SSL_CTX", _vp, _vp, _vp)
SSL_CTX_set_verify: Any = None  # assigned below with the callback type

SSL_ERROR_NONE = 0
SSL_ERROR_SSL = 1
SSL_ERROR_WANT_READ = 2
SSL_ERROR_WANT_WRITE = 3
SSL_ERROR_SYSCALL = 5
SSL_ERROR_ZERO_RETURN = 6

# --- libcrypto -------------------------------------------------------------
ERR_get_error = _fn(libcrypto, "ERR_get_error", c_ulong)
ERR_peek_error = _fn(libcrypto, "ERR_peek_error", c_ulong)
ERR_clear_error = _fn(libcrypto, "ERR_clear_error", None)
ERR_reason_error_string = _fn(libcrypto, "ERR_reason_error_string", c_char_p, c_ulong)
ERR_error_string_n = _fn(libcrypto, "ERR_error_string_n", None, c_ulong, c_char_p, c_size_t)
X509_verify_cert_error_string = _fn(libcrypto, "X509_verify_cert_error_string", c_char_p, c_long)
X509_STORE_CTX_get_error = _fn(libcrypto, "X509_STORE_CTX_get_error", c_int, _vp)
X509_STORE_CTX_get_error_depth = _fn(libcrypto, "X509_STORE_CTX_get_error_depth", c_int, _vp)
X509_STORE_CTX_get_current_cert = _fn(libcrypto, "X509_STORE_CTX_get_current_cert", _vp, _vp)
X509_STORE_CTX_get_ex_data = _fn(libcrypto, "X509_STORE_CTX_get_ex_data", _vp, _vp, c_int)
X509_get_subject_name = _fn(libcrypto, "X509_get_subject_name", _vp, _vp)
X509_NAME_oneline = _fn(libcrypto, "X509_NAME_oneline", c_char_p, _vp, c_char_p, c_int)
X509_STORE_set_flags = _fn(libcrypto, "X509_STORE_set_flags", c_int, _vp, c_ulong)
X509_VERIFY_PARAM_set_purpose = _fn(libcrypto, "X509_VERIFY_PARAM_set_purpose", c_int, _vp, c_int)
X509_VERIFY_PARAM_set_flags = _fn(libcrypto, "X509_VERIFY_PARAM_set_flags", c_int, _vp, c_ulong)

X509_PURPOSE_SSL_CLIENT = 1
X509_PURPOSE_SSL_SERVER = 2

# Offline chain verification (``twistls verify``), done the way libssl's
# ssl_verify_cert_chain() does it for a client.
X509_STORE_CTX_new = _fn(libcrypto, "X509_STORE_CTX_new", _vp)
X509_STORE_CTX_free = _fn(libcrypto, "X509_STORE_CTX_free", None, _vp)
X509_STORE_CTX_init = _fn(libcrypto, "X509_STORE_CTX_init", c_int, _vp, _vp, _vp, _vp)
X509_STORE_CTX_get0_param = _fn(libcrypto, "X509_STORE_CTX_get0_param", _vp, _vp)
X509_STORE_CTX_set_default = _fn(libcrypto, "X509_STORE_CTX_set_default", c_int, _vp, c_char_p)
X509_STORE_CTX_set_verify_cb = _fn(libcrypto, "X509_STORE_CTX_set_verify_cb", None, _vp, _vp)
X509_VERIFY_PARAM_set1 = _fn(libcrypto, "X509_VERIFY_PARAM_set1", c_int, _vp, _vp)
X509_VERIFY_PARAM_set_time = _fn(libcrypto, "X509_VERIFY_PARAM_set_time", None, _vp, ctypes.c_int64)
X509_VERIFY_PARAM_set_depth = _fn(libcrypto, "X509_VERIFY_PARAM_set_depth", None, _vp, c_int)
X509_VERIFY_PARAM_set_auth_level = _fn(libcrypto, "X509_VERIFY_PARAM_set_auth_level", None, _vp, c_int)
X509_verify_cert = _fn(libcrypto, "X509_verify_cert", c_int, _vp)


def drain_errors() -> list[str]:
    """Empty this thread's OpenSSL error queue, returning its reason strings
    (oldest first)."""
    reasons: list[str] = []
    for _ in range(64):  # bounded: the queue holds at most 16 entries
        code = ERR_get_error()
        if not code:
            break
        text = ERR_reason_error_string(code)
        if text:
            reasons.append(text.decode("ascii", "replace"))
        else:
            buf = ctypes.create_string_buffer(256)
            ERR_error_string_n(code, buf, 256)
            reasons.append(buf.value.decode("ascii", "replace"))
    return reasons


def verify_error_string(code: int) -> str:
    """OpenSSL's text for an ``X509_V_ERR_*`` code."""
    text = X509_verify_cert_error_string(code)
    return text.decode("ascii", "replace") if text else f"verify error {code}"


# --- per-object hooks ------------------------------------------------------------
# What a C callback needs of one SSL (or SSL_CTX) lives on one hooks object
# owned by the engine (or context handle).  OpenSSL's own ex_data slot of the
# SSL/SSL_CTX holds a token (a counter value, never a pointer) that the one
# registry below maps to that object.  The owner attaches it when the object
# is made and detaches it right after freeing the object, so a callback can
# never reach the state of a freed connection, and a new SSL that OpenSSL
# places at a freed one's address starts with an empty slot.

CRYPTO_get_ex_new_index = _fn(libcrypto, "CRYPTO_get_ex_new_index", c_int, c_int, c_long, _vp, _vp, _vp, _vp)
SSL_set_ex_data = _fn(libssl, "SSL_set_ex_data", c_int, _vp, c_int, _vp)
SSL_get_ex_data = _fn(libssl, "SSL_get_ex_data", _vp, _vp, c_int)
SSL_CTX_set_ex_data = _fn(libssl, "SSL_CTX_set_ex_data", c_int, _vp, c_int, _vp)
SSL_CTX_get_ex_data = _fn(libssl, "SSL_CTX_get_ex_data", _vp, _vp, c_int)
_CRYPTO_EX_INDEX_SSL = 0
_CRYPTO_EX_INDEX_SSL_CTX = 1
_SSL_SLOT = CRYPTO_get_ex_new_index(_CRYPTO_EX_INDEX_SSL, 0, None, None, None, None)
_CTX_SLOT = CRYPTO_get_ex_new_index(_CRYPTO_EX_INDEX_SSL_CTX, 0, None, None, None, None)
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


# --- the verify callback -----------------------------------------------------
# OpenSSL calls it for every certificate of the chain (with preverify_ok = 0
# for each error, and 1 once per depth when that depth passed).  It records
# the first failure with its depth and subject, so the engine can name them,
# and at depth 0 with the chain verified it runs the connection's check (the
# Checker), so a rejection fails the handshake with an alert.  Anything
# unexpected (no hooks, an exception) fails the handshake: it never lets a
# peer through that OpenSSL or the check did not accept.

VERIFY_CB = CFUNCTYPE(c_int, c_int, c_void_p)
SSL_CTX_set_verify = _fn(libssl, "SSL_CTX_set_verify", None, _vp, c_int, VERIFY_CB)
X509_STORE_CTX_get0_cert = _fn(libcrypto, "X509_STORE_CTX_get0_cert", _vp, _vp)
_STORE_IDX: list[int] = []


def _store_ssl(store_ctx: int) -> int | None:
    if not _STORE_IDX:
        _STORE_IDX.append(SSL_get_ex_data_X509_STORE_CTX_idx())
    return X509_STORE_CTX_get_ex_data(store_ctx, _STORE_IDX[0])  # type: ignore[no-any-return]


def _subject(cert: int | None) -> str:
    name = X509_get_subject_name(cert) if cert else None
    if not name:
        return ""
    buf = ctypes.create_string_buffer(512)
    X509_NAME_oneline(name, buf, 512)
    return buf.value.decode("utf-8", "replace")


def _presented_chain(store_ctx: int) -> list[bytes]:
    """The certificates the peer sent, its own first (the untrusted stack,
    with the certificate being verified in front exactly once)."""
    leaf = der_of(X509_STORE_CTX_get0_cert(store_ctx))
    rest = stack_der(X509_STORE_CTX_get0_untrusted(store_ctx))
    if rest and leaf is not None and rest[0] == leaf:
        return rest
    return ([leaf] if leaf is not None else []) + rest


def _try_alternative(hooks: ConnectionHooks, store_ctx: int, code: int, cert: int | None) -> int:
    """At the first failure of a handshake's verification, let the connection
    verify an alternative (see :attr:`ConnectionHooks.reverify`).  Returns 1
    to accept (the alternative verified and was checked), else 0."""
    reverify = hooks.reverify
    if reverify is None or hooks.reverify_tried or hooks.accept_unverified:
        return 0
    hooks.reverify_tried = True  # once per handshake: a failing peer costs at most one more verification
    expired_at = None
    if code == X509_V_ERR_CERT_HAS_EXPIRED and not checks_crls(store_ctx):
        when = check_time(store_ctx)
        if expires_exactly_at(cert, when):
            expired_at = when
    if not reverify(store_ctx, expired_at):
        return 0
    hooks.reverified = store_ctx
    hooks.check = None  # it ran on the re-verified chain; never again on OpenSSL's
    hooks.verify_failure = None
    X509_STORE_CTX_set_error(store_ctx, X509_V_OK)
    return 1


def _verify_callback(preverify_ok: int, store_ctx: int | None) -> int:
    hooks = None
    try:
        if not store_ctx:
            return 0
        hooks = ssl_hooks(_store_ssl(store_ctx))
        if hooks is None or hooks.refusal is not None:  # not a live twistls connection, or refused by policy
            if hooks is not None:
                X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_APPLICATION_VERIFICATION)
            return 0
        if hooks.reverified is not None and hooks.reverified == store_ctx:
            # OpenSSL verified another path (see _try_alternative) and the
            # check accepted it: what remains of the first verification, on
            # the path OpenSSL picked itself, no longer decides.
            X509_STORE_CTX_set_error(store_ctx, X509_V_OK)
            return 1
        depth = X509_STORE_CTX_get_error_depth(store_ctx)
        if not preverify_ok:
            code = X509_STORE_CTX_get_error(store_ctx)
            cert = X509_STORE_CTX_get_current_cert(store_ctx)
            if hooks.verify_failure is None:
                hooks.verify_failure = (code, depth, _subject(cert))
            if hooks.accept_unverified:
                return 1
            return _try_alternative(hooks, store_ctx, code, cert)
        if depth == 0 and hooks.check is not None:
            check, hooks.check = hooks.check, None  # once per handshake
            verified = None if hooks.accept_unverified else stack_der(X509_STORE_CTX_get0_chain(store_ctx))
            code = check(_presented_chain(store_ctx), verified)
            if code:
                # The check refused the path OpenSSL built (say, for a CA's
                # name constraints or a pin): another path may pass both.
                if _try_alternative(hooks, store_ctx, code, None):
                    return 1
                X509_STORE_CTX_set_error(store_ctx, code)
                return 0
        return 1
    except BaseException as exc:  # never raise into C; fail closed
        if hooks is not None:
            hooks.error = exc
        return 0


verify_callback = VERIFY_CB(_verify_callback)


# --- the ClientHello callback (servers) --------------------------------------
# TLS 1.2 without the extended master secret (RFC 7627) is refused here,
# before the server sends anything, with a handshake_failure alert, instead
# of after a completed handshake without one.
CLIENT_HELLO_CB = CFUNCTYPE(c_int, _vp, POINTER(c_int), _vp)
SSL_CTX_set_client_hello_cb = _fn(libssl, "SSL_CTX_set_client_hello_cb", None, _vp, CLIENT_HELLO_CB, _vp)
SSL_client_hello_get0_ext = _fn(
    libssl, "SSL_client_hello_get0_ext", c_int, _vp, c_uint, POINTER(POINTER(c_ubyte)), POINTER(c_size_t)
)
SSL_CLIENT_HELLO_SUCCESS = 1
SSL_CLIENT_HELLO_ERROR = 0
SSL_AD_HANDSHAKE_FAILURE = 40
SSL_AD_INTERNAL_ERROR = 80
_EXT_EXTENDED_MASTER_SECRET = 23
_EXT_SUPPORTED_VERSIONS = 43
_TLS1_2_VERSION = 0x0303
_TLS1_3_VERSION = 0x0304


def _client_hello_extension(ssl: int, kind: int) -> bytes | None:
    data = POINTER(c_ubyte)()
    size = c_size_t(0)
    if SSL_client_hello_get0_ext(ssl, kind, ctypes.byref(data), ctypes.byref(size)) != 1:
        return None
    return ctypes.string_at(data, size.value) if size.value else b""


SSL_client_hello_get0_legacy_version = _fn(libssl, "SSL_client_hello_get0_legacy_version", c_uint, _vp)


def client_hello_versions(ssl: int) -> set[int]:
    """The protocol versions a ClientHello offers (its supported_versions
    extension, or else every version up to its legacy_version)."""
    versions = _client_hello_extension(ssl, _EXT_SUPPORTED_VERSIONS)
    if versions:
        body = versions[1 : 1 + versions[0]]
        return {body[i] << 8 | body[i + 1] for i in range(0, len(body) - 1, 2)}
    legacy = int(SSL_client_hello_get0_legacy_version(ssl))
    return set(range(0x0300, legacy + 1)) if 0x0300 <= legacy <= _TLS1_3_VERSION else set()


def tls12_would_be_negotiated(ssl: int) -> bool:
    """Whether this server would answer the ClientHello with TLS 1.2: the
    client offers 1.2, and not also a 1.3 the server allows."""
    minimum = int(SSL_ctrl(ssl, CTRL_GET_MIN_PROTO_VERSION, 0, None))
    maximum = int(SSL_ctrl(ssl, CTRL_GET_MAX_PROTO_VERSION, 0, None)) or _TLS1_3_VERSION
    offered = client_hello_versions(ssl)
    if _TLS1_3_VERSION in offered and minimum <= _TLS1_3_VERSION <= maximum:
        return False
    return _TLS1_2_VERSION in offered and minimum <= _TLS1_2_VERSION <= maximum


def _client_hello(ssl: int | None, alert: Any, arg: int | None) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        if not ssl or hooks is None:
            alert[0] = SSL_AD_INTERNAL_ERROR
            return SSL_CLIENT_HELLO_ERROR
        # Anything but TLS 1.2 is OpenSSL's to accept (1.3) or refuse (older).
        if not tls12_would_be_negotiated(ssl) or _client_hello_extension(ssl, _EXT_EXTENDED_MASTER_SECRET) is not None:
            return SSL_CLIENT_HELLO_SUCCESS
        hooks.refusal = (
            "the client offers TLS 1.2 without the extended master secret (RFC 7627), "
            "which twistls requires"
        )
        alert[0] = SSL_AD_HANDSHAKE_FAILURE
        return SSL_CLIENT_HELLO_ERROR
    except BaseException as exc:  # never raise into C; fail closed
        if hooks is not None:
            hooks.error = exc
        alert[0] = SSL_AD_INTERNAL_ERROR
        return SSL_CLIENT_HELLO_ERROR


client_hello_callback = CLIENT_HELLO_CB(_client_hello)


# --- the ServerHello watch (clients) ------------------------------------------
# A client learns whether a TLS 1.2 server agreed to the extended master
# secret from its ServerHello.  OpenSSL offers no way to require it, and
# SSL_get_extms_support() answers only once the handshake is over, when no
# alert can be sent any more.  So a message callback reads the ServerHello
# (only it: the callback removes itself from the connection once it has
# seen one) and records a refusal, which the verify callback, called next
# for the server's Certificate, turns into a handshake_failure alert.
MSG_CB = CFUNCTYPE(None, c_int, c_int, c_int, _vp, c_size_t, _vp, _vp)
SSL_CTX_set_msg_callback = _fn(libssl, "SSL_CTX_set_msg_callback", None, _vp, MSG_CB)
SSL_set_msg_callback = _fn(libssl, "SSL_set_msg_callback", None, _vp, _vp)
_SSL3_RT_HANDSHAKE = 22
_SERVER_HELLO = 2
#: SHA-256("HelloRetryRequest"): the random of a TLS 1.3 HelloRetryRequest.
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")


def server_hello_facts(message: bytes) -> tuple[bool, bool, bool] | None:
    """(HelloRetryRequest, TLS 1.3, extended master secret) of a ServerHello
    handshake message, or ``None`` when it cannot be parsed (OpenSSL then
    refuses it itself)."""
    if len(message) < 4 + 2 + 32 + 1 or message[0] != _SERVER_HELLO:
        return None
    body = message[4 : 4 + int.from_bytes(message[1:4], "big")]
    random = body[2:34]
    i = 34
    if len(body) < i + 1:
        return None
    i += 1 + body[i]  # session id
    i += 2 + 1  # cipher suite, compression method
    extensions: set[int] = set()
    tls13 = False
    if len(body) >= i + 2:
        end = min(len(body), i + 2 + int.from_bytes(body[i : i + 2], "big"))
        i += 2
        while i + 4 <= end:
            kind, size = int.from_bytes(body[i : i + 2], "big"), int.from_bytes(body[i + 2 : i + 4], "big")
            extensions.add(kind)
            if kind == _EXT_SUPPORTED_VERSIONS and size >= 2:
                tls13 = int.from_bytes(body[i + 4 : i + 6], "big") == _TLS1_3_VERSION
            i += 4 + size
    return random == _HRR_RANDOM, tls13, _EXT_EXTENDED_MASTER_SECRET in extensions


def _watch_server_hello(write_p: int, version: int, content_type: int, buf: int | None, size: int, ssl: int | None, arg: int | None) -> None:
    hooks = None
    try:
        if write_p or content_type != _SSL3_RT_HANDSHAKE or not buf or not ssl or size < 4:
            return
        message = ctypes.string_at(buf, min(size, 1 << 16))
        if message[0] != _SERVER_HELLO:
            return
        hooks = ssl_hooks(ssl)
        facts = server_hello_facts(message)
        if facts is None or facts[0]:  # unparsable (OpenSSL refuses it) or a HelloRetryRequest
            return
        SSL_set_msg_callback(ssl, None)  # seen the ServerHello: no further calls
        hello_retry, tls13, ems = facts
        if not tls13 and not ems and hooks is not None:
            hooks.refusal = "the server chose TLS 1.2 without the extended master secret (RFC 7627), which twistls requires"
    except BaseException as exc:  # never raise into C; the verify callback then refuses
        if hooks is not None:
            hooks.error = exc
            hooks.refusal = "the ServerHello could not be checked"


server_hello_callback = MSG_CB(_watch_server_hello)


def watch_server_hello(ctx: int) -> None:
    """Client context ``ctx`` refuses, with an alert, a TLS 1.2 ServerHello
    without the extended master secret."""
    SSL_CTX_set_msg_callback(ctx, server_hello_callback)


def require_extended_master_secret(ctx: int) -> None:
    """Server context ``ctx`` refuses TLS 1.2 ClientHellos without EMS."""
    SSL_CTX_set_client_hello_cb(ctx, client_hello_callback, None)


def set_min_max_version(ctx: int, minimum: str | None, maximum: str | None) -> None:
    """Set the protocol floor and ceiling of ``SSL_CTX`` ``ctx``.

    Raises:
        ValueError: an unknown version name or a call OpenSSL refused.
    """
    for cmd, name in ((CTRL_SET_MIN_PROTO_VERSION, minimum), (CTRL_SET_MAX_PROTO_VERSION, maximum)):
        value = 0 if name is None else VERSIONS.get(name)
        if value is None:
            raise ValueError(f"unknown TLS version {name!r}; use one of {', '.join(VERSIONS)}")
        if SSL_CTX_ctrl(ctx, cmd, value, None) != 1:
            drain_errors()
            raise ValueError(f"OpenSSL refused TLS version {name!r}")


def set_groups(ctx: int, groups: str) -> None:
    """Set the key-exchange groups (``"X25519:P-256"``).

    Raises:
        ValueError: OpenSSL rejected the list.
    """
    if SSL_CTX_ctrl(ctx, CTRL_SET_GROUPS_LIST, 0, ctypes.cast(c_char_p(groups.encode("ascii")), _vp)) != 1:
        drain_errors()
        raise ValueError(f"OpenSSL rejected the key-exchange groups {groups!r}")


def set_ciphersuites(ctx: int, suites: str) -> None:
    """Set the TLS 1.3 ciphersuites.

    Raises:
        ValueError: OpenSSL rejected the list.
    """
    if SSL_CTX_set_ciphersuites(ctx, suites.encode("ascii")) != 1:
        drain_errors()
        raise ValueError(f"OpenSSL rejected the TLS 1.3 ciphersuites {suites!r}")


def set_cipher_list(ctx: int, ciphers: str) -> None:
    """Set the TLS 1.2-and-below cipher string.

    Raises:
        ValueError: OpenSSL rejected the string (no cipher matched).
    """
    if SSL_CTX_set_cipher_list(ctx, ciphers.encode("ascii")) != 1:
        drain_errors()
        raise ValueError(f"OpenSSL rejected the cipher string {ciphers!r}")


def set_mode(ctx: int, mode: int) -> int:
    """OR ``mode`` into the context's ``SSL_MODE_*`` bits; returns the new mode."""
    return int(SSL_CTX_ctrl(ctx, CTRL_MODE, mode, None))


CTRL_SET_MAX_CERT_LIST = 51


def set_max_cert_list(ctx: int, size: int) -> None:
    """Refuse peer certificate chains (the Certificate message) over ``size`` bytes."""
    SSL_CTX_ctrl(ctx, CTRL_SET_MAX_CERT_LIST, size, None)


def negotiated_group(ssl: int) -> int:
    """NID of the negotiated key-exchange group (0 if none)."""
    return int(SSL_ctrl(ssl, CTRL_GET_NEGOTIATED_GROUP, 0, None))


def extms_used(ssl: int) -> bool:
    """Whether the extended master secret was negotiated (always true on TLS 1.3)."""
    return int(SSL_ctrl(ssl, CTRL_GET_EXTMS_SUPPORT, 0, None)) == 1


def alpn_selected(ssl: int) -> bytes | None:
    """The ALPN protocol both sides agreed on, or ``None``."""
    data = POINTER(c_ubyte)()
    length = c_uint(0)
    SSL_get0_alpn_selected(ssl, ctypes.byref(data), ctypes.byref(length))
    if not length.value:
        return None
    return ctypes.string_at(data, length.value)


# =============================================================================
# Features past M2Crypto's API (issue 4): ALPN, server SNI, session cache,
# key log, CRLs.  Every callback below is a module-level CFUNCTYPE that lives as
# long as the process; per-context / per-connection state sits on the hooks
# objects above.  Bodies catch BaseException and return the fatal (or
# "ignore") code; the exception is kept on the connection's hooks.
# =============================================================================

SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2
SSL_TLSEXT_ERR_NOACK = 3
OPENSSL_NPN_NEGOTIATED = 1
CTRL_SET_TLSEXT_SERVERNAME_CB = 53
CTRL_SESS_NUMBER = 20
SESS_CACHE_CLIENT = 0x0001
SESS_CACHE_SERVER = 0x0002
SESS_CACHE_NO_INTERNAL = 0x0300
X509_V_FLAG_CRL_CHECK = 0x4
X509_V_FLAG_CRL_CHECK_ALL = 0x8
X509_FILETYPE_PEM = 1

# --- ALPN ----------------------------------------------------------------------
_PUB = POINTER(c_ubyte)
ALPN_SELECT_CB = CFUNCTYPE(c_int, _vp, POINTER(_PUB), _PUB, _PUB, c_uint, _vp)
SSL_CTX_set_alpn_select_cb = _fn(libssl, "SSL_CTX_set_alpn_select_cb", None, _vp, ALPN_SELECT_CB, _vp)

def alpn_wire(protocols: list[bytes]) -> bytes:
    """Encode protocol names in the ALPN wire format (length-prefixed)."""
    return b"".join(bytes([len(p)]) + p for p in protocols)


def alpn_array(protocols: list[bytes]) -> Any:
    """The wire format as a ctypes array that can outlive a callback."""
    wire = alpn_wire(protocols)
    return (c_ubyte * len(wire)).from_buffer_copy(wire)


def _alpn_select(ssl: int | None, out: Any, outlen: Any, inp: Any, inlen: int, arg: int | None) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        if hooks is None:
            return SSL_TLSEXT_ERR_ALERT_FATAL
        server = hooks.alpn
        if server is None:
            context = ctx_hooks(SSL_get_SSL_CTX(ssl))
            server = context.alpn if context is not None else None
        if server is None or not len(server):
            return SSL_TLSEXT_ERR_NOACK
        if SSL_select_next_proto(out, outlen, server, len(server), inp, inlen) != OPENSSL_NPN_NEGOTIATED:
            return SSL_TLSEXT_ERR_NOACK  # no overlap: go on without ALPN
        return SSL_TLSEXT_ERR_OK
    except BaseException as exc:  # never raise into C
        if hooks is not None:
            hooks.error = exc
        return SSL_TLSEXT_ERR_ALERT_FATAL


alpn_select_callback = ALPN_SELECT_CB(_alpn_select)


def set_client_alpn(ctx: int, protocols: list[bytes]) -> None:
    """Offer ``protocols`` (preference order) in every ClientHello of ``ctx``.

    Raises:
        ValueError: OpenSSL refused the list.
    """
    wire = alpn_wire(protocols)
    if SSL_CTX_set_alpn_protos(ctx, wire, len(wire)) != 0:  # 0 == success here
        drain_errors()
        raise ValueError(f"OpenSSL refused the ALPN protocol list {protocols!r}")


def set_server_alpn(ctx: int, hooks: ContextHooks, protocols: list[bytes] | None) -> None:
    """Install the ALPN select callback on server context ``ctx``; choose from
    ``protocols`` (server preference) unless a connection has its own list."""
    hooks.alpn = alpn_array(protocols) if protocols else None
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select_callback, None)


# --- server-side SNI --------------------------------------------------------------
SNI_CB = CFUNCTYPE(c_int, _vp, POINTER(c_int), _vp)
SSL_CTX_callback_ctrl = _fn(libssl, "SSL_CTX_callback_ctrl", c_long, _vp, c_int, SNI_CB)

def sni_choose(hooks: ContextHooks | None, name: str | None) -> int | None:
    """The SSL_CTX* that serves ``name`` on a default context with ``hooks``
    (``None``: the default itself)."""
    table = hooks.sni if hooks is not None else None
    if table is None or not name:
        return None
    exact, wild = table
    name = name.rstrip(".").lower()
    target = exact.get(name)
    if target is None and "." in name:
        label, parent = name.split(".", 1)
        if label and "." in parent:  # one label only, never a bare TLD
            target = wild.get(parent)
    return target


def _servername(ssl: int | None, alert: Any, arg: int | None) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        if hooks is None:
            return SSL_TLSEXT_ERR_ALERT_FATAL
        ctx = SSL_get_SSL_CTX(ssl)
        raw = SSL_get_servername(ssl, 0)
        name = raw.decode("ascii", "replace") if raw else None
        target = sni_choose(ctx_hooks(ctx), name)
        if target and target != ctx:
            if SSL_set_SSL_CTX(ssl, target) != target:
                return SSL_TLSEXT_ERR_ALERT_FATAL
        return SSL_TLSEXT_ERR_OK
    except BaseException as exc:  # never raise into C (an uninitialised int would mean OK)
        if hooks is not None:
            hooks.error = exc
        alert[0] = SSL_AD_INTERNAL_ERROR
        return SSL_TLSEXT_ERR_ALERT_FATAL


servername_callback = SNI_CB(_servername)


def set_sni(ctx: int, hooks: ContextHooks, exact: dict[str, int], wildcard: dict[str, int]) -> None:
    """Choose among contexts by server_name on default context ``ctx``.

    Raises:
        ValueError: OpenSSL refused the callback.
    """
    hooks.sni = (dict(exact), dict(wildcard))
    if SSL_CTX_callback_ctrl(ctx, CTRL_SET_TLSEXT_SERVERNAME_CB, servername_callback) != 1:
        hooks.sni = None
        drain_errors()
        raise ValueError("OpenSSL refused the server_name callback")


# --- sessions -------------------------------------------------------------------
NEW_SESSION_CB = CFUNCTYPE(c_int, _vp, _vp)
SSL_CTX_sess_set_new_cb = _fn(libssl, "SSL_CTX_sess_set_new_cb", None, _vp, NEW_SESSION_CB)
SSL_SESSION_free = _fn(libssl, "SSL_SESSION_free", None, _vp)
SSL_SESSION_is_resumable = _fn(libssl, "SSL_SESSION_is_resumable", c_int, _vp)
SSL_set_session = _fn(libssl, "SSL_set_session", c_int, _vp, _vp)

def _new_session(ssl: int | None, session: int | None) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        sink = hooks.session_sink if hooks is not None else None
        if sink is None or not session:
            return 0  # OpenSSL keeps (and frees) the session
        sink(session)
        return 1  # the reference is ours now
    except BaseException as exc:
        if hooks is not None:
            hooks.error = exc
        return 0


new_session_callback = NEW_SESSION_CB(_new_session)


def enable_client_session_cache(ctx: int) -> None:
    """Hand every new client session of ``ctx`` to its connection's
    ``session_sink`` (for
    TLS 1.3 that is when a NewSessionTicket is read, not at handshake end)."""
    SSL_CTX_ctrl(ctx, CTRL_SET_SESS_CACHE_MODE, SESS_CACHE_CLIENT | SESS_CACHE_NO_INTERNAL, None)
    SSL_CTX_sess_set_new_cb(ctx, new_session_callback)


def set_server_session_cache(ctx: int, size: int, timeout: int | None, tickets: bool) -> None:
    """A bounded server-side session cache (TLS 1.2 session IDs, stateful
    TLS 1.3 tickets) and stateless tickets on or off."""
    SSL_CTX_ctrl(ctx, CTRL_SET_SESS_CACHE_MODE, SESS_CACHE_SERVER if size else 0, None)
    SSL_CTX_ctrl(ctx, CTRL_SET_SESS_CACHE_SIZE, size, None)
    if timeout is not None:
        SSL_CTX_set_timeout(ctx, timeout)
    if not tickets:
        SSL_CTX_set_options(ctx, OP_NO_TICKET)


# --- session-ticket keys -----------------------------------------------------
# With a shared key file, every process of a fleet encrypts tickets under the
# same first key and decrypts under any key of the file (see _ticketkeys).
# The callback only chooses keys and hands them to OpenSSL's own AES-256-CBC
# and HMAC-SHA256 (RFC 5077's construction); no crypto is done here.


class _OSSLParam(ctypes.Structure):
    _fields_ = [
        ("key", c_char_p),
        ("data_type", c_uint),
        ("data", c_void_p),
        ("data_size", c_size_t),
        ("return_size", c_size_t),
    ]


_OSSL_PARAM_UTF8_STRING = 4
_OSSL_PARAM_OCTET_STRING = 5
_OSSL_PARAM_UNMODIFIED = (1 << (8 * ctypes.sizeof(c_size_t))) - 1

TICKET_KEY_CB = CFUNCTYPE(c_int, _vp, POINTER(c_ubyte), POINTER(c_ubyte), _vp, _vp, c_int)
SSL_CTX_set_tlsext_ticket_key_evp_cb = _fn(libssl, "SSL_CTX_set_tlsext_ticket_key_evp_cb", c_int, _vp, TICKET_KEY_CB)
EVP_aes_256_cbc = _fn(libcrypto, "EVP_aes_256_cbc", _vp)
EVP_EncryptInit_ex = _fn(libcrypto, "EVP_EncryptInit_ex", c_int, _vp, _vp, _vp, c_char_p, _vp)
EVP_DecryptInit_ex = _fn(libcrypto, "EVP_DecryptInit_ex", c_int, _vp, _vp, _vp, c_char_p, _vp)
EVP_MAC_CTX_set_params = _fn(libcrypto, "EVP_MAC_CTX_set_params", c_int, _vp, POINTER(_OSSLParam))
RAND_bytes = _fn(libcrypto, "RAND_bytes", c_int, _vp, c_int)
SSL_version = _fn(libssl, "SSL_version", c_int, _vp)
_TICKET_IV_LENGTH = 16
_DIGEST_NAME = ctypes.create_string_buffer(b"SHA256")


class TicketKeyMaterial:
    """One ticket key as OpenSSL needs it: name, AES key and the MAC
    parameters (ctypes objects kept alive as long as the context)."""

    __slots__ = ("name", "aes_key", "params", "_hmac")

    def __init__(self, name: bytes, hmac_key: bytes, aes_key: bytes) -> None:
        self.name = name
        self.aes_key = aes_key
        self._hmac = ctypes.create_string_buffer(hmac_key, len(hmac_key))
        self.params = (_OSSLParam * 3)(
            _OSSLParam(b"key", _OSSL_PARAM_OCTET_STRING, ctypes.cast(self._hmac, c_void_p), len(hmac_key), _OSSL_PARAM_UNMODIFIED),
            _OSSLParam(b"digest", _OSSL_PARAM_UTF8_STRING, ctypes.cast(_DIGEST_NAME, c_void_p), 6, _OSSL_PARAM_UNMODIFIED),
            _OSSLParam(None, 0, None, 0, 0),
        )


def _ticket_key(ssl: int | None, key_name: Any, iv: Any, cipher_ctx: int | None, mac_ctx: int | None, enc: int) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        context = ctx_hooks(SSL_get_SSL_CTX(ssl)) if ssl else None
        keys = context.ticket_keys if context is not None else None
        if not keys:
            return -1
        if enc:
            key = keys[0]
            if RAND_bytes(iv, _TICKET_IV_LENGTH) != 1:
                return -1
            ctypes.memmove(key_name, key.name, 16)
            if EVP_MAC_CTX_set_params(mac_ctx, key.params) != 1:
                return -1
            if EVP_EncryptInit_ex(cipher_ctx, EVP_aes_256_cbc(), None, key.aes_key, iv) != 1:
                return -1
            return 1
        name = ctypes.string_at(key_name, 16)
        for index, key in enumerate(keys):
            if key.name == name:
                if EVP_MAC_CTX_set_params(mac_ctx, key.params) != 1:
                    return -1
                if EVP_DecryptInit_ex(cipher_ctx, EVP_aes_256_cbc(), None, key.aes_key, iv) != 1:
                    return -1
                # TLS 1.3: always a fresh ticket (OpenSSL's client spends the
                # one it resumed with; without a new one every other
                # resumption would be a full handshake).  TLS 1.2: a new
                # ticket only when this one is under an older key.
                if index == 0 and SSL_version(ssl) != _TLS1_3_VERSION:
                    return 1
                return 2
        return 0  # unknown key: a full handshake
    except BaseException as exc:  # never raise into C
        if hooks is not None:
            hooks.error = exc
        return -1


ticket_key_callback = TICKET_KEY_CB(_ticket_key)


def set_ticket_keys(ctx: int, hooks: ContextHooks, keys: list[tuple[bytes, bytes, bytes]]) -> None:
    """Encrypt tickets of ``ctx`` under the first of ``keys`` (name, HMAC
    key, AES key) and accept tickets under any of them.

    Raises:
        ValueError: OpenSSL refused the callback.
    """
    hooks.ticket_keys = [TicketKeyMaterial(*key) for key in keys]
    if SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_callback) != 1:
        hooks.ticket_keys = None
        drain_errors()
        raise ValueError("OpenSSL refused the session-ticket key callback")


# --- key log ----------------------------------------------------------------------
KEYLOG_CB = CFUNCTYPE(None, _vp, c_char_p)
SSL_CTX_set_keylog_callback = _fn(libssl, "SSL_CTX_set_keylog_callback", None, _vp, KEYLOG_CB)

def _keylog(ssl: int | None, line: bytes | None) -> None:
    hooks = None
    try:
        if not ssl or not line:
            return
        hooks = ssl_hooks(ssl)
        context = ctx_hooks(SSL_get_SSL_CTX(ssl))
        f = context.keylog if context is not None else None
        if f is not None:
            f.write(line + b"\n")
            f.flush()
    except BaseException as exc:
        if hooks is not None:
            hooks.error = exc


keylog_callback = KEYLOG_CB(_keylog)


def open_keylog(path: str) -> Any:
    """Open ``path`` for appending TLS secrets, safely.

    The file is opened without following a symlink (``O_NOFOLLOW``) and must
    be a regular file owned by this process's user; if others could read or
    write it, it is made mode 0600 first.  A new file is created mode 0600.

    Raises:
        OSError: the file cannot be opened, is a symlink, is not a regular
            file, belongs to another user, or its mode cannot be set.
    """
    # O_NONBLOCK: a FIFO without a reader fails at once instead of hanging here.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "owned by another user", path)
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def set_keylog(ctx: int, hooks: ContextHooks, path: str) -> None:
    """Append the NSS key-log lines of every connection of ``ctx`` to ``path``
    (see :func:`open_keylog`).

    Raises:
        OSError: the file cannot be opened safely.
    """
    f = open_keylog(path)
    if hooks.keylog is not None:
        hooks.keylog.close()
    hooks.keylog = f
    SSL_CTX_set_keylog_callback(ctx, keylog_callback)


# --- CRLs ------------------------------------------------------------------------
X509_STORE_add_lookup = _fn(libcrypto, "X509_STORE_add_lookup", _vp, _vp, _vp)
X509_LOOKUP_file = _fn(libcrypto, "X509_LOOKUP_file", _vp)
X509_load_crl_file = _fn(libcrypto, "X509_load_crl_file", c_int, _vp, c_char_p, c_int)


def load_crls(ctx: int, paths: list[str], check_all: bool) -> int:
    """Load PEM CRL files into ``ctx``'s store and turn CRL checking on.

    Returns:
        How many CRLs were loaded.

    Raises:
        ValueError: a file holds no CRL OpenSSL could read.
    """
    store = SSL_CTX_get_cert_store(ctx)
    lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file()) if store else None
    if not lookup:
        drain_errors()
        raise ValueError("OpenSSL could not open the certificate store for CRLs")
    total = 0
    for path in paths:
        count = X509_load_crl_file(lookup, os.fsencode(path), X509_FILETYPE_PEM)
        if count <= 0:
            reasons = drain_errors()
            raise ValueError(f"no CRL could be read from {path!r}: {'; '.join(reasons) or 'not a PEM CRL'}")
        total += count
    flags = X509_V_FLAG_CRL_CHECK | (X509_V_FLAG_CRL_CHECK_ALL if check_all else 0)
    if X509_STORE_set_flags(store, flags) != 1:
        drain_errors()
        raise ValueError("OpenSSL refused the CRL check flags")
    return total


# --- names ----------------------------------------------------------------------
OBJ_nid2sn = _fn(libcrypto, "OBJ_nid2sn", c_char_p, c_int)
#: NIDs of the groups twistls offers, named the way ``groups=`` names them.
GROUP_NAMES = {1034: "X25519", 1035: "X448", 415: "P-256", 715: "P-384", 716: "P-521"}
#: Groups without a NID (OpenSSL reports TLSEXT_nid_unknown | the TLS group id).
TLS_GROUP_NAMES = {
    0x0017: "P-256", 0x0018: "P-384", 0x0019: "P-521", 0x001D: "X25519", 0x001E: "X448",
    0x11EB: "SecP256r1MLKEM768", 0x11EC: "X25519MLKEM768", 0x11ED: "SecP384r1MLKEM1024",
}


def group_name(nid: int) -> str | None:
    """A readable name for a negotiated group NID (``None`` for 0)."""
    if not nid:
        return None
    name = TLS_GROUP_NAMES.get(nid & 0xFFFF) if nid & 0x1000000 else GROUP_NAMES.get(nid)
    if name is None:
        sn = OBJ_nid2sn(nid)
        name = sn.decode("ascii", "replace") if sn else f"group {nid:#x}"
    return name


# --- the verified chain (for the Checker's name-constraint and purpose checks) ---
SSL_get0_verified_chain = _fn(libssl, "SSL_get0_verified_chain", _vp, _vp)
OPENSSL_sk_num = _fn(libcrypto, "OPENSSL_sk_num", c_int, _vp)
OPENSSL_sk_value = _fn(libcrypto, "OPENSSL_sk_value", _vp, _vp, c_int)
i2d_X509 = _fn(libcrypto, "i2d_X509", c_int, _vp, POINTER(POINTER(c_ubyte)))


X509_STORE_CTX_get0_chain = _fn(libcrypto, "X509_STORE_CTX_get0_chain", _vp, _vp)
X509_STORE_CTX_get0_untrusted = _fn(libcrypto, "X509_STORE_CTX_get0_untrusted", _vp, _vp)
X509_STORE_CTX_set_error = _fn(libcrypto, "X509_STORE_CTX_set_error", None, _vp, c_int)

#: X509_V_ERR_* codes a Checker rejection inside the handshake is reported as
#: (they decide the alert: bad_certificate / handshake_failure).
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_APPLICATION_VERIFICATION = 50


def verified_chain_der(ssl: int) -> list[bytes]:
    """The chain OpenSSL built and verified (peer first, trust anchor last),
    in DER; empty when nothing was verified."""
    return stack_der(SSL_get0_verified_chain(ssl))


def der_of(x509: int | None) -> bytes | None:
    """One ``X509*`` in DER (``None`` for NULL or an encoding failure)."""
    size = i2d_X509(x509, None) if x509 else -1
    if size <= 0:
        return None
    buf = (c_ubyte * size)()
    cursor = ctypes.cast(buf, POINTER(c_ubyte))
    i2d_X509(x509, ctypes.byref(cursor))
    return bytes(buf)


def stack_der(stack: int | None) -> list[bytes]:
    """The certificates of a ``STACK_OF(X509)`` in DER, in order (empty for NULL)."""
    if not stack:
        return []
    chain: list[bytes] = []
    for i in range(min(OPENSSL_sk_num(stack), 64)):
        der = der_of(OPENSSL_sk_value(stack, i))
        if der is not None:
            chain.append(der)
    return chain


# --- re-verification on another path ------------------------------------------
# OpenSSL's path builder does not backtrack, and it refuses a certificate at
# its exact notAfter (RFC 5280 includes it in the validity period).  Where
# another path, or the same one a second earlier, may verify, OpenSSL itself
# verifies it again on a fresh X509_STORE_CTX set up as libssl's
# ssl_verify_cert_chain() sets one up (same X509_STORE: anchors, CRLs; the
# connection's X509_VERIFY_PARAM: depth, flags, host, purpose, trust; its
# security level).  Every object made here is freed here, on every path.
d2i_X509 = _fn(libcrypto, "d2i_X509", _vp, _vp, POINTER(POINTER(c_ubyte)), c_long)
X509_free = _fn(libcrypto, "X509_free", None, _vp)
OPENSSL_sk_new_null = _fn(libcrypto, "OPENSSL_sk_new_null", _vp)
OPENSSL_sk_push = _fn(libcrypto, "OPENSSL_sk_push", c_int, _vp, _vp)
OPENSSL_sk_free = _fn(libcrypto, "OPENSSL_sk_free", None, _vp)
X509_STORE_CTX_get0_store = _fn(libcrypto, "X509_STORE_CTX_get0_store", _vp, _vp)
X509_VERIFY_PARAM_get_flags = _fn(libcrypto, "X509_VERIFY_PARAM_get_flags", c_ulong, _vp)
X509_VERIFY_PARAM_get_time = _fn(libcrypto, "X509_VERIFY_PARAM_get_time", ctypes.c_int64, _vp)
X509_get0_notAfter = _fn(libcrypto, "X509_get0_notAfter", _vp, _vp)
X509_cmp_time = _fn(libcrypto, "X509_cmp_time", c_int, _vp, POINTER(ctypes.c_int64))
ERR_set_mark = _fn(libcrypto, "ERR_set_mark", c_int)
ERR_pop_to_mark = _fn(libcrypto, "ERR_pop_to_mark", c_int)
SSL_get0_param = _fn(libssl, "SSL_get0_param", _vp, _vp)
SSL_get_security_level = _fn(libssl, "SSL_get_security_level", c_int, _vp)
SSL_is_server = _fn(libssl, "SSL_is_server", c_int, _vp)
X509_V_OK = 0
X509_V_ERR_CERT_HAS_EXPIRED = 10
X509_V_FLAG_USE_CHECK_TIME = 0x2


def _x509_from_der(der: bytes) -> int:
    """A new ``X509*`` (the caller frees it with ``X509_free``).

    Raises:
        MemoryError: OpenSSL could not parse or allocate it.
    """
    buf = (c_ubyte * len(der)).from_buffer_copy(der)
    cursor = ctypes.cast(buf, POINTER(c_ubyte))
    x509 = d2i_X509(None, ctypes.byref(cursor), len(der))
    if not x509:
        raise MemoryError("OpenSSL could not load a certificate for re-verification")
    return int(x509)


def reverify(
    store: int,
    param: int,
    security_level: int,
    purpose: bytes,
    leaf: bytes,
    untrusted: list[bytes],
    at: int | None = None,
) -> list[bytes] | None:
    """Verify ``leaf`` again with OpenSSL, with only ``untrusted`` as untrusted certificates.

    Args:
        store: the ``X509_STORE*`` of the first verification (borrowed).
        param: the ``X509_VERIFY_PARAM*`` to copy (the connection's, or the
            context's for ``twistls verify``; borrowed).
        security_level: the connection's security level (authentication level).
        purpose: ``b"ssl_server"`` (a client verifying a server) or ``b"ssl_client"``.
        leaf: the peer's certificate (DER).
        untrusted: the intermediates of the path to try, leaf side first (DER).
        at: verify as of this POSIX time (``None``: as ``param`` says).

    Returns:
        The chain OpenSSL built and verified (peer first, anchor last, DER),
        or ``None`` when it refuses (for any reason).

    Raises:
        MemoryError: an allocation or a certificate load failed (the caller
            keeps its refusal).
    """
    certificates: list[int] = []  # every X509* made here; freed in the finally
    stack = None
    store_ctx = None
    ERR_set_mark()
    try:
        leaf_x509 = _x509_from_der(leaf)
        certificates.append(leaf_x509)
        stack = OPENSSL_sk_new_null()
        if not stack:
            raise MemoryError("OpenSSL could not allocate a certificate stack")
        for der in untrusted:
            x509 = _x509_from_der(der)
            certificates.append(x509)
            # The stack borrows the certificate; it is freed below, after the stack.
            if OPENSSL_sk_push(stack, x509) <= 0:
                raise MemoryError("OpenSSL could not grow a certificate stack")
        store_ctx = X509_STORE_CTX_new()
        if not store_ctx:
            raise MemoryError("OpenSSL could not allocate an X509_STORE_CTX")
        # The store context borrows the store, the leaf and the stack; the
        # chain it builds holds its own references, released by its free.
        if X509_STORE_CTX_init(store_ctx, store, leaf_x509, stack) != 1:
            return None
        vparam = X509_STORE_CTX_get0_param(store_ctx)
        X509_VERIFY_PARAM_set_auth_level(vparam, security_level)
        if X509_STORE_CTX_set_default(store_ctx, purpose) != 1:
            return None
        if X509_VERIFY_PARAM_set1(vparam, param) != 1:
            return None
        if at is not None:
            X509_VERIFY_PARAM_set_time(vparam, at)
        # No verify callback: OpenSSL's default one accepts nothing it refused.
        if X509_verify_cert(store_ctx) != 1 or X509_STORE_CTX_get_error(store_ctx) != X509_V_OK:
            return None
        chain = stack_der(X509_STORE_CTX_get0_chain(store_ctx))
        return chain if len(chain) >= 2 else None
    finally:
        if store_ctx:
            X509_STORE_CTX_free(store_ctx)
        if stack:
            OPENSSL_sk_free(stack)
        for x509 in certificates:
            X509_free(x509)
        ERR_pop_to_mark()  # only the errors made here


def expires_exactly_at(x509: int | None, when: int) -> bool:
    """Whether the notAfter of ``x509`` (borrowed) is the second ``when``:
    valid through it by RFC 5280, but expired for OpenSSL (which compares
    with <=).  OpenSSL's own time parser decides."""
    not_after = X509_get0_notAfter(x509) if x509 else None
    if not not_after:
        return False
    at = ctypes.c_int64(when)
    before = ctypes.c_int64(when - 1)
    return bool(X509_cmp_time(not_after, ctypes.byref(at)) == -1 and X509_cmp_time(not_after, ctypes.byref(before)) == 1)


def checks_crls(store_ctx: int) -> bool:
    """Whether a store context checks CRLs.  Verifying a second earlier is
    then not tried: at t-1 OpenSSL could prefer an older CRL to one issued
    at exactly t that revokes the certificate."""
    param = X509_STORE_CTX_get0_param(store_ctx)
    return not param or bool(X509_VERIFY_PARAM_get_flags(param) & (X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL))


def check_time(store_ctx: int) -> int:
    """The time a store context verifies at (its parameter's, or now)."""
    param = X509_STORE_CTX_get0_param(store_ctx)
    if param and X509_VERIFY_PARAM_get_flags(param) & X509_V_FLAG_USE_CHECK_TIME:
        return int(X509_VERIFY_PARAM_get_time(param))
    return int(time.time())


def reverify_in_handshake(store_ctx: int, leaf: bytes, untrusted: list[bytes], at: int | None) -> list[bytes] | None:
    """:func:`reverify` from inside a verify callback of ``store_ctx``, with
    that verification's store and its connection's parameters.

    Raises:
        MemoryError: see :func:`reverify`; also when the store context has
            no connection or store.
    """
    ssl = _store_ssl(store_ctx)
    store = X509_STORE_CTX_get0_store(store_ctx)
    param = SSL_get0_param(ssl) if ssl else None
    if not ssl or not store or not param:
        raise MemoryError("the verification has no connection or store to re-verify with")
    purpose = b"ssl_client" if SSL_is_server(ssl) else b"ssl_server"
    return reverify(store, param, SSL_get_security_level(ssl), purpose, leaf, untrusted, at)
