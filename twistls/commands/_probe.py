"""``twistls probe``: connect to a TLS server with the secure defaults and report.

One verifying connection is made exactly as an application using twistls
would make it (:class:`~twistls.protocol.TLSWrappingFactory` around a
:class:`~twistls.context.ClientContextFactory`, over a real TCP connection,
after a STARTTLS preamble when asked).  When it verifies, a second one tests
session resumption.  When it is rejected, a *non-verifying* connection
(``insecure_skip_verify=True``) may be made, only to show what the server
presents; the report labels those details as unverified and the verdict stays
"rejected".

What ``openssl s_client`` would show is in the report too: every
certificate's SHA-256 fingerprint and SPKI pin (``sha256/<base64>``, the value
``pins=`` takes), whether the server asked for a client certificate and which
CAs it accepts, a plaintext or STARTTLS port named as such (with the
``--starttls`` to use and an exit status of its own), and, after a handshake
failure, which versions, groups and suites the server does accept (a bounded
number of extra, non-verifying handshakes, each narrowed to one of them).

The parts: the STARTTLS dialogues and plaintext recognition in
:mod:`~twistls.commands._starttls`, the connections and the acceptance scan
in :mod:`~twistls.commands._scan`, the report and its text form in
:mod:`~twistls.commands._report`; here, :func:`probe` and the command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from twistls.commands._report import add_details, add_plaintext, format_report, new_report
from twistls.commands._scan import EXTRA_HANDSHAKE_TIMEOUT, Attempt, _accepted, _connect, unverified_factory
from twistls.commands._starttls import ProbeError, _plaintext, _reason

__all__ = ["DEFAULT_PORTS", "split_host_port", "probe", "format_report", "run", "ProbeError"]

#: The usual port of each protocol (``"tls"``: TLS from the first byte).
DEFAULT_PORTS: dict[str, int] = {"tls": 443, "smtp": 25, "imap": 143, "pop3": 110, "ftp": 21}

#: Exit statuses (2 is for bad arguments).
EXIT_VERIFIED, EXIT_REJECTED, EXIT_NO_TLS, EXIT_PLAINTEXT = 0, 1, 3, 4

#: A non-regular ``--cafile``/``--certificate``/``--private-key`` (``/dev/fd/N``,
#: a FIFO) is copied to a private temporary file, up to this size.
MAX_STREAM_BYTES = 16 * 1024 * 1024


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``HOST[:PORT]``; IPv6 as ``[addr]:port``, ``[addr]`` or a bare address.

    Raises:
        ValueError: an empty host or a port that is not 1..65535.
    """
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, an IPv4 address, or a bare IPv6 address
    if not host:
        raise ValueError(f"{text!r}: no host")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


async def probe(
    reactor: Any,
    host: str,
    port: int,
    *,
    starttls: str | None = None,
    cafile: str | None = None,
    capath: str | None = None,
    servername: str | None = None,
    timeout: float = 10.0,
    reconnect: bool = True,
    details_when_rejected: bool = True,
    alpn: tuple[str, ...] = (),
    certificate: str | None = None,
    private_key: str | None = None,
    passphrase: Any = None,
    server_accepts_when_failed: bool = True,
) -> dict[str, Any]:
    """Probe ``host:port``; returns the report as a JSON-ready dict.

    The dict's ``verified`` is true only when the chain verified and the
    Checker accepted ``servername`` (default ``host``).  Its ``verdict`` is
    ``"verified"``, ``"rejected"``, ``"plaintext"`` (the server answered in a
    cleartext protocol: ``plaintext`` holds its first line and
    ``suggest_starttls`` the ``--starttls`` to use) or ``"error"``.
    ``certificate``/``private_key`` are sent when the server asks for a
    client certificate (``client_certificate_requested``,
    ``client_ca_names``); ``passphrase`` opens an encrypted ``private_key``
    (as :class:`~twistls.context.ClientContextFactory` takes it).  After a handshake failure ``server_accepts`` says
    which versions, groups and suites the server completes a handshake with.

    Raises:
        ConfigurationError: unusable options (missing CA file, bad name).
    """
    from twistls.context import ClientContextFactory

    target = _Target(reactor, host, port, starttls, timeout, servername or host)
    extra: dict[str, Any] = {"alpn_protocols": list(alpn)} if alpn else {}
    if certificate is not None:
        extra.update(certificate=certificate, private_key=private_key)
        if passphrase is not None:
            extra["passphrase"] = passphrase
    factory = ClientContextFactory(target.expected, cafile=cafile, capath=capath, handshake_timeout=timeout, **extra)
    report = new_report(
        host, port, starttls=starttls, expected=target.expected, cafile=cafile, capath=capath, certificate=certificate
    )
    first = await target.connect(factory, linger=0.3 if reconnect else 0.0)
    _add_first_connection(report, first)
    if first.info is not None:
        details = first.info
        await _add_verified(report, first, target, factory, reconnect=reconnect)
    else:
        details = await _add_failure(
            report,
            first,
            target,
            extra,
            details_when_rejected=details_when_rejected,
            server_accepts_when_failed=server_accepts_when_failed,
        )
    if details is not None:
        add_details(report, details, target.expected)
    return report


@dataclass(frozen=True)
class _Target:
    """Where :func:`probe` connects, and the name it expects there."""

    reactor: Any
    host: str
    port: int
    starttls: str | None
    timeout: float
    expected: str

    async def connect(self, context_factory: Any, *, linger: float = 0.0) -> Attempt:
        return await _connect(
            self.reactor, self.host, self.port, context_factory, self.starttls, self.timeout, linger=linger
        )


def _add_first_connection(report: dict[str, Any], first: Attempt) -> None:
    """What the verifying connection showed whatever its outcome: the
    address, the preamble, a client-certificate request, how it ended."""
    report["address"] = first.address
    report["preamble"] = first.transcript
    report["client_certificate_requested"] = first.client_ca_names is not None
    report["client_ca_names"] = first.client_ca_names or []
    if first.ended_after_handshake is not None:
        report["ended_after_handshake"] = (
            f"{type(first.ended_after_handshake).__name__}: {_reason(first.ended_after_handshake)}"
        )
        if getattr(first.ended_after_handshake, "alert", None) == "certificate required":
            report["client_certificate_requested"] = True


async def _add_verified(report: dict[str, Any], first: Attempt, target: _Target, factory: Any, *, reconnect: bool) -> None:
    """The verdict of a verified connection, and (with ``reconnect``)
    whether a second connection resumed its session."""
    report["verified"] = True
    report["verdict"] = "verified"
    report["details_from"] = "the verifying connection"
    report["session_reused"] = bool(first.info.session_reused)
    if reconnect:
        again = await target.connect(factory)
        if again.info is not None:
            report["session_reused_on_reconnect"] = bool(again.info.session_reused)


async def _add_failure(
    report: dict[str, Any],
    first: Attempt,
    target: _Target,
    extra: dict[str, Any],
    *,
    details_when_rejected: bool,
    server_accepts_when_failed: bool,
) -> Any:
    """Why the verifying connection failed: a plaintext port, or a TLS
    rejection (then, optionally, what a non-verifying connection shows and
    what the server accepts).  Returns the ``ConnectionInfo`` of that
    non-verifying connection, or ``None``."""
    from twistls.errors import HandshakeTimeoutError, TLSError, VerificationError

    error = first.error
    report["error_type"] = type(error).__name__ if error is not None else None
    report["reason"] = _reason(error) if error is not None else "unknown failure"
    if getattr(error, "alert", None) == "certificate required":
        report["client_certificate_requested"] = True
    plain = _plaintext(first.received) if target.starttls is None else None
    if plain is not None:
        add_plaintext(report, plain)
        return None
    if not isinstance(error, TLSError):
        return None
    report["verdict"] = "rejected"
    details = await _unverified_details(report, target, extra) if details_when_rejected else None
    # The handshake itself failed (not the checks after it, not a silent
    # peer, not a missing client certificate): find out what would work.
    if (
        server_accepts_when_failed
        and details is None
        and not isinstance(error, (VerificationError, HandshakeTimeoutError))
        and not (report["client_certificate_requested"] and extra.get("certificate") is None)
    ):
        report["server_accepts"] = await _accepted(
            target.reactor,
            target.host,
            target.port,
            target.expected,
            target.starttls,
            min(target.timeout, EXTRA_HANDSHAKE_TIMEOUT),
        )
    return details


async def _unverified_details(report: dict[str, Any], target: _Target, extra: dict[str, Any]) -> Any:
    """A second, non-verifying connection made only to show what the server
    presents; returns its ``ConnectionInfo`` (or ``None``)."""
    insecure = unverified_factory(target.expected, handshake_timeout=target.timeout, **extra)
    second = await target.connect(insecure)
    if second.info is not None:
        report["details_from"] = "a second, NON-verifying connection made only for this report (not trusted)"
    if second.client_ca_names is not None:
        report["client_certificate_requested"] = True
        report["client_ca_names"] = report["client_ca_names"] or second.client_ca_names
    return second.info


def run(args: Any) -> int:
    """``twistls probe`` from parsed arguments; returns the exit status."""
    import shutil
    import sys
    import tempfile

    from twisted.internet import defer, task

    from twistls.errors import ConfigurationError

    outcome: list[int] = []
    staging = tempfile.mkdtemp(prefix="twistls-probe-")
    try:
        files = {
            name: _regular_file(getattr(args, name, None), staging, option)
            for name, option in (("cafile", "--cafile"), ("certificate", "--certificate"), ("private_key", "--private-key"))
        }
        passphrase = _passphrase(args, files, staging)
    except ConfigurationError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        print(f"twistls probe: {exc}", file=sys.stderr)
        return 2
    try:
        task.react(lambda reactor: defer.ensureDeferred(_probe_and_print(reactor, args, files, passphrase, outcome)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outcome[0] if outcome else 1


async def _probe_and_print(
    reactor: Any, args: Any, files: dict[str, str | None], passphrase: Any, outcome: list[int]
) -> None:
    """Probe as ``args`` say, print the report (text or ``--json``), and
    append the exit status to ``outcome``."""
    import json
    import sys

    from twistls.errors import ConfigurationError

    try:
        report = await probe(
            reactor,
            args.host,
            args.port,
            starttls=args.starttls,
            cafile=files["cafile"],
            capath=args.capath,
            certificate=files["certificate"],
            private_key=files["private_key"],
            passphrase=passphrase,
            servername=args.servername,
            timeout=args.timeout,
            reconnect=not args.no_reconnect,
            alpn=tuple(p for p in (args.alpn or "").split(",") if p),
        )
    except ConfigurationError as exc:
        text = str(exc)
        if "wrong passphrase" in text and passphrase is not None:  # the key is fine; its passphrase is not
            text = f"--passphrase-file {args.passphrase_file!r}: {text}"
        print(f"twistls probe: {text}", file=sys.stderr)
        outcome.append(2)
        return
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    outcome.append(_exit_status(report))


def _exit_status(report: dict[str, Any]) -> int:
    if report["verified"]:
        return EXIT_VERIFIED
    if report["verdict"] == "rejected":
        return EXIT_REJECTED
    if report["verdict"] == "plaintext":
        return EXIT_PLAINTEXT
    return EXIT_NO_TLS


def _passphrase(args: Any, files: dict[str, str | None], staging: str) -> Any:
    """The passphrase callable of ``--passphrase-file`` (read at each key
    load; a stream is read once), or ``None``.  Without it, an encrypted key
    gets an error that names ``--passphrase-file`` (the Python API's names
    ``passphrase=``, which the command line does not take).

    Raises:
        ConfigurationError: a missing, unreadable or empty passphrase file,
            or an encrypted key without one.
    """
    from twistls.endpoints import _passphrase_file, _refuse_unreadable_encrypted_key

    path = getattr(args, "passphrase_file", None)
    key = files.get("private_key") or files.get("certificate")
    if key is not None:
        _refuse_unreadable_encrypted_key(key, path is not None, label="--private-key", option="--passphrase-file F")
    if path is None:
        return None
    staged = _regular_file(path, staging, "--passphrase-file") or path
    return _passphrase_file("--passphrase-file", staged, label=f"--passphrase-file {path!r}")


def _regular_file(path: str | None, staging: str, option: str) -> str | None:
    """``path`` itself when it is a regular file (or missing: the context
    factory says so); otherwise (``/dev/fd/N``, a FIFO, a character device)
    its content, read once, in a new mode-0600 file under ``staging``.

    Raises:
        ConfigurationError: the stream cannot be read, or holds more than
            :data:`MAX_STREAM_BYTES`.
    """
    import stat

    from twistls.errors import ConfigurationError

    if path is None:
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return path  # the context factory reports a missing file with the option's name
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return path
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_STREAM_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"{option} {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_STREAM_BYTES:
        raise ConfigurationError(f"{option} {path}: the stream holds more than {MAX_STREAM_BYTES} bytes")
    copy = os.path.join(staging, option.lstrip("-"))
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return copy
