"""Session-ticket key files: one key file shared by every server process.

A TLS server encrypts the session tickets it hands to clients; a client
resumes by presenting one.  Processes (or machines) behind one name resume
each other's sessions only if they share the keys.  A key file holds one or
more keys, one per line, each the base64 of 80 random bytes (a 16-byte name,
a 32-byte HMAC-SHA256 key, a 32-byte AES-256 key).  The first key encrypts
new tickets; every key decrypts, so rotating (a new key first, the oldest
dropped) keeps tickets issued under the previous key resumable.  Lines
starting with ``#`` and blank lines are ignored.

Keys never appear in logs or error messages.

.. versionadded:: 0.2
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tempfile
from dataclasses import dataclass

from twistls.errors import ConfigurationError

__all__ = ["TicketKey", "read_key_file", "write_key_file", "rotate_key_file", "new_key", "MAX_KEYS"]

#: Keys a file may hold (older ones are dropped by rotation).
MAX_KEYS = 8
_KEY_BYTES = 80


@dataclass(frozen=True, repr=False)
class TicketKey:
    """One ticket key (its ``repr`` shows only the public name)."""

    name: bytes  # 16 bytes, sent in the clear inside each ticket
    hmac_key: bytes  # 32 bytes
    aes_key: bytes  # 32 bytes

    def __repr__(self) -> str:
        return f"TicketKey(name={self.name.hex()})"

    def encoded(self) -> str:
        return base64.b64encode(self.name + self.hmac_key + self.aes_key).decode("ascii")


def new_key() -> TicketKey:
    """A fresh random key."""
    raw = os.urandom(_KEY_BYTES)
    return TicketKey(raw[:16], raw[16:48], raw[48:])


def _parse(text: str, path: str) -> list[TicketKey]:
    keys: list[TicketKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != _KEY_BYTES:
            raise ConfigurationError(
                f"ticket key file {path!r}, line {number}: not a key (each line is the base64 of 80 bytes; "
                "make one with 'twistls mkticketkey FILE')"
            )
        keys.append(TicketKey(raw[:16], raw[16:48], raw[48:]))
    if not keys:
        raise ConfigurationError(f"ticket key file {path!r} holds no key (make one with 'twistls mkticketkey FILE')")
    if len({k.name for k in keys}) != len(keys):
        raise ConfigurationError(f"ticket key file {path!r} holds two keys with the same name")
    return keys[:MAX_KEYS]


def read_key_file(path: str) -> tuple[list[TicketKey], str | None]:
    """Read a ticket key file.

    Returns:
        The keys (the first encrypts) and a warning to log when other
        users can read the file (else ``None``).

    Raises:
        ConfigurationError: the file is missing, unreadable or malformed,
            writable by other users, or owned by another user than this
            one or root.
    """
    try:
        with open(path, encoding="ascii") as f:
            info = os.fstat(f.fileno())
            text = f.read(64 * 1024)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
        raise ConfigurationError(f"cannot read the ticket key file {path!r}: {reason}") from None
    mode = info.st_mode
    # Whoever can write the file can forge tickets, and a forged ticket
    # resumes a session with whatever identity it claims: refused.
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigurationError(
            f"the ticket key file {path!r} is writable by other users (anyone who can write it can forge "
            "session tickets); chmod 600 it"
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise ConfigurationError(
            f"the ticket key file {path!r} belongs to uid {info.st_uid}, not to this user or root "
            "(its owner can forge session tickets); chown it"
        )
    warning = None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = (
            f"the ticket key file {path!r} is readable by other users: anyone who reads it can decrypt "
            "recorded sessions resumed with its tickets; chmod 600 it"
        )
    return _parse(text, path), warning


def write_key_file(path: str, keys: list[TicketKey]) -> None:
    """Write ``keys`` to ``path`` atomically, mode 0600.

    Raises:
        OSError: the directory is not writable.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".ticketkeys-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("# twistls session-ticket keys: the first encrypts, all decrypt. Keep secret.\n")
            for key in keys[:MAX_KEYS]:
                f.write(key.encoded() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def rotate_key_file(path: str, *, keep: int = 3) -> list[TicketKey]:
    """Put a new key first in ``path`` (made if missing), keeping at most
    ``keep`` keys in all (the oldest are dropped).

    Raises:
        ConfigurationError: the existing file is malformed, or ``keep`` < 2.
        OSError: the file cannot be written.
    """
    if keep < 2 or keep > MAX_KEYS:
        raise ConfigurationError(f"keep must be 2..{MAX_KEYS}, not {keep!r}")
    old: list[TicketKey] = []
    if os.path.exists(path):
        old, _ = read_key_file(path)
    keys = [new_key()] + old[: keep - 1]
    write_key_file(path, keys)
    return keys
