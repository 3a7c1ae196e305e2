"""Consumers: the chat and echo WebSockets, and the background task channels (``thumbnail``, ``tasks``)."""

from __future__ import annotations

import json
import logging
import time

from channels.consumer import SyncConsumer
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from channels_kit.consumers import GroupFrameMixin, group_frame
from channels_kit.observe.identity import interface_identity, server_identity
from chat.models import Message, Task

logger = logging.getLogger(__name__)

# Longest simulated job, so a malicious payload cannot hold a worker for long.
MAX_TASK_SECONDS = 30.0


def room_group(room: str) -> str:
    """The channel-layer group of a chat room."""
    return f"chat.{room}"


def chat_message_frame(message: Message) -> dict:
    """The group message that carries a stored chat message to every listener of its room:
    the contract's ``{"type": "message", ...}`` frame, ready for the sockets."""
    return group_frame(json.dumps(message.as_event()))


class ChatConsumer(GroupFrameMixin, AsyncJsonWebsocketConsumer):
    """``/ws/chat/<room>/``: hello frame first, then every message in the room.

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
        message = await database_sync_to_async(Message.objects.create)(room=self.room, text=text)
        await self.channel_layer.group_send(self.group, chat_message_frame(message))

    async def decode_json(self, text_data):
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None


class EchoConsumer(AsyncWebsocketConsumer):
    """``/ws/echo/``: every frame straight back (the WebSocket benchmark's endpoint)."""

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)


class TaskConsumer(SyncConsumer):
    """Runs jobs sent to the task channels (``Task.Channel``); served only by ``runworker``."""

    def task_run(self, message: dict) -> None:
        """Run one job: mark it running, sleep as long as asked (bounded), record the result."""
        try:
            task = Task.objects.get(pk=message["id"])
        except (Task.DoesNotExist, KeyError, ValueError):
            logger.warning("task message for unknown task: %r", message)
            return
        task.status = Task.Status.RUNNING
        task.worker = server_identity()
        task.started = timezone.now()
        task.save(update_fields=["status", "worker", "started"])
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
