"""Certificate chains in DER, and OpenSSL re-verifying another path.

Copies ``STACK_OF(X509)`` out as DER (what the Checker reads), and verifies a
chain again on a fresh ``X509_STORE_CTX`` set up the way libssl sets one up
(:func:`reverify`, :func:`reverify_in_handshake`).
"""

from __future__ import annotations

import ctypes
import time
from ctypes import POINTER, c_ubyte

from twistls._libssl.lib import (
    X509_get_subject_name,
    X509_NAME_oneline,
    d2i_X509,
    ERR_pop_to_mark,
    ERR_set_mark,
    i2d_X509,
    OPENSSL_sk_free,
    OPENSSL_sk_new_null,
    OPENSSL_sk_num,
    OPENSSL_sk_push,
    OPENSSL_sk_value,
    SSL_get0_param,
    SSL_get0_verified_chain,
    SSL_get_ex_data_X509_STORE_CTX_idx,
    SSL_get_security_level,
    SSL_is_server,
    X509_cmp_time,
    X509_free,
    X509_get0_notAfter,
    X509_STORE_CTX_free,
    X509_STORE_CTX_get0_chain,
    X509_STORE_CTX_get0_param,
    X509_STORE_CTX_get0_store,
    X509_STORE_CTX_get_error,
    X509_STORE_CTX_get_ex_data,
    X509_STORE_CTX_init,
    X509_STORE_CTX_new,
    X509_STORE_CTX_set_default,
    X509_V_FLAG_CRL_CHECK,
    X509_V_FLAG_CRL_CHECK_ALL,
    X509_V_FLAG_USE_CHECK_TIME,
    X509_V_OK,
    X509_verify_cert,
    X509_VERIFY_PARAM_get_flags,
    X509_VERIFY_PARAM_get_time,
    X509_VERIFY_PARAM_set1,
    X509_VERIFY_PARAM_set_auth_level,
    X509_VERIFY_PARAM_set_time,
)


_STORE_IDX: list[int] = []


def store_ssl(store_ctx: int) -> int | None:
    if not _STORE_IDX:
        _STORE_IDX.append(SSL_get_ex_data_X509_STORE_CTX_idx())
    return X509_STORE_CTX_get_ex_data(store_ctx, _STORE_IDX[0])  # type: ignore[no-any-return]


# --- the verified chain (for the Checker's name-constraint and purpose checks) ---


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


def subject_line(cert: int | None) -> str:
    """The subject of ``X509*`` ``cert`` (borrowed) as OpenSSL prints it on
    one line (``""`` for NULL or no name)."""
    name = X509_get_subject_name(cert) if cert else None
    if not name:
        return ""
    buf = ctypes.create_string_buffer(512)
    X509_NAME_oneline(name, buf, 512)
    return buf.value.decode("utf-8", "replace")


def stack_der(stack: int | None, *, limit: int | None = 64) -> list[bytes]:
    """The certificates of a ``STACK_OF(X509)`` in DER, in order (empty for
    NULL), at most the first ``limit`` (``None``: all)."""
    if not stack:
        return []
    chain: list[bytes] = []
    count = OPENSSL_sk_num(stack)
    for i in range(count if limit is None else min(count, limit)):
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
    ssl = store_ssl(store_ctx)
    store = X509_STORE_CTX_get0_store(store_ctx)
    param = SSL_get0_param(ssl) if ssl else None
    if not ssl or not store or not param:
        raise MemoryError("the verification has no connection or store to re-verify with")
    purpose = b"ssl_client" if SSL_is_server(ssl) else b"ssl_server"
    return reverify(store, param, SSL_get_security_level(ssl), purpose, leaf, untrusted, at)
