"""The owner of one OpenSSL ``SSL_CTX``, shared by the context builder and the engine.

No Twisted import: the context factories build it (:mod:`twistls._ctxbuild`)
and every :class:`~twistls._engine.TLSEngine` made from it holds it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from M2Crypto import m2

from twistls import _openssl as _ossl
from twistls.errors import ConfigurationError

if TYPE_CHECKING:
    from M2Crypto import types as m2types

__all__ = ["ContextHandle"]


class ContextHandle:
    """Owns one OpenSSL ``SSL_CTX`` made with ``m2.ssl_ctx_new``.

    M2Crypto's :class:`M2Crypto.SSL.Context` is avoided on purpose: its
    constructor ORs in OpenSSL 1.0-era option bits that cannot be cleared
    through M2Crypto and that disable truncation detection on OpenSSL 3.

    Attributes:
        ptr: the SWIG ``SSL_CTX *`` for ``m2.*`` calls.
        address: the same pointer as an int, for :mod:`twistls._openssl`.
        verifying: whether peer verification is on (set by the builder).
        accept_unverified: chain errors do not fail the handshake (the
            ``insecure_skip_verify`` client; set by the builder).  The
            verifier still runs inside the handshake, on the peer's own
            certificate only, so a pin mismatch sends an alert.
        hooks: what OpenSSL's callbacks need of this context (ALPN, SNI,
            key log), reached through the SSL_CTX's ex_data.
    """

    def __init__(self) -> None:
        ptr = m2.ssl_ctx_new(m2.sslv23_method())
        if ptr is None:
            raise ConfigurationError("OpenSSL could not create an SSL_CTX: " + "; ".join(_ossl.drain_errors()))
        self.ptr = ptr
        # A SWIG pointer has __int__; the stub's NewType does not say so.
        self.address: int = int(ptr)  # type: ignore[call-overload]
        self.verifying = False
        self.accept_unverified = False
        self.keepalive: list[object] = []  # objects C callbacks rely on
        self.hooks = _ossl.ContextHooks()
        try:
            token = _ossl.attach_ctx(self.address, self.hooks)
        except MemoryError as exc:
            m2.ssl_ctx_free(ptr)
            raise ConfigurationError(str(exc)) from None
        self._finalizer = weakref.finalize(self, _free_ctx, ptr, token, self.hooks)

    def free(self) -> None:
        """Release the ``SSL_CTX`` now (engines made from it keep their own reference)."""
        self._finalizer()


def _free_ctx(ptr: m2types.SSL_CTX, token: int, hooks: _ossl.ContextHooks) -> None:
    # SSL objects made from the context hold their own reference to the
    # SSL_CTX; their engines also hold the ContextHandle, so this runs only
    # once no engine of this context is alive.
    m2.ssl_ctx_free(ptr)
    _ossl.detach(token)
