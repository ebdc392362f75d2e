"""The files a context is configured with: path checks, and the certificate
chain and private key it presents.

Contracts: every failure is a :class:`~twistls.errors.ConfigurationError`
naming the path and OpenSSL's reason; key material and passphrases never
appear in messages, ``repr()`` or logs; OpenSSL never prompts on a terminal
(an encrypted key without a passphrase is refused); OpenSSL's error queue is
left empty after a failure.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Union

from M2Crypto import BIO, EVP, m2

from twistls import _openssl as _ossl
from twistls._engine import ContextHandle
from twistls.errors import ConfigurationError

__all__ = [
    "Passphrase",
    "Secret",
    "require_file",
    "require_dir",
    "fspath_or_none",
    "load_identity",
]

log = logging.getLogger("twistls")

#: What ``passphrase=`` accepts: the passphrase, or a callable returning it
#: (called at each load).
Passphrase = Union[bytes, str, Callable[[], Union[bytes, str]]]


class Secret:
    """Holds a passphrase so that ``repr()``/``vars()`` of a factory never show it."""

    __slots__ = ("value",)

    def __init__(self, value: Passphrase) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"


def require_file(path: str | os.PathLike[str], what: str) -> str:
    """``path`` as a str if it is a readable regular file.

    Raises:
        ConfigurationError: it is missing, not a file, or not readable.
    """
    text = os.fspath(path)
    if not os.path.isfile(text):
        raise ConfigurationError(f"{what} {text!r} does not exist or is not a file")
    if not os.access(text, os.R_OK):
        raise ConfigurationError(f"{what} {text!r} is not readable")
    return text


def require_dir(path: str | os.PathLike[str], what: str) -> str:
    """``path`` as a str if it is a directory.

    Raises:
        ConfigurationError: it is missing or not a directory.
    """
    text = os.fspath(path)
    if not os.path.isdir(text):
        raise ConfigurationError(f"{what} {text!r} does not exist or is not a directory")
    return text


def fspath_or_none(path: str | os.PathLike[str] | None) -> str | None:
    """``os.fspath(path)``, with ``None`` kept."""
    return None if path is None else os.fspath(path)


def _passphrase_bytes(passphrase: Passphrase | Secret | None) -> bytes | None:
    if isinstance(passphrase, Secret):
        passphrase = passphrase.value
    if passphrase is None:
        return None
    value = passphrase() if callable(passphrase) else passphrase
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise ConfigurationError("passphrase must be bytes, str, or a callable returning one of them")
    return bytes(value)


def _use_private_key(handle: ContextHandle, key_path: str, passphrase: Passphrase | Secret | None) -> None:
    """Load the key through OpenSSL with a password callback that never
    prompts on a terminal: an encrypted key needs ``passphrase``."""
    try:
        with open(key_path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise ConfigurationError(f"could not read the private key file {key_path!r}: {exc.strerror}") from None
    secret = _passphrase_bytes(passphrase)
    asked: list[int] = []

    def callback(*_: object) -> bytes:  # OpenSSL calls it only for an encrypted key
        asked.append(1)
        return secret or b""

    bio = BIO.MemoryBuffer(pem)
    del pem
    try:
        # BIO._ptr is unannotated in M2Crypto.
        pkey = EVP.PKey(m2.pkey_read_pem(bio._ptr(), callback), 1)  # type: ignore[no-untyped-call]
    except Exception:
        _ossl.drain_errors()
        if asked and secret is None:
            raise ConfigurationError(
                f"the private key in {key_path!r} is encrypted: give passphrase=... (bytes, str or a callable)"
            ) from None
        if asked:
            raise ConfigurationError(f"could not decrypt the private key in {key_path!r}: wrong passphrase?") from None
        raise ConfigurationError(f"no readable PEM private key in {key_path!r}") from None
    finally:
        bio.close()
    try:
        m2.ssl_ctx_use_pkey_privkey(handle.ptr, pkey.pkey)
    finally:
        del pkey


def load_identity(
    handle: ContextHandle, certificate: str, private_key: str | None, passphrase: Passphrase | Secret | None = None
) -> None:
    """Make ``certificate`` (a PEM chain, leaf first) and its key what
    ``handle`` presents; the key is read from ``private_key``, or from
    ``certificate`` when that is ``None``.  Warns (logs) when the key file is
    readable by every user.

    Raises:
        ConfigurationError: a missing or unreadable file, no PEM in it, an
            encrypted key without (or with a wrong) passphrase, a key that
            does not match the certificate.
    """
    cert_path = require_file(certificate, "certificate file")
    key_path = require_file(private_key, "private key file") if private_key else cert_path
    _ossl.ERR_clear_error()
    try:
        m2.ssl_ctx_use_cert_chain(handle.ptr, cert_path)
    except Exception as exc:  # M2Crypto raises SSLError
        _ossl.drain_errors()
        raise ConfigurationError(f"could not load the certificate chain from {cert_path!r}: {exc}") from None
    mismatch = f"the private key in {key_path!r} does not match the certificate in {cert_path!r}"
    try:
        _use_private_key(handle, key_path, passphrase)
    except ConfigurationError:
        raise
    except Exception as exc:
        _ossl.drain_errors()
        if "mismatch" in str(exc):  # OpenSSL checks the pair while loading the key
            raise ConfigurationError(mismatch) from None
        # Never echo key material: only the path and OpenSSL's reason.
        raise ConfigurationError(f"could not load the private key from {key_path!r}: {exc}") from None
    try:
        m2.ssl_ctx_check_privkey(handle.ptr)
    except Exception:
        _ossl.drain_errors()
        raise ConfigurationError(mismatch) from None
    _warn_if_key_exposed(key_path)


def _warn_if_key_exposed(key_path: str) -> None:
    try:
        mode = os.stat(key_path).st_mode
    except OSError:
        return
    if mode & 0o004:
        log.warning("private key file %r is readable by every user; chmod 600 it", key_path)

