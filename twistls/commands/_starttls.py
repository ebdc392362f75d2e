"""The cleartext before TLS: the STARTTLS dialogues ``twistls probe`` speaks,
and what a port that answers in plaintext says it is.

:class:`_Preamble` is the dialogue of one protocol without I/O (feed it the
server's bytes, send what it returns); :func:`_plaintext` names the protocol
of a server's first line.  :class:`ProbeError` is the probe's own failure
(a refused preamble, a timeout, a preamble over the limits below).
"""

from __future__ import annotations

import re

__all__ = ["ProbeError", "MAX_STEP_LINES", "MAX_STEP_BYTES", "MAX_LINE_BYTES"]


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
    once by :func:`~twistls.commands._report.format_report`."""
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
        if not self._ends_step(kind, arg, line):
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

    def _ends_step(self, kind: str, arg: str | None, line: str) -> bool:
        """Whether ``line`` is the last of the current step's reply.

        Raises:
            ProbeError: the server refused (or did not offer) STARTTLS.
        """
        if kind in ("code", "ehlo"):
            return self._coded_reply_ends(kind, arg, line)
        if kind == "imap-greeting":
            if line.upper().startswith(("* OK", "* PREAUTH")):
                return True
            raise ProbeError(f"IMAP server greeting {_quote(line)} is not '* OK'")
        if kind == "imap-tagged":
            if line.startswith("* "):
                return False
            if line.upper().startswith(f"{arg} OK".upper()):
                return True
            raise ProbeError(f"IMAP server refused STARTTLS: {_quote(line)}")
        if kind == "pop":
            if line.startswith("+OK"):
                return True
            raise ProbeError(f"POP3 server answered {_quote(line)} (expected +OK)")
        return True  # "line": any reply

    def _coded_reply_ends(self, kind: str, arg: str | None, line: str) -> bool:
        """An SMTP/FTP reply line (``250-...`` continues, ``250 ...`` ends);
        an EHLO reply must offer STARTTLS."""
        if len(line) >= 4 and line[3] == "-":
            if kind == "ehlo" and line[4:].strip().upper().startswith("STARTTLS"):
                self.capabilities_ok = True
            return False
        if not line[:3].isdigit():
            return False  # FTP lets continuation lines carry no code
        if line[:3] != arg:
            raise ProbeError(f"{_NAMES[self.protocol]} server answered {_quote(line)} (expected {arg})")
        if kind == "ehlo":
            if line[4:].strip().upper().startswith("STARTTLS"):
                self.capabilities_ok = True
            if not self.capabilities_ok:
                raise ProbeError("the SMTP server does not offer STARTTLS in its EHLO reply")
        return True


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

