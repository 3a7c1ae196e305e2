"""The worker's half of relay mode: relayed requests and events through the project's application.

``runworker`` (with ``ASGI_MODE=relay`` or ``--relay``) serves the work channels
(``http.request``, ``websocket.*``) besides the background ones, with a
``RelayHandler``: each message becomes one call of the project's ASGI application
(``ProtocolTypeRouter``: Django's handler for HTTP, the consumers for WebSockets),
with a scope rebuilt from the message and ``send`` wired to the interface server's
reply channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.exceptions import ChannelFull

from channels_kit.layers.base import ChannelLayer
from channels_kit.observe.worker_state import worker_identity
from channels_kit.relay.consumer_state import RelayEvent, current_event, install_consumer_hook
from channels_kit.relay.protocol import (
    ALIVE,
    BATCH_KEY,
    DONE,
    HTTP_CHANNELS,
    HTTP_DISCONNECT,
    HTTP_TAKEN,
    WEBSOCKET_CHANNELS,
    WEBSOCKET_DISCONNECT,
    event_id,
    expired,
    scope_from_wire,
    stale,
)
from channels_kit.worker.errors import errors_logger

logger = logging.getLogger(__name__)

# A request still unanswered after this long tells the interface where to report a
# disconnect (long-poll); quicker ones never need to. (Interfaces that ask for beats,
# ``alive_every`` in the envelope, get it after half a beat instead.)
TAKEN_NOTICE_SECONDS = 1.0
# How long a cancelled request (worker stopping) may take to send its 503.
LAST_WORDS_SECONDS = 2.0
# How long replies are held back so that those sent together travel together: an HTTP
# response's start and body, a WebSocket handler's frame and its relay.done.
REPLY_HOLD_SECONDS = 0.002
# A batch is sent at once when it holds this many replies or this many payload bytes.
BATCH_MAX_REPLIES = 16
BATCH_MAX_BYTES = 64 * 1024


class ReplyOutbox:
    """Replies to one interface channel, in order, batched over a couple of milliseconds.

    A batch goes as one layer message, the first reply carrying the others in its
    ``relay_then`` key (``protocol.unbatch`` undoes it): the usual handler (one response,
    or one frame and the event's ``relay.done``) costs one layer message, not two or three.
    A reply is never held longer than ``hold`` seconds.
    """

    def __init__(self, layer: ChannelLayer, channel: str, hold: float = REPLY_HOLD_SECONDS) -> None:
        self.layer = layer
        self.channel = channel
        self.hold = hold
        self._held: list[dict] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    async def send(self, reply: dict) -> None:
        async with self._lock:
            self._held.append(reply)
            self._size += sum(len(reply.get(key) or b"") for key in ("body", "bytes", "text"))
            if len(self._held) >= BATCH_MAX_REPLIES or self._size >= BATCH_MAX_BYTES:
                await self._send_held()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.hold, self._flush_soon)

    def _flush_soon(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self, last: dict | None = None) -> None:
        """Send what is held now (with ``last`` at the end of the batch)."""
        async with self._lock:
            if last is not None:
                self._held.append(last)
            await self._send_held()

    async def _send_held(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        held, self._held, self._size = self._held, [], 0
        if held:
            first, rest = held[0], held[1:]
            await self.layer.send(self.channel, {**first, BATCH_KEY: rest} if rest else first)


class RelayHandler:
    """Runs one relayed message through ``application``; returns True when it went well.

    A message past its deadline (the interface answered 503 or moved on) is dropped
    unrun; ``expired`` counts them. So is one taken after its ``start_by`` (the interface
    presumed it lost and sent it again); ``stale`` counts those. While it runs a message
    whose envelope asks for beats (``alive_every``), the handler tells the interface it
    is alive (``relay.alive``), so that only a dead worker's messages are sent again.
    """

    def __init__(
        self, application: Any, channel_layer: ChannelLayer, taken_notice: float = TAKEN_NOTICE_SECONDS
    ) -> None:
        install_consumer_hook()
        self.application = application
        self.layer = channel_layer
        self.taken_notice = taken_notice
        self.identity = worker_identity()
        self.expired = 0
        self.stale = 0

    async def __call__(self, channel: str, message: dict) -> bool:
        if expired(message):
            self.expired += 1
            logger.info("dropping a %s message past its deadline (the interface gave up on it)", channel)
            return True
        if stale(message):
            self.stale += 1
            logger.info(
                "dropping a %s message taken after its start_by (the interface sent it again)", channel
            )
            return True
        if channel in HTTP_CHANNELS:
            return await self._http(message)
        if channel in WEBSOCKET_CHANNELS:
            return await self._websocket(channel, message)
        raise ValueError(f"{channel} is not a relay work channel")

    # --- HTTP ----------------------------------------------------------------------

    async def _http(self, message: dict) -> bool:
        relay = message["relay"]
        reply = relay["reply"]
        scope = scope_from_wire(relay["scope"])
        request = message["event"]
        disconnected = asyncio.Event()
        body_given = False
        status: int | None = None
        finished = False

        async def receive() -> dict:
            nonlocal body_given
            if not body_given:
                body_given = True
                return request
            await disconnected.wait()
            return {"type": "http.disconnect"}

        outbox = ReplyOutbox(self.layer, reply)

        async def send(event: dict) -> None:
            nonlocal status, finished
            if event["type"] == "http.response.start":
                status = int(event["status"])
                event = {"type": event["type"], "status": status, "headers": list(event.get("headers", []))}
            elif event["type"] == "http.response.body":
                finished = not event.get("more_body", False)
                event = {"type": event["type"], "body": event.get("body", b""), "more_body": not finished}
            else:
                return  # extensions (trailers, pathsend) do not travel
            await outbox.send(event)
            if finished:
                await outbox.flush()  # the response is complete: nothing more to wait for

        async def answer(code: int, text: str) -> None:
            await send(
                {"type": "http.response.start", "status": code, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": text.encode()})

        what = f"{scope.get('method')} {scope.get('path')}"
        notice: list[asyncio.Task] = []

        every = relay.get("alive_every")

        def notice_due() -> None:
            if status is None:  # still no response: the interface may need our channel
                notice.append(asyncio.ensure_future(self._taken_notice(reply, disconnected)))
                if every:
                    beats = self._beats(reply, {}, every, every, lambda: status is None)
                    notice.append(asyncio.ensure_future(beats))

        first_notice = every / 2 if every else self.taken_notice
        notice_timer = asyncio.get_running_loop().call_later(first_notice, notice_due)
        app = asyncio.ensure_future(self.application(scope, receive, send))
        try:
            # No response start before the deadline: the interface has answered 503 already.
            await asyncio.wait({app}, timeout=max(0.0, relay["deadline"] - time.time()))
            if not app.done() and status is None:
                logger.warning("%s: no response within the relay timeout; cancelled", what)
                app.cancel()
            await asyncio.wait({app})
        except asyncio.CancelledError:
            # This worker is stopping and gave up on the request: say so now rather than
            # leave the client waiting for the relay's timeout.
            app.cancel()
            if status is None:
                words = answer(503, "the worker stopped\n")
            elif not finished:  # a response under way ends here, short, rather than hang
                words = send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                words = outbox.flush()
            await asyncio.wait({asyncio.ensure_future(words)}, timeout=LAST_WORDS_SECONDS)
            raise
        finally:
            notice_timer.cancel()
            for task in notice:
                task.cancel()
        if app.cancelled():
            return False
        error = app.exception()
        if error is not None:
            errors_logger.error("%s raised", what, exc_info=error)
            if status is None:
                await answer(500, "internal server error\n")
            return False
        if status is None:
            errors_logger.error("%s: the application sent no response", what)
            await answer(500, "the application sent no response\n")
            return False
        if not finished:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return status < 500

    async def _taken_notice(self, reply: str, disconnected: asyncio.Event) -> None:
        """A request without a response after ``taken_notice`` seconds: give the interface a
        channel for the client's disconnect (long-polls), and listen on it."""
        channel = await self.layer.new_channel()
        await self.layer.send(reply, {"type": HTTP_TAKEN, "channel": channel, "worker": self.identity})
        while (await self.layer.receive(channel)).get("type") != HTTP_DISCONNECT:
            pass
        disconnected.set()

    async def _beats(
        self, reply: str, about: dict, first: float, every: float, running: Callable[[], bool]
    ) -> None:
        """``relay.alive`` to ``reply`` after ``first`` seconds, then every ``every`` seconds,
        while ``running()``; cancelled when the message is answered."""
        await asyncio.sleep(first)
        failing = False
        while running():
            try:
                await self.layer.send(reply, {"type": ALIVE, "worker": self.identity, **about})
                failing = False
            except Exception as exc:  # noqa: BLE001 - the next beat retries; the answer matters more
                if not failing:
                    logger.warning("could not tell %s that its message still runs (%r)", reply, exc)
                failing = True
            await asyncio.sleep(every)

    # --- WebSocket -------------------------------------------------------------------

    async def _websocket(self, channel: str, message: dict) -> bool:
        relay = message["relay"]
        connection = relay["reply"]
        scope = scope_from_wire(relay["scope"])
        event = RelayEvent(
            connection=connection,
            state=dict(relay.get("state") or {}),
            layer=self.layer,
            disconnecting=channel == WEBSOCKET_DISCONNECT,
            id=event_id(relay),
            attempt=int(relay.get("attempt") or 1),
        )
        given = False
        outbox = ReplyOutbox(self.layer, connection)

        async def receive() -> dict:
            nonlocal given
            if not given:
                given = True
                return message["event"]
            await asyncio.Future()  # one event per instance; the deadline ends a second wait
            raise AssertionError("unreachable")

        async def send(reply: dict) -> None:
            if not event.disconnecting:
                await outbox.send(reply)

        token = current_event.set(event)
        error = False
        limit = asyncio.timeout(max(0.0, relay["deadline"] - time.time()))
        every = relay.get("alive_every")
        beats: list[asyncio.Task] = []
        beat_timer = None
        if every and not event.disconnecting:
            # A timer, not a task, for the usual handler that is done before the first beat.
            about = {"seq": relay.get("seq")}
            beat_timer = asyncio.get_running_loop().call_later(
                every / 2,
                lambda: beats.append(
                    asyncio.ensure_future(self._beats(connection, about, 0, every, lambda: True))
                ),
            )
        try:
            async with limit:
                await self.application(scope, receive, send)
        except asyncio.CancelledError:
            # This worker is stopping and gave up on the event: let the socket go on with
            # its next one now (with the state it had) rather than at the deadline.
            if not event.disconnecting:
                abandoned = {"type": DONE, "seq": relay.get("seq"), "error": False, "abandoned": True}
                last_words = asyncio.ensure_future(outbox.flush(abandoned))
                await asyncio.wait({last_words}, timeout=LAST_WORDS_SECONDS)
            raise
        except Exception as exc:
            kind = message["event"].get("type")
            if isinstance(exc, TimeoutError) and limit.expired():
                errors_logger.error("%s on %s outlived the relay timeout and was cancelled", kind, connection)
                await outbox.flush()
                return False  # the interface has moved on: no relay.done
            error = True
            errors_logger.exception("consumer raised while handling %s on %s", kind, connection)
        finally:
            current_event.reset(token)
            if beat_timer is not None:
                beat_timer.cancel()
            for task in beats:
                task.cancel()
        if not event.disconnecting:
            done = {"type": DONE, "seq": relay.get("seq"), "error": error}
            if event.new_state is not None:
                done["state"] = event.new_state
            try:
                await outbox.flush(done)
            except ChannelFull:
                errors_logger.error(
                    "could not acknowledge an event of %s: its interface's channel is full", connection
                )
                return False
        return not error
