"""Work messages whose worker died: how the interface notices, and sends them again.

A worker that takes a relayed request or WebSocket event and has not answered it within
half of ``alive_every`` seconds says so (``relay.http.taken``, then ``relay.alive`` every
``alive_every`` seconds) until it answers. A message is presumed lost when

- nobody spoke of it by ``start_by`` (+ two beats for the first notice to arrive): it was
  taken by a worker that died at once, or it still waits in the queue; a worker that
  takes it after ``start_by`` drops it unrun (``protocol.stale``), so only the copy sent
  again can run;
- its worker fell silent for ``SILENT_BEATS`` beats (killed, out of memory, host gone).

The interface then sends the same message again (same ``seq``, the next ``attempt``),
with a start window twice as long as the last one, until the message's deadline. A
handler that died halfway may have done part of its work: consumers that must not do it
twice key it by the event's id (``consumer_state.current_event_id``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from channels.exceptions import ChannelFull

from channels_kit.layers.base import ChannelLayer

logger = logging.getLogger(__name__)

# Beats of silence after which a worker that spoke of a message is presumed dead.
SILENT_BEATS = 4
# Beats after ``start_by`` within which a worker that took the message has spoken of it.
NOTICE_BEATS = 2


@dataclass
class Delivery:
    """One work message on its way to a worker: its attempts and when it is presumed lost.

    ``resend_after`` None turns resends off (``lost_at`` is never reached).
    """

    message: dict[str, Any]
    resend_after: float | None
    alive_every: float
    attempt: int = 0
    heard: float | None = None

    def __post_init__(self) -> None:
        self.next_attempt()

    @property
    def deadline(self) -> float:
        return float(self.message["relay"]["deadline"])

    def next_attempt(self) -> None:
        """Stamp the message for its next attempt: attempt number, start window, beat."""
        self.attempt += 1
        self.heard = None
        relay = self.message["relay"]
        relay["attempt"] = self.attempt
        if self.resend_after is not None:
            window = self.resend_after * 2 ** (self.attempt - 1)
            relay["start_by"] = min(time.time() + window, self.deadline)
            relay["alive_every"] = self.alive_every

    def heard_from(self) -> None:
        """A worker spoke of the message (taken, alive)."""
        self.heard = time.time()

    def lost_at(self) -> float:
        """Unix time at which the message is presumed lost if nothing more is heard of it."""
        if self.resend_after is None:
            return math.inf
        if self.heard is not None:
            return self.heard + SILENT_BEATS * self.alive_every
        return float(self.message["relay"]["start_by"]) + NOTICE_BEATS * self.alive_every

    def wait_limit(self) -> float:
        """Seconds to wait for an answer before looking again (the deadline, or presumed lost)."""
        return max(0.0, min(self.deadline, self.lost_at()) - time.time())

    def presumed_lost(self) -> bool:
        now = time.time()
        return now < self.deadline and now >= self.lost_at()

    async def send_first(self, layer: ChannelLayer, channel: str) -> None:
        """The first send. A full channel raises; any other layer error (a broker restarting)
        counts as a lost message that goes again when presumed lost (resends off: it raises)."""
        try:
            await layer.send(channel, self.message)
        except ChannelFull:
            raise
        except Exception as error:
            if self.resend_after is None:
                raise
            logger.warning("sending to %s failed (%r); it goes again", channel, error)

    async def send_again(self, layer: ChannelLayer, channel: str, what: str) -> None:
        """The next attempt of a message whose worker is presumed dead; ``what`` names it in the
        log. A send that fails (full, or the layer failing) is tried at the next presumed loss."""
        silent = "fell silent" if self.heard is not None else "said nothing"
        self.next_attempt()
        logger.warning("the worker of %s %s: sending it again (attempt %d)", what, silent, self.attempt)
        try:
            await layer.send(channel, self.message)
        except Exception as error:  # noqa: BLE001 - logged; tried again when presumed lost again
            logger.warning("could not send %s again yet (%r)", what, error)
