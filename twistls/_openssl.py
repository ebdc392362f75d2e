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
from typing import Any

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
SSL_CTX_callback_ctrl = None  # bound lazily by the features that need it
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
OP_NO_EXTENDED_MASTER_SECRET = 1 << 32
OP_ENABLE_KTLS = 1 << 33
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
SSL_CTX_set_verify = None  # assigned below with the callback type

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


def _verify_callback(preverify_ok: int, store_ctx: int | None) -> int:
    try:
        if not preverify_ok and store_ctx:
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
    return SSL_ctrl(ssl, CTRL_GET_EXTMS_SUPPORT, 0, None) == 1


def alpn_selected(ssl: int) -> bytes | None:
    """The ALPN protocol both sides agreed on, or ``None``."""
    data = POINTER(c_ubyte)()
    length = c_uint(0)
    SSL_get0_alpn_selected(ssl, ctypes.byref(data), ctypes.byref(length))
    if not length.value:
        return None
    return ctypes.string_at(data, length.value)
