"""The interface server's half of relay mode: an ASGI application that runs no project code.

Daphne serves it (``daphne channels_kit.relay.asgi:application``). It terminates HTTP,
long-poll and WebSocket connections and moves their events over the channel layer to
workers, which run the project's own ASGI application (``channels_kit.relay.handler``):

- **HTTP** (here): the whole request goes to ``http.request``; the response comes back on
  the request's reply channel. No ``http.response.start`` within ``timeout``: 503. No
  live worker serving ``http.request`` at all (``worker_watch``): 503 at once, after
  ``no_worker_wait`` seconds for one to appear.
- **WebSocket** (``channels_kit.relay.websocket``): each event (connect, every frame,
  disconnect) goes to its work channel, one at a time and in order, carrying the
  consumer's state; a worker runs the event and answers ``relay.done`` with the new state.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

from channels.exceptions import ChannelFull

from channels_kit.layers.base import ChannelLayer
from channels_kit.relay.clock import LayerClock
from channels_kit.relay.groups import GroupRegistry
from channels_kit.relay.protocol import (
    ALIVE,
    CONNECTION_INFIX,
    HTTP_DISCONNECT,
    HTTP_REQUEST,
    HTTP_TAKEN,
    RELAY_CHANNEL_PREFIX,
    WEBSOCKET_CONNECT,
    Receive,
    Send,
    process_prefix,
    scope_to_wire,
    unbatch,
    work_message,
)
from channels_kit.relay.resend import Delivery
from channels_kit.relay.settings import RelaySettings, RelayStats
from channels_kit.relay.websocket import WebsocketConnection
from channels_kit.relay.worker_watch import WorkerWatch

logger = logging.getLogger(__name__)

RELAYED_BY_HEADER = b"x-relayed-by"
# At shutdown, how long the events still queued (a closed socket's last frames, its
# disconnect) have to reach a worker and finish: within Daphne's grace period after its drain.
SHUTDOWN_FINISH_SECONDS = 5.0


class Inbox:
    """The replies on one channel, one layer read at a time, with waits that may time out
    (a cancelled read loses nothing on the kit's layer: the message waits for the next)."""

    def __init__(self, layer: ChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.pending: collections.deque[dict] = collections.deque()
        self._reading: asyncio.Future | None = None

    async def get(self, timeout: float, unless: asyncio.Future | None = None) -> dict | None:
        """The next reply; None after ``timeout`` seconds, or as soon as ``unless`` is done."""
        if self.pending:
            return self.pending.popleft()
        if self._reading is None:
            self._reading = asyncio.ensure_future(self.layer.receive(self.channel))
        waits = {self._reading} if unless is None else {self._reading, unless}
        done, _ = await asyncio.wait(waits, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
        if self._reading not in done:
            return None
        reading, self._reading = self._reading, None
        self.pending.extend(unbatch(reading.result()))
        return self.pending.popleft()

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()


async def _read_body(receive: Receive, limit: int) -> bytes | int | None:
    """The request body; 413 when it exceeds ``limit``; None when the client left."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return 413
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(send: Send, status: int, body: bytes, content_type: bytes, header: tuple) -> None:
    """A whole response the interface gives itself, with one more header (who gave it)."""
    length = str(len(body)).encode()
    headers = [(b"content-type", content_type), (b"content-length", length), header]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RelayApplication:
    """The ASGI application of an interface server in relay mode."""

    def __init__(self, layer: ChannelLayer | None, settings: RelaySettings | None = None) -> None:
        if layer is None:
            raise ValueError("relay mode needs a channel layer shared with the workers (REDIS_URLS)")
        self.layer = layer
        self.settings = settings or RelaySettings()
        self.stats = RelayStats()
        # Deadlines and start windows are in the layer server's time, which workers read too.
        self.clock = LayerClock(layer)
        self._prefix: str | None = None
        self._registry: GroupRegistry | None = None
        self._background: set[asyncio.Task] = set()
        self._identity_header = (RELAYED_BY_HEADER, self.settings.identity.encode())
        self.workers = (
            WorkerWatch(layer, (HTTP_REQUEST, WEBSOCKET_CONNECT), self.settings.worker_check)
            if self.settings.no_worker_wait is not None
            else None
        )

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await WebsocketConnection(self, scope, receive, send).run()
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"the relay serves http and websocket, not {kind!r}")

    # --- names and bookkeeping ------------------------------------------------------

    async def prefix(self) -> str:
        """This process's part of every relay channel name: ``relay.<process id>!``."""
        if self._prefix is None:
            self._prefix = process_prefix(await self.layer.new_channel(RELAY_CHANNEL_PREFIX))
        return self._prefix

    async def new_channel(self) -> str:
        """A reply channel for one connection."""
        return f"{await self.prefix()}{CONNECTION_INFIX}{uuid.uuid4().hex}"

    async def registry(self) -> GroupRegistry:
        """The group memberships of this process."""
        if self._registry is None:
            self._registry = GroupRegistry(self.layer, await self.prefix(), self.settings.group_refresh)
        return self._registry

    def background(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task:
        """Run ``coroutine`` beyond the server's application instance (bounded by its own deadlines)."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def no_worker(self, channel: str) -> bool:
        """True when no live worker serves ``channel`` and none appears within ``no_worker_wait``."""
        if self.workers is None or self.settings.no_worker_wait is None:
            return False
        return await self.workers.absent(channel, self.settings.no_worker_wait)

    def wire_scope(self, scope: dict, reply: str) -> dict:
        """The scope as workers get it, with the interface named in ``scope["relay"]``."""
        return scope_to_wire(scope, {"relay": {"interface": self.settings.identity, "channel": reply}})

    # --- HTTP -------------------------------------------------------------------------

    async def _http(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope.get("path") == self.settings.health_path and scope.get("method") in ("GET", "HEAD"):
            await self._health(send)
            return
        body = await _read_body(receive, self.settings.max_body)
        if body is None:
            return
        if body == 413:
            await self._refuse(send, 413, f"request body larger than {self.settings.max_body} bytes")
            return
        self.stats.http_requests += 1
        await self.clock.ready()
        if await self.no_worker(HTTP_REQUEST):
            self.stats.http_no_worker += 1
            await self._refuse(send, 503, f"no worker serves {HTTP_REQUEST}")
            return
        reply = await self.new_channel()
        message = work_message(
            reply=reply,
            scope=self.wire_scope(scope, reply),
            event={"type": "http.request", "body": body, "more_body": False},
            timeout=self.settings.timeout,
            now=self.clock.now(),
        )
        delivery = Delivery(
            message,
            self.settings.resend_after,
            self.settings.alive_every,
            now=self.clock.now,
            resend=scope.get("method", "GET").upper() in self.settings.resend_methods,
        )
        inbox = Inbox(self.layer, reply)
        try:
            await delivery.send_first(self.layer, HTTP_REQUEST)
        except ChannelFull:
            inbox.close()
            self.stats.http_rejected += 1
            await self._refuse(send, 503, "every worker is busy: the http.request queue is full")
            return
        except Exception:
            inbox.close()
            raise
        await self._relay_response(inbox, delivery, receive, send)

    async def _relay_response(self, inbox: Inbox, delivery: Delivery, receive: Receive, send: Send) -> None:
        """Pass the worker's response on; 503 when it does not start before the deadline.
        Until it starts, the request is sent again whenever its worker is presumed dead."""
        deadline = delivery.deadline
        disconnect = asyncio.ensure_future(_until_disconnect(receive))
        started = finished = False
        worker_channel: str | None = None
        try:
            while not finished:
                wait = delivery.wait_limit() if not started else self.settings.timeout
                message = await inbox.get(wait, unless=disconnect)
                if message is None and disconnect.done():
                    # The client left: the worker may still want to know (long-polls).
                    self.background(self._orphaned(inbox, worker_channel, deadline))
                    inbox = None
                    return
                if message is None and not started and not delivery.past_deadline():
                    if delivery.worker_lost():
                        await self._worker_lost(send, delivery)
                        return
                    if delivery.presumed_lost():
                        self.stats.http_resent += 1
                        relayed = delivery.message["relay"]["scope"]
                        what = f"{relayed.get('method')} {relayed.get('path')}"
                        await delivery.send_again(self.layer, HTTP_REQUEST, what)
                        worker_channel = None
                    continue  # else heard from the worker meanwhile: wait on
                if message is None:
                    if not started:
                        self.stats.http_timeouts += 1
                        reason = f"no worker answered within {self.settings.timeout:g} s"
                        await self._refuse(send, 503, reason)
                    else:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                kind = message.get("type")
                if kind == HTTP_TAKEN:
                    worker_channel = message.get("channel")
                    delivery.heard_from()
                elif kind == ALIVE:
                    delivery.heard_from()
                elif kind == "http.response.start" and not started:
                    started = True
                    headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
                    await send(
                        {
                            "type": "http.response.start",
                            "status": message["status"],
                            "headers": [*headers, self._identity_header],
                        }
                    )
                elif kind == "http.response.body" and started:
                    finished = not message.get("more_body", False)
                    await send(
                        {
                            "type": "http.response.body",
                            "body": message.get("body", b""),
                            "more_body": not finished,
                        }
                    )
        finally:
            disconnect.cancel()
            if inbox is not None:
                inbox.close()

    async def _orphaned(self, inbox: Inbox, worker_channel: str | None, deadline: float) -> None:
        """The client left before the response ended: tell the worker (once it is known)."""
        try:
            while worker_channel is None:
                message = await inbox.get(deadline - self.clock.now())
                if message is None or message.get("type") == "http.response.start":
                    return  # nobody took it in time, or the response is under way anyway
                if message.get("type") == HTTP_TAKEN:
                    worker_channel = message.get("channel")
            await self.layer.send(worker_channel, {"type": HTTP_DISCONNECT})
        except Exception:
            logger.exception("could not tell a worker that its client went away")
        finally:
            inbox.close()

    async def _worker_lost(self, send: Send, delivery: Delivery) -> None:
        """The worker running a request that is not sent again (a POST) fell silent: 502 now."""
        self.stats.http_worker_lost += 1
        relayed = delivery.message["relay"]["scope"]
        method, path = relayed.get("method"), relayed.get("path")
        logger.warning("the worker running %s %s fell silent; answered 502, not sent again", method, path)
        reason = (
            f"the worker running this {method} request stopped answering: it may have run in part, "
            "and it is not sent again (RELAY_RESEND_METHODS); check before you retry"
        )
        await self._refuse(send, 502, reason)

    async def _health(self, send: Send) -> None:
        body = {
            "status": "ok",
            "server": self.settings.identity,
            "role": self.settings.role,
            "mode": "relay",
            "relay": vars(self.stats) | {"groups": len(self._registry.joined) if self._registry else 0},
            # Whether live workers serve the relay's channels (null: not known).
            "workers": {
                channel: self.workers.serves(channel) if self.workers else None
                for channel in (HTTP_REQUEST, WEBSOCKET_CONNECT)
            },
        }
        served_by = (b"x-served-by", self.settings.identity.encode())
        await _respond(send, 200, json.dumps(body).encode(), b"application/json", served_by)

    async def _refuse(self, send: Send, status: int, reason: str) -> None:
        """An error the interface answers for the workers (413, 502, 503), as plain text."""
        body = f"{reason}\n".encode()
        await _respond(send, status, body, b"text/plain; charset=utf-8", self._identity_header)

    # --- lifespan (the kit's Daphne sends it, as uvicorn and hypercorn do) --------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown(SHUTDOWN_FINISH_SECONDS)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def shutdown(self, finish: float) -> None:
        """The server stops (its sockets closed): let the events still queued for workers go
        out and finish (their sockets' disconnects among them) for up to ``finish`` seconds,
        then leave every group, so that no group sends to this process any more."""
        pending = set(self._background)
        if pending:
            _, late = await asyncio.wait(pending, timeout=finish)
            if late:
                logger.warning(
                    "shutting down with %d relayed event(s) unfinished after %g s", len(late), finish
                )
            for task in late:
                task.cancel()
        if self._registry is not None:
            await self._registry.close()
        if self.workers is not None:
            self.workers.close()
        self.clock.close()
