"""What the sans-IO engine reports: its events and the connection's facts.

:class:`~twistls._engine.TLSEngine` returns lists of the frozen event
dataclasses below (:data:`Event`), and describes a connection with one
:class:`ConnectionInfo` (:func:`capture_info` reads it off a live ``SSL*``
once).  Plain data otherwise; this module imports nothing from Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

from M2Crypto import m2

from twistls import _openssl as _ossl
from twistls.errors import TLSError

if TYPE_CHECKING:
    from M2Crypto import types as m2types

__all__ = [
    "HandshakeCompleted",
    "PlaintextReceived",
    "CloseNotifyReceived",
    "Truncated",
    "Failed",
    "Event",
    "ConnectionInfo",
    "capture_info",
]


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
    """The transport ended after the handshake without close_notify;
    ``mid_record``: inside a TLS record (a cut message), not between two."""

    mid_record: bool = False


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


def capture_info(
    ssl: m2types.SSL,
    address: int,
    *,
    alpn: bytes | None,
    peer_chain: Sequence[bytes],
    verified_chain: Sequence[bytes] | None,
    verified: bool,
) -> ConnectionInfo:
    """What the handshake of ``ssl`` (``address``: the same as an int)
    negotiated; the ``SSL*`` must be alive.  ``alpn``, the chains and
    ``verified`` are what the engine already knows."""
    c = m2.ssl_get_current_cipher(ssl)
    name = _ossl.SSL_get_servername(address, 0)
    return ConnectionInfo(
        version=str(m2.ssl_get_version(ssl)),
        cipher=str(m2.ssl_cipher_get_name(c)) if c is not None else None,
        cipher_bits=int(m2.ssl_cipher_get_bits(c)) if c is not None else None,
        alpn_protocol=alpn.decode("ascii", "replace") if alpn is not None else None,
        server_name=name.decode("ascii", "replace") if name else None,
        session_reused=bool(_ossl.SSL_session_reused(address)),
        peer_chain_der=tuple(peer_chain),
        verified=verified,
        verify_result=int(_ossl.SSL_get_verify_result(address)),
        group=_ossl.group_name(_ossl.negotiated_group(address)),
        verified_chain_der=tuple(verified_chain or ()),
    )
