"""Reading decrypted application data off an ``SSL*`` (the engine's read path).

Every record goes straight into one per-thread buffer (``SSL_read_ex``
returns one record per call); the plaintext is copied out once per
buffer-full, not once per record.
"""

from __future__ import annotations

import ctypes
import threading

from twistls._libssl.lib import ERR_clear_error, SSL_get_error, SSL_read_ex

#: Plaintext decrypted by one :func:`read_plaintext` call is gathered in a
#: per-thread buffer of this size, then copied out once.
READ_BUFFER_SIZE = 1 << 18
_read_buffers = threading.local()


def _read_buffer() -> tuple[memoryview, int, ctypes.c_size_t, object]:
    """This thread's (view, address, length out-parameter, keep-alive) read buffer."""
    try:
        return _read_buffers.value  # type: ignore[no-any-return]
    except AttributeError:
        buf = bytearray(READ_BUFFER_SIZE)
        cbuf = (ctypes.c_char * READ_BUFFER_SIZE).from_buffer(buf)
        value = (memoryview(buf), ctypes.addressof(cbuf), ctypes.c_size_t(), cbuf)
        _read_buffers.value = value
        return value


def read_plaintext(ssl: int) -> tuple[list[bytes], int]:
    """Decrypt all that ``ssl`` can decrypt from its read BIO now.

    Returns:
        The plaintext, in order (chunks of at most :data:`READ_BUFFER_SIZE`
        bytes, usually one), and the ``SSL_ERROR_*`` code that ended the
        read: ``SSL_ERROR_WANT_READ``/``WANT_WRITE`` when it needs more
        input, ``SSL_ERROR_ZERO_RETURN`` for the peer's close_notify, any
        other for a failure (its reasons are left on the error queue).
    """
    view, base, got, _ = _read_buffer()
    read_ex = SSL_read_ex
    chunks: list[bytes] = []
    filled = 0
    ERR_clear_error()  # SSL_get_error must not see a stale error
    while True:
        if read_ex(ssl, base + filled, READ_BUFFER_SIZE - filled, got) == 1:
            filled += got.value
            if filled == READ_BUFFER_SIZE:
                chunks.append(bytes(view))
                filled = 0
            continue
        err: int = SSL_get_error(ssl, 0)
        if filled:
            chunks.append(bytes(view[:filled]))
        return chunks, err
