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
from twistls.errors import (
    ConfigurationError,
    HostnameMismatchError,
    EngineStateError,
    NoPeerCertificateError,
    PeerAlertError,
    ProtocolVersionError,
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
    """

    def __init__(self) -> None:
        ptr = m2.ssl_ctx_new(m2.sslv23_method())
        if ptr is None:
            raise ConfigurationError("OpenSSL could not create an SSL_CTX: " + "; ".join(_ossl.drain_errors()))
        self.ptr = ptr
        # A SWIG pointer has __int__; the stub's NewType does not say so.
        self.address: int = int(ptr)  # type: ignore[call-overload]
        self.verifying = False
        self.keepalive: list[object] = []  # objects C callbacks rely on
        self._finalizer = weakref.finalize(self, _free_ctx, ptr, self.address)

    def free(self) -> None:
        """Release the ``SSL_CTX`` now (engines made from it keep their own reference)."""
        self._finalizer()


def _free_ctx(ptr: m2types.SSL_CTX, address: int) -> None:
    _ossl.forget_ctx(address)
    m2.ssl_ctx_free(ptr)


def _handshake_check(ref: weakref.ReferenceType[TLSEngine]) -> Callable[[list[bytes], list[bytes]], int]:
    """The verify-callback hook of one engine, holding it only weakly."""

    def check(peer_chain: list[bytes], verified_chain: list[bytes]) -> int:
        engine = ref()
        return 0 if engine is None else engine._check_during_handshake(peer_chain, verified_chain)

    return check


def _free_ssl(ssl: m2types.SSL, address: int) -> None:
    _ossl.forget_ssl(address)
    m2.ssl_free(ssl)


class TLSEngine:
    """One TLS connection, without I/O.

    Args:
        context: the context handle the connection is made from.
        client: ``True`` for the client role, ``False`` for the server role.
        server_hostname: the SNI name a client sends (``None``: none).
        verifier: called once per connection with this engine; it raises
            a :class:`~twistls.errors.TLSError` to reject the peer.  For a
            verifying client it runs inside the handshake, from OpenSSL's
            verify callback once the chain is verified (``peer_chain_der()``
            and ``verified_chain_der()`` then return the chains being
            verified), so a rejection fails the handshake and sends the peer
            an alert (``bad_certificate`` for a name mismatch,
            ``handshake_failure`` otherwise); resumed sessions and
            non-verifying engines run it right after the handshake.

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
        verifier: Callable[[TLSEngine], None] | None = None,
    ) -> None:
        self.client = client
        self._context = context
        self._verifier = verifier
        ssl = m2.ssl_new(context.ptr)
        if ssl is None:
            raise ConfigurationError("OpenSSL could not create an SSL object: " + "; ".join(_ossl.drain_errors()))
        self._ssl = ssl
        # A SWIG pointer has __int__; the stub's NewType does not say so.
        self._address: int = int(ssl)  # type: ignore[call-overload]
        self._finalizer = weakref.finalize(self, _free_ssl, ssl, self._address)
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
        # The Checker runs inside a verifying client's handshake (so that a
        # rejection sends the peer an alert); resumed sessions, and engines
        # where that did not happen, are checked once the handshake is done.
        self._checked_in_handshake = False
        self._check_error: TLSError | None = None
        self._handshake_chains: tuple[list[bytes], list[bytes]] | None = None
        # OpenSSL keeps no peer certificate from a handshake its verify callback
        # failed; the chains the Checker rejected are kept for inspection.
        self._rejected_chains: tuple[list[bytes], list[bytes]] | None = None
        if client and verifier is not None and context.verifying:
            _ossl.handshake_checks[self._address] = _handshake_check(weakref.ref(self))

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
        if not self._established_once:
            return None
        return str(m2.ssl_get_version(self._ssl))

    def cipher(self) -> tuple[str, int] | None:
        """Negotiated cipher name and its secret bits, or ``None``."""
        if not self._established_once:
            return None
        c = m2.ssl_get_current_cipher(self._ssl)
        if c is None:
            return None
        return str(m2.ssl_cipher_get_name(c)), int(m2.ssl_cipher_get_bits(c))

    def session_reused(self) -> bool:
        """Whether the handshake resumed an earlier session."""
        return bool(_ossl.SSL_session_reused(self._address))

    def alpn_protocol(self) -> bytes | None:
        """The ALPN protocol both sides agreed on, or ``None``."""
        return _ossl.alpn_selected(self._address)

    def negotiated_group(self) -> str | None:
        """The key-exchange group (``"X25519"``, ``"P-256"``), or ``None``."""
        if not self._established_once:
            return None
        return _ossl.group_name(_ossl.negotiated_group(self._address))

    def set_alpn_protocols(self, protocols: list[bytes]) -> None:
        """Server role: choose among ``protocols`` (preference order) for this
        connection, instead of the context's list.  Call before the handshake."""
        if protocols:
            _ossl.alpn_by_ssl[self._address] = _ossl.alpn_array(list(protocols))

    def use_session(self, session: int) -> None:
        """Client role: offer ``SSL_SESSION*`` ``session`` for resumption (this
        engine takes its own reference).  Call before the handshake.

        Raises:
            ConfigurationError: OpenSSL refused the session.
        """
        if _ossl.SSL_set_session(self._address, session) != 1:
            raise ConfigurationError("OpenSSL refused the cached session: " + "; ".join(_ossl.drain_errors()))

    def on_new_session(self, sink: Callable[[int], None]) -> None:
        """Client role: call ``sink(SSL_SESSION*)`` for each resumable session
        the server hands out (the sink owns one reference and must free it)."""
        _ossl.session_sinks[self._address] = sink

    def server_name(self) -> str | None:
        """The SNI name (sent by this client, or received by this server)."""
        name = _ossl.SSL_get_servername(self._address, 0)
        return name.decode("ascii", "replace") if name else None

    def verify_result(self) -> int:
        """OpenSSL's verify result for the peer chain (0 = OK)."""
        return int(_ossl.SSL_get_verify_result(self._address))

    def peer_certificate_der(self) -> bytes | None:
        """The peer's certificate in DER, or ``None`` if it sent none."""
        chains = self._handshake_chains or self._rejected_chains
        if chains is not None:
            return chains[0][0] if chains[0] else None
        x509 = m2.ssl_get_peer_cert(self._ssl)
        if x509 is None:
            return None
        try:
            return bytes(m2.i2d_x509(x509))
        finally:
            m2.x509_free(x509)

    def verified_chain_der(self) -> list[bytes]:
        """The chain OpenSSL verified, in DER: the peer's certificate first,
        the trust anchor last (empty when verification is off)."""
        chains = self._handshake_chains or self._rejected_chains
        if chains is not None:
            return list(chains[1])
        return _ossl.verified_chain_der(self._address)

    def _check_during_handshake(self, peer_chain: list[bytes], verified_chain: list[bytes]) -> int:
        """Run the verifier from OpenSSL's verify callback, on the chains it is
        verifying.  Returns 0 to accept, or the X509 error code to fail the
        handshake with (the rejection itself is kept for :meth:`_handshake_failure`).
        Never raises."""
        verifier = self._verifier
        if verifier is None:
            return 0
        self._handshake_chains = (peer_chain, verified_chain)
        try:
            verifier(self)
        except TLSError as exc:
            self._check_error = exc
            self._rejected_chains = (peer_chain, verified_chain)
            if isinstance(exc, HostnameMismatchError):
                return _ossl.X509_V_ERR_HOSTNAME_MISMATCH
            return _ossl.X509_V_ERR_APPLICATION_VERIFICATION
        except Exception as exc:  # a verifier bug must not let the peer in
            error = TLSError(f"the certificate check failed unexpectedly: {exc!r}")
            error.__cause__ = exc
            self._check_error = error
            self._rejected_chains = (peer_chain, verified_chain)
            return _ossl.X509_V_ERR_APPLICATION_VERIFICATION
        finally:
            self._handshake_chains = None
        self._checked_in_handshake = True
        return 0

    def peer_chain_der(self) -> list[bytes]:
        """The certificates the peer sent, in DER, its own certificate first."""
        chains = self._handshake_chains or self._rejected_chains
        if chains is not None:
            return list(chains[0])
        chain: list[bytes] = []
        stack = m2.ssl_get_peer_cert_chain(self._ssl)
        if stack is not None:
            for i in range(m2.sk_x509_num(stack)):
                chain.append(bytes(m2.i2d_x509(m2.sk_x509_value(stack, i))))
        if not self.client:
            # OpenSSL leaves the client's own certificate out of the server-side chain.
            leaf = self.peer_certificate_der()
            if leaf is not None:
                chain.insert(0, leaf)
        return chain

    def info(self) -> ConnectionInfo:
        """Everything negotiated, as one :class:`ConnectionInfo`."""
        cipher = self.cipher()
        alpn = self.alpn_protocol()
        return ConnectionInfo(
            version=self.version(),
            cipher=cipher[0] if cipher else None,
            cipher_bits=cipher[1] if cipher else None,
            alpn_protocol=alpn.decode("ascii", "replace") if alpn is not None else None,
            server_name=self.server_name(),
            session_reused=self.session_reused(),
            peer_chain_der=tuple(self.peer_chain_der()) if self._established_once else (),
            verified=self.handshake_done and self._context.verifying,
            verify_result=self.verify_result(),
            group=self.negotiated_group(),
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
        self._state = self._ESTABLISHED
        self._renew_bios = not self._established_once
        self._established_once = True
        self.peer_closed = False
        if m2.ssl_get_version(self._ssl) != "TLSv1.3" and not _ossl.extms_used(self._address):
            self._fail(
                TLSError(f"the peer did not negotiate the extended master secret ({self.version()})"),
                events,
                discard_output=True,
            )
            return
        if self._verifier is not None and not self._checked_in_handshake:
            try:
                self._verifier(self)
            except TLSError as exc:
                self._fail(exc, events, discard_output=True)
                return
            except Exception as exc:  # a verifier bug must not escape receive_bytes, nor let the peer in
                error = TLSError(f"the certificate check failed unexpectedly: {exc!r}")
                error.__cause__ = exc
                self._fail(error, events, discard_output=True)
                return
        events.append(HandshakeCompleted())
        self._flush_pending()

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
                self._fail(_classify(reasons[0] if reasons else "unexpected eof while reading", []), events)
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
        if self._check_error is not None:  # the Checker rejected the peer inside the handshake
            _ossl.verify_failures.pop(self._address, None)
            return self._check_error
        record = _ossl.verify_failures.pop(self._address, None)
        if record is not None or any("certificate verify failed" in r for r in reasons):
            if record is None:
                code, depth, subject = int(_ossl.SSL_get_verify_result(self._address)), None, None
            else:
                code, depth, subject = record
            return verification_failure(code, depth, subject, openssl_errors=reasons)
        return _classify("; ".join(reasons) or "unknown TLS handshake failure", reasons)


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


_VERSION_REASONS = (
    "unsupported protocol",
    "no protocols available",
    "protocol version",
    "wrong ssl version",
    "version too low",
    "unknown protocol",
)
# What OpenSSL says when the bytes are not TLS records at all (garbage, plain
# HTTP, SSH): not a version disagreement, so not a ProtocolVersionError.
_NOT_TLS_REASONS = ("wrong version number", "http request", "https proxy request")
# Malformed, oversized, empty or forged records and out-of-order messages.
_VIOLATION_REASONS = (
    "packet length too long",
    "record too small",
    "record overflow",
    "length too long",
    "length mismatch",
    "bad length",
    "excessive message size",
    "unexpected message",
    "unexpected record",
    "bad record mac",
    "decryption failed",
    "too many warn alerts",
    "too many key updates",
    "too many empty",
    "bad packet length",
    "decode error",
    "no renegotiation",
)


def _classify(text: str, reasons: list[str]) -> TLSError:
    """Turn OpenSSL reason strings into the most specific TLSError."""
    lowered = text.lower()
    # Only the local reason: the "certificate required" *alert* means the peer
    # wanted our certificate, which is a PeerAlertError on this side.
    if "peer did not return a certificate" in lowered:
        return NoPeerCertificateError(
            f"the peer sent no certificate but one is required ({text})",
            verify_message="no peer certificate",
            openssl_errors=reasons,
        )
    if any(v in lowered for v in _NOT_TLS_REASONS):
        return ProtocolViolationError(f"the peer does not speak TLS ({text})", openssl_errors=reasons)
    if " alert " not in lowered and any(v in lowered for v in _VIOLATION_REASONS):
        return ProtocolViolationError(f"the peer broke the TLS protocol ({text})", openssl_errors=reasons)
    if any(v in lowered for v in _VERSION_REASONS):
        return ProtocolVersionError(f"no TLS protocol version in common with the peer ({text})", openssl_errors=reasons)
    # OpenSSL 3.2+ spells the SSLv3-era alerts "ssl/tls alert ..." (3.0: "sslv3 alert ...").
    for marker in ("ssl/tls alert ", "sslv3 alert ", "tlsv1 alert ", "tlsv13 alert "):
        if marker in lowered:
            alert = lowered.split(marker, 1)[1].split(";")[0].strip()
            hint = ": it requires a client certificate and none was sent" if alert == "certificate required" else ""
            return PeerAlertError(
                f"the peer rejected the connection with alert '{alert}'{hint} ({text})", alert=alert, openssl_errors=reasons
            )
    if "unexpected eof" in lowered:
        return TLSError(f"the peer closed the connection during the TLS handshake ({text})", openssl_errors=reasons)
    return TLSError(f"TLS failure: {text}", openssl_errors=reasons)

