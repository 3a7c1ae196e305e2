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

import random
import re
from collections.abc import Callable
from typing import Any

from locust import FastHttpUser, User, between, tag
from locust.env import Environment
from spec import PAGES_SCENARIO, ROOM, TOKEN, WS_SCENARIO, Page, Socket, Spec

from .config import SETTINGS
from .rooms import Deliveries, SocketMember
from .ws import TextSocket

# The token sent in each message: the process's prefix, a number, and an end mark, so that
# token 4 is never found inside token 42.
TOKEN_PATTERN = re.compile(re.escape(SETTINGS.run_prefix) + r"m(\d+)z")


class TokenDeliveries(Deliveries):
    """Rooms of the description's WebSocket parts; a message is awaited by the members its part says."""

    missing = "no copy within {:g} s"

    def assign(self, socket: Socket) -> str:
        """The room for the next member of ``socket``'s part: rooms of ``room_size`` fill in turn.

        Letters and digits only, so that it fits a routing pattern such as ``(?P<room>\\w+)``.
        """
        return f"{SETTINGS.run_prefix}w{socket.index}r{self.place(socket.index, socket.room_size)}"

    def sent(self, socket: Socket, room: str, sender: int) -> tuple[str, str]:
        """Record a message about to be sent by ``sender``; its number and its token."""
        if socket.expect == "echo":
            waiting = {sender}
        else:
            waiting = set(self._members.get(room, ()))
            if not socket.include_sender:
                waiting.discard(sender)
        number, _ = self.expect(waiting, socket.name, socket.delivery_timeout or SETTINGS.delivery_timeout)
        return number, f"{SETTINGS.run_prefix}m{number}z"

    def received(self, environment: Environment, text: str, member: int) -> None:
        """A frame came to ``member``: report each awaited copy in it (once per member)."""
        for number in TOKEN_PATTERN.findall(text):
            self.delivered(environment, number, member)


DELIVERIES = TokenDeliveries().swept_during_tests()


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


class ProjectSocketUser(SocketMember):
    """A member of a room of one WebSocket part (subclassed per [[websocket]] by ``user_classes``)."""

    abstract = True
    tracker = DELIVERIES
    scenario = WS_SCENARIO
    part: Socket
    host_header = SETTINGS.host_header
    origin = SETTINGS.origin

    def pick_room(self) -> str:
        room = DELIVERIES.assign(self.part)
        self.path = _fill_room(self.part.path, room)
        return room

    def make_socket(self) -> TextSocket:
        return TextSocket(self.environment, self._on_text, self._on_lost)

    def connect(self) -> bool:
        return self.socket.open(self.path, self.part.connect_name, self.host_header, self.origin)

    def _on_text(self, text: str) -> None:
        DELIVERIES.received(self.environment, text, self.member)

    def _on_lost(self) -> None:
        """No copy is expected on a lost socket (its WSERROR tells); the next message reconnects."""
        DELIVERIES.leave(self.room, self.member)

    @tag(WS_SCENARIO)
    def say(self) -> None:
        """Send one message with a fresh token (reconnecting first when the socket was lost)."""
        if not self.ready():
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
