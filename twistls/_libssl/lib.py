"""The one ctypes binding to the libssl/libcrypto that M2Crypto is linked to.

The libraries are loaded here, once, through the handle of M2Crypto's own
extension module, and every symbol twistls calls is declared here, with
explicit ``argtypes``/``restype`` (pointers are ``c_void_p``).  A symbol the
library lacks fails the import with an :class:`ImportError` that names it.
The other modules of :mod:`twistls._libssl` take their symbols from here and
declare none of their own.  This module also holds the OpenSSL constants
twistls uses and reads the error queue (:func:`drain_errors`).
"""

from __future__ import annotations

import ctypes
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_char_p,
    c_int,
    c_long,
    c_size_t,
    c_uint,
    c_uint64,
    c_ulong,
    c_ubyte,
    c_void_p,
)
from typing import Any

import M2Crypto._m2crypto  # noqa: F401  (loads libssl into the process first)


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
    """Declare ``name`` of ``lib`` with its result and argument types.

    Raises:
        ImportError: the library lacks the symbol (it names it).
    """
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
CTRL_SET_MAX_CERT_LIST = 51

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
# The engine's read path: decrypt straight into a reusable buffer (see records.py).
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


# --- ex_data (the slots hooks.py keeps its tokens in) -----------------------
CRYPTO_get_ex_new_index = _fn(libcrypto, "CRYPTO_get_ex_new_index", c_int, c_int, c_long, _vp, _vp, _vp, _vp)
SSL_set_ex_data = _fn(libssl, "SSL_set_ex_data", c_int, _vp, c_int, _vp)
SSL_get_ex_data = _fn(libssl, "SSL_get_ex_data", _vp, _vp, c_int)
SSL_CTX_set_ex_data = _fn(libssl, "SSL_CTX_set_ex_data", c_int, _vp, c_int, _vp)
SSL_CTX_get_ex_data = _fn(libssl, "SSL_CTX_get_ex_data", _vp, _vp, c_int)
CRYPTO_EX_INDEX_SSL = 0
CRYPTO_EX_INDEX_SSL_CTX = 1

# --- the verify callback and the hello callbacks (bodies in handshake.py) ----
VERIFY_CB = CFUNCTYPE(c_int, c_int, c_void_p)
SSL_CTX_set_verify = _fn(libssl, "SSL_CTX_set_verify", None, _vp, c_int, VERIFY_CB)
X509_STORE_CTX_get0_cert = _fn(libcrypto, "X509_STORE_CTX_get0_cert", _vp, _vp)
X509_STORE_CTX_get0_chain = _fn(libcrypto, "X509_STORE_CTX_get0_chain", _vp, _vp)
X509_STORE_CTX_get0_untrusted = _fn(libcrypto, "X509_STORE_CTX_get0_untrusted", _vp, _vp)
X509_STORE_CTX_set_error = _fn(libcrypto, "X509_STORE_CTX_set_error", None, _vp, c_int)
CLIENT_HELLO_CB = CFUNCTYPE(c_int, _vp, POINTER(c_int), _vp)
SSL_CTX_set_client_hello_cb = _fn(libssl, "SSL_CTX_set_client_hello_cb", None, _vp, CLIENT_HELLO_CB, _vp)
SSL_client_hello_get0_ext = _fn(
    libssl, "SSL_client_hello_get0_ext", c_int, _vp, c_uint, POINTER(POINTER(c_ubyte)), POINTER(c_size_t)
)
SSL_client_hello_get0_legacy_version = _fn(libssl, "SSL_client_hello_get0_legacy_version", c_uint, _vp)
MSG_CB = CFUNCTYPE(None, c_int, c_int, c_int, _vp, c_size_t, _vp, _vp)
SSL_CTX_set_msg_callback = _fn(libssl, "SSL_CTX_set_msg_callback", None, _vp, MSG_CB)
SSL_set_msg_callback = _fn(libssl, "SSL_set_msg_callback", None, _vp, _vp)
SSL_CLIENT_HELLO_SUCCESS = 1
SSL_CLIENT_HELLO_ERROR = 0
SSL_AD_HANDSHAKE_FAILURE = 40
SSL_AD_INTERNAL_ERROR = 80
EXT_EXTENDED_MASTER_SECRET = 23
EXT_SUPPORTED_VERSIONS = 43
TLS1_2_VERSION = 0x0303
TLS1_3_VERSION = 0x0304
X509_V_OK = 0
X509_V_ERR_CERT_HAS_EXPIRED = 10
#: X509_V_ERR_* codes a Checker rejection inside the handshake is reported as
#: (they decide the alert: bad_certificate / handshake_failure).
X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_APPLICATION_VERIFICATION = 50

# --- ALPN, SNI, key log (bodies in extensions.py) ----------------------------
SSL_TLSEXT_ERR_OK = 0
SSL_TLSEXT_ERR_ALERT_FATAL = 2
SSL_TLSEXT_ERR_NOACK = 3
OPENSSL_NPN_NEGOTIATED = 1
CTRL_SET_TLSEXT_SERVERNAME_CB = 53
_PUB = POINTER(c_ubyte)
ALPN_SELECT_CB = CFUNCTYPE(c_int, _vp, POINTER(_PUB), _PUB, _PUB, c_uint, _vp)
SSL_CTX_set_alpn_select_cb = _fn(libssl, "SSL_CTX_set_alpn_select_cb", None, _vp, ALPN_SELECT_CB, _vp)
SNI_CB = CFUNCTYPE(c_int, _vp, POINTER(c_int), _vp)
SSL_CTX_callback_ctrl = _fn(libssl, "SSL_CTX_callback_ctrl", c_long, _vp, c_int, SNI_CB)
KEYLOG_CB = CFUNCTYPE(None, _vp, c_char_p)
SSL_CTX_set_keylog_callback = _fn(libssl, "SSL_CTX_set_keylog_callback", None, _vp, KEYLOG_CB)

# --- sessions and session-ticket keys (bodies in sessions.py) ----------------
CTRL_SESS_NUMBER = 20
SESS_CACHE_CLIENT = 0x0001
SESS_CACHE_SERVER = 0x0002
SESS_CACHE_NO_INTERNAL = 0x0300
NEW_SESSION_CB = CFUNCTYPE(c_int, _vp, _vp)
SSL_CTX_sess_set_new_cb = _fn(libssl, "SSL_CTX_sess_set_new_cb", None, _vp, NEW_SESSION_CB)
SSL_SESSION_free = _fn(libssl, "SSL_SESSION_free", None, _vp)
SSL_SESSION_up_ref = _fn(libssl, "SSL_SESSION_up_ref", c_int, _vp)
SSL_SESSION_is_resumable = _fn(libssl, "SSL_SESSION_is_resumable", c_int, _vp)
SSL_set_session = _fn(libssl, "SSL_set_session", c_int, _vp, _vp)


class OSSLParam(ctypes.Structure):
    """OpenSSL 3's ``OSSL_PARAM`` (the ticket key's MAC parameters)."""

    _fields_ = [
        ("key", c_char_p),
        ("data_type", c_uint),
        ("data", c_void_p),
        ("data_size", c_size_t),
        ("return_size", c_size_t),
    ]


OSSL_PARAM_UTF8_STRING = 4
OSSL_PARAM_OCTET_STRING = 5
OSSL_PARAM_UNMODIFIED = (1 << (8 * ctypes.sizeof(c_size_t))) - 1
TICKET_KEY_CB = CFUNCTYPE(c_int, _vp, POINTER(c_ubyte), POINTER(c_ubyte), _vp, _vp, c_int)
SSL_CTX_set_tlsext_ticket_key_evp_cb = _fn(libssl, "SSL_CTX_set_tlsext_ticket_key_evp_cb", c_int, _vp, TICKET_KEY_CB)
EVP_aes_256_cbc = _fn(libcrypto, "EVP_aes_256_cbc", _vp)
EVP_EncryptInit_ex = _fn(libcrypto, "EVP_EncryptInit_ex", c_int, _vp, _vp, _vp, c_char_p, _vp)
EVP_DecryptInit_ex = _fn(libcrypto, "EVP_DecryptInit_ex", c_int, _vp, _vp, _vp, c_char_p, _vp)
EVP_MAC_CTX_set_params = _fn(libcrypto, "EVP_MAC_CTX_set_params", c_int, _vp, POINTER(OSSLParam))
RAND_bytes = _fn(libcrypto, "RAND_bytes", c_int, _vp, c_int)
SSL_version = _fn(libssl, "SSL_version", c_int, _vp)

# --- CRLs and names (config.py) ----------------------------------------------
X509_V_FLAG_CRL_CHECK = 0x4
X509_V_FLAG_CRL_CHECK_ALL = 0x8
X509_FILETYPE_PEM = 1
X509_STORE_add_lookup = _fn(libcrypto, "X509_STORE_add_lookup", _vp, _vp, _vp)
X509_LOOKUP_file = _fn(libcrypto, "X509_LOOKUP_file", _vp)
X509_load_crl_file = _fn(libcrypto, "X509_load_crl_file", c_int, _vp, c_char_p, c_int)
OBJ_nid2sn = _fn(libcrypto, "OBJ_nid2sn", c_char_p, c_int)

# --- chains in DER and re-verification (chain.py) ----------------------------
SSL_get0_verified_chain = _fn(libssl, "SSL_get0_verified_chain", _vp, _vp)
OPENSSL_sk_num = _fn(libcrypto, "OPENSSL_sk_num", c_int, _vp)
OPENSSL_sk_value = _fn(libcrypto, "OPENSSL_sk_value", _vp, _vp, c_int)
i2d_X509 = _fn(libcrypto, "i2d_X509", c_int, _vp, POINTER(POINTER(c_ubyte)))
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
X509_V_FLAG_USE_CHECK_TIME = 0x2
