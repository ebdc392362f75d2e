"""The sans-IO TLS engine: one M2Crypto ``SSL*`` between two memory BIOs.

Bytes that arrived from the network go in with :meth:`TLSEngine.receive_bytes`
(``b""`` means the transport reached end of file), plaintext the application
wants to send goes in with :meth:`TLSEngine.send_plaintext`; bytes to put on
the wire come out of :meth:`TLSEngine.bytes_to_send` and what happened comes
back as a list of events.  The engine owns no socket, no reactor and imports
nothing from Twisted, so tests can drive two engines back to back.

Contract kept by the engine:

* No plaintext is written into the TLS connection before the handshake is
  complete *and* the verifier (the Checker) approved the peer: earlier
  :meth:`send_plaintext` calls are buffered, then flushed in order.
* No :class:`PlaintextReceived` event is produced before
  :class:`HandshakeCompleted`.
* A failure is reported once, as a :class:`Failed` event carrying a typed
  :class:`~twistls.errors.TLSError`; after it the engine accepts no more input.
* Every ``SSL*`` (and the BIOs it owns) is freed exactly once, by
  :meth:`free` or, failing that, when the engine is garbage collected.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence, Union

import M2Crypto.SSL  # noqa: F401  (initialises M2Crypto's SSL error type)
from M2Crypto import m2
from M2Crypto.SSL.SSLError import SSLError as _SSLError  # the class M2Crypto.SSL re-exports

from twistls import _openssl as _ossl
from twistls._reasons import classify
from twistls.errors import (
    ConfigurationError,
    HostnameMismatchError,
    EngineStateError,
    ProtocolViolationError,
    TLSError,
    VerificationError,
    verification_error_for_code,
)

if TYPE_CHECKING:
    from M2Crypto import types as m2types

__all__ = [
    "ContextHandle",
    "TLSEngine",
    "HandshakeCompleted",
    "PlaintextReceived",
    "CloseNotifyReceived",
    "Truncated",
    "Failed",
    "Event",
    "ConnectionInfo",
]

_RECEIVED_SHUTDOWN = m2.SSL_RECEIVED_SHUTDOWN
#: Plaintext decrypted by one receive_bytes() call is gathered in a per-thread
#: buffer of this size (SSL_read_ex writes into it), then copied out once.
_READ_BUFFER_SIZE = 1 << 18
_read_buffers = threading.local()


def _read_buffer() -> tuple[memoryview, int, ctypes.c_size_t, object]:
    """This thread's (view, address, length out-parameter, keep-alive) read buffer."""
    try:
        return _read_buffers.value  # type: ignore[no-any-return]
    except AttributeError:
        buf = bytearray(_READ_BUFFER_SIZE)
        cbuf = (ctypes.c_char * _READ_BUFFER_SIZE).from_buffer(buf)
        value = (memoryview(buf), ctypes.addressof(cbuf), ctypes.c_size_t(), cbuf)
        _read_buffers.value = value
        return value

#: Bytes accepted after the handshake that produce no event before the peer
#: is cut off (one record is at most 18.5 KiB; a KeyUpdate is 27 bytes).
_MAX_UNPRODUCTIVE = 1 << 16
#: A read or write bigger than this leaves the memory BIOs holding that much
#: capacity (they never shrink): see TLSEngine.release_buffers.
_BIG_IO = 1 << 15


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """The handshake finished and the verifier accepted the peer."""


@dataclass(frozen=True, slots=True)
class PlaintextReceived:
    """Application data arrived (all records decrypted by one call, joined)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseNotifyReceived:
    """The peer ended the TLS session cleanly with close_notify."""


@dataclass(frozen=True, slots=True)
class Truncated:
    """The transport ended after the handshake without close_notify."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The connection failed; ``error`` says why.  Bytes still returned by
    :meth:`TLSEngine.bytes_to_send` (an alert) should be sent before closing."""

    error: TLSError


@dataclass(frozen=True)
class ConnectionInfo:
    """What was negotiated on one TLS connection (plain data).

    Attributes:
        version: ``"TLSv1.3"``, ``"TLSv1.2"``.
        cipher: OpenSSL's cipher name; ``cipher_bits`` its secret bits.
        alpn_protocol: the ALPN protocol agreed on, or ``None``.
        server_name: the SNI name sent (client) or received (server).
        session_reused: whether an earlier session was resumed.
        peer_chain_der: the peer's certificates in DER, its own first.
        verified: whether the peer chain was verified and accepted.
        verify_result: OpenSSL's verify result code (0 = OK).
        compression: always ``None`` (twistls never compresses).
        group: the key-exchange group (``"X25519"``, ``"P-256"``), or ``None``.
        verified_chain_der: the chain OpenSSL verified (peer first, trust
            anchor last), in DER; for a resumed session the one verified
            when it was made; empty when the peer was not verified.
    """

    version: str | None
    cipher: str | None
    cipher_bits: int | None
    alpn_protocol: str | None
    server_name: str | None
    session_reused: bool
    peer_chain_der: tuple[bytes, ...]
    verified: bool
    verify_result: int
    compression: None = None
    group: str | None = None
    verified_chain_der: tuple[bytes, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """The information as JSON-ready plain data; the peer chain becomes a
        list of ``{"subject", "issuer", "sha256", "not_valid_before",
        "not_valid_after", "san"}`` dicts, its own certificate first.

        .. versionadded:: 0.1
        """
        from twistls._info import describe_chain

        return {
            "version": self.version,
            "cipher": self.cipher,
            "cipher_bits": self.cipher_bits,
            "group": self.group,
            "alpn_protocol": self.alpn_protocol,
            "server_name": self.server_name,
            "session_reused": self.session_reused,
            "verified": self.verified,
            "verify_result": self.verify_result,
            "verify_message": _ossl.verify_error_string(self.verify_result),
            "compression": self.compression,
            "peer_chain": describe_chain(self.peer_chain_der),
        }


Event = Union[HandshakeCompleted, PlaintextReceived, CloseNotifyReceived, Truncated, Failed]


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


def _handshake_check(ref: weakref.ReferenceType[TLSEngine]) -> Callable[[list[bytes], list[bytes] | None], int]:
    """The verify-callback hook of one engine, holding it only weakly."""

    def check(peer_chain: list[bytes], verified_chain: list[bytes] | None) -> int:
        engine = ref()
        if engine is None:  # cannot happen while OpenSSL runs its handshake; refuse anyway
            return _ossl.X509_V_ERR_APPLICATION_VERIFICATION
        return engine._check_during_handshake(peer_chain, verified_chain)

    return check


def _handshake_reverify(ref: weakref.ReferenceType[TLSEngine]) -> Callable[[int, int | None], bool]:
    """The re-verification hook of one engine, holding it only weakly."""

    def reverify(store_ctx: int, expired_at: int | None) -> bool:
        engine = ref()
        return engine is not None and engine._reverify_during_handshake(store_ctx, expired_at)

    return reverify


def _free_ssl(ssl: m2types.SSL, token: int, hooks: _ossl.ConnectionHooks, sessions: list[int]) -> None:
    # ``hooks`` rides along so that it outlives the SSL its callbacks serve.
    m2.ssl_free(ssl)
    _ossl.detach(token)
    while sessions:
        _ossl.SSL_SESSION_free(sessions.pop())


#: What a verifier is called with: (the certificates the peer sent, its own
#: first; the chain OpenSSL verified, peer first and trust anchor last, or
#: ``None`` when the connection does not verify the peer).
Verifier = Callable[[Sequence[bytes], Union[Sequence[bytes], None]], None]
#: Given the certificates the peer sent (its own first), a valid path from
#: them to a trust anchor found by another path builder (peer first, anchor
#: last, DER), or ``None``.  Never raises.
AlternatePath = Callable[[Sequence[bytes]], Union[list[bytes], None]]


class TLSEngine:
    """One TLS connection, without I/O.

    Args:
        context: the context handle the connection is made from.
        client: ``True`` for the client role, ``False`` for the server role.
        server_hostname: the SNI name a client sends (``None``: none).
        verifier: ``verifier(peer_chain, verified_chain)`` is called once
            per handshake and raises a :class:`~twistls.errors.TLSError` to
            reject the peer (any other exception, of any type, rejects it
            too).  ``peer_chain`` is what the peer sent, its own certificate
            first; ``verified_chain`` is the chain OpenSSL verified (peer
            first, trust anchor last), or ``None`` when the context does not
            verify.  It runs inside the handshake, from OpenSSL's verify
            callback once the chain is verified, so a rejection fails the
            handshake and sends the peer an alert (``bad_certificate`` for a
            name mismatch, ``handshake_failure`` otherwise).  A resumed
            session has no certificate exchange: it is checked right after
            the handshake on the chain verified when the session was made
            (see :meth:`use_session`), and refused if there is none.
        alternate_path: where OpenSSL's verification (or the verifier, on
            the chain OpenSSL built) fails, a path another builder found
            (pyca's, for the strict PKI profile) is verified again by
            OpenSSL, and the verifier run on it; the connection is accepted
            only if both accept, and that chain is then the verified chain.
            A client factory passes its Checker's ``alternate_path``.

    Raises:
        ConfigurationError: OpenSSL could not create the connection or
            rejected the SNI name.

    .. versionadded:: 0.1
    """

    _INIT, _HANDSHAKING, _ESTABLISHED, _CLOSED, _FAILED = range(5)

    def __init__(
        self,
        context: ContextHandle,
        *,
        client: bool,
        server_hostname: str | None = None,
        verifier: Verifier | None = None,
        alternate_path: AlternatePath | None = None,
    ) -> None:
        self.client = client
        self._context = context
        self._verifier = verifier
        self._alternate_path = alternate_path
        ssl = m2.ssl_new(context.ptr)
        if ssl is None:
            raise ConfigurationError("OpenSSL could not create an SSL object: " + "; ".join(_ossl.drain_errors()))
        self._ssl = ssl
        # A SWIG pointer has __int__; the stub's NewType does not say so.
        self._address: int = int(ssl)  # type: ignore[call-overload]
        self._hooks = hooks = _ossl.ConnectionHooks()
        hooks.accept_unverified = context.accept_unverified
        try:
            token = _ossl.attach_ssl(self._address, hooks)
        except MemoryError as exc:
            m2.ssl_free(ssl)
            raise ConfigurationError(str(exc)) from None
        # Sessions a TLS 1.2 handshake hands out before it is accepted.
        self._early_sessions: list[int] = []
        self._session_sink: Callable[[int, tuple[bytes, ...] | None], None] | None = None
        self._finalizer = weakref.finalize(self, _free_ssl, ssl, token, hooks, self._early_sessions)
        self._rbio = m2.bio_new(m2.bio_s_mem())
        self._wbio = m2.bio_new(m2.bio_s_mem())
        m2.bio_set_mem_eof_return(self._rbio, -1)
        m2.bio_set_mem_eof_return(self._wbio, -1)
        m2.ssl_set_bio(ssl, self._rbio, self._wbio)  # the SSL now owns both BIOs
        if client:
            m2.ssl_set_connect_state(ssl)
            if server_hostname:
                try:
                    m2.ssl_set_tlsext_host_name(ssl, server_hostname)
                except _SSLError as exc:
                    self.free()
                    raise ConfigurationError(f"invalid server name {server_hostname!r}: {exc}") from exc
        else:
            m2.ssl_set_accept_state(ssl)
        self._state = self._INIT
        self._pending: list[bytes] = []
        self._eof = False
        self._close_notify_sent = False
        self.error: TLSError | None = None
        self.peer_closed = False
        self._established_once = False
        self._unproductive = 0
        #: Whether the connection failed (a plain attribute: the wrapper reads it on every write).
        self.failed = False
        self._renew_bios = False
        #: Reads and writes over 32 KiB since the memory BIOs were last renewed.
        self.big_io = 0
        # The verifier runs inside the handshake (so that a rejection sends
        # the peer an alert) wherever OpenSSL verifies a certificate chain;
        # a resumed session, and a server whose client sent no certificate,
        # are checked once the handshake is done.
        self._checked_in_handshake = False
        self._check_error: TLSError | None = None
        # The chains the verifier accepted (or rejected: OpenSSL keeps no peer
        # certificate from a handshake its verify callback failed).
        self._checked_chains: tuple[list[bytes], list[bytes] | None] | None = None
        # A client's offered session: the chain verified when it was made.
        self._resume_chain: tuple[bytes, ...] | None = None
        #: What the handshake negotiated, captured when it completed: every
        #: accessor answers from it, so none touches the SSL once it is freed.
        self._info: ConnectionInfo | None = None
        self._alpn: bytes | None = None
        if verifier is not None and (context.verifying or context.accept_unverified):
            hooks.check = _handshake_check(weakref.ref(self))
            if context.verifying and not context.accept_unverified:
                hooks.reverify = _handshake_reverify(weakref.ref(self))

    # -- input -----------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake.  A client puts its ClientHello in
        :meth:`bytes_to_send`; a server just waits for one.  Calling it is
        optional: the first :meth:`receive_bytes` starts the handshake too.

        Raises:
            EngineStateError: the handshake was already started.
        """
        if self._state != self._INIT:
            raise EngineStateError("the TLS handshake was already started")
        self._state = self._HANDSHAKING
        events: list[Event] = []
        self._handshake(events)
        if events:  # only a local failure can happen this early
            failed = events[-1]
            if isinstance(failed, Failed):
                raise failed.error

    def receive_bytes(self, data: bytes) -> list[Event]:
        """Feed bytes from the network; ``b""`` means the transport ended.

        Returns:
            The events this input produced, in order.  Input after the
            connection failed or closed is ignored.
        """
        state = self._state
        if state >= self._CLOSED:
            return []
        events: list[Event] = []
        if data:
            m2.bio_write(self._rbio, data)
            if len(data) > _BIG_IO:
                self.big_io += 1
        else:
            self._eof = True
            m2.bio_set_mem_eof_return(self._rbio, 0)
        if state == self._INIT:
            self._state = state = self._HANDSHAKING
        if state == self._HANDSHAKING:
            self._handshake(events)
        if self._state == self._ESTABLISHED:
            before = len(events)
            self._read(events)
            if len(events) > before:
                self._unproductive = 0
            elif data:
                # Input that yields nothing (KeyUpdate, empty records...) is
                # bounded: a legitimate peer completes a record long before.
                self._unproductive += len(data)
                if self._unproductive > _MAX_UNPRODUCTIVE:
                    self._fail(
                        ProtocolViolationError(
                            f"the peer sent over {_MAX_UNPRODUCTIVE} bytes without application data "
                            "(a flood of post-handshake messages such as KeyUpdate)"
                        ),
                        events,
                    )
        return events

    def send_plaintext(self, data: bytes | memoryview) -> None:
        """Queue application data.  Before the handshake is done and the peer
        approved it is buffered, then sent in order.

        Raises:
            EngineStateError: the connection is closed or failed.
        """
        state = self._state
        if state == self._ESTABLISHED:
            if self._close_notify_sent:
                raise EngineStateError("cannot send after close()")
            # Any buffer (the memoryview slices of a big write) works; the stub says bytes.
            if m2.ssl_write_nbio(self._ssl, data) < 0:  # type: ignore[arg-type]
                self._pending.append(bytes(data))
        elif state < self._ESTABLISHED:
            self._pending.append(bytes(data))
        else:
            raise EngineStateError("cannot send on a closed or failed TLS connection")

    def bytes_to_send(self) -> bytes:
        """Return (and forget) the bytes waiting to go on the wire."""
        if not self._finalizer.alive:  # freed: the BIO is gone
            return b""
        pending = m2.bio_ctrl_pending(self._wbio)
        if not pending:
            return b""
        data = m2.bio_read(self._wbio, pending)
        if pending > _BIG_IO:
            self.big_io += 1
        if self._renew_bios and self._state == self._ESTABLISHED:
            self._fresh_bios()
        return data if data is not None else b""

    def release_buffers(self) -> bool:
        """Give back the memory BIOs' capacity.

        A memory BIO keeps the capacity of the most it ever held, so a
        connection that moved a burst of data and then went idle would hold
        hundreds of KiB.  When :attr:`big_io` is non-zero and both BIOs are
        empty, this swaps in empty ones (OpenSSL's own record buffers are
        already released when idle: ``SSL_MODE_RELEASE_BUFFERS``).  The
        wrapper calls it once a connection has seen no big read or write for
        a while.  Returns whether it did.
        """
        if not self.big_io or self._state != self._ESTABLISHED or not self._finalizer.alive:
            return False
        if not self._fresh_bios():
            return False
        self.big_io = 0
        return True

    def _fresh_bios(self) -> bool:
        # A memory BIO keeps the capacity of the largest flight it held (the
        # handshake with its certificate chain): once both are drained after
        # the handshake, idle connections get empty ones (~2-3 KiB each less).
        if self._eof or m2.bio_ctrl_pending(self._rbio) or m2.bio_ctrl_pending(self._wbio):
            return False
        self._renew_bios = False
        rbio = m2.bio_new(m2.bio_s_mem())
        wbio = m2.bio_new(m2.bio_s_mem())
        m2.bio_set_mem_eof_return(rbio, -1)
        m2.bio_set_mem_eof_return(wbio, -1)
        m2.ssl_set_bio(self._ssl, rbio, wbio)  # frees the old pair
        self._rbio, self._wbio = rbio, wbio
        return True

    def close(self) -> None:
        """Send close_notify after any buffered plaintext (also in answer to the
        peer's close_notify).  Closing an engine whose handshake is not done
        only stops it (nothing is sent).  Idempotent."""
        if self._state == self._FAILED or self._close_notify_sent or not self._finalizer.alive:
            return
        if self._established_once:
            if self._state == self._ESTABLISHED:
                self._flush_pending()
            self._close_notify_sent = True
            _ossl.ERR_clear_error()
            m2.ssl_shutdown(self._ssl)
            _ossl.ERR_clear_error()
        else:
            self._state = self._CLOSED

    def free(self) -> None:
        """Release the OpenSSL objects now.  Idempotent; the engine is unusable after."""
        self._state = max(self._state, self._CLOSED)
        self._finalizer()

    # -- state -------------------------------------------------------------------

    @property
    def handshake_done(self) -> bool:
        """Whether the handshake completed and the peer was approved."""
        return self._established_once and self.error is None


    @property
    def pending_plaintext(self) -> int:
        """Bytes of plaintext buffered until the handshake completes."""
        return sum(len(p) for p in self._pending)

    @property
    def ssl_address(self) -> int:
        """The ``SSL*`` as an int, for :mod:`twistls._openssl` calls."""
        return self._address

    # -- connection information ------------------------------------------------

    def version(self) -> str | None:
        """Negotiated protocol version (``"TLSv1.3"``), or ``None`` before the handshake."""
        return self._info.version if self._info is not None else None

    def cipher(self) -> tuple[str, int] | None:
        """Negotiated cipher name and its secret bits, or ``None``."""
        info = self._info
        if info is None or info.cipher is None:
            return None
        return info.cipher, info.cipher_bits or 0

    def session_reused(self) -> bool:
        """Whether the handshake resumed an earlier session."""
        if self._info is not None:
            return self._info.session_reused
        return self._finalizer.alive and bool(_ossl.SSL_session_reused(self._address))

    def alpn_protocol(self) -> bytes | None:
        """The ALPN protocol both sides agreed on, or ``None``."""
        return self._alpn

    def negotiated_group(self) -> str | None:
        """The key-exchange group (``"X25519"``, ``"P-256"``), or ``None``."""
        return self._info.group if self._info is not None else None

    def set_alpn_protocols(self, protocols: list[bytes]) -> None:
        """Server role: choose among ``protocols`` (preference order) for this
        connection, instead of the context's list.  Call before the handshake."""
        if protocols:
            self._hooks.alpn = _ossl.alpn_array(list(protocols))

    def use_session(self, session: int, verified_chain: Sequence[bytes] | None = None) -> None:
        """Client role: offer ``SSL_SESSION*`` ``session`` for resumption (this
        engine takes its own reference).  Call before the handshake.

        Args:
            session: the session.
            verified_chain: the chain verified when the session was made
                (what :meth:`on_new_session` sinks receive).  A verifying
                engine that resumes a session without it refuses the peer.

        Raises:
            ConfigurationError: OpenSSL refused the session.
        """
        if _ossl.SSL_set_session(self._address, session) != 1:
            raise ConfigurationError("OpenSSL refused the cached session: " + "; ".join(_ossl.drain_errors()))
        self._resume_chain = tuple(verified_chain) if verified_chain is not None else None

    def on_new_session(self, sink: Callable[[int, tuple[bytes, ...] | None], None]) -> None:
        """Client role: call ``sink(SSL_SESSION*, verified_chain)`` for each
        resumable session the server hands out (the sink owns one reference
        and must free it); ``verified_chain`` is the chain this connection
        verified (``None`` when it verifies none), to be given back to
        :meth:`use_session` with the session."""

        self._session_sink = sink
        ref = weakref.ref(self)  # the hooks outlive the engine: they must not keep it alive

        def deliver(session: int) -> None:
            engine = ref()
            if engine is None:
                _ossl.SSL_SESSION_free(session)
            elif engine._info is None:  # TLS 1.2: before the handshake was accepted
                engine._early_sessions.append(session)
            else:
                engine._hand_session(session)

        self._hooks.session_sink = deliver

    def _hand_session(self, session: int) -> None:
        sink, info = self._session_sink, self._info
        if sink is None or info is None:
            _ossl.SSL_SESSION_free(session)
            return
        sink(session, info.verified_chain_der if self._context.verifying else None)

    def server_name(self) -> str | None:
        """The SNI name (sent by this client, or received by this server)."""
        if self._info is not None:
            return self._info.server_name
        if not self._finalizer.alive:
            return None
        name = _ossl.SSL_get_servername(self._address, 0)
        return name.decode("ascii", "replace") if name else None

    def verify_result(self) -> int | None:
        """OpenSSL's verify result for the peer chain (0 = OK), or ``None``
        once the engine is freed without a completed handshake."""
        if self._info is not None:
            return self._info.verify_result
        if not self._finalizer.alive:
            return None
        return int(_ossl.SSL_get_verify_result(self._address))

    def peer_certificate_der(self) -> bytes | None:
        """The peer's certificate in DER, or ``None`` if it sent none."""
        chain = self.peer_chain_der()
        return chain[0] if chain else None

    def verified_chain_der(self) -> list[bytes]:
        """The chain OpenSSL verified, in DER: the peer's certificate first,
        the trust anchor last (empty when verification is off).  For a
        resumed session, the chain verified when the session was made."""
        if self._info is not None:
            return list(self._info.verified_chain_der)
        if self._checked_chains is not None:
            return list(self._checked_chains[1] or ())
        if not self._finalizer.alive:
            return []
        return _ossl.verified_chain_der(self._address)

    def _check_during_handshake(self, peer_chain: list[bytes], verified_chain: list[bytes] | None) -> int:
        """Run the verifier from OpenSSL's verify callback, on the chains it is
        verifying.  Returns 0 to accept, or the X509 error code to fail the
        handshake with (the rejection itself is kept for :meth:`_handshake_failure`).
        Never raises."""
        self._checked_chains = (peer_chain, verified_chain)
        error = self._run_verifier(peer_chain, verified_chain)
        if error is not None:
            self._check_error = error
            if isinstance(error, HostnameMismatchError):
                return _ossl.X509_V_ERR_HOSTNAME_MISMATCH
            return _ossl.X509_V_ERR_APPLICATION_VERIFICATION
        self._checked_in_handshake = True
        return 0

    def _reverify_during_handshake(self, store_ctx: int, expired_at: int | None) -> bool:
        """From OpenSSL's verify callback, at the first failure of a
        handshake's verification: verify an alternative with OpenSSL and
        run the verifier on it.

        The alternatives, in order: with ``expired_at`` (a certificate
        expires exactly at the check time, which RFC 5280 counts as valid
        but OpenSSL does not), the same certificates a second earlier;
        then the path :attr:`_alternate_path` found (the strict profile's:
        pyca backtracks where OpenSSL does not), with only its
        intermediates as untrusted certificates (and a second earlier, with
        ``expired_at``).  Moving the clock back one second is sound: a
        chain valid at t-1 whose certificates all lie within their validity
        at t-1 differs from one valid at t (RFC 5280, notAfter inclusive)
        only by a notBefore of exactly t, which it then refuses.  It is not
        tried when CRLs are checked (see :func:`twistls._openssl.checks_crls`).

        Returns:
            ``True`` when an alternative verified and the verifier accepted
            it (its chain is then this connection's verified chain); else
            ``False``, and the first failure stands with its error.  Never
            raises an :class:`Exception`: any one is a refusal.
        """
        saved = (self._checked_chains, self._check_error, self._checked_in_handshake)
        try:
            presented = _ossl.presented_chain(store_ctx)
            if not presented:
                return False
            attempts: list[tuple[list[bytes], int | None]] = []
            if expired_at is not None:
                attempts.append((presented, expired_at - 1))
            finder = self._alternate_path
            path = finder(presented) if finder is not None else None
            if path and len(path) >= 2 and path[0] == presented[0]:
                attempts.append((path[:-1], None))  # the anchor comes from the store
                if expired_at is not None:
                    attempts.append((path[:-1], expired_at - 1))
            for chain, at in attempts:
                verified = _ossl.reverify_in_handshake(store_ctx, chain[0], chain[1:], at)
                if verified is None:
                    continue
                self._check_error = None
                if self._check_during_handshake(presented, verified) == 0:
                    return True
        except Exception:  # an allocation failure or a bug: fail closed, with the first error
            pass
        self._checked_chains, self._check_error, self._checked_in_handshake = saved
        return False

    def _run_verifier(self, peer_chain: Sequence[bytes], verified_chain: Sequence[bytes] | None) -> TLSError | None:
        """The verifier's verdict: ``None`` to accept, else the error to fail
        with.  Any exception, of any type, is a rejection."""
        verifier = self._verifier
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

    def peer_chain_der(self) -> list[bytes]:
        """The certificates the peer sent, in DER, its own certificate first."""
        if self._info is not None:
            return list(self._info.peer_chain_der)
        if self._checked_chains is not None:
            return list(self._checked_chains[0])
        if not self._finalizer.alive:
            return []
        return self._live_peer_chain()

    def _live_peer_chain(self) -> list[bytes]:
        chain: list[bytes] = []
        stack = m2.ssl_get_peer_cert_chain(self._ssl)
        if stack is not None:
            for i in range(m2.sk_x509_num(stack)):
                chain.append(bytes(m2.i2d_x509(m2.sk_x509_value(stack, i))))
        if not self.client:
            # OpenSSL leaves the client's own certificate out of the server-side chain.
            x509 = m2.ssl_get_peer_cert(self._ssl)
            if x509 is not None:
                try:
                    chain.insert(0, bytes(m2.i2d_x509(x509)))
                finally:
                    m2.x509_free(x509)
        return chain

    def info(self) -> ConnectionInfo:
        """Everything negotiated, as one :class:`ConnectionInfo` (captured when
        the handshake completed; before that, and after a failed handshake,
        whatever is known)."""
        if self._info is not None:
            return self._info
        return ConnectionInfo(
            version=None,
            cipher=None,
            cipher_bits=None,
            alpn_protocol=None,
            server_name=self.server_name(),
            session_reused=False,
            peer_chain_der=(),
            verified=False,
            verify_result=self.verify_result() or 0,
        )

    def _capture_info(self, peer_chain: list[bytes], verified_chain: Sequence[bytes] | None) -> None:
        """Record what the handshake negotiated (the SSL is alive here)."""
        ssl, address = self._ssl, self._address
        c = m2.ssl_get_current_cipher(ssl)
        self._alpn = alpn = _ossl.alpn_selected(address)
        name = _ossl.SSL_get_servername(address, 0)
        self._info = ConnectionInfo(
            version=str(m2.ssl_get_version(ssl)),
            cipher=str(m2.ssl_cipher_get_name(c)) if c is not None else None,
            cipher_bits=int(m2.ssl_cipher_get_bits(c)) if c is not None else None,
            alpn_protocol=alpn.decode("ascii", "replace") if alpn is not None else None,
            server_name=name.decode("ascii", "replace") if name else None,
            session_reused=bool(_ossl.SSL_session_reused(address)),
            peer_chain_der=tuple(peer_chain),
            verified=self._context.verifying,
            verify_result=int(_ossl.SSL_get_verify_result(address)),
            group=_ossl.group_name(_ossl.negotiated_group(address)),
            verified_chain_der=tuple(verified_chain or ()),
        )

    # -- internals -----------------------------------------------------------------

    def _handshake(self, events: list[Event]) -> None:
        _ossl.ERR_clear_error()
        ret = m2.ssl_do_handshake(self._ssl)  # type: ignore[attr-defined]  # in _m2crypto, missing from its stub
        if ret == 1:
            self._established(events)
            return
        err = _ossl.SSL_get_error(self._address, ret)
        if err in (_ossl.SSL_ERROR_WANT_READ, _ossl.SSL_ERROR_WANT_WRITE):
            if self._eof:
                self._fail(TLSError("the peer closed the connection during the TLS handshake"), events)
            return
        self._fail(self._handshake_failure(), events)

    def _established(self, events: list[Event]) -> None:
        # Every check comes first: the connection is established (and
        # plaintext flows) only once all of them passed.
        version = str(m2.ssl_get_version(self._ssl))
        if version != "TLSv1.3" and not _ossl.extms_used(self._address):
            self._fail(
                TLSError(f"the peer did not negotiate the extended master secret ({version})"),
                events,
                discard_output=True,
            )
            return
        peer_chain, verified_chain, error = self._post_handshake_check()
        if error is not None:
            self._fail(error, events, discard_output=True)
            return
        self._capture_info(peer_chain, verified_chain)
        while self._early_sessions:
            self._hand_session(self._early_sessions.pop(0))
        self._state = self._ESTABLISHED
        self._renew_bios = not self._established_once
        self._established_once = True
        self.peer_closed = False
        events.append(HandshakeCompleted())
        self._flush_pending()

    def _post_handshake_check(self) -> tuple[list[bytes], Sequence[bytes] | None, TLSError | None]:
        """The peer chain, the verified chain and the verifier's verdict for a
        handshake that just completed (``None``: accepted)."""
        verifying = self._context.verifying
        if self._checked_in_handshake and self._checked_chains is not None:
            peer_chain, verified_chain = self._checked_chains
            return peer_chain, verified_chain, None
        peer_chain = self._live_peer_chain()
        if not verifying:
            verified: Sequence[bytes] | None = None
        elif _ossl.SSL_session_reused(self._address):
            verified = self._resume_chain if self.client else _ossl.verified_chain_der(self._address)
            if self.client and (not verified or not peer_chain or verified[0] != peer_chain[0]):
                return peer_chain, None, VerificationError(
                    "the resumed session carries no verified certificate chain for its certificate",
                    verify_message="resumed session without a verified chain",
                )
        else:
            verified = _ossl.verified_chain_der(self._address)
            if self.client and self._verifier is not None:
                # A verifying client's full handshake always reaches the
                # verify callback at depth 0; if it did not, refuse.
                return peer_chain, verified, VerificationError(
                    "the certificate check did not run during the handshake",
                    verify_message="certificate check not run",
                )
        if self._verifier is None:
            return peer_chain, verified, None
        self._checked_chains = (peer_chain, list(verified) if verified is not None else None)
        return peer_chain, verified, self._run_verifier(peer_chain, verified)

    def _flush_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            data = b"".join(pending)
            if m2.ssl_write_nbio(self._ssl, data) < 0:
                self._pending.append(data)

    def _read(self, events: list[Event]) -> None:
        # Every record goes straight into one buffer (SSL_read_ex returns one
        # record per call); the plaintext is copied out once, at the end.
        view, base, got, _ = _read_buffer()
        read_ex = _ossl.SSL_read_ex
        address = self._address
        filled = 0
        _ossl.ERR_clear_error()  # SSL_get_error must not see a stale error
        while True:
            if read_ex(address, base + filled, _READ_BUFFER_SIZE - filled, got) == 1:
                filled += got.value
                if filled == _READ_BUFFER_SIZE:
                    events.append(PlaintextReceived(bytes(view)))
                    filled = 0
                continue
            err = _ossl.SSL_get_error(address, 0)
            if err == _ossl.SSL_ERROR_WANT_READ or err == _ossl.SSL_ERROR_WANT_WRITE:
                break
            if filled:
                events.append(PlaintextReceived(bytes(view[:filled])))
            if err == _ossl.SSL_ERROR_ZERO_RETURN:
                self.peer_closed = True
                self._state = self._CLOSED
                events.append(CloseNotifyReceived())
                return
            reasons = _ossl.drain_errors()
            if self._eof and not (m2.ssl_get_shutdown(self._ssl) & _RECEIVED_SHUTDOWN):
                self._state = self._CLOSED
                events.append(Truncated())
            else:
                self._fail(classify(reasons[0] if reasons else "unexpected eof while reading", []), events)
            return
        if filled:
            events.append(PlaintextReceived(bytes(view[:filled])))

    def _fail(self, error: TLSError, events: list[Event], *, discard_output: bool = False) -> None:
        self._state = self._FAILED
        self.failed = True
        self.error = error
        self._pending = []
        if discard_output:
            self.bytes_to_send()
        events.append(Failed(error))

    def _handshake_failure(self) -> TLSError:
        reasons = _ossl.drain_errors()
        hooks = self._hooks
        if self._check_error is not None:  # the verifier rejected the peer inside the handshake
            return self._check_error
        if hooks.refusal is not None:  # refused by policy in a callback (the peer got an alert)
            return TLSError(f"refused: {hooks.refusal}", openssl_errors=reasons)
        if hooks.error is not None:  # a callback failed: the handshake was failed on purpose
            error = TLSError(f"a TLS callback failed: {hooks.error!r}", openssl_errors=reasons)
            error.__cause__ = hooks.error
            return error
        record = hooks.verify_failure
        if record is not None or any("certificate verify failed" in r for r in reasons):
            if record is None:
                code, depth, subject = int(_ossl.SSL_get_verify_result(self._address)), None, None
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
