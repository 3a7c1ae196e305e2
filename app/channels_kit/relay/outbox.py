"""A worker's replies to an interface server in relay mode: batched replies and alive beats.

- ``ReplyOutbox``: replies to one interface channel, in order, batched over a couple of
  milliseconds.
- ``send_beats``: ``relay.alive`` while a message runs, so that the interface sends again
  only a dead worker's messages.

Both halves of ``channels_kit.relay.handler`` (HTTP in ``http_exchange``, WebSocket events
in ``handler`` itself) reply through these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from channels.exceptions import ChannelFull

from channels_kit.drops import dropped
from channels_kit.layers.base import ChannelLayer
from channels_kit.relay.protocol import ALIVE, BATCH_KEY

# The worker's half of relay mode logs under one name, as it did before it was split up.
logger = logging.getLogger("channels_kit.relay.handler")

# How long a cancelled request or event (worker stopping) may take to send its last words.
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
    A reply is never held longer than ``hold`` seconds. A batch the layer does not take
    (the interface's channel full, its shards away) is dropped out loud: a WARNING naming
    the channel and ``channels_messages_dropped_total{operation="relay reply"}``.
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
        task = asyncio.ensure_future(self._flush_held())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush_held(self) -> None:
        """The timer's flush: nobody waits for it, and a batch it could not send is counted."""
        with contextlib.suppress(Exception):
            await self.flush()

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
            try:
                await self.layer.send(self.channel, {**first, BATCH_KEY: rest} if rest else first)
            except Exception as error:
                reason = "full" if isinstance(error, ChannelFull) else "unsent"
                kinds = ", ".join(sorted({str(reply.get("type")) for reply in held}))
                dropped("relay reply", reason, self.channel, count=len(held), detail=f"{kinds}: {error!r}")
                raise


async def send_beats(
    layer: ChannelLayer,
    identity: str,
    reply: str,
    about: dict,
    first: float,
    every: float,
    running: Callable[[], bool],
) -> None:
    """``relay.alive`` from worker ``identity`` to ``reply`` after ``first`` seconds, then
    every ``every`` seconds, while ``running()``; cancelled when the message is answered."""
    await asyncio.sleep(first)
    failing = False
    while running():
        try:
            await layer.send(reply, {"type": ALIVE, "worker": identity, **about})
            failing = False
        except Exception as exc:  # noqa: BLE001 - the next beat retries; the answer matters more
            if not failing:
                logger.warning("could not tell %s that its message still runs (%r)", reply, exc)
            failing = True
        await asyncio.sleep(every)
