"""Rooms and delivery bookkeeping, shared by the users of one Locust process.

Every chat message a user sends carries an id and its send time. The tracker
remembers which members of the room were connected at that moment; each member
that receives the message reports the delay as a WSDELIVER event, and a member
that has not received it within DELIVERY_TIMEOUT is reported as a failure (a
lost or late message). Rooms are private to one Locust process (the room name
holds the process's prefix), so the tracker sees every member of its rooms.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import gevent
from locust import events
from locust.env import Environment

from .config import SETTINGS
from .metrics import WS_DELIVER, fire


class DeliveryTimeout(Exception):
    """A room member did not receive a message within DELIVERY_TIMEOUT."""


@dataclass
class Pending:
    """A sent message and the members still waiting for it."""

    sent: float
    kind: str
    waiting: set[int] = field(default_factory=set)


class Rooms:
    """Hands out room names by size and tracks every message until all members got it."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count] = {}
        self._members: dict[str, set[int]] = {}
        self._pending: dict[str, Pending] = {}
        self._ids = itertools.count(1)
        self._sweeper: gevent.Greenlet | None = None

    def assign(self, kind: str, size: int) -> str:
        """The room for the next member of ``kind``: fills rooms of ``size`` members in turn."""
        counter = self._counters.setdefault(kind, itertools.count())
        return f"{SETTINGS.run_prefix}-{kind}-{next(counter) // size}"

    def join(self, room: str, member: int) -> None:
        self._members.setdefault(room, set()).add(member)

    def leave(self, room: str, member: int) -> None:
        """Forget a member, and the messages it would still have had to receive."""
        self._members.get(room, set()).discard(member)
        for pending in self._pending.values():
            pending.waiting.discard(member)

    def members(self, room: str) -> int:
        return len(self._members.get(room, ()))

    def known(self) -> list[str]:
        """Rooms with members now (the page scenario reads their history)."""
        return [room for room, members in self._members.items() if members]

    def sent(self, room: str, sender: int, kind: str) -> tuple[str, float]:
        """Record a message about to be sent; its id and send time (``time.time()``)."""
        message_id = f"{SETTINGS.run_prefix}-{next(self._ids)}"
        now = time.time()
        waiting = self._members.get(room, set()) - {sender}
        if waiting:
            self._pending[message_id] = Pending(now, kind, set(waiting))
        return message_id, now

    def received(
        self, environment: Environment, message_id: str, sent: float, member: int, kind: str
    ) -> None:
        """A member got a message: report its delivery latency (once per member)."""
        pending = self._pending.get(message_id)
        if pending is None or member not in pending.waiting:
            return  # own message, a late duplicate, or one sent before this member joined
        pending.waiting.discard(member)
        if not pending.waiting:
            del self._pending[message_id]
        fire(environment, WS_DELIVER, kind, sent)

    def start(self, environment: Environment) -> None:
        """Start the sweeper that reports overdue deliveries (one per process)."""
        if self._sweeper is None or self._sweeper.dead:
            self._sweeper = gevent.spawn(self._sweep, environment)

    def stop(self) -> None:
        """Stop sweeping; messages still in flight when the run ends are not failures."""
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
            self._sweeper = None
        self._pending.clear()
        self._members.clear()

    def _sweep(self, environment: Environment) -> None:
        # Runs until stop() kills it at the end of the test; each pass is bounded by the pending count.
        while True:
            gevent.sleep(1.0)
            deadline = time.time() - SETTINGS.delivery_timeout
            for message_id, pending in list(self._pending.items()):
                if pending.sent >= deadline:
                    continue
                del self._pending[message_id]
                error = DeliveryTimeout(f"not delivered within {SETTINGS.delivery_timeout:g} s")
                for _member in pending.waiting:
                    fire(environment, WS_DELIVER, pending.kind, pending.sent, exception=error)


ROOMS = Rooms()


@events.test_start.add_listener
def _start_sweeper(environment: Environment, **_kwargs: object) -> None:
    ROOMS.start(environment)


@events.test_stop.add_listener
def _stop_sweeper(environment: Environment, **_kwargs: object) -> None:
    ROOMS.stop()
