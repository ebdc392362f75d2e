"""The callbacks that decide, inside the handshake, whether it goes on.

The verify callback (chain errors, the connection's check, re-verification
on another path), the server's ClientHello callback and the client's
ServerHello watch (both: TLS 1.2 only with the extended master secret).
Each is a module-level ``CFUNCTYPE`` object that lives as long as the
process; its body catches ``BaseException``, keeps it on the connection's
hooks and fails the handshake.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_size_t, c_ubyte
from typing import Any

from twistls._libssl.chain import (
    subject_line,
    check_time,
    checks_crls,
    der_of,
    expires_exactly_at,
    stack_der,
    store_ssl,
)
from twistls._libssl.hooks import ConnectionHooks, ssl_hooks
from twistls._libssl.lib import (
    CLIENT_HELLO_CB,
    CTRL_GET_MAX_PROTO_VERSION,
    CTRL_GET_MIN_PROTO_VERSION,
    EXT_EXTENDED_MASTER_SECRET,
    EXT_SUPPORTED_VERSIONS,
    MSG_CB,
    SSL_AD_HANDSHAKE_FAILURE,
    SSL_AD_INTERNAL_ERROR,
    SSL_CLIENT_HELLO_ERROR,
    SSL_client_hello_get0_ext,
    SSL_client_hello_get0_legacy_version,
    SSL_CLIENT_HELLO_SUCCESS,
    SSL_ctrl,
    SSL_CTX_set_client_hello_cb,
    SSL_CTX_set_msg_callback,
    SSL_set_msg_callback,
    TLS1_2_VERSION,
    TLS1_3_VERSION,
    VERIFY_CB,
    X509_STORE_CTX_get0_cert,
    X509_STORE_CTX_get0_chain,
    X509_STORE_CTX_get0_untrusted,
    X509_STORE_CTX_get_current_cert,
    X509_STORE_CTX_get_error,
    X509_STORE_CTX_get_error_depth,
    X509_STORE_CTX_set_error,
    X509_V_ERR_APPLICATION_VERIFICATION,
    X509_V_ERR_CERT_HAS_EXPIRED,
    X509_V_OK,
)


# --- the verify callback -----------------------------------------------------
# OpenSSL calls it for every certificate of the chain (with preverify_ok = 0
# for each error, and 1 once per depth when that depth passed).  It records
# the first failure with its depth and subject, so the engine can name them,
# and at depth 0 with the chain verified it runs the connection's check (the
# Checker), so a rejection fails the handshake with an alert.  Anything
# unexpected (no hooks, an exception) fails the handshake: it never lets a
# peer through that OpenSSL or the check did not accept.


def presented_chain(store_ctx: int) -> list[bytes]:
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
        hooks = ssl_hooks(store_ssl(store_ctx))
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
                hooks.verify_failure = (code, depth, subject_line(cert))
            if hooks.accept_unverified:
                return 1
            return _try_alternative(hooks, store_ctx, code, cert)
        if depth == 0 and hooks.check is not None:
            check, hooks.check = hooks.check, None  # once per handshake
            verified = None if hooks.accept_unverified else stack_der(X509_STORE_CTX_get0_chain(store_ctx))
            code = check(presented_chain(store_ctx), verified)
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
def _client_hello_extension(ssl: int, kind: int) -> bytes | None:
    data = POINTER(c_ubyte)()
    size = c_size_t(0)
    if SSL_client_hello_get0_ext(ssl, kind, ctypes.byref(data), ctypes.byref(size)) != 1:
        return None
    return ctypes.string_at(data, size.value) if size.value else b""


def client_hello_versions(ssl: int) -> set[int]:
    """The protocol versions a ClientHello offers (its supported_versions
    extension, or else every version up to its legacy_version)."""
    versions = _client_hello_extension(ssl, EXT_SUPPORTED_VERSIONS)
    if versions:
        body = versions[1 : 1 + versions[0]]
        return {body[i] << 8 | body[i + 1] for i in range(0, len(body) - 1, 2)}
    legacy = int(SSL_client_hello_get0_legacy_version(ssl))
    return set(range(0x0300, legacy + 1)) if 0x0300 <= legacy <= TLS1_3_VERSION else set()


def tls12_would_be_negotiated(ssl: int) -> bool:
    """Whether this server would answer the ClientHello with TLS 1.2: the
    client offers 1.2, and not also a 1.3 the server allows."""
    minimum = int(SSL_ctrl(ssl, CTRL_GET_MIN_PROTO_VERSION, 0, None))
    maximum = int(SSL_ctrl(ssl, CTRL_GET_MAX_PROTO_VERSION, 0, None)) or TLS1_3_VERSION
    offered = client_hello_versions(ssl)
    if TLS1_3_VERSION in offered and minimum <= TLS1_3_VERSION <= maximum:
        return False
    return TLS1_2_VERSION in offered and minimum <= TLS1_2_VERSION <= maximum


def _client_hello(ssl: int | None, alert: Any, arg: int | None) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        if not ssl or hooks is None:
            alert[0] = SSL_AD_INTERNAL_ERROR
            return SSL_CLIENT_HELLO_ERROR
        # Anything but TLS 1.2 is OpenSSL's to accept (1.3) or refuse (older).
        if not tls12_would_be_negotiated(ssl) or _client_hello_extension(ssl, EXT_EXTENDED_MASTER_SECRET) is not None:
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
            if kind == EXT_SUPPORTED_VERSIONS and size >= 2:
                tls13 = int.from_bytes(body[i + 4 : i + 6], "big") == TLS1_3_VERSION
            i += 4 + size
    return random == _HRR_RANDOM, tls13, EXT_EXTENDED_MASTER_SECRET in extensions


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
