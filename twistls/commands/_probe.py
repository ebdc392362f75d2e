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
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from twistls._typing import TLSTransport

__all__ = ["DEFAULT_PORTS", "split_host_port", "probe", "format_report", "run"]

#: The usual port of each protocol (``"tls"``: TLS from the first byte).
DEFAULT_PORTS: dict[str, int] = {"tls": 443, "smtp": 25, "imap": 143, "pop3": 110, "ftp": 21}

#: Exit statuses (2 is for bad arguments).
EXIT_VERIFIED, EXIT_REJECTED, EXIT_NO_TLS, EXIT_PLAINTEXT = 0, 1, 3, 4

#: What the probe keeps of the first bytes a server sends (to recognise a
#: plaintext protocol when the handshake fails).
_FIRST_BYTES = 512
#: A non-regular ``--cafile``/``--certificate``/``--private-key`` (``/dev/fd/N``,
#: a FIFO) is copied to a private temporary file, up to this size.
MAX_STREAM_BYTES = 16 * 1024 * 1024
#: Extra handshakes after a handshake failure: at most this many, each given
#: at most this many seconds.
MAX_EXTRA_HANDSHAKES = 24
EXTRA_HANDSHAKE_TIMEOUT = 5.0


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
    received: bytes = b""  # the first _FIRST_BYTES bytes the server sent
    client_ca_names: list[str] | None = None  # from the server's CertificateRequest
    ended_after_handshake: BaseException | None = None  # why it ended, if not cleanly


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
            elif attempt.info is not None and not isinstance(reason.value, error.ConnectionDone):
                attempt.ended_after_handshake = reason.value
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
    wrapping.protocol = _recording_wrapper(attempt)
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


def _recording_wrapper(attempt: Attempt) -> Any:
    """A :class:`~twistls.protocol.TLSProtocolWrapper` that keeps the first
    bytes the server sends and, before its engine is freed, the CA names of
    the server's CertificateRequest, in ``attempt``."""
    from twistls.protocol import TLSProtocolWrapper

    class _Recording(TLSProtocolWrapper):
        def dataReceived(self, data: bytes) -> None:
            if len(attempt.received) < _FIRST_BYTES:
                attempt.received += data[: _FIRST_BYTES - len(attempt.received)]
            super().dataReceived(data)

        def connectionLost(self, reason: Failure | None = None) -> None:
            engine = self._engine
            if engine is not None and engine.client and attempt.client_ca_names is None:
                attempt.client_ca_names = _client_ca_names(engine.ssl_address)
            if reason is None:
                super().connectionLost()
            else:
                super().connectionLost(reason)

    return _Recording


_get_client_ca_list: Any = None


def _client_ca_names(ssl_address: int) -> list[str] | None:
    """The CA names a server sent with its CertificateRequest (as OpenSSL's
    one-line form), ``[]`` for a request without names, ``None`` when the
    client received no request (or none with names, in TLS 1.3)."""
    global _get_client_ca_list
    import ctypes

    from twistls import _openssl

    if not ssl_address:
        return None
    if _get_client_ca_list is None:
        _get_client_ca_list = _openssl._fn(_openssl.libssl, "SSL_get_client_CA_list", ctypes.c_void_p, ctypes.c_void_p)
    stack = _get_client_ca_list(ssl_address)
    if not stack:
        return None
    names = []
    for i in range(min(_openssl.OPENSSL_sk_num(stack), 64)):
        name = _openssl.OPENSSL_sk_value(stack, i)
        buffer = ctypes.create_string_buffer(512)
        text = _openssl.X509_NAME_oneline(name, buffer, len(buffer))
        names.append((text or b"").decode("utf-8", "replace"))
    return names


def _quiet_insecure_warning() -> logging.Filter:
    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "insecure_skip_verify" not in record.getMessage()

    return _Filter()


def _chain_rows(chain_der: tuple[bytes, ...] | list[bytes]) -> list[dict[str, Any]]:
    """Each certificate as :func:`~twistls._info.describe_certificate` has it
    (subject, issuer, ``sha256`` fingerprint, ``spki_sha256`` and ``pin``,
    validity, ``san``), with ``not_before``/``not_after`` kept as aliases."""
    from twistls._info import describe_certificate

    rows = []
    for der in chain_der:
        row: dict[str, Any] = describe_certificate(der)
        row["not_before"] = row["not_valid_before"]
        row["not_after"] = row["not_valid_after"]
        rows.append(row)
    return rows


# --- what a plaintext port says -------------------------------------------------

#: (pattern on the server's first line, protocol, the --starttls to suggest)
_PLAINTEXT_PROTOCOLS: tuple[tuple[str, str, str | None], ...] = (
    (r"^220[ -].*\b(E?SMTP|mail)\b", "SMTP", "smtp"),
    (r"^220[ -].*\bFTP\b", "FTP", "ftp"),
    (r"^220[ -]", "SMTP or FTP", "smtp"),
    (r"^\* (OK|PREAUTH)\b", "IMAP", "imap"),
    (r"^\+OK\b", "POP3", "pop3"),
    (r"^HTTP/\d", "HTTP", None),
    (r"^SSH-\d", "SSH", None),
)


def _plaintext(received: bytes) -> tuple[str, str, str | None] | None:
    """``(first line, protocol, --starttls to suggest)`` when ``received``
    is not TLS (a TLS record starts with a content type of 20..23), else
    ``None``."""
    if not received or 20 <= received[0] <= 23 or received[0] & 0x80:
        return None
    line = received.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")[:_QUOTE_CHARS]
    for pattern, name, starttls in _PLAINTEXT_PROTOCOLS:
        if re.match(pattern, line, re.IGNORECASE):
            return line, name, starttls
    return line, "an unknown plaintext protocol", None


# --- what a server accepts, after a handshake failure ----------------------------

_VERSIONS = ("TLSv1.3", "TLSv1.2")
_GROUPS = ("X25519MLKEM768", "X25519", "P-256", "P-384", "P-521", "X448", "ffdhe2048", "ffdhe3072")
_EXTRA_TLS13_SUITES = ("TLS_AES_128_CCM_SHA256",)
_EXTRA_TLS12_SUITES = ("ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES128-SHA", "AES128-GCM-SHA256", "AES128-SHA")
_WIDE_CIPHERS = "ALL:!aNULL:!eNULL"


async def _accepted(
    reactor: Any, host: str, port: int, expected: str, starttls: str | None, timeout: float
) -> dict[str, Any]:
    """Which versions, groups and suites the server completes a handshake
    with: one non-verifying handshake per candidate, narrowed to it (at most
    :data:`MAX_EXTRA_HANDSHAKES`, each within ``timeout``)."""
    from twistls.context import DEFAULT_CIPHERS, DEFAULT_CIPHERSUITES, default_groups
    from twistls.errors import ConfigurationError

    budget = [MAX_EXTRA_HANDSHAKES]
    logger = logging.getLogger("twistls")
    quiet = _quiet_insecure_warning()

    def factory(**options: Any) -> Any:
        from twistls.context import ClientContextFactory

        logger.addFilter(quiet)
        try:
            return ClientContextFactory(
                expected, insecure_skip_verify=True, handshake_timeout=timeout, session_cache_size=0, **options
            )
        except ConfigurationError:
            return None  # this libssl does not know the candidate
        finally:
            logger.removeFilter(quiet)

    async def tries(options: dict[str, Any]) -> bool | None:
        made = factory(**options)
        if made is None:
            return None
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        attempt = await _connect(reactor, host, port, made, starttls, timeout)
        return attempt.info is not None

    known_groups = [g for g in _GROUPS if factory(groups=g) is not None]
    wide_groups = ":".join(known_groups)
    suites13 = DEFAULT_CIPHERSUITES.split(":") + list(_EXTRA_TLS13_SUITES)
    suites12 = DEFAULT_CIPHERS.split(":") + list(_EXTRA_TLS12_SUITES)
    wide = {"ciphers": _WIDE_CIPHERS, "ciphersuites": ":".join(suites13), "groups": wide_groups}
    result: dict[str, Any] = {"versions": {}, "groups": {}, "suites": {}}
    for version in _VERSIONS:
        result["versions"][version] = await tries({**wide, "minimum_version": version, "maximum_version": version})
    accepted = [v for v in _VERSIONS if result["versions"][v]]
    if accepted:
        version = accepted[0]
        pinned = {"minimum_version": version, "maximum_version": version}
        for group in known_groups:
            ciphers = "ECDHE:DHE:!aNULL:!eNULL" if version == "TLSv1.2" else _WIDE_CIPHERS
            result["groups"][group] = await tries({**wide, **pinned, "groups": group, "ciphers": ciphers})
        if "TLSv1.3" in accepted:
            for suite in suites13:
                options = {**wide, "minimum_version": "TLSv1.3", "maximum_version": "TLSv1.3", "ciphersuites": suite}
                result["suites"][suite] = await tries(options)
        if "TLSv1.2" in accepted:
            for suite in suites12:
                options = {**wide, "minimum_version": "TLSv1.2", "maximum_version": "TLSv1.2", "ciphers": suite}
                result["suites"][suite] = await tries(options)
    defaults = set(default_groups().replace("*", "").replace("/", ":").split(":"))
    defaults |= set(suites13[:3]) | set(suites12[:6]) | set(_VERSIONS)
    offered = [*result["versions"].items(), *result["groups"].items(), *result["suites"].items()]
    result["accepted_outside_defaults"] = [name for name, ok in offered if ok and name not in defaults]
    result["handshakes"] = MAX_EXTRA_HANDSHAKES - budget[0]
    return result


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
    from cryptography import x509

    from twistls.checker import Checker, certificate_names, parse_ip
    from twistls.context import ClientContextFactory
    from twistls.errors import HandshakeTimeoutError, TLSError, VerificationError

    expected = servername or host
    extra: dict[str, Any] = {"alpn_protocols": list(alpn)} if alpn else {}
    if certificate is not None:
        extra.update(certificate=certificate, private_key=private_key)
        if passphrase is not None:
            extra["passphrase"] = passphrase
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
        "client_certificate": certificate,
        "client_certificate_requested": None,
        "client_ca_names": [],
        "ended_after_handshake": None,
        "plaintext": None,
        "plaintext_protocol": None,
        "suggest_starttls": None,
        "server_accepts": None,
    }
    first = await _connect(reactor, host, port, factory, starttls, timeout, linger=0.3 if reconnect else 0.0)
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
        if getattr(error, "alert", None) == "certificate required":
            report["client_certificate_requested"] = True
        plain = _plaintext(first.received) if starttls is None else None
        if plain is not None:
            report["verdict"] = "plaintext"
            report["plaintext"], report["plaintext_protocol"], report["suggest_starttls"] = plain
            line, name, suggestion = plain
            report["error_type"] = "PlaintextPort"
            advice = (
                f"try --starttls {suggestion}"
                if suggestion
                else "this port does not speak TLS"
                + ("" if name != "an unknown plaintext protocol" else " (or needs --starttls PROTO: smtp, imap, pop3, ftp, plain-line)")
            )
            report["reason"] = f"the server answered in plaintext ({name}): '{line}'; {advice}"
        elif isinstance(error, TLSError):
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
                if second.client_ca_names is not None:
                    report["client_certificate_requested"] = True
                    report["client_ca_names"] = report["client_ca_names"] or second.client_ca_names
            # The handshake itself failed (not the checks after it, not a silent
            # peer, not a missing client certificate): find out what would work.
            if (
                server_accepts_when_failed
                and details is None
                and not isinstance(error, (VerificationError, HandshakeTimeoutError))
                and not (report["client_certificate_requested"] and certificate is None)
            ):
                report["server_accepts"] = await _accepted(
                    reactor, host, port, expected, starttls, min(timeout, EXTRA_HANDSHAKE_TIMEOUT)
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
            rows.append((f"chain [{i}] SHA-256", cert["sha256"]))
            rows.append((f"chain [{i}] SPKI pin", cert["pin"]))
        bits = f" ({report['cipher_bits']} bits)" if report["cipher_bits"] else ""
        rows += [
            ("protocol version", report["protocol_version"] or "-"),
            ("cipher", f"{report['cipher'] or '-'}{bits}"),
            ("key exchange group", report["group"] or "-"),
            ("compression", report["compression"] or "none"),
            ("ALPN", report["alpn"] or "none"),
        ]
    if report["client_certificate_requested"]:
        cas = "; ".join(report["client_ca_names"]) or "none named"
        sent = f"sent {report['client_certificate']}" if report["client_certificate"] else "none sent"
        rows.append(("client certificate", f"client certificate requested (acceptable CAs: {cas}); {sent}"))
    elif report["details_from"] or report["verified"]:
        rows.append(("client certificate", "not requested"))
    if report["ended_after_handshake"]:
        rows.append(("after the handshake", f"the server ended the connection: {report['ended_after_handshake']}"))
    accepts = report.get("server_accepts")
    if accepts:
        for what in ("versions", "groups", "suites"):
            tried = accepts[what]
            if not tried:
                continue
            yes = [name for name, ok in tried.items() if ok]
            no = [name for name, ok in tried.items() if ok is False]
            text = ", ".join(yes) or "none of those tried"
            if no:
                text += f" (refused: {', '.join(no)})"
            rows.append((f"server accepts {what}", text))
        outside = accepts["accepted_outside_defaults"]
        if outside:
            rows.append(("not offered by default", ", ".join(outside)))
        elif not any(accepts["versions"].values()):
            rows.append(("server accepts", "no TLS 1.2 or 1.3 handshake (TLS 1.0/1.1 only? twistls does not negotiate them)"))
    if report["verified"]:
        again = report["session_reused_on_reconnect"]
        reuse = _yes_no(report["session_reused"])
        if again is not None:
            reuse += f" (on reconnect: {_yes_no(again)})"
        rows.append(("session reused", reuse))
        rows.append(("verdict", "VERIFIED: chain trusted and name accepted by the Checker"))
    elif report["verdict"] == "plaintext":
        rows.append(("verdict", "PLAINTEXT: this port does not start with TLS"))
        rows.append(("reason", report["reason"]))
    else:
        rows.append(("verdict", report["verdict"].upper()))
        rows.append(("reason", f"{report['error_type']}: {report['reason']}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)} : {printable(v)}" for k, v in rows)


def run(args: Any) -> int:
    """``twistls probe`` from parsed arguments; returns the exit status."""
    import json
    import sys

    import shutil
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

    async def main(reactor: Any) -> None:
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
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print(format_report(report))
        if report["verified"]:
            outcome.append(EXIT_VERIFIED)
        elif report["verdict"] == "rejected":
            outcome.append(EXIT_REJECTED)
        elif report["verdict"] == "plaintext":
            outcome.append(EXIT_PLAINTEXT)
        else:
            outcome.append(EXIT_NO_TLS)

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as exc:
        if exc.code not in (0, None):
            return int(exc.code) if isinstance(exc.code, int) else 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outcome[0] if outcome else 1


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
