"""WebSocket chat: members of small rooms and of one large room post and measure delivery.

Each post carries its id and send time inside the chat text; every other member of the
room reports the delay from send to its own receipt as a WSDELIVER event, named after
the room size ("chat small room", "fanout large room"). A member that has not got a
message within DELIVERY_TIMEOUT counts as a WSDELIVER failure.
"""

from __future__ import annotations

import json
from typing import Any

from locust import User, between, tag, task

from .config import SETTINGS
from .rooms import ROOMS
from .ws import ChatSocket


class RoomMember(User):
    """A chat socket in a room of ``room_size`` members (the base of the two chat scenarios)."""

    abstract = True
    scenario = ""
    room_key = ""  # part of the room's name
    report_name = ""  # the WSDELIVER row in the report

    @classmethod
    def room_size(cls) -> int:
        raise NotImplementedError

    def on_start(self) -> None:
        self.member = id(self)
        self.room = ROOMS.assign(self.room_key, self.room_size())
        self.socket = ChatSocket(self.environment, self.room, self._on_frame)
        self._join()

    def on_stop(self) -> None:
        ROOMS.leave(self.room, self.member)
        self.socket.close()

    def _join(self) -> bool:
        if self.socket.connect():
            ROOMS.join(self.room, self.member)
            return True
        return False

    def post(self) -> None:
        """Send one message (reconnecting first when the socket was lost)."""
        if not self.socket.alive:
            ROOMS.leave(self.room, self.member)
            self.socket.close()
            if not self._join():
                return
        message_id, sent = ROOMS.sent(self.room, self.member, self.report_name)
        self.socket.send_json({"message": json.dumps({"lt": message_id, "t": sent})})

    def _on_frame(self, frame: dict[str, Any]) -> None:
        if frame.get("type") != "message":
            return
        try:
            body = json.loads(frame.get("message", ""))
            message_id, sent = str(body["lt"]), float(body["t"])
        except (ValueError, TypeError, KeyError):
            return  # someone else's message in the room
        ROOMS.received(self.environment, message_id, sent, self.member, self.report_name)


class ChatUser(RoomMember):
    """Small rooms (CHAT_ROOM_SIZE members, default 5): a person chatting every 3-10 s."""

    scenario = "chat"
    room_key = "small"
    report_name = "chat small room"
    weight = 3
    wait_time = between(*SETTINGS.think(3, 10))

    @classmethod
    def room_size(cls) -> int:
        return SETTINGS.small_room_size

    @tag("chat")
    @task
    def say(self) -> None:
        self.post()


class FanoutUser(RoomMember):
    """One large room per Locust process (up to FANOUT_ROOM_SIZE members): each post fans out to all."""

    scenario = "fanout"
    room_key = "large"
    report_name = "fanout large room"
    weight = 1
    wait_time = between(*SETTINGS.think(10, 30))

    @classmethod
    def room_size(cls) -> int:
        return SETTINGS.large_room_size

    @tag("fanout")
    @task
    def say(self) -> None:
        self.post()
