"""The STARTTLS upgrade guard: what a connection received in the clear before TLS.

Nothing received in the clear before a STARTTLS upgrade may be delivered
after it (the command-injection class, CVE-2011-0411).  RFC 3207 (SMTP) and
RFC 2595 (IMAP, POP3) forbid pipelining past STARTTLS, so cleartext still
pending when the protocol calls ``startTLS`` is the peer's (or an attacker's)
protocol violation.  Pending means any of:

* bytes of the segment being delivered that follow the current line: before
  TLS the wrapper hands the protocol one line at a time (cut after its
  ``delimiter``, else after ``b"\\n"``) and holds the rest, so what came
  behind the STARTTLS line is still here (:meth:`CleartextGuard.deliver`);
* a non-empty ``_buffer`` of bytes on the wrapped protocol (where Twisted's
  ``LineReceiver`` and ``LineOnlyReceiver``, hence SMTP, IMAP4, POP3 and
  FTP, keep a partial line);
* without such a ``_buffer``: what the protocol's ``clearLineBuffer()`` returns.

:meth:`CleartextGuard.take_pending` drops all of it and says how many bytes
it was; :meth:`twistls.protocol.TLSProtocolWrapper.start_tls` then fails the
connection instead of starting TLS.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["CleartextGuard"]


class CleartextGuard:
    """The cleartext segment being delivered (before TLS) and where its
    undelivered rest begins: what :meth:`take_pending` finds pending."""

    __slots__ = ("segment", "next")

    def __init__(self) -> None:
        self.segment = b""
        self.next = 0

    def deliver(self, protocol: Any, data: bytes, stopped: Callable[[], bool]) -> None:
        """Hand ``data`` to ``protocol`` one line at a time (cut after its
        ``delimiter``, else after ``b"\\n"``), holding the rest of the segment
        here.  A stream protocol must accept its bytes cut anywhere, so this
        changes nothing for it; but when a line makes it call ``startTLS``,
        what came behind that line has not been read yet and
        :meth:`take_pending` sees it (``LineOnlyReceiver``, which SMTP's
        server uses, would otherwise keep those lines in a local list no one
        can see).  Delivery stops as soon as ``stopped()`` is true (TLS
        started, or the connection is closing)."""
        delimiter = getattr(protocol, "delimiter", None)
        if not isinstance(delimiter, bytes) or not delimiter:
            delimiter = b"\n"
        end = len(data)
        cut = data.find(delimiter)
        if cut < 0 or cut + len(delimiter) == end:  # one line, or part of one: no rest to hold
            protocol.dataReceived(data)
            return
        start = 0
        try:
            while start < end:
                stop = end if cut < 0 else cut + len(delimiter)
                self.segment, self.next = data, stop
                protocol.dataReceived(data[start:stop])
                if stopped():
                    # TLS started (so nothing was pending), or the connection is closing:
                    # Twisted's line receivers read no line behind one that closed it.
                    return
                start = stop
                cut = data.find(delimiter, start)
        finally:
            self.segment, self.next = b"", 0

    def take_pending(self, protocol: Any) -> int:
        """Drop the cleartext received but not yet processed (the rest of
        the segment, and ``protocol``'s line buffer) and return how many
        bytes it was."""
        pending = len(self.segment) - self.next
        self.segment, self.next = b"", 0
        buffered = getattr(protocol, "_buffer", None)
        clear = getattr(protocol, "clearLineBuffer", None)
        if isinstance(buffered, (bytes, bytearray)):
            pending += len(buffered)
            if buffered and callable(clear):
                clear()  # LineReceiver: its loop then finds nothing left to read
        elif callable(clear):
            cleared = clear()
            if isinstance(cleared, (bytes, bytearray)):
                pending += len(cleared)
        return pending
