"""Settings of an ``SSL_CTX*`` past M2Crypto's API, and connection queries.

Protocol versions, groups, ciphers, modes, CRLs; the negotiated group, EMS
and ALPN of a connection.  Every setter checks OpenSSL's answer and raises
:class:`ValueError` (with the error queue drained) when it refuses.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import POINTER, c_char_p, c_ubyte, c_uint, c_void_p

from twistls._libssl.lib import (
    CTRL_SET_MAX_CERT_LIST,
    CTRL_GET_EXTMS_SUPPORT,
    CTRL_GET_NEGOTIATED_GROUP,
    CTRL_MODE,
    CTRL_SET_GROUPS_LIST,
    CTRL_SET_MAX_PROTO_VERSION,
    CTRL_SET_MIN_PROTO_VERSION,
    drain_errors,
    OBJ_nid2sn,
    SSL_ctrl,
    SSL_CTX_ctrl,
    SSL_CTX_get_cert_store,
    SSL_CTX_set_cipher_list,
    SSL_CTX_set_ciphersuites,
    SSL_get0_alpn_selected,
    VERSIONS,
    X509_FILETYPE_PEM,
    X509_load_crl_file,
    X509_LOOKUP_file,
    X509_STORE_add_lookup,
    X509_STORE_set_flags,
    X509_V_FLAG_CRL_CHECK,
    X509_V_FLAG_CRL_CHECK_ALL,
)


def set_min_max_version(ctx: int, minimum: str | None, maximum: str | None) -> None:
    """Set the protocol floor and ceiling of ``SSL_CTX`` ``ctx``.

    Raises:
        ValueError: an unknown version name or a call OpenSSL refused.
    """
    for cmd, name in ((CTRL_SET_MIN_PROTO_VERSION, minimum), (CTRL_SET_MAX_PROTO_VERSION, maximum)):
        value = 0 if name is None else VERSIONS.get(name)
        if value is None:
            raise ValueError(f"unknown TLS version {name!r}; use one of {', '.join(VERSIONS)}")
        if SSL_CTX_ctrl(ctx, cmd, value, None) != 1:
            drain_errors()
            raise ValueError(f"OpenSSL refused TLS version {name!r}")


def set_groups(ctx: int, groups: str) -> None:
    """Set the key-exchange groups (``"X25519:P-256"``).

    Raises:
        ValueError: OpenSSL rejected the list.
    """
    if SSL_CTX_ctrl(ctx, CTRL_SET_GROUPS_LIST, 0, ctypes.cast(c_char_p(groups.encode("ascii")), c_void_p)) != 1:
        drain_errors()
        raise ValueError(f"OpenSSL rejected the key-exchange groups {groups!r}")


def set_ciphersuites(ctx: int, suites: str) -> None:
    """Set the TLS 1.3 ciphersuites.

    Raises:
        ValueError: OpenSSL rejected the list.
    """
    if SSL_CTX_set_ciphersuites(ctx, suites.encode("ascii")) != 1:
        drain_errors()
        raise ValueError(f"OpenSSL rejected the TLS 1.3 ciphersuites {suites!r}")


def set_cipher_list(ctx: int, ciphers: str) -> None:
    """Set the TLS 1.2-and-below cipher string.

    Raises:
        ValueError: OpenSSL rejected the string (no cipher matched).
    """
    if SSL_CTX_set_cipher_list(ctx, ciphers.encode("ascii")) != 1:
        drain_errors()
        raise ValueError(f"OpenSSL rejected the cipher string {ciphers!r}")


def set_mode(ctx: int, mode: int) -> int:
    """OR ``mode`` into the context's ``SSL_MODE_*`` bits; returns the new mode."""
    return int(SSL_CTX_ctrl(ctx, CTRL_MODE, mode, None))


def set_max_cert_list(ctx: int, size: int) -> None:
    """Refuse peer certificate chains (the Certificate message) over ``size`` bytes."""
    SSL_CTX_ctrl(ctx, CTRL_SET_MAX_CERT_LIST, size, None)


def negotiated_group(ssl: int) -> int:
    """NID of the negotiated key-exchange group (0 if none)."""
    return int(SSL_ctrl(ssl, CTRL_GET_NEGOTIATED_GROUP, 0, None))


def extms_used(ssl: int) -> bool:
    """Whether the extended master secret was negotiated (always true on TLS 1.3)."""
    return int(SSL_ctrl(ssl, CTRL_GET_EXTMS_SUPPORT, 0, None)) == 1


def alpn_selected(ssl: int) -> bytes | None:
    """The ALPN protocol both sides agreed on, or ``None``."""
    data = POINTER(c_ubyte)()
    length = c_uint(0)
    SSL_get0_alpn_selected(ssl, ctypes.byref(data), ctypes.byref(length))
    if not length.value:
        return None
    return ctypes.string_at(data, length.value)


# --- CRLs ------------------------------------------------------------------------


def load_crls(ctx: int, paths: list[str], check_all: bool) -> int:
    """Load PEM CRL files into ``ctx``'s store and turn CRL checking on.

    Returns:
        How many CRLs were loaded.

    Raises:
        ValueError: a file holds no CRL OpenSSL could read.
    """
    store = SSL_CTX_get_cert_store(ctx)
    lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file()) if store else None
    if not lookup:
        drain_errors()
        raise ValueError("OpenSSL could not open the certificate store for CRLs")
    total = 0
    for path in paths:
        count = X509_load_crl_file(lookup, os.fsencode(path), X509_FILETYPE_PEM)
        if count <= 0:
            reasons = drain_errors()
            raise ValueError(f"no CRL could be read from {path!r}: {'; '.join(reasons) or 'not a PEM CRL'}")
        total += count
    flags = X509_V_FLAG_CRL_CHECK | (X509_V_FLAG_CRL_CHECK_ALL if check_all else 0)
    if X509_STORE_set_flags(store, flags) != 1:
        drain_errors()
        raise ValueError("OpenSSL refused the CRL check flags")
    return total


# --- names ----------------------------------------------------------------------
#: NIDs of the groups twistls offers, named the way ``groups=`` names them.
GROUP_NAMES = {1034: "X25519", 1035: "X448", 415: "P-256", 715: "P-384", 716: "P-521"}
#: Groups without a NID (OpenSSL reports TLSEXT_nid_unknown | the TLS group id).
TLS_GROUP_NAMES = {
    0x0017: "P-256", 0x0018: "P-384", 0x0019: "P-521", 0x001D: "X25519", 0x001E: "X448",
    0x11EB: "SecP256r1MLKEM768", 0x11EC: "X25519MLKEM768", 0x11ED: "SecP384r1MLKEM1024",
}


def group_name(nid: int) -> str | None:
    """A readable name for a negotiated group NID (``None`` for 0)."""
    if not nid:
        return None
    name = TLS_GROUP_NAMES.get(nid & 0xFFFF) if nid & 0x1000000 else GROUP_NAMES.get(nid)
    if name is None:
        sn = OBJ_nid2sn(nid)
        name = sn.decode("ascii", "replace") if sn else f"group {nid:#x}"
    return name
