"""Server names: the SNI form of a hostname, and a server's table of
certificates by name (given as a mapping, or found as ``<hostname>.pem``
files in a directory).

Pure (file-system reads only, no OpenSSL): the SSL_CTX per certificate is
built by :mod:`twistls._ctxbuild`.  A table maps a lower-case A-label name, or
a one-label wildcard ``"*.example.com"``, to ``(certificate, key or None)``.
Every refusal is a :class:`~twistls.errors.ConfigurationError`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import idna

from twistls.checker import parse_ip
from twistls.errors import ConfigurationError

__all__ = ["SniTable", "sni_name", "sni_table", "scan_directory", "scan_sni_directory"]

#: ``{server name: (certificate path, key path or None)}``.
SniTable = dict[str, tuple[str, "str | None"]]

_DEFAULT_FILE = "DEFAULT.pem"


def sni_name(hostname: str) -> str | None:
    """The server_name a client sends for ``hostname``: ``None`` for an IP
    address, else the lower-case A-label form without a trailing dot.

    Raises:
        ConfigurationError: a non-ASCII name that is not valid IDNA.
    """
    if parse_ip(hostname) is not None:
        return None
    name = hostname.rstrip(".")
    try:
        return name.encode("ascii").decode("ascii").lower()
    except UnicodeEncodeError:
        try:
            return idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ConfigurationError(f"hostname {hostname!r} is not a valid IDNA name: {exc}") from None


def sni_table(entries: Mapping[str, Any]) -> SniTable:
    """Validate ``{server name: path | (certificate, key)}`` into a table.

    Raises:
        ConfigurationError: a name that is not a host name or a one-label
            wildcard, or a value that is neither a path nor a pair.
    """
    table: SniTable = {}
    for name, value in entries.items():
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"SNI names must be non-empty strings, not {name!r}")
        wildcard = name.startswith("*.")
        base = sni_name(name[2:] if wildcard else name)
        if base is None or "*" in base or (wildcard and "." not in base):
            raise ConfigurationError(
                f"SNI name {name!r} must be a host name or a one-label wildcard like '*.example.com'"
            )
        if isinstance(value, (str, os.PathLike)):
            cert, key = os.fspath(value), None
        else:
            try:
                cert_raw, key_raw = value
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"SNI entry for {name!r} must be a PEM path or (certificate, key), not {value!r}"
                ) from None
            cert, key = os.fspath(cert_raw), None if key_raw is None else os.fspath(key_raw)
        table[("*." if wildcard else "") + base] = (cert, key)
    return table


def _pem_files(directory: str, names: list[str]) -> dict[str, str]:
    """``{hostname: path}`` of the ``<hostname>.pem`` regular files among
    ``names`` (entries of ``directory``), ``DEFAULT.pem`` left out."""
    return {
        name[: -len(".pem")]: os.path.join(directory, name)
        for name in sorted(names)
        if name.endswith(".pem") and name != _DEFAULT_FILE and os.path.isfile(os.path.join(directory, name))
    }


def scan_directory(directory: str, default: str | None) -> tuple[SniTable, str]:
    """The SNI table of ``directory``'s ``<hostname>.pem`` files and the
    path of the default certificate: ``<default>.pem`` if ``default`` is
    given, else ``DEFAULT.pem``, else the only file there is.

    Raises:
        ConfigurationError: no default can be chosen, no PEM files, a bad name.
    """
    files = _pem_files(directory, os.listdir(directory))
    if default is not None:
        fallback = os.path.join(directory, default + ".pem")
        if not os.path.isfile(fallback):
            raise ConfigurationError(f"the default {default!r} has no file {fallback!r}")
    else:
        fallback = os.path.join(directory, _DEFAULT_FILE)
        if not os.path.isfile(fallback):
            if len(files) != 1:
                raise ConfigurationError(
                    f"{directory!r} needs a DEFAULT.pem (or pass default=<hostname>) for clients that send no name"
                )
            fallback = next(iter(files.values()))
    if not files and not os.path.isfile(fallback):
        raise ConfigurationError(f"no <hostname>.pem files in {directory!r}")
    return sni_table(files), fallback


def scan_sni_directory(directory: str) -> SniTable:
    """The ``<hostname>.pem`` files of ``directory`` (``DEFAULT.pem`` left
    out), as an SNI table.

    Raises:
        ConfigurationError: the directory cannot be read, or a bad name.
    """
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise ConfigurationError(f"could not read the SNI directory {directory!r}: {exc.strerror}") from None
    return sni_table(_pem_files(directory, names))
