"""``GET /poll/<room>/``: long-poll for the next chat message of a room.

The view joins the room's channel-layer group on a channel of its own, exactly as
a WebSocket consumer does, waits for the group's next message frame (what the chat
consumer sends the sockets) and answers it as JSON; nothing within the timeout gives
204. The group membership
is dropped on every way out: answer, timeout, error, or the client going away
(Django cancels the view when the connection closes).

It is an async view so that a waiting request costs a coroutine, not a thread:
route it to the ASGI tier (Daphne in direct mode, the workers in relay mode, where
each wait holds one of a worker's ``WORKER_HTTP_CONCURRENCY`` slots). Under WSGI it
would work, holding a thread for the whole wait.
"""

from __future__ import annotations

import asyncio
import json
import math

from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from channels_kit.consumers import FRAME_TYPE
from chat.consumers import room_group


def poll_timeout(requested: str | None) -> float:
    """Seconds to wait: ``?timeout=`` when it is a number, clamped to [0, LONGPOLL_MAX_TIMEOUT]."""
    try:
        seconds = float(requested) if requested is not None else settings.LONGPOLL_TIMEOUT
    except ValueError:
        seconds = settings.LONGPOLL_TIMEOUT
    if not math.isfinite(seconds):
        seconds = settings.LONGPOLL_TIMEOUT
    return min(max(seconds, 0.0), settings.LONGPOLL_MAX_TIMEOUT)


async def next_chat_message(room: str, timeout: float) -> dict | None:
    """The next message sent to ``room`` within ``timeout`` seconds, else None."""
    layer = get_channel_layer()
    group = room_group(room)
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await layer.receive(channel)
                if event.get("type") == FRAME_TYPE and event.get("text"):
                    frame = json.loads(event["text"])
                    if frame.get("type") == "message":
                        return frame
    except TimeoutError:
        return None
    finally:
        # Shielded: a cancelled request (client gone) must still leave the group.
        await asyncio.shield(layer.group_discard(group, channel))


@require_GET
async def poll(request: HttpRequest, room: str) -> HttpResponse:
    """200 with the room's next message (the WebSocket contract's shape), or 204 after the timeout."""
    if get_channel_layer() is None:
        return JsonResponse({"error": "long-poll is off: this site runs without a channel layer"}, status=503)
    message = await next_chat_message(room, poll_timeout(request.GET.get("timeout")))
    if message is None:
        return HttpResponse(status=204)
    return JsonResponse(message)
