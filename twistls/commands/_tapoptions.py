"""The option parsing ``twistd twistls echo`` and ``proxy`` share: help
texts, coercions, the ``twistls:`` endpoint-string defaults the options add
(or refuse), the ``--workers``/``--ticket-key-file``/``--drain-timeout``
options, and the one-line errors that name the option at fault.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger
from twisted.python import usage

#: Every part of ``twistd twistls`` logs under the namespace operators know.
log = Logger(namespace="twistls.tap")

_TIMEOUT_HELP = (
    "Seconds a TLS handshake may take before the connection is dropped "
    "(applies to twistls: endpoints that do not set handshakeTimeout= "
    "themselves) [default: 30]"
)


def _positive_seconds_for(option: str) -> Any:
    """A usage.Options coerce function for a positive number of seconds,
    whose error names ``option``."""

    def coerce(value: str) -> float:
        number = float(value)
        if not number > 0 or number == float("inf"):
            raise ValueError(f"{option} must be a positive number of seconds, not {value!r}")
        return number

    coerce.coerceDoc = "A positive number of seconds."  # type: ignore[attr-defined]
    return coerce


_positive_seconds = _positive_seconds_for("--handshake-timeout")
_positive_idle_seconds = _positive_seconds_for("--idle-timeout")


_PASSPHRASE_HELP = (
    "File holding the passphrase of an encrypted private key (read at start-up and at each SIGHUP reload; "
    "one trailing newline is stripped); added to twistls: strings that load a key as passphraseFile="
)

_PROXY_PROTOCOL_HELP = (
    "Every connection starts with a PROXY protocol v1/v2 header from HAProxy or a load balancer, read before "
    "the TLS handshake (getPeer() and logs show the client it names); added to a twistls: --listen as "
    "proxyProtocol=yes."
)


def _add_proxy_protocol(option: str, description: str, keys: dict[str, str] | None, defaults: dict[str, str | None]) -> None:
    """Add ``proxyProtocol=yes`` to a ``twistls:`` string's ``defaults``, or refuse."""
    if keys is None:
        raise usage.UsageError(
            f"--proxy-protocol needs a twistls: {option} string, not {description!r} "
            "(for a plaintext listener, use Twisted's haproxy: prefix)"
        )
    if "proxyProtocol" in keys and _is_no(keys["proxyProtocol"]):
        raise usage.UsageError(f"--proxy-protocol conflicts with proxyProtocol={keys['proxyProtocol']} in {option} {description!r}")
    defaults["proxyProtocol"] = "yes"


_IDLE_HELP = (
    "Seconds an established TLS connection may carry no data before it is closed "
    "(applies to twistls: endpoints that do not set idleTimeout= themselves) [default: never]"
)


def _escape(value: str) -> str:
    """``value`` written as an endpoint-string value (``\\`` and ``:`` escaped)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _keys(option: str, description: str) -> dict[str, str] | None:
    """The ``key=value`` pairs of ``description`` if it is a ``twistls:``
    string (any case, as Twisted matches prefixes), else ``None``.

    Raises:
        usage.UsageError: the string gives a key twice or ends with a lone
            backslash.
    """
    from twistls.endpoints import _refuse_repeated_keys, _split_description
    from twistls.errors import ConfigurationError

    try:
        _refuse_repeated_keys("", description)
        args, pairs = _split_description(description)
    except ConfigurationError as exc:
        raise _one_line(option, description, exc) from None
    if not args or args[0].lower() != "twistls":
        return None
    return dict(pairs)


def _with_defaults(description: str, keys: dict[str, str], defaults: dict[str, str | None]) -> str:
    """Add each of ``defaults`` that is set to a ``twistls:`` string whose
    ``keys`` lack it."""
    for key, value in defaults.items():
        if value is not None and key not in keys:
            description = f"{description}:{key}={_escape(value)}"
    return description


def _seconds_text(value: float | None) -> str | None:
    return None if value is None else f"{value:g}"


def _one_line(option: str, value: str, exc: BaseException) -> usage.UsageError:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith(f"{option} {value!r}"):  # already names it
        return usage.UsageError(text)
    return usage.UsageError(f"{option} {value!r}: {text}")


def _blame(exc: BaseException, candidates: tuple[tuple[str, str | None], ...]) -> usage.UsageError:
    """The one-line error for ``exc``, naming the first option whose file the
    error names (a key mismatch names the key before the certificate), or the
    last candidate."""
    text = str(exc)
    given: list[tuple[str, str]] = [(option, value) for option, value in candidates if value]
    for option, value in given:
        if option == "--passphrase-file" and "wrong passphrase" in text:  # the key is fine; its passphrase is not
            return _one_line(option, value, exc)
    for option, value in given:
        if repr(os.path.expanduser(value)) in text or repr(value) in text:
            return _one_line(option, value, exc)
    option, value = given[-1]
    return _one_line(option, value, exc)


def _refuse_idle_options(where: str, timeout: float | None, idle: float | None) -> None:
    """Refuse ``--handshake-timeout``/``--idle-timeout`` when no TLS endpoint would take them."""
    for option, value in (("--handshake-timeout", timeout), ("--idle-timeout", idle)):
        if value is not None:
            raise usage.UsageError(f"{option} applies to no TLS endpoint: {where} (use twistls: strings)")


def _server_endpoint(option: str, description: str, defaults: dict[str, str | None]) -> Any:
    from twisted.internet.endpoints import serverFromString

    return _endpoint(serverFromString, option, description, defaults)


def _client_endpoint(option: str, description: str, defaults: dict[str, str | None]) -> Any:
    from twisted.internet.endpoints import clientFromString

    return _endpoint(clientFromString, option, description, defaults)


def _endpoint(parse: Any, option: str, description: str, defaults: dict[str, str | None]) -> Any:
    """``parse(reactor, description)``, a ``twistls:`` string completed with
    ``defaults``; an error is one line naming ``option``."""
    from twisted.internet import reactor

    keys = _keys(option, description)
    if keys is not None:
        description = _with_defaults(description, keys, defaults)
    try:
        return parse(reactor, description)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise _one_line(option, description, exc) from None


def _timeouts(timeout: float | None, idle: float | None) -> dict[str, str | None]:
    return {"handshakeTimeout": _seconds_text(timeout), "idleTimeout": _seconds_text(idle)}


def _check_passphrase_file(path: str) -> None:
    if not os.path.isfile(os.path.expanduser(path)):
        raise usage.UsageError(f"--passphrase-file {path!r}: no such file")


def _refuse_second_passphrase(option: str, description: str, keys: dict[str, str], passphrase: str) -> str:
    """``passphrase`` for a ``twistls:`` string, unless it names its own."""
    if "passphraseFile" in keys:
        raise usage.UsageError(
            f"--passphrase-file conflicts with passphraseFile= in {option} {description!r}: name the passphrase once"
        )
    return passphrase


_SCALE_OPTIONS = [
    ["workers", None, 1, "Run this many worker processes on the same port(s) (SO_REUSEPORT, Linux): the "
     "twistd process supervises them, replaces one that dies and forwards SIGHUP and SIGTERM "
     "[default: 1, no workers].", int],
    ["ticket-key-file", None, None, "Session-ticket key file shared by the workers (and by other servers of "
     "the same name): clients resume on any of them. Make and rotate it with 'twistls mkticketkey FILE "
     "[--rotate]', then SIGHUP. [default: a random key per process]"],
    ["drain-timeout", None, 30.0, "On SIGTERM, seconds established connections may go on before they are "
     "closed with close_notify [default: 30].", float],
]


def _scale_defaults(opts: usage.Options, option: str, description: str | None, keys: dict[str, str] | None,
                    defaults: dict[str, str | None]) -> None:
    """Add ``reusePort``/``ticketKeyFile`` for ``--workers``/``--ticket-key-file``
    to a ``twistls:`` string's ``defaults``, or refuse."""
    workers, tickets = opts["workers"], opts["ticket-key-file"]
    if workers > 1 or tickets is not None:
        if keys is None:
            wants = "--workers" if workers > 1 else "--ticket-key-file"
            raise usage.UsageError(f"{wants} needs a twistls: {option} string, not {description!r}")
        if workers > 1:
            if "endpoint" in keys:
                raise usage.UsageError(f"--workers needs a port in {option}, not endpoint= (SO_REUSEPORT)")
            defaults["reusePort"] = "yes"
        if tickets is not None:
            if "ticketKeyFile" in keys:
                raise usage.UsageError(f"--ticket-key-file conflicts with ticketKeyFile= in {option} {description!r}")
            defaults["ticketKeyFile"] = tickets


def _check_scale_options(opts: usage.Options) -> None:
    if opts["workers"] < 1:
        raise usage.UsageError(f"--workers must be 1 or more, not {opts['workers']}")
    if opts["workers"] > 1:
        from twistls._workers import reuse_port_supported

        if not reuse_port_supported():
            raise usage.UsageError("--workers needs Linux (SO_REUSEPORT)")
    if not opts["drain-timeout"] >= 0:
        raise usage.UsageError(f"--drain-timeout must be 0 or more seconds, not {opts['drain-timeout']}")
    if opts["ticket-key-file"] is not None and not os.path.isfile(os.path.expanduser(opts["ticket-key-file"])):
        raise usage.UsageError(
            f"--ticket-key-file {opts['ticket-key-file']!r}: no such file (make one with 'twistls mkticketkey FILE')"
        )


def _is_no(value: str) -> bool:
    from twistls.endpoints import _FALSE

    return value.strip().lower() in _FALSE


def _tls_endpoint(
    context_factory: Any,
    port: int,
    interface: str,
    idle: float | None = None,
    proxy_protocol: bool = False,
    reuse_port: bool = False,
) -> Any:
    from twistls.endpoints import wrap_server_tls

    return wrap_server_tls(
        context_factory, _plain_endpoint(port, interface, reuse_port=reuse_port), idle_timeout=idle,
        proxy_protocol=proxy_protocol,
    )


def _plain_endpoint(port: int, interface: str, *, reuse_port: bool = False) -> Any:
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

    if reuse_port:
        from twistls._workers import ReusePortTCPServerEndpoint

        try:
            return ReusePortTCPServerEndpoint(reactor, port, interface=interface)
        except ValueError as exc:
            raise usage.UsageError(f"--workers: {exc}") from None
    cls = TCP6ServerEndpoint if ":" in interface else TCP4ServerEndpoint
    return cls(reactor, port, interface=interface)

