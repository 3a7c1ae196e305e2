"""Generic scenarios for any project, from its description (LOADTEST_SPEC; spec.py, loadtest/README.md).

``project-pages``: users fetch the description's paths, by weight, and check the status.
``project-ws``: users join rooms over WebSocket and send the description's message with a
unique token in it; each copy that comes back (the token found in a received frame) to a
member that must get it (the sender for ``echo``; the room's members for ``broadcast``)
is a WSDELIVER event timed from the send. A copy still missing after the delivery timeout
counts as a WSDELIVER failure; a refused or failed handshake as a WSCONNECT failure.
Rooms and tokens are private to one Locust process, which sees every member of its rooms.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import websocket
from locust import FastHttpUser, User, between, events, tag
from locust.env import Environment
from spec import PAGES_SCENARIO, ROOM, TOKEN, WS_SCENARIO, Page, Socket, Spec

from .config import SETTINGS
from .metrics import WS_CONNECT, WS_DELIVER, WS_ERROR, fire
from .ws import CONNECT_TIMEOUT, READ_TICK, ws_base

# The token sent in each message: the process's prefix, a number, and an end mark, so that
# token 4 is never found inside token 42.
TOKEN_PATTERN = re.compile(re.escape(SETTINGS.run_prefix) + r"m(\d+)z")


class DeliveryTimeout(Exception):
    """A member that had to receive a message did not within the delivery timeout."""


@dataclass
class Pending:
    """A sent message and the members still waiting for a copy."""

    sent: float
    deadline: float
    name: str
    waiting: set[int] = field(default_factory=set)


class Deliveries:
    """Rooms of one Locust process and every message in flight in them."""

    def __init__(self) -> None:
        self._counters: dict[int, itertools.count] = {}
        self._members: dict[str, set[int]] = {}
        self._pending: dict[str, Pending] = {}
        self._ids = itertools.count(1)
        self._sweeper: gevent.Greenlet | None = None

    def assign(self, socket: Socket) -> str:
        """The room for the next member of ``socket``'s part: rooms of ``room_size`` fill in turn.

        Letters and digits only, so that it fits a routing pattern such as ``(?P<room>\\w+)``.
        """
        counter = self._counters.setdefault(socket.index, itertools.count())
        return f"{SETTINGS.run_prefix}w{socket.index}r{next(counter) // socket.room_size}"

    def join(self, room: str, member: int) -> None:
        self._members.setdefault(room, set()).add(member)

    def leave(self, room: str, member: int) -> None:
        """Forget a member and the copies it still had to receive."""
        self._members.get(room, set()).discard(member)
        for pending in self._pending.values():
            pending.waiting.discard(member)

    def known(self) -> list[str]:
        """Rooms with members now (pages with ``{room}`` fetch one of them)."""
        return [room for room, members in self._members.items() if members]

    def sent(self, socket: Socket, room: str, sender: int) -> tuple[str, str]:
        """Record a message about to be sent by ``sender``; its number and its token."""
        number = next(self._ids)
        token = f"{SETTINGS.run_prefix}m{number}z"
        if socket.expect == "echo":
            waiting = {sender}
        else:
            waiting = set(self._members.get(room, ()))
            if not socket.include_sender:
                waiting.discard(sender)
        if waiting:
            now = time.time()
            timeout = socket.delivery_timeout or SETTINGS.delivery_timeout
            self._pending[str(number)] = Pending(now, now + timeout, socket.name, waiting)
        return str(number), token

    def forget(self, number: str) -> None:
        """A message that could not be sent: no copy of it is awaited."""
        self._pending.pop(number, None)

    def received(self, environment: Environment, text: str, member: int) -> None:
        """A frame came to ``member``: report each awaited copy in it (once per member)."""
        for number in TOKEN_PATTERN.findall(text):
            pending = self._pending.get(number)
            if pending is None or member not in pending.waiting:
                continue  # not for this member, a duplicate, or a message from before it joined
            pending.waiting.discard(member)
            if not pending.waiting:
                del self._pending[number]
            fire(environment, WS_DELIVER, pending.name, pending.sent)

    def start(self, environment: Environment) -> None:
        if self._sweeper is None or self._sweeper.dead:
            self._sweeper = gevent.spawn(self._sweep, environment)

    def stop(self) -> None:
        """Stop sweeping; copies still in flight when the run ends are not failures."""
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
                error = DeliveryTimeout(f"no copy within {pending.deadline - pending.sent:g} s")
                for _member in pending.waiting:
                    fire(environment, WS_DELIVER, pending.name, pending.sent, exception=error)


DELIVERIES = Deliveries()


@events.test_start.add_listener
def _start_sweeper(environment: Environment, **_kwargs: object) -> None:
    DELIVERIES.start(environment)


@events.test_stop.add_listener
def _stop_sweeper(environment: Environment, **_kwargs: object) -> None:
    DELIVERIES.stop()


class ClosedByServer(Exception):
    """The server closed a socket that the scenario still used."""


class TextSocket:
    """One WebSocket; every data frame goes to ``on_text``, and its loss to ``on_lost``, from a reader
    greenlet."""

    def __init__(
        self, environment: Environment, on_text: Callable[[str], None], on_lost: Callable[[], None]
    ) -> None:
        self.environment = environment
        self.on_text = on_text
        self.on_lost = on_lost
        self._socket: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._closing = False

    @property
    def alive(self) -> bool:
        return self._socket is not None and self._socket.connected and not self._closing

    def connect(self, path: str, name: str, host: str, origin: str) -> bool:
        """Open the socket (reported as WSCONNECT ``name``: the handshake's time); False on failure."""
        started = time.time()
        url = ws_base(self.environment.host or "") + path
        try:
            sock = websocket.create_connection(
                url, timeout=CONNECT_TIMEOUT, origin=origin, host=host, enable_multithread=True
            )
        except (websocket.WebSocketException, OSError) as exc:
            fire(self.environment, WS_CONNECT, name, started, exception=exc)
            return False
        fire(self.environment, WS_CONNECT, name, started)
        sock.settimeout(READ_TICK)
        self._socket = sock
        self._closing = False
        self._reader = gevent.spawn(self._read)
        return True

    def send(self, text: str) -> bool:
        """Send one text frame; False (and a WSERROR event) when the socket is gone."""
        if self._socket is None:
            return False
        try:
            self._socket.send(text)
        except (websocket.WebSocketException, OSError) as exc:
            fire(self.environment, WS_ERROR, "send", time.time(), exception=exc)
            self.close()
            return False
        return True

    def close(self) -> None:
        """Close the socket and stop the reader (idempotent)."""
        self._closing = True
        if self._socket is not None:
            with contextlib.suppress(websocket.WebSocketException, OSError):  # already gone
                self._socket.close(timeout=1)
            self._socket = None
        if self._reader is not None and gevent.getcurrent() is not self._reader:
            self._reader.kill(block=False)
        self._reader = None

    def _lost(self, what: str, exc: Exception) -> None:
        """The server closed the socket or the connection broke: a WSERROR, and the member leaves."""
        if not self._closing:
            self._closing = True
            fire(self.environment, WS_ERROR, what, time.time(), exception=exc)
            self.on_lost()

    def _read(self) -> None:
        # Ends when the socket closes or close() is called: at most one user's lifetime.
        while not self._closing and self._socket is not None:
            try:
                opcode, data = self._socket.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                self._lost("connection lost", exc)
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                self._lost("closed by the server", ClosedByServer(f"close code {code}"))
                return
            if opcode in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                self.on_text(data if isinstance(data, str) else data.decode("utf-8", "replace"))


def _fill_room(path: str, room: str) -> str:
    return path.replace(ROOM, room)


def _page_task(page: Page) -> Callable[[Any], None]:
    """A task fetching ``page``: a failure when the status is not one the description accepts."""

    def fetch(user: Any) -> None:
        rooms = DELIVERIES.known()
        path = _fill_room(page.path, random.choice(rooms) if rooms else "lobby")
        with user.client.get(path, name=page.name, catch_response=True) as response:
            if response.status_code in page.status:
                response.success()
            else:
                response.failure(f"expected {page.status_text}, got {response.status_code}")

    fetch.__name__ = f"get {page.name}"
    return tag(PAGES_SCENARIO)(fetch)


class ProjectSocketUser(User):
    """A member of a room of one WebSocket part (subclassed per [[websocket]] by ``user_classes``)."""

    abstract = True
    scenario = WS_SCENARIO
    part: Socket
    host_header = SETTINGS.host_header
    origin = SETTINGS.origin

    def on_start(self) -> None:
        self.member = id(self)
        self.room = DELIVERIES.assign(self.part)
        self.path = _fill_room(self.part.path, self.room)
        self.socket = TextSocket(self.environment, self._on_text, self._on_lost)
        self._join()

    def on_stop(self) -> None:
        DELIVERIES.leave(self.room, self.member)
        self.socket.close()

    def _join(self) -> bool:
        if self.socket.connect(self.path, self.part.connect_name, self.host_header, self.origin):
            DELIVERIES.join(self.room, self.member)
            return True
        return False

    def _on_text(self, text: str) -> None:
        DELIVERIES.received(self.environment, text, self.member)

    def _on_lost(self) -> None:
        """No copy is expected on a lost socket (its WSERROR tells); the next message reconnects."""
        DELIVERIES.leave(self.room, self.member)

    @tag(WS_SCENARIO)
    def say(self) -> None:
        """Send one message with a fresh token (reconnecting first when the socket was lost)."""
        if not self.socket.alive:
            DELIVERIES.leave(self.room, self.member)
            self.socket.close()
            if not self._join():
                return
        number, token = DELIVERIES.sent(self.part, self.room, self.member)
        if not self.socket.send(self.part.send.replace(TOKEN, token)):
            DELIVERIES.forget(number)
            DELIVERIES.leave(self.room, self.member)

    tasks = [say]


def _think(low: float, high: float) -> Callable[..., float]:
    return between(*SETTINGS.think(low, high))


def user_classes(spec: Spec) -> dict[str, list[type[User]]]:
    """The user classes of a description, by scenario name (``mixed`` not included)."""
    host = spec.host or SETTINGS.host_header
    origin = spec.origin or SETTINGS.origin
    classes: dict[str, list[type[User]]] = {}
    if spec.pages:
        page_user = type(
            "ProjectPageUser",
            (FastHttpUser,),
            {
                "__doc__": "Someone reading the project's pages (the description's [pages]).",
                "__module__": __name__,
                "scenario": PAGES_SCENARIO,
                "weight": spec.pages_weight,
                "wait_time": _think(*spec.pages_think_time),
                "default_headers": {"Host": host},
                "tasks": {_page_task(page): page.weight for page in spec.pages},
            },
        )
        classes[PAGES_SCENARIO] = [page_user]
    sockets = []
    for part in spec.sockets:
        sockets.append(
            type(
                f"ProjectSocketUser{part.index}",
                (ProjectSocketUser,),
                {
                    "__doc__": f"A member of a room of {part.name!r}.",
                    "__module__": __name__,
                    "abstract": False,
                    "part": part,
                    "weight": part.weight,
                    "wait_time": _think(*part.think_time),
                    "host_header": host,
                    "origin": origin,
                },
            )
        )
    if sockets:
        classes[WS_SCENARIO] = sockets
    return classes
