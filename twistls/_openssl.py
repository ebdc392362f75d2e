"""A narrow ctypes binding to the libssl/libcrypto that M2Crypto is linked to.

M2Crypto 0.51 lacks some OpenSSL calls twistls needs (clearing options,
minimum/maximum protocol version, TLS 1.3 ciphersuites, groups, the security
level, ``SSL_get_error`` after ``SSL_do_handshake``, a verify callback that
records the failing depth).  This module reaches exactly those symbols in the
*same* shared library instance M2Crypto's extension loaded (found through
``/proc/self/maps``), so pointers taken from M2Crypto objects (``int(ptr)``)
are valid here.

Rules kept here (see ``shared/LIBSSL.md``):

* every symbol has explicit ``argtypes``/``restype``; pointers are ``c_void_p``;
* callbacks are module-level ``CFUNCTYPE`` objects that live as long as the
  process, catch ``BaseException`` and never raise into C;
* every call that can fail is checked by the caller.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
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


def _loaded_library(stem: str) -> str | None:
    """Return the path of the already-mapped shared object ``stem.so.*``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(None, 5)[-1] if line.count(" ") >= 5 else ""
                base = os.path.basename(path)
                if base.startswith(stem + ".so"):
                    return path
    except OSError:
        pass
    return None


def _open(stem: str, short: str) -> ctypes.CDLL:
    path = _loaded_library(stem) or ctypes.util.find_library(short) or (stem + ".so.3")
    return ctypes.CDLL(path)


libssl = _open("libssl", "ssl")
libcrypto = _open("libcrypto", "crypto")

_vp = c_void_p


def _fn(lib: ctypes.CDLL, name: str, restype: Any, *argtypes: Any) -> Any:
    func = getattr(lib, name)
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


# --- the verify callback -----------------------------------------------------
# OpenSSL calls it once per certificate of the chain.  It never changes the
# verdict; it only remembers, per SSL object, the first failure with its depth
# and subject so the engine can name them.  Keyed by the SSL* address; the
# engine pops its entry when it is freed.

VERIFY_CB = CFUNCTYPE(c_int, c_int, c_void_p)
SSL_CTX_set_verify = _fn(libssl, "SSL_CTX_set_verify", None, _vp, c_int, VERIFY_CB)

verify_failures: dict[int, tuple[int, int, str]] = {}
_STORE_IDX: list[int] = []


#: Client connections whose Checker runs inside the handshake, so that a
#: rejection sends the peer a TLS alert: SSL* -> check(peer_chain, verified_chain)
#: returning 0 (accepted) or the X509_V_ERR_* code to fail with.  An entry is
#: used once (popped) when OpenSSL reaches the peer's certificate (depth 0)
#: with the chain verified so far; resumed sessions never get there and are
#: checked after the handshake instead.
handshake_checks: dict[int, Callable[[list[bytes], list[bytes]], int]] = {}


def _verify_callback(preverify_ok: int, store_ctx: int | None) -> int:
    try:
        if preverify_ok and store_ctx and handshake_checks and X509_STORE_CTX_get_error_depth(store_ctx) == 0:
            if not _STORE_IDX:
                _STORE_IDX.append(SSL_get_ex_data_X509_STORE_CTX_idx())
            check = handshake_checks.pop(X509_STORE_CTX_get_ex_data(store_ctx, _STORE_IDX[0]) or 0, None)
            if check is not None:
                code = check(
                    stack_der(X509_STORE_CTX_get0_untrusted(store_ctx)),
                    stack_der(X509_STORE_CTX_get0_chain(store_ctx)),
                )
                if code:
                    X509_STORE_CTX_set_error(store_ctx, code)
                    return 0
        elif not preverify_ok and store_ctx:
            if not _STORE_IDX:
                _STORE_IDX.append(SSL_get_ex_data_X509_STORE_CTX_idx())
            ssl = X509_STORE_CTX_get_ex_data(store_ctx, _STORE_IDX[0])
            if ssl and ssl not in verify_failures:
                depth = X509_STORE_CTX_get_error_depth(store_ctx)
                code = X509_STORE_CTX_get_error(store_ctx)
                subject = ""
                cert = X509_STORE_CTX_get_current_cert(store_ctx)
                if cert:
                    name = X509_get_subject_name(cert)
                    if name:
                        buf = ctypes.create_string_buffer(512)
                        X509_NAME_oneline(name, buf, 512)
                        subject = buf.value.decode("utf-8", "replace")
                verify_failures[ssl] = (code, depth, subject)
    except BaseException:  # never raise into C; the verdict stays OpenSSL's
        pass
    return preverify_ok


verify_callback = VERIFY_CB(_verify_callback)


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
# long as the process; per-context / per-connection state sits in dicts keyed
# by the SSL_CTX* / SSL* address.  Bodies catch BaseException and return the
# fatal (or "ignore") code; the exception is kept in ``callback_errors``.
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

#: The last exception a callback swallowed, per SSL* (for diagnostics).
callback_errors: dict[int, BaseException] = {}

# --- ALPN ----------------------------------------------------------------------
_PUB = POINTER(c_ubyte)
ALPN_SELECT_CB = CFUNCTYPE(c_int, _vp, POINTER(_PUB), _PUB, _PUB, c_uint, _vp)
SSL_CTX_set_alpn_select_cb = _fn(libssl, "SSL_CTX_set_alpn_select_cb", None, _vp, ALPN_SELECT_CB, _vp)

#: Server ALPN preference lists in wire format (ctypes arrays, so ``*out`` may
#: point into them), per connection (from the wrapped factory) and per context.
alpn_by_ssl: dict[int, Any] = {}
alpn_by_ctx: dict[int, Any] = {}


def alpn_wire(protocols: list[bytes]) -> bytes:
    """Encode protocol names in the ALPN wire format (length-prefixed)."""
    return b"".join(bytes([len(p)]) + p for p in protocols)


def alpn_array(protocols: list[bytes]) -> Any:
    """The wire format as a ctypes array that can outlive a callback."""
    wire = alpn_wire(protocols)
    return (c_ubyte * len(wire)).from_buffer_copy(wire)


def _alpn_select(ssl: int | None, out: Any, outlen: Any, inp: Any, inlen: int, arg: int | None) -> int:
    try:
        if not ssl:
            return SSL_TLSEXT_ERR_NOACK
        server = alpn_by_ssl.get(ssl)
        if server is None:
            server = alpn_by_ctx.get(SSL_get_SSL_CTX(ssl) or 0)
        if server is None or not len(server):
            return SSL_TLSEXT_ERR_NOACK
        if SSL_select_next_proto(out, outlen, server, len(server), inp, inlen) != OPENSSL_NPN_NEGOTIATED:
            return SSL_TLSEXT_ERR_NOACK  # no overlap: go on without ALPN
        return SSL_TLSEXT_ERR_OK
    except BaseException as exc:  # never raise into C
        if ssl:
            callback_errors[ssl] = exc
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


def set_server_alpn(ctx: int, protocols: list[bytes] | None) -> None:
    """Install the ALPN select callback on server context ``ctx``; choose from
    ``protocols`` (server preference) unless a connection has its own list."""
    if protocols:
        alpn_by_ctx[ctx] = alpn_array(protocols)
    else:
        alpn_by_ctx.pop(ctx, None)
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select_callback, None)


# --- server-side SNI --------------------------------------------------------------
SNI_CB = CFUNCTYPE(c_int, _vp, POINTER(c_int), _vp)
SSL_CTX_callback_ctrl = _fn(libssl, "SSL_CTX_callback_ctrl", c_long, _vp, c_int, SNI_CB)

#: Per default SSL_CTX: (exact names -> SSL_CTX*, wildcard parents -> SSL_CTX*).
#: Wildcard ``*.example.com`` is stored under ``example.com``.
sni_maps: dict[int, tuple[dict[str, int], dict[str, int]]] = {}


def sni_choose(ctx: int, name: str | None) -> int | None:
    """The SSL_CTX* that serves ``name`` on default context ``ctx`` (``None``: the default)."""
    table = sni_maps.get(ctx)
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
    try:
        if not ssl:
            return SSL_TLSEXT_ERR_OK
        ctx = SSL_get_SSL_CTX(ssl)
        raw = SSL_get_servername(ssl, 0)
        name = raw.decode("ascii", "replace") if raw else None
        target = sni_choose(ctx or 0, name)
        if target and target != ctx:
            if SSL_set_SSL_CTX(ssl, target) != target:
                return SSL_TLSEXT_ERR_ALERT_FATAL
        return SSL_TLSEXT_ERR_OK
    except BaseException as exc:  # never raise into C (an uninitialised int would mean OK)
        if ssl:
            callback_errors[ssl] = exc
        return SSL_TLSEXT_ERR_ALERT_FATAL


servername_callback = SNI_CB(_servername)


def set_sni(ctx: int, exact: dict[str, int], wildcard: dict[str, int]) -> None:
    """Choose among contexts by server_name on default context ``ctx``.

    Raises:
        ValueError: OpenSSL refused the callback.
    """
    sni_maps[ctx] = (dict(exact), dict(wildcard))
    if SSL_CTX_callback_ctrl(ctx, CTRL_SET_TLSEXT_SERVERNAME_CB, servername_callback) != 1:
        sni_maps.pop(ctx, None)
        drain_errors()
        raise ValueError("OpenSSL refused the server_name callback")


# --- sessions -------------------------------------------------------------------
NEW_SESSION_CB = CFUNCTYPE(c_int, _vp, _vp)
SSL_CTX_sess_set_new_cb = _fn(libssl, "SSL_CTX_sess_set_new_cb", None, _vp, NEW_SESSION_CB)
SSL_SESSION_free = _fn(libssl, "SSL_SESSION_free", None, _vp)
SSL_SESSION_is_resumable = _fn(libssl, "SSL_SESSION_is_resumable", c_int, _vp)
SSL_set_session = _fn(libssl, "SSL_set_session", c_int, _vp, _vp)

#: Per client SSL*: called with a new SSL_SESSION* it now owns (one reference).
session_sinks: dict[int, Any] = {}


def _new_session(ssl: int | None, session: int | None) -> int:
    try:
        sink = session_sinks.get(ssl or 0)
        if sink is None or not session:
            return 0  # OpenSSL keeps (and frees) the session
        sink(session)
        return 1  # the reference is ours now
    except BaseException as exc:
        if ssl:
            callback_errors[ssl] = exc
        return 0


new_session_callback = NEW_SESSION_CB(_new_session)


def enable_client_session_cache(ctx: int) -> None:
    """Hand every new client session of ``ctx`` to :data:`session_sinks` (for
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


# --- key log ----------------------------------------------------------------------
KEYLOG_CB = CFUNCTYPE(None, _vp, c_char_p)
SSL_CTX_set_keylog_callback = _fn(libssl, "SSL_CTX_set_keylog_callback", None, _vp, KEYLOG_CB)

#: Per SSL_CTX*: the open key-log file (shared between contexts naming one path).
keylog_files: dict[int, Any] = {}
_keylog_open: dict[str, Any] = {}


def _keylog(ssl: int | None, line: bytes | None) -> None:
    try:
        if not ssl or not line:
            return
        f = keylog_files.get(SSL_get_SSL_CTX(ssl) or 0)
        if f is not None:
            f.write(line + b"\n")
            f.flush()
    except BaseException as exc:
        if ssl:
            callback_errors[ssl] = exc


keylog_callback = KEYLOG_CB(_keylog)


def set_keylog(ctx: int, path: str) -> None:
    """Append the NSS key-log lines of every connection of ``ctx`` to ``path``
    (created mode 0600).

    Raises:
        OSError: the file cannot be opened.
    """
    f = _keylog_open.get(path)
    if f is None or f.closed:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        f = _keylog_open[path] = os.fdopen(fd, "ab")
    keylog_files[ctx] = f
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


def forget_ssl(address: int) -> None:
    """Drop every per-connection entry for a freed ``SSL*``."""
    verify_failures.pop(address, None)
    handshake_checks.pop(address, None)
    alpn_by_ssl.pop(address, None)
    session_sinks.pop(address, None)
    callback_errors.pop(address, None)


def forget_ctx(address: int) -> None:
    """Drop every per-context entry for a freed ``SSL_CTX*``."""
    alpn_by_ctx.pop(address, None)
    sni_maps.pop(address, None)
    keylog_files.pop(address, None)


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


def stack_der(stack: int | None) -> list[bytes]:
    """The certificates of a ``STACK_OF(X509)`` in DER, in order (empty for NULL)."""
    if not stack:
        return []
    chain: list[bytes] = []
    for i in range(min(OPENSSL_sk_num(stack), 64)):
        x509 = OPENSSL_sk_value(stack, i)
        size = i2d_X509(x509, None) if x509 else -1
        if size <= 0:
            continue
        buf = (c_ubyte * size)()
        cursor = ctypes.cast(buf, POINTER(c_ubyte))
        i2d_X509(x509, ctypes.byref(cursor))
        chain.append(bytes(buf))
    return chain
