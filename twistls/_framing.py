"""TLS record framing of the bytes a peer sent, followed without decrypting.

Whether a stream that ended without close_notify stopped *between* records
or *inside* one tells a client's goodbye (browsers, curl and HTTP/2 clients
close TCP after the response, between records) from a cut message.  The
engine follows the framing of everything it is fed and reports it on
:class:`~twistls._events.Truncated`.  Sans-IO: no Twisted import.
"""

from __future__ import annotations

__all__ = ["RecordFraming", "advance_records"]

_HEADER = 5  # content type (1), legacy version (2), length (2)


def advance_records(data: bytes, left: int, head: bytes) -> tuple[int, bytes]:
    """Follow the record framing over ``data``.

    Args:
        data: the next bytes the peer sent.
        left: bytes still owed by the record in progress.
        head: a record header cut by the previous segment's end.

    Returns:
        The new ``(left, head)``; ``(0, b"")`` means the stream is between records.
    """
    pos, end = 0, len(data)
    while True:
        if left:
            step = min(left, end - pos)
            pos += step
            left -= step
            if left:
                break
        if pos >= end:
            break
        take = data[pos : pos + _HEADER - len(head)]
        head += take
        pos += len(take)
        if len(head) < _HEADER:
            break
        left, head = int.from_bytes(head[3:5], "big"), b""
    return left, head


class RecordFraming:
    """Where the peer's byte stream stands in its record framing."""

    __slots__ = ("left", "head")

    def __init__(self) -> None:
        #: Bytes still owed by the record in progress.
        self.left = 0
        #: A record header cut by the last segment's end.
        self.head = b""

    def feed(self, data: bytes) -> None:
        """Account for ``data``, the next bytes the peer sent."""
        self.left, self.head = advance_records(data, self.left, self.head)

    @property
    def mid_record(self) -> bool:
        """Whether the stream so far ends inside a record (or its header)."""
        return bool(self.left or self.head)
