"""EnginePair: two sans-IO engines wired back to back (h11's ConnectionPair idea)."""

from __future__ import annotations

from typing import Any

from twistls._engine import PlaintextReceived, TLSEngine


class EnginePair:
    """Shuttles bytes between a client and a server engine, recording events."""

    def __init__(self, client: TLSEngine, server: TLSEngine) -> None:
        self.client = client
        self.server = server
        self.client_events: list[Any] = []
        self.server_events: list[Any] = []
        self.wire_to_server = 0
        self.wire_to_client = 0
        self.flights_to_server = 0  # pump rounds in which the client sent something

    def start(self) -> EnginePair:
        self.client.start()
        return self

    def pump(self, rounds: int = 50) -> None:
        """Move bytes both ways until nothing moves (at most ``rounds`` times)."""
        for _ in range(rounds):
            moved = False
            out = self.client.bytes_to_send()
            if out:
                moved = True
                self.flights_to_server += 1
                self.wire_to_server += len(out)
                self.server_events += self.server.receive_bytes(out)
            out = self.server.bytes_to_send()
            if out:
                moved = True
                self.wire_to_client += len(out)
                self.client_events += self.client.receive_bytes(out)
            if not moved:
                return

    def received(self, side: str) -> bytes:
        """All plaintext the given side ('client' or 'server') received."""
        events = self.client_events if side == "client" else self.server_events
        return b"".join(e.data for e in events if isinstance(e, PlaintextReceived))
