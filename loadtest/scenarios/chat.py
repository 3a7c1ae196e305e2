"""WebSocket chat: members of small rooms and of one large room post and measure delivery.

Each post carries its id and send time inside the chat text; every other member of the
room reports the delay from send to its own receipt as a WSDELIVER event, named after
the room size ("chat small room", "fanout large room"). A member that has not got a
message within DELIVERY_TIMEOUT counts as a WSDELIVER failure.
"""

from __future__ import annotations

import json
from typing import Any

from locust import between, tag

from .config import SETTINGS
from .rooms import ROOMS, SocketMember
from .ws import ChatSocket


class RoomMember(SocketMember):
    """A chat socket in a room of ``room_size`` members (the base of the two chat scenarios)."""

    abstract = True
    tracker = ROOMS
    scenario = ""
    room_key = ""  # part of the room's name
    room_size = 2
    report_name = ""  # the WSDELIVER row in the report
    socket: ChatSocket

    def pick_room(self) -> str:
        return ROOMS.assign(self.room_key, self.room_size)

    def make_socket(self) -> ChatSocket:
        return ChatSocket(self.environment, self.room, self._on_frame)

    def connect(self) -> bool:
        return self.socket.connect()

    def post(self) -> None:
        """Send one message (reconnecting first when the socket was lost)."""
        if not self.ready():
            return
        message_id, sent = ROOMS.sent(self.room, self.member, self.report_name)
        self.socket.send_json({"message": json.dumps({"lt": message_id, "t": sent})})

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") != "message":
            return
        try:
            message_id = str(json.loads(frame.get("message", ""))["lt"])
        except (ValueError, TypeError, KeyError):
            return  # someone else's message in the room
        ROOMS.received(self.environment, message_id, self.member)


def room_user(
    name: str, scenario: str, room: str, size: int, weight: int, think: tuple[float, float]
) -> type[RoomMember]:
    """A chat scenario's user class: members of rooms of ``size`` (``room`` in their names) who post,
    thinking ``think`` seconds (scaled) in between; its task is tagged with the scenario."""

    def say(user: RoomMember) -> None:
        user.post()

    attributes = {
        "__doc__": f"Members of rooms of up to {size} ({scenario}), posting every {think[0]}-{think[1]} s.",
        "__module__": __name__,
        "abstract": False,
        "scenario": scenario,
        "room_key": room,
        "room_size": size,
        "report_name": f"{scenario} {room} room",
        "weight": weight,
        "wait_time": between(*SETTINGS.think(*think)),
        "tasks": [tag(scenario)(say)],
    }
    return type(name, (RoomMember,), attributes)


# Small rooms (CHAT_ROOM_SIZE members, default 5): a person chatting every 3-10 s.
ChatUser = room_user("ChatUser", "chat", "small", SETTINGS.small_room_size, weight=3, think=(3, 10))
# One large room per Locust process (up to FANOUT_ROOM_SIZE members): each post fans out to all.
FanoutUser = room_user("FanoutUser", "fanout", "large", SETTINGS.large_room_size, weight=1, think=(10, 30))
