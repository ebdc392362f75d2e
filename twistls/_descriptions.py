"""Reading ``twistls:`` endpoint strings: the description and its values.

* :func:`_split_description` splits a string as Twisted does but keeps
  every ``key=value`` pair, so that :func:`_refuse_repeated_keys` can refuse
  a key given twice (Twisted keeps only the last value);
  :func:`_description_from_twisted` finds the string in the calling
  ``clientFromString``/``serverFromString`` frame;
* :func:`_collect` merges positional and keyword parameters, refusing
  unknown, nameless, empty or doubly given ones;
* ``_bool``, ``_int``, ``_seconds``, ``_file``, ``_directory``, ``_list``
  and ``_passphrase_file`` turn one value into its type, or raise
  :class:`~twistls.errors.ConfigurationError` naming the key.

The keys themselves and what they build are in :mod:`twistls._parsers`;
their reference is the :mod:`twistls.endpoints` docstring.
"""

from __future__ import annotations

import os
from types import FrameType
from typing import Callable, Literal, overload

from twistls.errors import ConfigurationError

_TRUE = {"yes", "true", "1", "on"}
_FALSE = {"no", "false", "0", "off"}


def _text(value: str | bytes) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"twistls endpoint: {key}={value!r} must be yes or no (or true/false, on/off, 1/0)")


def _int(key: str, value: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} is not a whole number") from None
    if number < minimum or (maximum is not None and number > maximum):
        upper = "" if maximum is None else f"..{maximum}"
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} is out of range ({minimum}{upper})")
    return number


@overload
def _seconds(key: str, value: str, *, allow_none: Literal[False]) -> float: ...


@overload
def _seconds(key: str, value: str, *, allow_none: bool) -> float | None: ...


def _seconds(key: str, value: str, *, allow_none: bool) -> float | None:
    """A positive, finite number of seconds; with ``allow_none``, ``none``
    (or ``never``) means no limit.  Empty, zero and negative values are
    errors: "no limit" must be spelled out."""
    if allow_none and value.strip().lower() in ("none", "never"):
        return None
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} is not a number of seconds") from None
    if not number > 0 or number != number or number == float("inf"):
        hint = f" ({key}=none for no limit)" if allow_none else ""
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} must be a positive number of seconds{hint}")
    return number


def _file(key: str, value: str, *, label: str | None = None) -> str:
    """The path ``value`` names (``~`` expanded), if it is a file; errors
    begin with ``label`` (default: ``twistls endpoint: key='value'``)."""
    path = os.path.expanduser(value)
    if not os.path.isfile(path):
        raise ConfigurationError(f"{label or f'twistls endpoint: {key}={value!r}'}: no such file")
    return path


def _passphrase_file(key: str, value: str, *, label: str | None = None) -> Callable[[], bytes]:
    """A passphrase callable for ``passphrase=``: it reads the file named by
    ``key=value`` at each key load (so a reload picks up a new passphrase),
    without one trailing newline.  The passphrase itself never appears in an
    error or a log line; only the file's name does.

    Raises:
        ConfigurationError: no such file (now); unreadable or empty (at a load).
    """
    name = label or f"twistls endpoint: {key}={value!r}"
    path = _file(key, value, label=name)
    _warn_if_readable_by_all(key, path)

    def read() -> bytes:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigurationError(f"{name}: could not read it: {exc.strerror}") from None
        for newline in (b"\r\n", b"\n"):
            if data.endswith(newline):
                data = data[: -len(newline)]
                break
        if not data:
            raise ConfigurationError(f"{name}: holds no passphrase (the file is empty)")
        return data

    return read


def _warn_if_readable_by_all(key: str, path: str) -> None:
    import logging
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        logging.getLogger("twistls").warning("%s %r is readable by every user; chmod 600 it", key, path)


def _refuse_unreadable_encrypted_key(key_path: str, has_passphrase: bool, *, label: str, option: str) -> None:
    """An encrypted PEM key without a passphrase file gets the error a string
    user can act on (the Python API's error names ``passphrase=``, which
    strings do not take)."""
    if has_passphrase:
        return
    try:
        with open(key_path, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return  # the context factory reports it
    if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in head or b"Proc-Type: 4,ENCRYPTED" in head:
        prefix = f"{label}: " if label else ""
        raise ConfigurationError(
            f"{prefix}the private key in {key_path!r} is encrypted: give {option} (a file holding the passphrase)"
        )


def _naming_the_key(kind: str, exc: ConfigurationError, v: dict[str, str], keys: tuple[str, ...]) -> ConfigurationError:
    """``exc`` (from a context factory, which names files, not keys) with the
    first of ``keys`` whose file it names in front: ``privateKey='k.pem': the
    private key in 'k.pem' does not match ...``."""
    text = str(exc)
    if "wrong passphrase" in text and "passphraseFile" in v:  # the key file is fine; its passphrase is not
        return ConfigurationError(f"twistls {kind} endpoint: passphraseFile={v['passphraseFile']!r}: {text}")
    for key in keys:
        value = v.get(key)
        if value is not None and (repr(os.path.expanduser(value)) in text or repr(value) in text):
            return ConfigurationError(f"twistls {kind} endpoint: {key}={value!r}: {text}")
    return exc


def _directory(key: str, value: str) -> str:
    path = os.path.expanduser(value)
    if not os.path.isdir(path):
        raise ConfigurationError(f"twistls endpoint: {key}={value!r}: no such directory")
    return path


def _list(key: str, value: str) -> list[str]:
    """The items of a comma-separated value; an empty item (``pins=,``,
    ``alpn=h2,``) is an error, so that a list never silently shrinks."""
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} lists nothing (leave {key} out instead)")
    if not all(items):
        raise ConfigurationError(f"twistls endpoint: {key}={value!r} has an empty item (a stray ',')")
    return items


def _split_description(description: str | bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """Split an endpoint string exactly as Twisted's ``_parse`` does, but keep
    every ``key=value`` pair in order, repeats included.

    Twisted splits at each ``:`` and, before the first ``=`` of each part, at
    ``=``; a backslash makes the next character literal.

    Returns:
        The positional arguments (the prefix first) and the ``(key, value)``
        pairs.

    Raises:
        ConfigurationError: the string ends with a lone backslash.
    """
    text = description.decode("utf-8", "surrogateescape") if isinstance(description, bytes) else description
    args: list[str] = []
    pairs: list[tuple[str, str]] = []
    part: list[str] = []
    current: list[str] = []
    ops = ":="
    characters = iter(text)
    for character in characters:
        if character in ops:
            part.append("".join(current))
            current = []
            if character == ":":
                _add_part(part, args, pairs)
                part = []
                ops = ":="
            else:
                ops = ":"
        elif character == "\\":
            escaped = next(characters, None)
            if escaped is None:
                raise ConfigurationError(f"endpoint string {text!r} ends with a lone backslash (a backslash is \\\\)")
            current.append(escaped)
        else:
            current.append(character)
    part.append("".join(current))
    _add_part(part, args, pairs)
    return args, pairs


def _add_part(part: list[str], args: list[str], pairs: list[tuple[str, str]]) -> None:
    if len(part) == 1:
        args.append(part[0])
    else:
        pairs.append((part[0], part[1]))


def _refuse_repeated_keys(kind: str, description: str | bytes, *, within: str = "") -> None:
    """Refuse an endpoint string (of any type; ``kind`` is ``client`` or
    ``server`` for ``twistls:`` ones) that gives a key more than once.

    Twisted turns the keys into a ``dict``, where a repeated key silently
    keeps its last value (``insecureSkipVerify=no:...:insecureSkipVerify=yes``);
    only the string itself shows the repeat.

    Raises:
        ConfigurationError: naming the repeated key.
    """
    label = f"twistls {kind} endpoint" if kind else "endpoint string"
    seen: set[str] = set()
    for key, _value in _split_description(description)[1]:
        if key in seen:
            raise ConfigurationError(f"{label}: {within}{key}= is given more than once (give each key once)")
        seen.add(key)


def _exit_if_twistd_is_starting(caller: FrameType | None, description: str | bytes | None, exc: Exception) -> None:
    """When a twistd plugin's ``makeService`` parses the string (``twistd web
    --listen``), end the process with one line naming the string and the
    problem: twistd would print a traceback for any exception there.

    Raises:
        SystemExit: under twistd's start-up (status 1).
    """
    frame = caller
    for _ in range(40):
        if frame is None:
            return
        if frame.f_code.co_name == "createOrGetApplication" and frame.f_globals.get("__name__") == "twisted.application.app":
            text = _text(description) if description is not None else "twistls:..."
            raise SystemExit(f"twistd: {text!r}: {' '.join(str(exc).split())}") from None
        frame = frame.f_back


def _description_from_twisted(caller: FrameType | None, function: str) -> str | bytes | None:
    """The endpoint string being parsed, when ``caller`` is Twisted's
    ``clientFromString``/``serverFromString`` (named ``function``) calling a
    plugin parser; ``None`` for any other caller (a direct call with
    arguments has no string, hence no repeats)."""
    if caller is None or caller.f_code.co_name != function:
        return None
    if caller.f_globals.get("__name__") != "twisted.internet.endpoints":
        return None
    description = caller.f_locals.get("description")
    if not isinstance(description, (str, bytes)):
        return None
    args = _split_description(description)[0]
    if not args or args[0].lower() != "twistls":
        return None
    return description


def _collect(
    kind: str,
    positional_names: tuple[str, ...],
    known: frozenset[str],
    args: tuple[str | bytes, ...],
    kwargs: dict[str, str | bytes],
) -> dict[str, str]:
    """Merge positional and keyword parameters, refusing unknown, nameless,
    empty or doubly given ones."""
    values: dict[str, str] = {}
    if len(args) > len(positional_names):
        rest = [_text(a) for a in args[len(positional_names) :]]
        if not all(item.strip() for item in rest):
            raise ConfigurationError(f"twistls {kind} endpoint: an empty part (a stray ':')")
        raise ConfigurationError(
            f"twistls {kind} endpoint: unexpected positional argument(s) {':'.join(rest)!r} "
            f"(positional: {', '.join(positional_names)}; use key=value for the rest)"
        )
    for name, value in zip(positional_names, args):
        values[name] = _text(value)
    if "" in kwargs:
        raise ConfigurationError(f"twistls {kind} endpoint: an empty key (={_text(kwargs[''])!r} has no name)")
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigurationError(
            f"twistls {kind} endpoint: unknown keyword(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    for key, value in kwargs.items():
        if key in values:
            raise ConfigurationError(f"twistls {kind} endpoint: {key} given both positionally and as {key}=")
        values[key] = _text(value)
    for key, value in values.items():
        if not value.strip():
            raise ConfigurationError(f"twistls {kind} endpoint: {key}= is empty (leave {key} out for its default)")
    return values
