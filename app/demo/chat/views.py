"""HTTP side of the demo: the chat page, room history and background tasks."""

from __future__ import annotations

import json
import re
import time
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from channels_kit.observe.identity import interface_identity, server_identity
from channels_kit.relay.protocol import request_id
from chat.models import ROOM_PATTERN, Message, Task

DEFAULT_ROOM = "lobby"
# What the live parts answer when the site runs without a channel layer (CHANNELS_ENABLED=false).
CHANNELS_OFF = "this site runs without a channel layer (CHANNELS_ENABLED=false)"
# GET /io/: how long the view blocks by default, and at most (milliseconds).
IO_DEFAULT_MS = 50
IO_MAX_MS = 1000
# POST /tasks/?ms=: how long the answer may be held after the task is queued (milliseconds;
# tests kill a worker in that window).
TASK_HOLD_MAX_MS = 10000
# Task ids derived from relayed request ids: a request sent again makes no second task.
TASK_IDS = uuid.UUID("6f1d52a4-3b9e-4d0c-9a57-2c5e8b1f7d30")


def recent_messages(room: str) -> list[Message]:
    """The room's latest messages, oldest first."""
    latest = Message.objects.filter(room=room)[: settings.CHAT_HISTORY_SIZE]
    return list(reversed(latest))


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The chat page for ``?room=<name>`` (default ``lobby``), with recent history."""
    room = request.GET.get("room", DEFAULT_ROOM)
    if not re.fullmatch(ROOM_PATTERN, room):
        room = DEFAULT_ROOM
    history = recent_messages(room)
    context = {
        "room": room,
        "history": history,
        # The socket asks for what came after (?after=): nothing posted meanwhile is missed.
        "last_id": history[-1].pk if history else 0,
        "server": server_identity(),
        "interface": interface_identity(getattr(request, "scope", None)),
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "socket_host": settings.CHAT_SOCKET_HOST,
        "live": get_channel_layer() is not None,
    }
    return render(request, "chat/index.html", context)


@require_GET
def whoami(request: HttpRequest) -> JsonResponse:
    """Who answers and whom it sees: server, session user, client address and scheme.

    ``client`` and ``scheme`` are what Django got from the front server: the proxy
    headers under Daphne, the uwsgi protocol's variables under uWSGI.
    """
    user = request.user
    return JsonResponse(
        {
            "server": server_identity(),
            "user": user.get_username() if user.is_authenticated else None,
            "client": request.META.get("REMOTE_ADDR"),
            "scheme": request.scheme,
            "host": request.get_host(),
        }
    )


@require_GET
def io(request: HttpRequest) -> JsonResponse:
    """Block ``?ms=`` milliseconds (default 50, at most 1000), as a slow database call would.

    A plain synchronous view: it holds its thread for the whole wait, which is what
    shows the worker tier scaling in relay mode (``make scaling``, axis ``io``).
    """
    try:
        ms = int(request.GET.get("ms", IO_DEFAULT_MS))
    except ValueError:
        ms = IO_DEFAULT_MS
    ms = min(max(ms, 0), IO_MAX_MS)
    time.sleep(ms / 1000)
    return JsonResponse({"slept_ms": ms, "server": server_identity()})


@require_GET
def history(request: HttpRequest, room: str) -> JsonResponse:
    """Recent messages of a room as JSON, oldest first."""
    return JsonResponse({"room": room, "messages": [m.as_event() for m in recent_messages(room)]})


@csrf_exempt  # JSON only: browsers cannot send application/json cross-site without CORS.
@require_POST
def create_task(request: HttpRequest) -> JsonResponse:
    """Queue a job on the body's ``channel`` (default ``thumbnail``); answer 202 with its id.

    ``?ms=<n>`` holds the answer ``n`` ms after the job is queued (at most 10 s), for tests
    that stop a worker in the middle of a POST."""
    if request.content_type != "application/json":
        return JsonResponse({"error": "send Content-Type: application/json"}, status=415)
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return JsonResponse({"error": "body is not valid JSON"}, status=400)
    if not isinstance(payload, dict):
        return JsonResponse({"error": "body must be a JSON object"}, status=400)
    layer = get_channel_layer()
    if layer is None:
        return JsonResponse({"error": f"background tasks are off: {CHANNELS_OFF}"}, status=503)
    channel = payload.pop("channel", Task.Channel.THUMBNAIL)
    if channel not in Task.Channel.values:
        choices = ", ".join(Task.Channel.values)
        return JsonResponse({"error": f'"channel" must be one of: {choices}'}, status=400)
    task, created = _task_for(request, channel, payload)
    if created or task.status == Task.Status.PENDING:  # a first attempt may have died before sending
        async_to_sync(layer.send)(channel, {"type": "task.run", "id": str(task.pk)})
    time.sleep(_hold_ms(request) / 1000)
    body = task.as_json() | {"url": f"/tasks/{task.pk}"}
    return JsonResponse(body, status=202)


def _task_for(request: HttpRequest, channel: str, payload: dict) -> tuple[Task, bool]:
    """The request's task, and whether it is new. In relay mode one per request id, so a
    request the relay sends again (``RELAY_RESEND_METHODS`` with POST) queues nothing twice."""
    relayed = request_id(getattr(request, "scope", {}))
    if relayed is None:
        return Task.objects.create(channel=channel, payload=payload), True
    pk = uuid.uuid5(TASK_IDS, relayed)
    return Task.objects.get_or_create(pk=pk, defaults={"channel": channel, "payload": payload})


def _hold_ms(request: HttpRequest) -> int:
    try:
        ms = int(request.GET.get("ms", 0))
    except ValueError:
        return 0
    return min(max(ms, 0), TASK_HOLD_MAX_MS)


@require_GET
def task_detail(request: HttpRequest, task_id: str) -> JsonResponse:
    """A task's state: ``pending``, ``running`` once a worker took it, then ``done`` or ``failed``."""
    task = get_object_or_404(Task, pk=task_id)
    return JsonResponse(task.as_json())
