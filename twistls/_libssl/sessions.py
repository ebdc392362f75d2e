"""Session resumption: the client's new-session callback, the server's
session cache, and session-ticket keys shared by a fleet (the ticket-key
callback hands them to OpenSSL's own AES-256-CBC and HMAC-SHA256).
"""

from __future__ import annotations

import ctypes
from ctypes import c_void_p
from typing import Any

from twistls._libssl.hooks import ContextHooks, ctx_hooks, ssl_hooks
from twistls._libssl.lib import (
    CTRL_SET_SESS_CACHE_MODE,
    CTRL_SET_SESS_CACHE_SIZE,
    drain_errors,
    EVP_aes_256_cbc,
    EVP_DecryptInit_ex,
    EVP_EncryptInit_ex,
    EVP_MAC_CTX_set_params,
    NEW_SESSION_CB,
    OP_NO_TICKET,
    OSSL_PARAM_OCTET_STRING,
    OSSL_PARAM_UNMODIFIED,
    OSSL_PARAM_UTF8_STRING,
    OSSLParam,
    RAND_bytes,
    SESS_CACHE_CLIENT,
    SESS_CACHE_NO_INTERNAL,
    SESS_CACHE_SERVER,
    SSL_CTX_ctrl,
    SSL_CTX_sess_set_new_cb,
    SSL_CTX_set_options,
    SSL_CTX_set_timeout,
    SSL_CTX_set_tlsext_ticket_key_evp_cb,
    SSL_get_SSL_CTX,
    SSL_version,
    TICKET_KEY_CB,
    TLS1_3_VERSION,
)


_TICKET_IV_LENGTH = 16
_DIGEST_NAME = ctypes.create_string_buffer(b"SHA256")


# --- sessions -------------------------------------------------------------------


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


class TicketKeyMaterial:
    """One ticket key as OpenSSL needs it: name, AES key and the MAC
    parameters (ctypes objects kept alive as long as the context)."""

    __slots__ = ("name", "aes_key", "params", "_hmac")

    def __init__(self, name: bytes, hmac_key: bytes, aes_key: bytes) -> None:
        self.name = name
        self.aes_key = aes_key
        self._hmac = ctypes.create_string_buffer(hmac_key, len(hmac_key))
        self.params = (OSSLParam * 3)(
            OSSLParam(b"key", OSSL_PARAM_OCTET_STRING, ctypes.cast(self._hmac, c_void_p), len(hmac_key), OSSL_PARAM_UNMODIFIED),
            OSSLParam(b"digest", OSSL_PARAM_UTF8_STRING, ctypes.cast(_DIGEST_NAME, c_void_p), 6, OSSL_PARAM_UNMODIFIED),
            OSSLParam(None, 0, None, 0, 0),
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
                if index == 0 and SSL_version(ssl) != TLS1_3_VERSION:
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
