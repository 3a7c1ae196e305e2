"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: its dependencies answer)."""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

from channels_kit.observe.identity import server_identity, server_role

READY_TIMEOUT = 3.0


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 with the answering server's identity; touches no dependency."""
    return JsonResponse({"status": "ok", "server": server_identity(), "role": server_role()})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _check_channel_layer() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "readiness.ping"})
    await layer.receive(channel)


async def _timed(check) -> dict[str, object]:
    started = time.monotonic()
    try:
        await asyncio.wait_for(check(), READY_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer (if the project has one) answer, else 503
    with the reason."""
    checks = {"database": await _timed(sync_to_async(_check_database))}
    if get_channel_layer() is None:
        # A project without CHANNEL_LAYERS (a plain WSGI site) does not depend on one.
        checks["channel_layer"] = {"ok": True, "skipped": "no CHANNEL_LAYERS configured"}
    else:
        checks["channel_layer"] = await _timed(_check_channel_layer)
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "server": server_identity(), "checks": checks},
        status=200 if ready else 503,
    )
