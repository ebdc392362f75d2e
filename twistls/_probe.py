"""``twistls probe``: connect to a TLS server with the secure defaults and report.

One verifying connection is made exactly as an application using twistls
would make it (:class:`~twistls.protocol.TLSWrappingFactory` around a
:class:`~twistls.context.ClientContextFactory`, over a real TCP connection,
after a STARTTLS preamble when asked).  When it verifies, a second one tests
session resumption.  When it is rejected, a *non-verifying* connection
(``insecure_skip_verify=True``) may be made, only to show what the server
presents; the report labels those details as unverified and the verdict stays
"rejected".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from twistls._typing import TLSTransport

__all__ = ["DEFAULT_PORTS", "split_host_port", "probe", "format_report", "run"]

#: The usual port of each protocol (``"tls"``: TLS from the first byte).
DEFAULT_PORTS: dict[str, int] = {"tls": 443, "smtp": 25, "imap": 143, "pop3": 110, "ftp": 21}

#: Exit statuses.
EXIT_VERIFIED, EXIT_REJECTED, EXIT_NO_TLS = 0, 1, 3


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


class ProbeError(Exception):
    """The probe could not get as far as a TLS handshake (preamble refused,
    timeout, connection failure, a preamble over the probe's limits).

    Attributes:
        reason: the message as built (it may quote the server's lines);
            ``str()`` escapes it with :func:`~twistls._info.printable`.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        from twistls._info import printable

        return printable(self.reason)


# --- STARTTLS preambles --------------------------------------------------------
# Each step: (command to send first or None, how to read the reply, argument).
_STEPS: dict[str, list[tuple[bytes | None, str, str | None]]] = {
    "smtp": [(None, "code", "220"), (b"EHLO twistls-probe", "ehlo", "250"), (b"STARTTLS", "code", "220")],
    "imap": [(None, "imap-greeting", None), (b"a001 STARTTLS", "imap-tagged", "a001")],
    "pop3": [(None, "pop", None), (b"STLS", "pop", None)],
    "ftp": [(None, "code", "220"), (b"AUTH TLS", "code", "234")],
    "plain-line": [(b"STARTTLS", "line", None)],
}

_NAMES = {"smtp": "SMTP", "imap": "IMAP", "pop3": "POP3", "ftp": "FTP", "plain-line": "plain-line"}

#: What one preamble step (the server's greeting, or its reply to one command)
#: may hold: a server streaming continuation lines (``220-...``) or a line
#: that never ends cannot grow the probe without bound.  Each step has its
#: own budget; there are at most three steps.
MAX_STEP_LINES = 100
MAX_STEP_BYTES = 64 * 1024
#: The longest line accepted (SMTP allows 512 octets, RFC 5321 4.5.3.1.5;
#: IMAP capability lines run to a few hundred).
MAX_LINE_BYTES = 8 * 1024

#: How much of a server line a message quotes.
_QUOTE_CHARS = 200


def _reason(error: BaseException) -> str:
    """The message of ``error`` unescaped: raw data for the report, escaped
    once by :func:`format_report`."""
    from twistls.errors import _raw_message

    return error.reason if isinstance(error, ProbeError) else _raw_message(error)


def _quote(line: str) -> str:
    return f"'{line[:_QUOTE_CHARS]}...'" if len(line) > _QUOTE_CHARS else f"'{line}'"


class _Preamble:
    """The cleartext STARTTLS dialogue of one protocol, without I/O: feed it
    what the server sends, send what it returns, upgrade when ``upgrade``."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.steps = list(_STEPS[protocol])
        self.transcript: list[str] = []
        self.capabilities_ok = False
        self.upgrade = False
        self._buffer = b""
        self._step_lines = 0
        self._step_bytes = 0

    def first_command(self) -> bytes | None:
        return self.steps[0][0]

    def step_name(self) -> str:
        """``"SMTP greeting"``, ``"SMTP reply to 'EHLO twistls-probe'"``..."""
        command = self.steps[0][0]
        name = _NAMES[self.protocol]
        return f"{name} greeting" if command is None else f"{name} reply to '{command.decode('ascii')}'"

    def _over(self, limit: str) -> ProbeError:
        return ProbeError(f"the {self.step_name()} exceeded the probe's limit of {limit} (STARTTLS preamble)")

    def receive(self, data: bytes) -> list[bytes]:
        """Feed bytes from the server; returns the commands to send now, in
        order.  Once the server agreed to STARTTLS, :attr:`upgrade` is true
        and nothing more is read (cleartext after that reply is dropped, never
        taken for TLS or for a reply).

        Raises:
            ProbeError: a refusal, or a step over :data:`MAX_STEP_LINES`,
                :data:`MAX_STEP_BYTES` or :data:`MAX_LINE_BYTES`.
        """
        commands: list[bytes] = []
        if self.upgrade or not self.steps:
            return commands
        buffer = self._buffer + data
        start = 0
        while not self.upgrade:
            # A line (without its "\n") of at most MAX_LINE_BYTES, or none.
            end = buffer.find(b"\n", start, start + MAX_LINE_BYTES + 1)
            if end < 0:
                break
            raw = buffer[start:end]
            start = end + 1
            self._step_lines += 1
            self._step_bytes += len(raw) + 1
            if self._step_lines > MAX_STEP_LINES:
                raise self._over(f"{MAX_STEP_LINES} lines per reply")
            if self._step_bytes > MAX_STEP_BYTES:
                raise self._over(f"{MAX_STEP_BYTES // 1024} KiB per reply")
            command = self._line(raw.rstrip(b"\r").decode("utf-8", "replace"))
            if command is not None:
                commands.append(command)
        self._buffer = b"" if self.upgrade else buffer[start:]
        if len(self._buffer) > MAX_LINE_BYTES:
            raise self._over(f"{MAX_LINE_BYTES} bytes per line")
        if self._step_bytes + len(self._buffer) > MAX_STEP_BYTES:
            raise self._over(f"{MAX_STEP_BYTES // 1024} KiB per reply")
        return commands

    def _line(self, line: str) -> bytes | None:
        """One reply line; returns the next command when it ends a step."""
        self.transcript.append("S: " + line)
        _, kind, arg = self.steps[0]
        done = False
        name = _NAMES[self.protocol]
        if kind in ("code", "ehlo"):
            if len(line) >= 4 and line[3] == "-":
                if kind == "ehlo" and line[4:].strip().upper().startswith("STARTTLS"):
                    self.capabilities_ok = True
                return None
            if not line[:3].isdigit():
                return None  # FTP lets continuation lines carry no code
            if line[:3] != arg:
                raise ProbeError(f"{name} server answered {_quote(line)} (expected {arg})")
            if kind == "ehlo":
                if line[4:].strip().upper().startswith("STARTTLS"):
                    self.capabilities_ok = True
                if not self.capabilities_ok:
                    raise ProbeError("the SMTP server does not offer STARTTLS in its EHLO reply")
            done = True
        elif kind == "imap-greeting":
            upper = line.upper()
            if upper.startswith(("* OK", "* PREAUTH")):
                done = True
            else:
                raise ProbeError(f"IMAP server greeting {_quote(line)} is not '* OK'")
        elif kind == "imap-tagged":
            if line.startswith("* "):
                return None
            if line.upper().startswith(f"{arg} OK".upper()):
                done = True
            else:
                raise ProbeError(f"IMAP server refused STARTTLS: {_quote(line)}")
        elif kind == "pop":
            if line.startswith("+OK"):
                done = True
            else:
                raise ProbeError(f"POP3 server answered {_quote(line)} (expected +OK)")
        else:  # "line": any reply
            done = True
        if not done:
            return None
        self.steps.pop(0)
        self._step_lines = self._step_bytes = 0
        if not self.steps:
            self.upgrade = True
            return None
        command = self.steps[0][0]
        if command is not None:
            self.transcript.append("C: " + command.decode("ascii"))
        return command


@dataclass
class Attempt:
    """The outcome of one connection."""

    address: str | None = None
    info: Any = None  # ConnectionInfo once the handshake was accepted
    error: BaseException | None = None
    transcript: list[str] = field(default_factory=list)


async def _connect(
    reactor: Any,
    host: str,
    port: int,
    context_factory: Any,
    starttls: str | None,
    timeout: float,
    linger: float = 0.0,
) -> Attempt:
    """One connection; ``linger`` seconds are spent after the handshake so that
    TLS 1.3 session tickets (sent after it) arrive for a resumption test."""
    from twisted.internet import defer, endpoints, error, protocol

    from twistls.protocol import TLSWrappingFactory

    attempt = Attempt()
    finished: defer.Deferred[None] = defer.Deferred()

    class Probe(protocol.Protocol):
        transport: TLSTransport  # type: ignore[assignment]  # a TLSProtocolWrapper (see twistls._typing)
        preamble: _Preamble | None = None

        def connectionMade(self) -> None:
            peer = self.transport.getPeer()
            host_text = f"[{peer.host}]" if ":" in peer.host else peer.host
            attempt.address = f"{host_text}:{peer.port}"
            if starttls is None:
                self.wait_for_handshake()
                return
            self.preamble = _Preamble(starttls)
            first = self.preamble.first_command()
            if first is not None:
                self.preamble.transcript.append("C: " + first.decode("ascii"))
                self.transport.write(first + b"\r\n")

        def wait_for_handshake(self) -> None:
            self.transport.when_handshake_done().addCallbacks(self.handshake_done, lambda failure: None)

        def handshake_done(self, info: Any) -> None:
            attempt.info = info
            if linger > 0:
                reactor.callLater(linger, self.transport.loseConnection)
            else:
                self.transport.loseConnection()

        def dataReceived(self, data: bytes) -> None:
            if self.preamble is None or self.preamble.upgrade or attempt.error is not None:
                return  # after TLS (or a refused preamble): nothing to read
            try:
                commands = self.preamble.receive(data)
            except ProbeError as exc:
                attempt.error = exc
                self.transport.abortConnection()
                return
            for command in commands:
                self.transport.write(command + b"\r\n")
            if self.preamble.upgrade:
                self.transport.startTLS(context_factory)
                self.wait_for_handshake()

        def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
            if self.preamble is not None:
                attempt.transcript = self.preamble.transcript
            if attempt.error is None and attempt.info is None:
                attempt.error = reason.value
            if self.preamble is not None and self.preamble.steps and attempt.error is not None:
                if not isinstance(attempt.error, ProbeError):
                    attempt.error = ProbeError(
                        f"the connection ended during the {starttls} preamble ({_reason(attempt.error)})"
                    )
            if not finished.called:
                finished.callback(None)

    factory = protocol.Factory.forProtocol(Probe)
    wrapping = TLSWrappingFactory(
        factory, None if starttls else context_factory, start_tls=starttls is not None, clock=reactor
    )
    endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    connecting = endpoint.connect(wrapping)  # type: ignore[arg-type]  # a Factory provides IProtocolFactory (zope)
    connected: list[Any] = []

    def on_connect(wrapper: Any) -> None:
        connected.append(wrapper)

    def on_connect_failed(failure: Any) -> None:
        if attempt.error is None:
            attempt.error = failure.value
        if not finished.called:
            finished.callback(None)

    connecting.addCallbacks(on_connect, on_connect_failed)

    def time_out() -> None:
        if finished.called:
            return
        stage = "the connection"
        if connected:
            stage = "the STARTTLS preamble" if starttls and not connected[0].tls_started else "the TLS handshake"
            attempt.error = ProbeError(f"timed out after {timeout:g} s during {stage}")
            connected[0].transport.abortConnection()
        else:
            attempt.error = ProbeError(f"timed out after {timeout:g} s while connecting")
            connecting.cancel()

    timer = reactor.callLater(timeout, time_out)
    try:
        await finished
    finally:
        if timer.active():
            timer.cancel()
    if isinstance(attempt.error, error.ConnectionDone) and attempt.info is not None:
        attempt.error = None
    return attempt


def _quiet_insecure_warning() -> logging.Filter:
    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "insecure_skip_verify" not in record.getMessage()

    return _Filter()


def _chain_rows(chain_der: tuple[bytes, ...] | list[bytes]) -> list[dict[str, str]]:
    from cryptography import x509

    rows = []
    for der in chain_der:
        cert = x509.load_der_x509_certificate(der)
        rows.append(
            {
                "subject": cert.subject.rfc4514_string(),
                "issuer": cert.issuer.rfc4514_string(),
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
            }
        )
    return rows


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
) -> dict[str, Any]:
    """Probe ``host:port``; returns the report as a JSON-ready dict.

    The dict's ``verified`` is true only when the chain verified and the
    Checker accepted ``servername`` (default ``host``).

    Raises:
        ConfigurationError: unusable options (missing CA file, bad name).
    """
    from cryptography import x509

    from twistls.checker import Checker, certificate_names, parse_ip
    from twistls.context import ClientContextFactory
    from twistls.errors import TLSError

    expected = servername or host
    extra: dict[str, Any] = {"alpn_protocols": list(alpn)} if alpn else {}
    factory = ClientContextFactory(expected, cafile=cafile, capath=capath, handshake_timeout=timeout, **extra)
    report: dict[str, Any] = {
        "target": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "address": None,
        "starttls": starttls,
        "expected_name": expected,
        "sni": None if parse_ip(expected) is not None else expected,
        "trust": f"CA file {cafile}" if cafile else f"CA directory {capath}" if capath else "system trust store",
        "peer_certificate": False,
        "names": [],
        "names_match": None,
        "chain": [],
        "protocol_version": None,
        "cipher": None,
        "cipher_bits": None,
        "group": None,
        "compression": None,
        "alpn": None,
        "session_reused": None,
        "session_reused_on_reconnect": None,
        "details_from": None,
        "verified": False,
        "verdict": "error",
        "reason": None,
        "error_type": None,
        "preamble": [],
    }
    first = await _connect(reactor, host, port, factory, starttls, timeout, linger=0.3 if reconnect else 0.0)
    report["address"] = first.address
    report["preamble"] = first.transcript
    details = first.info
    if first.info is not None:
        report["verified"] = True
        report["verdict"] = "verified"
        report["details_from"] = "the verifying connection"
        report["session_reused"] = bool(first.info.session_reused)
        if reconnect:
            again = await _connect(reactor, host, port, factory, starttls, timeout)
            if again.info is not None:
                report["session_reused_on_reconnect"] = bool(again.info.session_reused)
    else:
        error = first.error
        report["error_type"] = type(error).__name__ if error is not None else None
        report["reason"] = _reason(error) if error is not None else "unknown failure"
        if isinstance(error, TLSError):
            report["verdict"] = "rejected"
            if details_when_rejected:
                logger = logging.getLogger("twistls")
                quiet = _quiet_insecure_warning()
                logger.addFilter(quiet)
                try:
                    insecure = ClientContextFactory(
                        expected, insecure_skip_verify=True, handshake_timeout=timeout, **extra
                    )
                finally:
                    logger.removeFilter(quiet)
                second = await _connect(reactor, host, port, insecure, starttls, timeout)
                if second.info is not None:
                    details = second.info
                    report["details_from"] = (
                        "a second, NON-verifying connection made only for this report (not trusted)"
                    )
    if details is not None:
        chain = details.peer_chain_der
        report["peer_certificate"] = bool(chain)
        report["chain"] = _chain_rows(chain)
        if chain:
            leaf = x509.load_der_x509_certificate(chain[0])
            report["names"] = certificate_names(leaf)
            try:
                Checker(hostname=expected).check_hostname(leaf)
                report["names_match"] = True
            except TLSError:
                report["names_match"] = False
        report["protocol_version"] = details.version
        report["cipher"] = details.cipher
        report["cipher_bits"] = details.cipher_bits
        report["group"] = getattr(details, "group", None)
        report["compression"] = getattr(details, "compression", None)
        report["alpn"] = details.alpn_protocol
    return report


def _yes_no(value: Any) -> str:
    if value is None:
        return "-"
    return "yes" if value else "no"


def format_report(report: dict[str, Any]) -> str:
    """The aligned text form of a :func:`probe` report.

    Every value is escaped with :func:`~twistls._info.printable`: the subject,
    issuer, names, ALPN and the reason (which may quote the server's
    preamble lines or certificate fields) come from an unverified peer, and
    a control character in them could forge or hide rows (the report keeps
    them raw, for ``--json``)."""
    from twistls._info import printable

    rows: list[tuple[str, str]] = [
        ("target", report["target"]),
        ("address", report["address"] or "(not connected)"),
    ]
    if report["starttls"]:
        rows.append(("STARTTLS", report["starttls"]))
    rows += [
        ("expected name", report["expected_name"]),
        ("SNI sent", report["sni"] or "(none: an IP address)"),
        ("trust anchors", report["trust"]),
    ]
    if report["details_from"] and report["details_from"] != "the verifying connection":
        rows.append(("details below from", report["details_from"]))
    if report["details_from"]:
        rows += [
            ("peer certificate", _yes_no(report["peer_certificate"])),
            ("certificate names", ", ".join(report["names"]) or "(none)"),
            ("names match host", _yes_no(report["names_match"])),
        ]
        for i, cert in enumerate(report["chain"]):
            rows.append((f"chain [{i}]", f"{cert['subject']} (expires {cert['not_after']})"))
        bits = f" ({report['cipher_bits']} bits)" if report["cipher_bits"] else ""
        rows += [
            ("protocol version", report["protocol_version"] or "-"),
            ("cipher", f"{report['cipher'] or '-'}{bits}"),
            ("key exchange group", report["group"] or "-"),
            ("compression", report["compression"] or "none"),
            ("ALPN", report["alpn"] or "none"),
        ]
    if report["verified"]:
        again = report["session_reused_on_reconnect"]
        reuse = _yes_no(report["session_reused"])
        if again is not None:
            reuse += f" (on reconnect: {_yes_no(again)})"
        rows.append(("session reused", reuse))
        rows.append(("verdict", "VERIFIED: chain trusted and name accepted by the Checker"))
    else:
        rows.append(("verdict", report["verdict"].upper()))
        rows.append(("reason", f"{report['error_type']}: {report['reason']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} : {printable(v)}" for k, v in rows)


def run(args: Any) -> int:
    """``twistls probe`` from parsed arguments; returns the exit status."""
    import json
    import sys

    from twisted.internet import defer, task

    from twistls.errors import ConfigurationError

    outcome: list[int] = []

    async def main(reactor: Any) -> None:
        try:
            report = await probe(
                reactor,
                args.host,
                args.port,
                starttls=args.starttls,
                cafile=args.cafile,
                capath=args.capath,
                servername=args.servername,
                timeout=args.timeout,
                reconnect=not args.no_reconnect,
                alpn=tuple(p for p in (args.alpn or "").split(",") if p),
            )
        except ConfigurationError as exc:
            print(f"twistls probe: {exc}", file=sys.stderr)
            outcome.append(2)
            return
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(format_report(report))
        if report["verified"]:
            outcome.append(EXIT_VERIFIED)
        elif report["verdict"] == "rejected":
            outcome.append(EXIT_REJECTED)
        else:
            outcome.append(EXIT_NO_TLS)

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    return outcome[0] if outcome else 1
