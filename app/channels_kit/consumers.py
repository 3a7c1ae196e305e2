"""Consumer helpers: fan-out that works the same in direct and relay mode, and a lean dispatch.

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

from channels.consumer import get_handler_name

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


class NoConnectionCheckMixin:
    """Handles each message without Channels' database-connection check first.

    Since Channels 4.2 a consumer's ``dispatch`` runs ``close_old_connections`` in Django's
    one sync thread before every message it handles: a hop to that thread and back per
    message, and all consumers of a process queue for the one thread. In direct mode a
    group message to 1,000 sockets is 1,000 hops (docs/benchmarks.md measured it at about
    half of Daphne's busy time in the broadcast benchmark). A consumer that reaches the
    database only through ``database_sync_to_async`` (which runs the same check in its
    thread, before and after the call) or not at all needs none of them::

        class EchoConsumer(NoConnectionCheckMixin, AsyncWebsocketConsumer): ...

    The check on disconnect stays (once per socket).
    """

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
