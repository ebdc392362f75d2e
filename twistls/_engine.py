"""The sans-IO TLS engine: one M2Crypto ``SSL*`` between two memory BIOs.

Bytes that arrived from the network go in with :meth:`TLSEngine.receive_bytes`
(``b""`` means the transport reached end of file), plaintext the application
wants to send goes in with :meth:`TLSEngine.send_plaintext`; bytes to put on
the wire come out of :meth:`TLSEngine.bytes_to_send` and what happened comes
back as a list of events.  The engine owns no socket, no reactor and imports
nothing from Twisted, so tests can drive two engines back to back.  Around
it: its events and :class:`ConnectionInfo` (:mod:`twistls._events`), the
peer check (:mod:`twistls._peercheck`), the ``SSL_CTX`` owner
(:mod:`twistls._ctxhandle`) and the libssl binding (:mod:`twistls._openssl`).

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

import weakref
from typing import TYPE_CHECKING, Callable, Sequence

import M2Crypto.SSL  # noqa: F401  (initialises M2Crypto's SSL error type)
from M2Crypto import m2
from M2Crypto.SSL.SSLError import SSLError as _SSLError  # the class M2Crypto.SSL re-exports

from twistls import _openssl as _ossl
from twistls._ctxhandle import ContextHandle
from twistls._framing import RecordFraming
from twistls._events import (
    CloseNotifyReceived,
    ConnectionInfo,
    Event,
    Failed,
    HandshakeCompleted,
    PlaintextReceived,
    Truncated,
    capture_info,
)
from twistls._peercheck import (
    AlternatePath,
    PeerCheck,
    Verifier,
    handshake_failure,
    live_peer_chain,
)
from twistls._reasons import classify
from twistls.errors import (
    ConfigurationError,
    EngineStateError,
    ProtocolViolationError,
    TLSError,
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
    "Verifier",
    "AlternatePath",
]

_RECEIVED_SHUTDOWN = m2.SSL_RECEIVED_SHUTDOWN
#: Bytes accepted after the handshake that produce no event before the peer
#: is cut off (one record is at most 18.5 KiB; a KeyUpdate is 27 bytes).
_MAX_UNPRODUCTIVE = 1 << 16
#: A read or write bigger than this leaves the memory BIOs holding that much
#: capacity (they never shrink): see TLSEngine.release_buffers.
_BIG_IO = 1 << 15


def _free_ssl(ssl: m2types.SSL, token: int, hooks: _ossl.ConnectionHooks, sessions: list[int]) -> None:
    # ``hooks`` rides along so that it outlives the SSL its callbacks serve.
    m2.ssl_free(ssl)
    _ossl.detach(token)
    while sessions:
        _ossl.SSL_SESSION_free(sessions.pop())


def _attach_bios(ssl: m2types.SSL) -> tuple[m2types.BIO, m2types.BIO]:
    """Give ``ssl`` a new pair of empty memory BIOs (read, write), which it
    owns from then on (it frees a pair it had)."""
    rbio = m2.bio_new(m2.bio_s_mem())
    wbio = m2.bio_new(m2.bio_s_mem())
    m2.bio_set_mem_eof_return(rbio, -1)
    m2.bio_set_mem_eof_return(wbio, -1)
    m2.ssl_set_bio(ssl, rbio, wbio)
    return rbio, wbio


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
        self._peer = PeerCheck(verifier, alternate_path)
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
        self._rbio, self._wbio = _attach_bios(ssl)
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
        self._framing = RecordFraming()
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
        #: What the handshake negotiated, captured when it completed: every
        #: accessor answers from it, so none touches the SSL once it is freed.
        self._info: ConnectionInfo | None = None
        self._alpn: bytes | None = None
        # The verifier runs inside the handshake (so that a rejection sends
        # the peer an alert) wherever OpenSSL verifies a certificate chain;
        # a resumed session, and a server whose client sent no certificate,
        # are checked once the handshake is done.
        self._peer.install(hooks, verifying=context.verifying, accept_unverified=context.accept_unverified)

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
            self._framing.feed(data)
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
        self._rbio, self._wbio = _attach_bios(self._ssl)  # frees the old pair
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
    def _verifier(self) -> Verifier | None:
        """The verifier (:mod:`twistls.compat` chains a check onto it; set it
        before the handshake starts)."""
        return self._peer.verifier

    @_verifier.setter
    def _verifier(self, verifier: Verifier | None) -> None:
        self._peer.verifier = verifier

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
        self._peer.resume_chain = tuple(verified_chain) if verified_chain is not None else None

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
        if self._peer.checked_chains is not None:
            return list(self._peer.checked_chains[1] or ())
        if not self._finalizer.alive:
            return []
        return _ossl.verified_chain_der(self._address)

    def peer_chain_der(self) -> list[bytes]:
        """The certificates the peer sent, in DER, its own certificate first."""
        if self._info is not None:
            return list(self._info.peer_chain_der)
        if self._peer.checked_chains is not None:
            return list(self._peer.checked_chains[0])
        if not self._finalizer.alive:
            return []
        return live_peer_chain(self._ssl, client=self.client)

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
        self._fail(handshake_failure(self._peer, self._hooks, self._address), events)

    def _established(self, events: list[Event]) -> None:
        # Every check comes first: the connection is established (and
        # plaintext flows) only once all of them passed.
        self._hooks.reverified = None  # that verification is over; its address may be reused
        version = str(m2.ssl_get_version(self._ssl))
        if version != "TLSv1.3" and not _ossl.extms_used(self._address):
            self._fail(
                TLSError(f"the peer did not negotiate the extended master secret ({version})"),
                events,
                discard_output=True,
            )
            return
        peer_chain, verified_chain, error = self._peer.after_handshake(
            self._ssl, self._address, client=self.client, verifying=self._context.verifying
        )
        if error is not None:
            self._fail(error, events, discard_output=True)
            return
        self._alpn = alpn = _ossl.alpn_selected(self._address)
        self._info = capture_info(
            self._ssl,
            self._address,
            alpn=alpn,
            peer_chain=peer_chain,
            verified_chain=verified_chain,
            verified=self._context.verifying,
        )
        while self._early_sessions:
            self._hand_session(self._early_sessions.pop(0))
        self._state = self._ESTABLISHED
        self._renew_bios = not self._established_once
        self._established_once = True
        self.peer_closed = False
        events.append(HandshakeCompleted())
        self._flush_pending()

    def _flush_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            data = b"".join(pending)
            if m2.ssl_write_nbio(self._ssl, data) < 0:
                self._pending.append(data)

    def _read(self, events: list[Event]) -> None:
        chunks, err = _ossl.read_plaintext(self._address)
        events.extend(PlaintextReceived(chunk) for chunk in chunks)
        if err == _ossl.SSL_ERROR_WANT_READ or err == _ossl.SSL_ERROR_WANT_WRITE:
            return
        if err == _ossl.SSL_ERROR_ZERO_RETURN:
            self.peer_closed = True
            self._state = self._CLOSED
            events.append(CloseNotifyReceived())
            return
        reasons = _ossl.drain_errors()
        if self._eof and not (m2.ssl_get_shutdown(self._ssl) & _RECEIVED_SHUTDOWN):
            self._state = self._CLOSED
            events.append(Truncated(self._framing.mid_record))
        else:
            self._fail(classify(reasons[0] if reasons else "unexpected eof while reading", []), events)

    def _fail(self, error: TLSError, events: list[Event], *, discard_output: bool = False) -> None:
        self._state = self._FAILED
        self.failed = True
        self.error = error
        self._pending = []
        if discard_output:
            self.bytes_to_send()
        events.append(Failed(error))
