"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: its dependencies answer).

A failing check names what it tried (the database's host, the layer's servers, passwords
masked) and why it failed, so that ``/readyz`` alone tells an operator where to look.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

from channels_kit.conf import layer_servers
from channels_kit.layers.base import backend_name
from channels_kit.observe.identity import server_identity, server_role

READY_TIMEOUT = 3.0


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 with the answering server's identity; touches no dependency."""
    return JsonResponse({"status": "ok", "server": server_identity(), "role": server_role()})


def database_server() -> str:
    """The default database as messages name it: ``vendor host:port/name`` (no password)."""
    settings = connection.settings_dict
    host = settings.get("HOST") or ""
    port = settings.get("PORT") or ""
    where = f"{host}:{port}" if host and port else host
    name = settings.get("NAME") or ""
    return " ".join(part for part in (connection.vendor, f"{where}/{name}" if where else str(name)) if part)


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _check_channel_layer(about: dict[str, object]) -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    servers = about["servers"]
    if isinstance(servers, list) and len(servers) > 1 and hasattr(layer, "consistent_hash"):
        # A sharded layer: the check's channel lives on one shard, named here.
        about["server"] = servers[layer.consistent_hash(channel)]
    await layer.send(channel, {"type": "readiness.ping"})
    await layer.receive(channel)


def failure_text(exc: BaseException) -> str:
    """``Type: message``, with something to say for errors that say nothing (a timeout)."""
    if isinstance(exc, TimeoutError):
        return f"TimeoutError: no answer within {READY_TIMEOUT} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _timed(check: Callable[[], Awaitable[None]], about: dict[str, object]) -> dict[str, object]:
    """Run ``check`` within ``READY_TIMEOUT``; the result says what was checked (``about``,
    which the check may complete)."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(check(), READY_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return {"ok": False, **about, "error": failure_text(exc)}
    return {"ok": True, **about, "ms": round((time.monotonic() - started) * 1000, 1)}


async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer (if the project has one) answer, else 503
    with the reason and the server that did not answer."""
    checks = {"database": await _timed(sync_to_async(_check_database), {"server": database_server()})}
    layer = get_channel_layer()
    if layer is None:
        # A project without CHANNEL_LAYERS (a plain WSGI site) does not depend on one.
        checks["channel_layer"] = {"ok": True, "skipped": "no CHANNEL_LAYERS configured"}
    else:
        about = {"backend": backend_name(layer), "servers": layer_servers(layer)}
        checks["channel_layer"] = await _timed(lambda: _check_channel_layer(about), about)
    ready = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "server": server_identity(), "checks": checks},
        status=200 if ready else 503,
    )
