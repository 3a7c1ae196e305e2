"""Consumers: the chat and echo WebSockets, and the background task channels (``thumbnail``, ``tasks``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from urllib.parse import parse_qs

from channels.consumer import SyncConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from channels_kit.consumers import GroupFrameMixin, NoConnectionCheckMixin, group_frame
from channels_kit.observe.identity import interface_identity, server_identity
from channels_kit.relay.consumer_state import current_event_id
from chat.models import Message, Task

logger = logging.getLogger(__name__)

# Longest simulated job, so a malicious payload cannot hold a worker for long.
MAX_TASK_SECONDS = 30.0
# Longest delay of an echo (``/ws/echo/?ms=``), in milliseconds.
IO_MAX_MS = 1000


def room_group(room: str) -> str:
    """The channel-layer group of a chat room."""
    return f"chat.{room}"


def missed_messages(room: str, after: int) -> tuple[list[Message], bool]:
    """The room's messages after id ``after``, oldest first, at most ``CHAT_RECOVERY_LIMIT`` of
    the newest and none older than ``CHAT_RECOVERY_SECONDS``; and whether that is all of them."""
    limit = settings.CHAT_RECOVERY_LIMIT
    newest = list(Message.objects.filter(room=room, id__gt=after).order_by("-id")[: limit + 1])
    oldest_kept = timezone.now() - timedelta(seconds=settings.CHAT_RECOVERY_SECONDS)
    kept = [message for message in newest[:limit] if message.created >= oldest_kept]
    return kept[::-1], len(kept) == len(newest)


def recover_after(scope: dict) -> int | None:
    """The ``?after=<id>`` of a reconnecting socket: the last message id its page saw."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after", [])
    try:
        after = int(values[-1]) if values else None
    except ValueError:
        return None
    return after if after is not None and after >= 0 else None


def chat_message_frame(message: Message) -> dict:
    """The group message that carries a stored chat message to every listener of its room:
    the contract's ``{"type": "message", ...}`` frame, ready for the sockets."""
    return group_frame(json.dumps(message.as_event()))


class ChatConsumer(NoConnectionCheckMixin, GroupFrameMixin, AsyncJsonWebsocketConsumer):
    """``/ws/chat/<room>/``: hello frame first, then every message in the room.

    A page that reconnects asks for what it missed with ``?after=<last message id>``: the
    consumer joins the room first, then sends the messages stored since (bounded in count
    and age, oldest first) and a ``{"type": "recovered", "count": n, "complete": bool}``
    frame. A message posted during the reconnect itself may come both ways; the page
    drops a message id it has shown.

    A message is stored, then sent to the room's group as a ready ``websocket.send``
    frame (``chat_message_frame``): in relay mode the interface servers write it to
    their sockets with no worker in between; ``GroupFrameMixin`` does it in direct
    mode. The long-poll view (``chat.longpoll``) listens for the same frames.
    The consumer keeps only plain data (``room``, ``group``), so in relay mode its
    state travels with every event and any worker can handle the next one.
    """

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = room_group(self.room)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(
            {
                "type": "hello",
                "server": server_identity(),
                "interface": interface_identity(self.scope),
                "room": self.room,
                "user": self.username(),
            }
        )
        after = recover_after(self.scope)
        if after is not None:
            missed, complete = await database_sync_to_async(missed_messages)(self.room, after)
            for message in missed:
                await self.send_json(message.as_event())
            await self.send_json({"type": "recovered", "count": len(missed), "complete": complete})

    def username(self) -> str | None:
        """Who the session cookie says this is (AuthMiddlewareStack resolved it), else None."""
        user = self.scope.get("user")
        return user.get_username() if user is not None and user.is_authenticated else None

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        text = content.get("message") if isinstance(content, dict) else None
        if not isinstance(text, str) or not text.strip():
            await self.send_json({"type": "error", "error": 'expected {"message": "<text>"}'})
            return
        if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
            limit = settings.CHAT_MAX_MESSAGE_CHARS
            await self.send_json({"type": "error", "error": f"message longer than {limit} characters"})
            return
        # Keyed by the event's id in relay mode: if this worker dies before the interface
        # hears that the event is done, the event runs again on another worker; the message
        # is then stored once and sent again with the same id (pages drop ids they showed).
        message = await database_sync_to_async(Message.post)(self.room, text, current_event_id())
        await self.channel_layer.group_send(self.group, chat_message_frame(message))

    async def decode_json(self, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None


class EchoConsumer(NoConnectionCheckMixin, AsyncWebsocketConsumer):
    """``/ws/echo/``: every frame straight back (the WebSocket benchmark's endpoint).

    ``/ws/echo/?ms=<n>``: each frame comes back after ``n`` ms (at most 1000), as a handler
    waiting on a slow service would: the WebSocket twin of ``/io/?ms=``.
    """

    async def connect(self) -> None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("ms", ["0"])
        try:
            self.delay_ms = min(max(int(values[-1]), 0), IO_MAX_MS)
        except ValueError:
            self.delay_ms = 0
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.delay_ms:
            await asyncio.sleep(self.delay_ms / 1000)
        await self.send(text_data=text_data, bytes_data=bytes_data)


SHOOTOUT_GROUP = "shootout"


class ShootoutConsumer(NoConnectionCheckMixin, GroupFrameMixin, AsyncWebsocketConsumer):
    """``/ws/shootout/``: the protocol of the websocket-shootout benchmark (hashrocket), so
    the field's own tools and ``make bench-broadcast`` can drive the kit.

    ``{"type": "echo", "payload": p}`` comes straight back. ``{"type": "broadcast",
    "payload": p}`` goes to every socket on the endpoint, the sender's too, as a ready
    frame (in relay mode the interface servers write it, no worker per socket); then the
    sender gets ``{"type": "broadcastResult", "payload": p}``. Anything else: an error frame.
    """

    async def connect(self) -> None:
        await self.channel_layer.group_add(SHOOTOUT_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(SHOOTOUT_GROUP, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        try:
            message = json.loads(text_data or "")
        except ValueError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "echo":
            await self.send(text_data=text_data)  # already {"type": "echo", "payload": ...}
        elif kind == "broadcast":
            payload = json.dumps(message.get("payload"))
            await self.channel_layer.group_send(SHOOTOUT_GROUP, group_frame(text_data))
            await self.send(text_data=f'{{"type": "broadcastResult", "payload": {payload}}}')
        else:
            await self.send(
                text_data=json.dumps({"type": "error", "error": 'expected type "echo" or "broadcast"'})
            )


class TaskConsumer(SyncConsumer):
    """Runs jobs sent to the task channels (``Task.Channel``); served only by ``runworker``."""

    def task_run(self, message: dict) -> None:
        """Run one job: mark it running, sleep as long as asked (bounded), record the result."""
        try:
            task = Task.objects.get(pk=message["id"])
        except (Task.DoesNotExist, KeyError, ValueError):
            logger.warning("task message for unknown task: %r", message)
            return
        # Taken only while pending: a second message for one task (sent again) runs nothing.
        started, worker = timezone.now(), server_identity()
        pending = Task.objects.filter(pk=task.pk, status=Task.Status.PENDING)
        if not pending.update(status=Task.Status.RUNNING, worker=worker, started=started):
            logger.warning("task %s is %s already; not run again", task.pk, task.status)
            return
        task.status, task.worker, task.started = Task.Status.RUNNING, worker, started
        try:
            seconds = min(float(task.payload.get("sleep", 0)), MAX_TASK_SECONDS)
            if seconds > 0:
                time.sleep(seconds)
            task.result = {"echo": task.payload, "slept": max(seconds, 0.0)}
            task.status = Task.Status.DONE
        except Exception as exc:  # a bad job fails, the worker goes on
            logger.exception("task %s failed", task.pk)
            task.result = {"error": f"{type(exc).__name__}: {exc}"}
            task.status = Task.Status.FAILED
        task.finished = timezone.now()
        task.save(update_fields=["result", "status", "finished"])
        logger.info("task %s %s on %s", task.pk, task.status, task.worker)
