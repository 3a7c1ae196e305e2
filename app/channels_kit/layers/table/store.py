"""What a table-backed layer asks of its store: synchronous calls on one connection.

Every method runs on the layer's own thread for the store (``TableChannelLayer.in_store``).
``ns`` is the layer's prefix: layers with other prefixes share the tables apart. A
message's ``route`` is what receivers ask for: the channel itself, or for a ``!`` channel
its process's part (up to and including the ``!``), which that process alone reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Row:
    """A message as a store holds it."""

    id: int
    channel: str
    sent: float
    expires: float
    data: bytes


class MessageStore(Protocol):
    """One process's connection to the shared tables."""

    def close(self) -> None:
        """Leave: release the connection (and whatever marks this process as present)."""

    def housekeeping(self, now: float) -> None:
        """The periodic chores: drop expired rows, renew this process's signs of life."""

    def send(
        self, ns: str, route: str, channel: str, data: bytes, now: float, expiry: float, capacity: int
    ) -> bool:
        """Append a message unless ``channel`` holds ``capacity`` live ones; False when full."""

    def send_many(
        self, ns: str, messages: Sequence[tuple[str, str, bytes, int]], now: float, expiry: float
    ) -> int:
        """Several ``(route, channel, data, capacity)`` sends at once (a group send); full
        channels are skipped. Returns how many were sent."""

    def take(self, ns: str, wanted: Sequence[tuple[str, int]], now: float) -> dict[str, list[Row]]:
        """Remove and return up to ``count`` of the oldest live messages of each ``(route,
        count)``, oldest first: what this returns is this process's to deliver, nobody else's."""

    def put_back(self, ns: str, rows: Iterable[tuple[str, str, Row]]) -> int:
        """Return ``(route, channel, row)`` messages that were taken but never delivered."""

    def group_add(self, ns: str, group: str, channel: str, expires: float) -> None: ...

    def group_discard(self, ns: str, group: str, channel: str) -> None: ...

    def members(self, ns: str, group: str, now: float) -> list[str]:
        """The channels of ``group`` whose membership has not expired."""

    def flush(self, ns: str) -> None:
        """Delete every message, membership and worker state of ``ns``."""

    def queues(self, ns: str, now: float) -> list[tuple[str, int, float]]:
        """``(route, depth, oldest send time)`` of every non-empty queue."""

    def save_worker(self, ns: str, key: str, state: str, expires: float) -> None: ...

    def delete_worker(self, ns: str, key: str) -> None: ...

    def workers(self, ns: str, now: float) -> list[str]:
        """The saved states (JSON text) of workers not yet expired."""
