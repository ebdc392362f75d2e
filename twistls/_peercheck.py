"""Checking the peer of one connection: the verifier, inside and after the handshake.

A :class:`PeerCheck` belongs to one :class:`~twistls._engine.TLSEngine`.  It
runs the connection's verifier (the Checker) from OpenSSL's verify callback,
on the chains OpenSSL is verifying, so that a rejection fails the handshake
with an alert; at the first failure it verifies an alternative path again with
OpenSSL (:meth:`PeerCheck.reverify_during_handshake`); and after a handshake
that had no certificate exchange (a resumed session, a server whose client
sent none) it runs the verifier once the handshake is done.  It keeps the
chains it checked and the first rejection, and :func:`handshake_failure`
names the cause of a failed handshake.  No Twisted import; the only OpenSSL
access is through :mod:`twistls._openssl`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Callable, Sequence, Union

from M2Crypto import m2

from twistls import _openssl as _ossl
from twistls._reasons import classify
from twistls.errors import (
    HostnameMismatchError,
    TLSError,
    VerificationError,
    verification_error_for_code,
)

if TYPE_CHECKING:
    from M2Crypto import types as m2types

__all__ = [
    "AlternatePath",
    "PeerCheck",
    "alternatives",
    "Verifier",
    "handshake_failure",
    "live_peer_chain",
    "verification_failure",
]

#: What a verifier is called with: (the certificates the peer sent, its own
#: first; the chain OpenSSL verified, peer first and trust anchor last, or
#: ``None`` when the connection does not verify the peer).
Verifier = Callable[[Sequence[bytes], Union[Sequence[bytes], None]], None]
#: Given the certificates the peer sent (its own first), a valid path from
#: them to a trust anchor found by another path builder (peer first, anchor
#: last, DER), or ``None``.  Never raises.
AlternatePath = Callable[[Sequence[bytes]], Union[list[bytes], None]]


class PeerCheck:
    """The verifier of one connection and what it decided.

    Args:
        verifier: see :class:`~twistls._engine.TLSEngine` (``None``: none).
        alternate_path: see :class:`~twistls._engine.TLSEngine`.

    Attributes:
        verifier: the verifier.
        alternate_path: the other path builder, or ``None``.
        checked_in_handshake: the verifier accepted the peer inside the handshake.
        error: the verifier's rejection inside the handshake, or ``None``.
        checked_chains: the (peer, verified) chains the verifier was last
            run on, accepted or not (OpenSSL keeps no peer certificate from a
            handshake its verify callback failed), or ``None``.
        resume_chain: a client's offered session: the chain verified when
            it was made.
    """

    __slots__ = (
        "verifier",
        "alternate_path",
        "checked_in_handshake",
        "error",
        "checked_chains",
        "resume_chain",
        "__weakref__",
    )

    def __init__(self, verifier: Verifier | None, alternate_path: AlternatePath | None) -> None:
        self.verifier = verifier
        self.alternate_path = alternate_path
        self.checked_in_handshake = False
        self.error: TLSError | None = None
        self.checked_chains: tuple[list[bytes], list[bytes] | None] | None = None
        self.resume_chain: tuple[bytes, ...] | None = None

    def install(self, hooks: _ossl.ConnectionHooks, *, verifying: bool, accept_unverified: bool) -> None:
        """Let OpenSSL's verify callback reach this check through ``hooks``
        (which outlive the engine, so they hold this object only weakly):
        inside the handshake wherever the context verifies a chain, and the
        re-verification where it also fails on a chain error."""
        if self.verifier is None or not (verifying or accept_unverified):
            return
        hooks.check = _weak_check(weakref.ref(self))
        if verifying and not accept_unverified:
            hooks.reverify = _weak_reverify(weakref.ref(self))

    def check_during_handshake(self, peer_chain: list[bytes], verified_chain: list[bytes] | None) -> int:
        """Run the verifier from OpenSSL's verify callback, on the chains it is
        verifying.  Returns 0 to accept, or the X509 error code to fail the
        handshake with (the rejection itself is kept in :attr:`error`).
        Never raises."""
        self.checked_chains = (peer_chain, verified_chain)
        error = self.run_verifier(peer_chain, verified_chain)
        if error is not None:
            self.error = error
            if isinstance(error, HostnameMismatchError):
                return _ossl.X509_V_ERR_HOSTNAME_MISMATCH
            return _ossl.X509_V_ERR_APPLICATION_VERIFICATION
        self.checked_in_handshake = True
        return 0

    def reverify_during_handshake(self, store_ctx: int, expired_at: int | None) -> bool:
        """From OpenSSL's verify callback, at the first failure of a
        handshake's verification: verify an alternative with OpenSSL and
        run the verifier on it.

        The alternatives, in order: with ``expired_at`` (a certificate
        expires exactly at the check time, which RFC 5280 counts as valid
        but OpenSSL does not), the same certificates a second earlier;
        then the path :attr:`alternate_path` found (the strict profile's:
        pyca backtracks where OpenSSL does not), with only its
        intermediates as untrusted certificates (and a second earlier, with
        ``expired_at``).  Moving the clock back one second is sound: a
        chain valid at t-1 whose certificates all lie within their validity
        at t-1 differs from one valid at t (RFC 5280, notAfter inclusive)
        only by a notBefore of exactly t, which it then refuses.  It is not
        tried when CRLs are checked (see :func:`twistls._libssl.chain.checks_crls`).

        Returns:
            ``True`` when an alternative verified and the verifier accepted
            it (its chain is then this connection's verified chain); else
            ``False``, and the first failure stands with its error.  Never
            raises an :class:`Exception`: any one is a refusal.
        """
        saved = (self.checked_chains, self.error, self.checked_in_handshake)
        try:
            presented = _ossl.presented_chain(store_ctx)
            if not presented:
                return False
            for chain, at in alternatives(presented, expired_at, self.alternate_path):
                verified = _ossl.reverify_in_handshake(store_ctx, chain[0], chain[1:], at)
                if verified is None:
                    continue
                self.error = None
                if self.check_during_handshake(presented, verified) == 0:
                    return True
        except Exception:  # an allocation failure or a bug: fail closed, with the first error
            pass
        self.checked_chains, self.error, self.checked_in_handshake = saved
        return False

    def after_handshake(
        self, ssl: m2types.SSL, address: int, *, client: bool, verifying: bool
    ) -> tuple[list[bytes], Sequence[bytes] | None, TLSError | None]:
        """The peer chain, the verified chain and the verifier's verdict for a
        handshake of ``ssl`` (``address``: the same as an int) that just
        completed (``None``: accepted).  Where the verifier did not run inside
        the handshake (no certificate exchange) it runs here: on a resumed
        session, a client checks the chain verified when the session was
        made (:attr:`resume_chain`), and refuses when there is none."""
        if self.checked_in_handshake and self.checked_chains is not None:
            peer_chain, verified_chain = self.checked_chains
            return peer_chain, verified_chain, None
        peer_chain = live_peer_chain(ssl, client=client)
        if not verifying:
            verified: Sequence[bytes] | None = None
        elif _ossl.SSL_session_reused(address):
            verified = self.resume_chain if client else _ossl.verified_chain_der(address)
            if client and (not verified or not peer_chain or verified[0] != peer_chain[0]):
                return peer_chain, None, VerificationError(
                    "the resumed session carries no verified certificate chain for its certificate",
                    verify_message="resumed session without a verified chain",
                )
        else:
            verified = _ossl.verified_chain_der(address)
            if client and self.verifier is not None:
                # A verifying client's full handshake always reaches the
                # verify callback at depth 0; if it did not, refuse.
                return peer_chain, verified, VerificationError(
                    "the certificate check did not run during the handshake",
                    verify_message="certificate check not run",
                )
        if self.verifier is None:
            return peer_chain, verified, None
        self.checked_chains = (peer_chain, list(verified) if verified is not None else None)
        return peer_chain, verified, self.run_verifier(peer_chain, verified)

    def run_verifier(self, peer_chain: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> TLSError | None:
        """The verifier's verdict: ``None`` to accept, else the error to fail
        with.  Any exception, of any type, is a rejection."""
        verifier = self.verifier
        if verifier is None:
            return None
        try:
            verifier(peer_chain, verified_chain)
        except TLSError as exc:
            return exc
        except BaseException as exc:  # a verifier bug, or KeyboardInterrupt: the peer stays out
            error = TLSError(f"the certificate check failed unexpectedly: {exc!r}")
            error.__cause__ = exc
            return error
        return None


def alternatives(
    presented: list[bytes], expired_at: int | None, alternate_path: AlternatePath | None, at: int | None = None
) -> list[tuple[list[bytes], int | None]]:
    """The alternatives to verify again after a failed verification of the
    ``presented`` chain, in order, as (untrusted chain, leaf first; the time
    to verify at, ``None``: as the parameters say).

    With ``expired_at`` (a certificate expires exactly then), the same
    certificates a second earlier; then the path ``alternate_path`` finds,
    without its trust anchor (it comes from the store), at ``at`` (and a
    second before ``expired_at``).  A path for another leaf is never tried.
    ``alternate_path``'s exceptions propagate.
    """
    attempts: list[tuple[list[bytes], int | None]] = []
    if expired_at is not None:
        attempts.append((presented, expired_at - 1))
    path = alternate_path(presented) if alternate_path is not None else None
    if path and len(path) >= 2 and path[0] == presented[0]:
        attempts.append((path[:-1], at))
        if expired_at is not None:
            attempts.append((path[:-1], expired_at - 1))
    return attempts


def _weak_check(ref: weakref.ReferenceType[PeerCheck]) -> Callable[[list[bytes], list[bytes] | None], int]:
    """The verify-callback hook of one check, holding it only weakly."""

    def check(peer_chain: list[bytes], verified_chain: list[bytes] | None) -> int:
        peer = ref()
        if peer is None:  # cannot happen while OpenSSL runs its handshake; refuse anyway
            return _ossl.X509_V_ERR_APPLICATION_VERIFICATION
        return peer.check_during_handshake(peer_chain, verified_chain)

    return check


def _weak_reverify(ref: weakref.ReferenceType[PeerCheck]) -> Callable[[int, int | None], bool]:
    """The re-verification hook of one check, holding it only weakly."""

    def reverify(store_ctx: int, expired_at: int | None) -> bool:
        peer = ref()
        return peer is not None and peer.reverify_during_handshake(store_ctx, expired_at)

    return reverify


def live_peer_chain(ssl: m2types.SSL, *, client: bool) -> list[bytes]:
    """The certificates the peer of ``ssl`` sent, in DER, its own first
    (read from the live ``SSL*``)."""
    chain: list[bytes] = []
    stack = m2.ssl_get_peer_cert_chain(ssl)
    if stack is not None:
        for i in range(m2.sk_x509_num(stack)):
            chain.append(bytes(m2.i2d_x509(m2.sk_x509_value(stack, i))))
    if not client:
        # OpenSSL leaves the client's own certificate out of the server-side chain.
        x509 = m2.ssl_get_peer_cert(ssl)
        if x509 is not None:
            try:
                chain.insert(0, bytes(m2.i2d_x509(x509)))
            finally:
                m2.x509_free(x509)
    return chain


def handshake_failure(check: PeerCheck, hooks: _ossl.ConnectionHooks, ssl: int) -> TLSError:
    """Why the handshake of ``ssl`` failed, read right after it did (this
    empties the thread's OpenSSL error queue): the verifier's rejection, a
    callback's refusal or failure, the chain's first verification error, or
    OpenSSL's reasons classified."""
    reasons = _ossl.drain_errors()
    if check.error is not None:  # the verifier rejected the peer inside the handshake
        return check.error
    if hooks.refusal is not None:  # refused by policy in a callback (the peer got an alert)
        return TLSError(f"refused: {hooks.refusal}", openssl_errors=reasons)
    if hooks.error is not None:  # a callback failed: the handshake was failed on purpose
        error = TLSError(f"a TLS callback failed: {hooks.error!r}", openssl_errors=reasons)
        error.__cause__ = hooks.error
        return error
    record = hooks.verify_failure
    if record is not None or any("certificate verify failed" in r for r in reasons):
        if record is None:
            code, depth, subject = int(_ossl.SSL_get_verify_result(ssl)), None, None
        else:
            code, depth, subject = record
        return verification_failure(code, depth, subject, openssl_errors=reasons)
    return classify("; ".join(reasons) or "unknown TLS handshake failure", reasons)


def verification_failure(
    code: int, depth: int | None, subject: str | None, *, openssl_errors: Sequence[str] = ()
) -> VerificationError:
    """The :class:`~twistls.errors.VerificationError` subclass for X509 error
    ``code`` at ``depth`` (``None``: not known) on the certificate ``subject``."""
    message = _ossl.verify_error_string(code)
    where = f" at depth {depth}" if depth is not None else ""
    who = f" ({subject})" if subject else ""
    cls = verification_error_for_code(code)
    return cls(
        f"certificate verify failed: {message} (X509 error {code}{where}){who}",
        verify_code=code,
        verify_message=message,
        depth=depth,
        subject=subject or None,
        openssl_errors=openssl_errors,
    )
