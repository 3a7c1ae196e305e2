"""Rooms and delivery bookkeeping, shared by the users of one Locust process.

Every message a member sends is recorded with its send time and the members that must
receive it (the room's other members at that moment, for the chat scenarios). Each of
them that gets it reports the delay as a WSDELIVER event; one that has not got it by the
message's deadline (DELIVERY_TIMEOUT) is reported as a failure (a lost or late message).
Rooms are private to one Locust process (the room name holds the process's prefix), so
the tracker sees every member of its rooms.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import gevent
from locust import User, events
from locust.env import Environment

from .config import SETTINGS
from .metrics import WS_DELIVER, fire
from .ws import TextSocket


class DeliveryTimeout(Exception):
    """A member that had to receive a message did not by its deadline."""


@dataclass
class Pending:
    """A sent message and the members still waiting for it."""

    sent: float
    deadline: float
    name: str  # the WSDELIVER row
    waiting: set[int] = field(default_factory=set)


class Deliveries:
    """Members of rooms and every message in flight in them, until all members got it or it is overdue."""

    missing = "not delivered within {:g} s"  # the failure of an overdue message, given its timeout

    def __init__(self) -> None:
        self._counters: dict[Hashable, itertools.count] = {}
        self._members: dict[str, set[int]] = {}
        self._pending: dict[str, Pending] = {}
        self._ids = itertools.count(1)
        self._sweeper: gevent.Greenlet | None = None

    def place(self, kind: Hashable, size: int) -> int:
        """The room number of the next member of ``kind``: rooms of ``size`` members fill in turn."""
        return next(self._counters.setdefault(kind, itertools.count())) // size

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
        """Rooms with members now (the page scenarios read one of them)."""
        return [room for room, members in self._members.items() if members]

    def expect(self, waiting: set[int], name: str, timeout: float) -> tuple[str, float]:
        """Record a message about to be sent to ``waiting``; its number and send time (``time.time()``)."""
        number = str(next(self._ids))
        now = time.time()
        if waiting:
            self._pending[number] = Pending(now, now + timeout, name, set(waiting))
        return number, now

    def forget(self, number: str) -> None:
        """A message that could not be sent: no copy of it is awaited."""
        self._pending.pop(number, None)

    def delivered(self, environment: Environment, number: str, member: int) -> None:
        """``member`` got message ``number``: report its delivery latency (once per member)."""
        pending = self._pending.get(number)
        if pending is None or member not in pending.waiting:
            return  # own message, a late duplicate, or one sent before this member joined
        pending.waiting.discard(member)
        if not pending.waiting:
            del self._pending[number]
        fire(environment, WS_DELIVER, pending.name, pending.sent)

    def start(self, environment: Environment) -> None:
        """Start the sweeper that reports overdue deliveries (one per tracker and process)."""
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
            now = time.time()
            for number, pending in list(self._pending.items()):
                if pending.deadline > now:
                    continue
                del self._pending[number]
                error = DeliveryTimeout(self.missing.format(pending.deadline - pending.sent))
                for _member in pending.waiting:
                    fire(environment, WS_DELIVER, pending.name, pending.sent, exception=error)

    def swept_during_tests(self) -> Deliveries:
        """Sweep from each test's start to its end; this tracker."""
        events.test_start.add_listener(lambda environment, **_kwargs: self.start(environment))
        events.test_stop.add_listener(lambda environment, **_kwargs: self.stop())
        return self


class Rooms(Deliveries):
    """The demo's chat rooms, by size; a message is awaited by every other member of its room."""

    def assign(self, kind: str, size: int) -> str:
        """The room for the next member of ``kind``: fills rooms of ``size`` members in turn."""
        return f"{SETTINGS.run_prefix}-{kind}-{self.place(kind, size)}"

    def sent(self, room: str, sender: int, kind: str) -> tuple[str, float]:
        """Record a message about to be sent; its id and send time (``time.time()``)."""
        waiting = self._members.get(room, set()) - {sender}
        number, now = self.expect(waiting, kind, SETTINGS.delivery_timeout)
        return f"{SETTINGS.run_prefix}-{number}", now

    def received(self, environment: Environment, message_id: str, member: int) -> None:
        """A member got a message (by the id ``sent`` gave it)."""
        prefix, _, number = message_id.rpartition("-")
        if prefix == SETTINGS.run_prefix:
            self.delivered(environment, number, member)


ROOMS = Rooms().swept_during_tests()


class SocketMember(User):
    """A member of a room over a WebSocket (the base of the chat and the project WebSocket users).

    A subclass says which tracker, room and socket, and how to connect.
    """

    abstract = True
    tracker: Deliveries
    member: int
    room: str
    socket: TextSocket

    def on_start(self) -> None:
        self.member = id(self)
        self.room = self.pick_room()
        self.socket = self.make_socket()
        self._join()

    def on_stop(self) -> None:
        self.tracker.leave(self.room, self.member)
        self.socket.close()

    def pick_room(self) -> str:
        raise NotImplementedError

    def make_socket(self) -> TextSocket:
        raise NotImplementedError

    def connect(self) -> bool:
        raise NotImplementedError

    def _join(self) -> bool:
        if self.connect():
            self.tracker.join(self.room, self.member)
            return True
        return False

    def ready(self) -> bool:
        """Whether the socket is up, reconnecting first (as a new member) when it was lost."""
        if self.socket.alive:
            return True
        self.tracker.leave(self.room, self.member)
        self.socket.close()
        return self._join()
