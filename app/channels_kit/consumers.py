"""Consumer helpers for fan-out that works the same in direct and relay mode.

A group message of type ``websocket.send`` is a ready frame. In relay mode the
interface servers write it to their member sockets themselves, with no worker in
between (``channels_kit.relay.groups``): one layer message per interface, whatever
the room's size. ``GroupFrameMixin`` gives a consumer the handler that does the
same in direct mode, so one consumer serves both::

    class ChatConsumer(GroupFrameMixin, AsyncJsonWebsocketConsumer):
        async def receive_json(self, content):
            await self.channel_layer.group_send("room", group_frame(json.dumps(content)))
"""

from __future__ import annotations

from typing import Any

FRAME_TYPE = "websocket.send"


def group_frame(text: str | None = None, bytes_: bytes | None = None) -> dict[str, Any]:
    """A group message that reaches every member socket as this frame, text or binary."""
    if (text is None) == (bytes_ is None):
        raise ValueError("a frame has either text or bytes")
    return {"type": FRAME_TYPE, "text": text} if text is not None else {"type": FRAME_TYPE, "bytes": bytes_}


class GroupFrameMixin:
    """Forwards ``websocket.send`` group messages to the socket unchanged (direct mode's half)."""

    async def websocket_send(self, message: dict[str, Any]) -> None:
        frame = {"type": FRAME_TYPE}
        for key in ("text", "bytes"):
            if message.get(key) is not None:
                frame[key] = message[key]
        await self.base_send(frame)
