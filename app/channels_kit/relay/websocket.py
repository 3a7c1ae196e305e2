"""One client WebSocket in relay mode, on the interface server.

Events for workers wait in a queue and go out one at a time, each carrying the
consumer's state, so that they run in order on whichever worker takes them; a worker
answers each with ``relay.done`` and the new state. So any worker can take the next
event, and a worker restart loses nothing a socket needs. Group messages of type
``websocket.send`` go straight to the socket, with no worker in between.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from channels.exceptions import ChannelFull

from channels_kit.drops import dropped
from channels_kit.layers.base import ChannelLayer
from channels_kit.relay.clock import LayerClock
from channels_kit.relay.groups import GroupRegistry
from channels_kit.relay.protocol import (
    ALIVE,
    DONE,
    GROUP_ADD,
    GROUP_DISCARD,
    RELAY_CHANNEL_PREFIX,
    WEBSOCKET_CONNECT,
    WEBSOCKET_DISCONNECT,
    WEBSOCKET_EVENT,
    WEBSOCKET_RECEIVE,
    Receive,
    Send,
    unbatch,
    work_message,
)
from channels_kit.relay.resend import Delivery
from channels_kit.relay.settings import RelaySettings, RelayStats

logger = logging.getLogger(__name__)

# WebSocket close codes of the relay. Applications may send only 1000 and 3000-4999
# (RFC 6455 7.4.2; Autobahn refuses the rest), so the relay's own are private codes
# that mirror HTTP: no worker answered in time, too many frames queued, the consumer (or
# the relay itself) failed.
CLOSE_NO_WORKER = 4503
# An event of the socket was dropped: no worker finished it within the relay's timeout.
CLOSE_EVENT_TIMEOUT = 4504
CLOSE_TOO_MANY_FRAMES = 4429
CLOSE_CONSUMER_ERROR = 4500
# The close code a socket gets when one of its events is dropped, by the drop's outcome.
DROP_CLOSE_CODES = {"full": CLOSE_NO_WORKER, "timeout": CLOSE_EVENT_TIMEOUT}
# Group messages that may wait for a socket's accept (they are dropped beyond that).
MAX_EARLY_FRAMES = 100
# Keys of the ASGI messages a worker may send, as passed on to the server.
ACCEPT_KEYS = ("type", "subprotocol", "headers")
SEND_KEYS = ("type", "text", "bytes")


class SocketHost(Protocol):
    """What a socket uses of the relay application that serves it (``RelayApplication``
    has it; a Protocol, so that this module need not import the application's module)."""

    layer: ChannelLayer
    settings: RelaySettings
    stats: RelayStats
    clock: LayerClock

    async def new_channel(self) -> str: ...

    async def registry(self) -> GroupRegistry: ...

    def background(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task: ...

    async def no_worker(self, channel: str) -> bool: ...

    def wire_scope(self, scope: dict, reply: str) -> dict: ...


class WebsocketConnection:
    """One client socket in relay mode.

    Messages on the connection's channel (the worker's ``websocket.*`` replies,
    ``relay.done``, group changes, direct layer messages) are handled in order by a task
    of their own, beside the dispatcher that sends the socket's events to the workers. A
    reader in front of it notes at once what tells whether the worker lives (its beats,
    the event's ``relay.done``): a reply that waits (a group join while the group's shard
    is down) never makes the event look lost and run again.
    """

    CONNECTING, OPEN, CLOSING, CLOSED = "connecting", "open", "closing", "closed"

    def __init__(self, app: SocketHost, scope: dict, receive: Receive, send: Send) -> None:
        self.app = app
        self.layer = app.layer
        self.scope = scope
        self.receive = receive
        self.send = send
        self.state = self.CONNECTING
        self.groups: set[str] = set()
        self.channel = ""
        self.consumer_state: dict = {}
        self.answered = False  # a worker has handled this socket's connect
        self._events: collections.deque[tuple[str, dict]] = collections.deque()
        self._event_ready = asyncio.Event()
        self._seq = 0
        self._inflight: tuple[int, asyncio.Future[dict], Delivery] | None = None
        self._early: list[dict] = []
        self._opened = asyncio.Event()
        self._reader: asyncio.Task | None = None
        self._replies: asyncio.Queue[dict] = asyncio.Queue()

    async def run(self) -> None:
        """Serve the socket until the client goes; the queued events then finish in the background."""
        connect = await self.receive()
        if connect["type"] != "websocket.connect":
            return
        self.app.stats.websocket_connections += 1
        await self.app.clock.ready()
        self.channel = await self.app.new_channel()
        self.wire_scope = self.app.wire_scope(self.scope, self.channel)
        self.registry = await self.app.registry()
        self._reader = self.app.background(self._read_replies())
        self.app.background(self._dispatch())
        self._enqueue(WEBSOCKET_CONNECT, {"type": "websocket.connect"})
        try:
            while True:
                message = await self.receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    if len(self._events) >= self.app.settings.max_queued_events:
                        waiting = len(self._events)
                        dropped("relay event", "queue full", self.channel, detail=f"{waiting} frames wait")
                        await self._close(CLOSE_TOO_MANY_FRAMES)
                        continue
                    frame = {key: message[key] for key in SEND_KEYS if message.get(key) is not None}
                    self._enqueue(WEBSOCKET_RECEIVE, frame | {"type": "websocket.receive"})
                elif kind == "websocket.disconnect":
                    self._disconnected(message.get("code", 1005))
                    return
        finally:
            # Cancelled by the server (shutting down, say): the socket is gone all the same.
            self._disconnected(1006)

    def _disconnected(self, code: int) -> None:
        if self.state == self.CLOSED:
            return
        if self.state == self.OPEN:
            self.app.stats.websocket_open -= 1
        self.state = self.CLOSED
        self.registry.forget(self)
        self._enqueue(WEBSOCKET_DISCONNECT, {"type": "websocket.disconnect", "code": code})

    def _enqueue(self, channel: str, event: dict) -> None:
        self._events.append((channel, event))
        self._event_ready.set()

    # --- to the workers -------------------------------------------------------------

    async def _dispatch(self) -> None:
        try:
            while True:
                while not self._events:
                    self._event_ready.clear()
                    await self._event_ready.wait()
                channel, event = self._events.popleft()
                if channel == WEBSOCKET_DISCONNECT:
                    # Waited for like any event (sent again if its worker dies), so that
                    # the consumer's disconnect runs however the worker fares.
                    if self.answered:
                        await self._send_event(channel, event)
                    return
                if channel == WEBSOCKET_CONNECT and await self.app.no_worker(WEBSOCKET_CONNECT):
                    # Nobody would take it: say so now (4503), not after the timeout.
                    self.app.stats.websocket_no_worker += 1
                    await self._settle_connect("no worker", self.app.clock.now())
                    continue
                outcome, deadline = await self._send_event(channel, event)
                if channel == WEBSOCKET_CONNECT:
                    await self._settle_connect(outcome, deadline)
                elif outcome in DROP_CLOSE_CODES:
                    # The client's frame (or an event for it) is lost: say so with a code it
                    # can act on (reconnect, recover what it missed) rather than carry on.
                    await self._close(DROP_CLOSE_CODES[outcome])
        except Exception:
            logger.exception("relaying events of socket %s failed", self.channel)
            await self._close(CLOSE_CONSUMER_ERROR)
        finally:
            if self._reader is not None:
                self._reader.cancel()

    async def _send_event(self, channel: str, event: dict) -> tuple[str, float]:
        """Send one event and wait for its ``relay.done``, sending it again when its worker is
        presumed dead (``resend``). Returns ``(outcome, deadline)``, the outcome being
        ``done``, ``full`` or ``timeout``."""
        self._seq += 1
        settings = self.app.settings
        message = work_message(
            reply=self.channel,
            scope=self.wire_scope,
            event=event,
            timeout=settings.timeout,
            now=self.app.clock.now(),
            seq=self._seq,
            state=self.consumer_state,
        )
        deadline = message["relay"]["deadline"]
        try:
            delivery = Delivery(message, settings.resend_after, settings.alive_every, now=self.app.clock.now)
            done: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
            self._inflight = (self._seq, done, delivery)
            await delivery.send_first(self.layer, channel)
            self.app.stats.websocket_events += 1
            while not done.done():
                await asyncio.wait({done}, timeout=delivery.wait_limit())
                if done.done():
                    break
                if delivery.past_deadline():
                    raise TimeoutError
                if delivery.presumed_lost():
                    self.app.stats.websocket_events_resent += 1
                    await delivery.send_again(
                        self.layer, channel, f"{channel} #{self._seq} of socket {self.channel}"
                    )
            return "done", deadline
        except ChannelFull:
            self.app.stats.websocket_events_dropped += 1
            dropped("relay event", "full", channel, detail=f"#{self._seq} of socket {self.channel}")
            return "full", deadline
        except TimeoutError:
            self.app.stats.websocket_timeouts += 1
            dropped(
                "relay event",
                "timeout",
                self.channel,
                detail=f"{channel} #{self._seq}: no worker finished it within {settings.timeout:g} s",
            )
            return "timeout", deadline
        finally:
            self._inflight = None

    async def _settle_connect(self, outcome: str, deadline: float) -> None:
        """After the connect event: an accept may still come until the deadline; then close cleanly."""
        if self.state != self.CONNECTING:
            return
        if outcome == "done":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._opened.wait(), deadline - self.app.clock.now())
            if self.state != self.CONNECTING:
                return
        if self.answered:
            # The application neither accepted nor closed: reject, as Daphne would.
            await self.send({"type": "websocket.close"})
        else:
            # No worker took the connect: accept, to be able to say so with a close code.
            await self.send({"type": "websocket.accept"})
            await self.send({"type": "websocket.close", "code": CLOSE_NO_WORKER})
        self.state = self.CLOSING

    # --- from the workers and the layer ---------------------------------------------------

    async def _read_replies(self) -> None:
        """Read the socket's channel: beats and ``relay.done`` noted at once, every reply
        but the beats handled in order by ``_handle_replies``."""
        handling = asyncio.ensure_future(self._handle_replies())
        try:
            while True:
                for message in unbatch(await self.layer.receive(self.channel)):
                    self._note_worker(message)
                    if message.get("type") != ALIVE:
                        self._replies.put_nowait(message)
        except Exception:
            # The layer failed for good (redis-py retries the passing failures): without
            # replies the socket is useless, so say so rather than leave it hanging.
            logger.exception("reading the replies of socket %s failed; closing it", self.channel)
            await self._close(CLOSE_CONSUMER_ERROR)
        finally:
            handling.cancel()

    def _note_worker(self, message: dict) -> None:
        """A beat or the ``relay.done`` of the event in flight: its worker lives, or is done."""
        kind = message.get("type")
        if self._inflight is None or kind not in (ALIVE, DONE) or message.get("seq") != self._inflight[0]:
            return
        delivery = self._inflight[2]
        delivery.heard_from()
        if kind == DONE:
            delivery.answered = True

    async def _handle_replies(self) -> None:
        while True:
            message = await self._replies.get()
            try:
                await self._handle(message)
            except Exception:
                logger.exception("handling %s on socket %s failed", message.get("type"), self.channel)

    async def _handle(self, message: dict) -> None:
        """One message on the socket's channel, by type (``_HANDLERS``); the relay's own
        types nobody handles are ignored, any other goes to a worker as a layer event."""
        kind = message.get("type", "")
        handle = self._HANDLERS.get(kind)
        if handle is not None:
            await handle(self, message)
        elif kind.startswith(RELAY_CHANNEL_PREFIX + "."):
            logger.debug("ignoring %s on socket %s", kind, self.channel)
        else:
            self._enqueue_layer_event(message)

    async def _on_done(self, message: dict) -> None:
        self.answered = True
        if self._inflight is not None and message.get("seq") == self._inflight[0]:
            if isinstance(message.get("state"), dict):
                self.consumer_state = message["state"]
            if not self._inflight[1].done():
                self._inflight[1].set_result(message)
        if message.get("error"):
            await self._close(CLOSE_CONSUMER_ERROR)

    async def _on_accept(self, message: dict) -> None:
        self.answered = True
        if self.state == self.CONNECTING:
            await self.send({key: message[key] for key in ACCEPT_KEYS if message.get(key) is not None})
            self.state = self.OPEN
            self.app.stats.websocket_open += 1
            self._opened.set()
            early, self._early = self._early, []
            for frame in early:
                await self.send(frame)

    async def _on_send(self, message: dict) -> None:
        await self._send_frame(message)

    async def _on_close(self, message: dict) -> None:
        self.answered = True
        await self._close(message.get("code"))

    async def _on_group_add(self, message: dict) -> None:
        if self.state != self.CLOSED:
            await self.registry.add(message["group"], self)

    async def _on_group_discard(self, message: dict) -> None:
        await self.registry.discard(message["group"], self)

    _HANDLERS: dict[str, Callable[[WebsocketConnection, dict], Awaitable[None]]] = {
        DONE: _on_done,
        "websocket.accept": _on_accept,
        "websocket.send": _on_send,
        "websocket.close": _on_close,
        GROUP_ADD: _on_group_add,
        GROUP_DISCARD: _on_group_discard,
    }

    async def deliver_group_message(self, message: dict) -> None:
        """A message of one of this socket's groups: frames straight to the client, the rest to a worker."""
        kind = message.get("type")
        if kind == "websocket.send":
            await self._send_frame(message)
        elif kind == "websocket.close":
            await self._close(message.get("code"))
        else:
            self._enqueue_layer_event(message)

    def _enqueue_layer_event(self, message: dict) -> None:
        if self.state == self.CLOSED:
            return
        if len(self._events) >= self.app.settings.max_queued_events:
            self.app.stats.websocket_events_dropped += 1
            dropped("relay event", "queue full", self.channel, detail=f"a {message.get('type')} event")
            self.app.background(self._close(CLOSE_TOO_MANY_FRAMES))  # the socket hears it
            return
        self._enqueue(WEBSOCKET_EVENT, message)

    async def _send_frame(self, message: dict) -> None:
        frame = {key: message[key] for key in SEND_KEYS if message.get(key) is not None}
        if self.state == self.OPEN:
            await self.send(frame)
        elif self.state == self.CONNECTING and len(self._early) < MAX_EARLY_FRAMES:
            self._early.append(frame)

    async def _close(self, code: int | None) -> None:
        if self.state == self.CONNECTING:
            await self.send({"type": "websocket.close"})
        elif self.state == self.OPEN:
            close = {"type": "websocket.close"}
            if code is not None:
                close["code"] = code
            await self.send(close)
            self.app.stats.websocket_open -= 1
        else:
            return
        self.state = self.CLOSING
