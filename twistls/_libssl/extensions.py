"""ALPN, server-side SNI and the key log (issue 4): the callbacks, the
setters that install them on a context, and the key-log file's safe opening.
"""

from __future__ import annotations

import errno
import os
import stat
from ctypes import c_ubyte
from typing import Any

from twistls._libssl.hooks import ContextHooks, ctx_hooks, ssl_hooks
from twistls._libssl.lib import (
    ALPN_SELECT_CB,
    CTRL_SET_TLSEXT_SERVERNAME_CB,
    drain_errors,
    KEYLOG_CB,
    OPENSSL_NPN_NEGOTIATED,
    SNI_CB,
    SSL_AD_INTERNAL_ERROR,
    SSL_CTX_callback_ctrl,
    SSL_CTX_set_alpn_protos,
    SSL_CTX_set_alpn_select_cb,
    SSL_CTX_set_keylog_callback,
    SSL_get_servername,
    SSL_get_SSL_CTX,
    SSL_select_next_proto,
    SSL_set_SSL_CTX,
    SSL_TLSEXT_ERR_ALERT_FATAL,
    SSL_TLSEXT_ERR_NOACK,
    SSL_TLSEXT_ERR_OK,
)


# =============================================================================
# Features past M2Crypto's API (issue 4): ALPN, server SNI, session cache,
# key log, CRLs.  Every callback below is a module-level CFUNCTYPE that lives as
# long as the process; per-context / per-connection state sits on the hooks
# objects above.  Bodies catch BaseException and return the fatal (or
# "ignore") code; the exception is kept on the connection's hooks.
# =============================================================================

# --- ALPN ----------------------------------------------------------------------


def alpn_wire(protocols: list[bytes]) -> bytes:
    """Encode protocol names in the ALPN wire format (length-prefixed)."""
    return b"".join(bytes([len(p)]) + p for p in protocols)


def alpn_array(protocols: list[bytes]) -> Any:
    """The wire format as a ctypes array that can outlive a callback."""
    wire = alpn_wire(protocols)
    return (c_ubyte * len(wire)).from_buffer_copy(wire)


def _alpn_select(ssl: int | None, out: Any, outlen: Any, inp: Any, inlen: int, arg: int | None) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        if hooks is None:
            return SSL_TLSEXT_ERR_ALERT_FATAL
        server = hooks.alpn
        if server is None:
            context = ctx_hooks(SSL_get_SSL_CTX(ssl))
            server = context.alpn if context is not None else None
        if server is None or not len(server):
            return SSL_TLSEXT_ERR_NOACK
        if SSL_select_next_proto(out, outlen, server, len(server), inp, inlen) != OPENSSL_NPN_NEGOTIATED:
            return SSL_TLSEXT_ERR_NOACK  # no overlap: go on without ALPN
        return SSL_TLSEXT_ERR_OK
    except BaseException as exc:  # never raise into C
        if hooks is not None:
            hooks.error = exc
        return SSL_TLSEXT_ERR_ALERT_FATAL


alpn_select_callback = ALPN_SELECT_CB(_alpn_select)


def set_client_alpn(ctx: int, protocols: list[bytes]) -> None:
    """Offer ``protocols`` (preference order) in every ClientHello of ``ctx``.

    Raises:
        ValueError: OpenSSL refused the list.
    """
    wire = alpn_wire(protocols)
    if SSL_CTX_set_alpn_protos(ctx, wire, len(wire)) != 0:  # 0 == success here
        drain_errors()
        raise ValueError(f"OpenSSL refused the ALPN protocol list {protocols!r}")


def set_server_alpn(ctx: int, hooks: ContextHooks, protocols: list[bytes] | None) -> None:
    """Install the ALPN select callback on server context ``ctx``; choose from
    ``protocols`` (server preference) unless a connection has its own list."""
    hooks.alpn = alpn_array(protocols) if protocols else None
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select_callback, None)


# --- server-side SNI --------------------------------------------------------------


def sni_choose(hooks: ContextHooks | None, name: str | None) -> int | None:
    """The SSL_CTX* that serves ``name`` on a default context with ``hooks``
    (``None``: the default itself)."""
    table = hooks.sni if hooks is not None else None
    if table is None or not name:
        return None
    exact, wild = table
    name = name.rstrip(".").lower()
    target = exact.get(name)
    if target is None and "." in name:
        label, parent = name.split(".", 1)
        if label and "." in parent:  # one label only, never a bare TLD
            target = wild.get(parent)
    return target


def _servername(ssl: int | None, alert: Any, arg: int | None) -> int:
    hooks = None
    try:
        hooks = ssl_hooks(ssl)
        if hooks is None:
            return SSL_TLSEXT_ERR_ALERT_FATAL
        ctx = SSL_get_SSL_CTX(ssl)
        raw = SSL_get_servername(ssl, 0)
        name = raw.decode("ascii", "replace") if raw else None
        target = sni_choose(ctx_hooks(ctx), name)
        if target and target != ctx:
            if SSL_set_SSL_CTX(ssl, target) != target:
                return SSL_TLSEXT_ERR_ALERT_FATAL
        return SSL_TLSEXT_ERR_OK
    except BaseException as exc:  # never raise into C (an uninitialised int would mean OK)
        if hooks is not None:
            hooks.error = exc
        alert[0] = SSL_AD_INTERNAL_ERROR
        return SSL_TLSEXT_ERR_ALERT_FATAL


servername_callback = SNI_CB(_servername)


def set_sni(ctx: int, hooks: ContextHooks, exact: dict[str, int], wildcard: dict[str, int]) -> None:
    """Choose among contexts by server_name on default context ``ctx``.

    Raises:
        ValueError: OpenSSL refused the callback.
    """
    hooks.sni = (dict(exact), dict(wildcard))
    if SSL_CTX_callback_ctrl(ctx, CTRL_SET_TLSEXT_SERVERNAME_CB, servername_callback) != 1:
        hooks.sni = None
        drain_errors()
        raise ValueError("OpenSSL refused the server_name callback")


# --- key log ----------------------------------------------------------------------


def _keylog(ssl: int | None, line: bytes | None) -> None:
    hooks = None
    try:
        if not ssl or not line:
            return
        hooks = ssl_hooks(ssl)
        context = ctx_hooks(SSL_get_SSL_CTX(ssl))
        f = context.keylog if context is not None else None
        if f is not None:
            f.write(line + b"\n")
            f.flush()
    except BaseException as exc:
        if hooks is not None:
            hooks.error = exc


keylog_callback = KEYLOG_CB(_keylog)


def open_keylog(path: str) -> Any:
    """Open ``path`` for appending TLS secrets, safely.

    The file is opened without following a symlink (``O_NOFOLLOW``) and must
    be a regular file owned by this process's user; if others could read or
    write it, it is made mode 0600 first.  A new file is created mode 0600.

    Raises:
        OSError: the file cannot be opened, is a symlink, is not a regular
            file, belongs to another user, or its mode cannot be set.
    """
    # O_NONBLOCK: a FIFO without a reader fails at once instead of hanging here.
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "owned by another user", path)
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def set_keylog(ctx: int, hooks: ContextHooks, path: str) -> None:
    """Append the NSS key-log lines of every connection of ``ctx`` to ``path``
    (see :func:`open_keylog`).

    Raises:
        OSError: the file cannot be opened safely.
    """
    f = open_keylog(path)
    if hooks.keylog is not None:
        hooks.keylog.close()
    hooks.keylog = f
    SSL_CTX_set_keylog_callback(ctx, keylog_callback)
