"""The worker's half of relay mode: relayed requests and events through the project's application.

``runworker`` (with ``ASGI_MODE=relay`` or ``--relay``) serves the work channels
(``http.request``, ``websocket.*``) besides the background ones, with a
``RelayHandler``: each message becomes one call of the project's ASGI application
(``ProtocolTypeRouter``: Django's handler for HTTP, the consumers for WebSockets),
with a scope rebuilt from the message and ``send`` wired to the interface server's
reply channel.

The HTTP half is ``channels_kit.relay.http_exchange`` (one ``HttpExchange`` per request);
the replies travel through ``channels_kit.relay.outbox``. The WebSocket half is here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels_kit.drops import dropped
from channels_kit.layers.base import ChannelLayer
from channels_kit.observe.consumer_errors import errors_logger
from channels_kit.observe.worker_state import worker_identity
from channels_kit.relay.clock import LayerClock
from channels_kit.relay.consumer_state import RelayEvent, current_event, install_consumer_hook
from channels_kit.relay.http_exchange import TAKEN_NOTICE_SECONDS, HttpExchange
from channels_kit.relay.outbox import (
    BATCH_MAX_BYTES,
    BATCH_MAX_REPLIES,
    LAST_WORDS_SECONDS,
    REPLY_HOLD_SECONDS,
    ReplyOutbox,
    send_beats,
)
from channels_kit.relay.protocol import (
    DONE,
    HTTP_CHANNELS,
    WEBSOCKET_CHANNELS,
    WEBSOCKET_DISCONNECT,
    ScopeError,
    alive_every,
    event_id,
    expired,
    scope_from_wire,
    stale,
)

# Importable from here as before the HTTP half and the outbox moved to modules of their own.
__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REPLIES",
    "LAST_WORDS_SECONDS",
    "REPLY_HOLD_SECONDS",
    "TAKEN_NOTICE_SECONDS",
    "RelayHandler",
    "ReplyOutbox",
]

logger = logging.getLogger(__name__)


class RelayHandler:
    """Runs one relayed message through ``application``; returns True when it went well.

    A message past its deadline (the interface answered 503 or moved on) is dropped
    unrun; ``expired`` counts them. So is one taken after its ``start_by`` (the interface
    presumed it lost and sent it again); ``stale`` counts those. Both are judged by the
    layer server's clock (``clock.LayerClock``), the one the interface set them by, so a
    skew between the two hosts changes nothing. A message whose scope holds what no
    interface sends (a forged one) is dropped; ``refused`` counts those. While it runs a message
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
        self.clock = LayerClock(channel_layer)
        self.expired = 0
        self.stale = 0
        self.refused = 0

    async def __call__(self, channel: str, message: dict) -> bool:
        await self.clock.ready()
        try:
            return await self._run(channel, message)
        except ScopeError as error:
            self.refused += 1
            errors_logger.error("dropping a %s message with a scope no interface sends: %s", channel, error)
            return False

    async def _run(self, channel: str, message: dict) -> bool:
        now = self.clock.now()
        if expired(message, now):
            self.expired += 1
            # The interface answered for it already (503, a close code): a WARNING, counted.
            reply = message.get("relay", {}).get("reply", "?")
            dropped("relay message", "expired", channel, detail=f"for {reply}, past its deadline")
            return True
        if stale(message, now):
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
        exchange = HttpExchange(
            self.application, self.layer, self.identity, message, self.taken_notice, now=self.clock.now
        )
        return await exchange.run()

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
        limit = asyncio.timeout(max(0.0, relay["deadline"] - self.clock.now()))
        beats: list[asyncio.Task] = []
        # Beats and relay.done for a disconnect too: its interface waits for it (and sends it
        # again when its worker dies), though the socket is gone.
        beat_timer = self._start_beats(relay, beats)
        try:
            async with limit:
                await self.application(scope, receive, send)
        except asyncio.CancelledError:
            # This worker is stopping and gave up on the event: let the socket go on with
            # its next one now (with the state it had) rather than at the deadline.
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
        done = {"type": DONE, "seq": relay.get("seq"), "error": error}
        if event.new_state is not None and not event.disconnecting:
            done["state"] = event.new_state
        try:
            await outbox.flush(done)
        except Exception:  # noqa: BLE001 - the outbox counted and logged the drop; the interface resends
            return False
        return not error

    def _start_beats(self, relay: dict, beats: list[asyncio.Task]) -> asyncio.TimerHandle | None:
        """When the envelope asks for them, beats about this event after half a beat (into
        ``beats``): a timer, not a task, for the usual handler that is done before the first."""
        every = alive_every(relay)
        if every is None:
            return None
        about = {"seq": relay.get("seq")}
        return asyncio.get_running_loop().call_later(
            every / 2,
            lambda: beats.append(
                asyncio.ensure_future(
                    send_beats(self.layer, self.identity, relay["reply"], about, 0, every, lambda: True)
                )
            ),
        )
