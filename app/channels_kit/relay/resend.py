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
from collections.abc import Callable
from dataclasses import dataclass, field
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

    ``resend_after`` None turns resends off (``lost_at`` is never reached). ``resend``
    False (a POST, unless the project said it is safe to repeat) keeps the beats but never
    sends again: ``worker_lost()`` then says its worker died while running it. ``now`` is the
    layer's clock (``clock.LayerClock.now``), which ``deadline`` and ``start_by`` are in.
    """

    message: dict[str, Any]
    resend_after: float | None
    alive_every: float
    now: Callable[[], float] = field(default=time.time)
    resend: bool = True
    attempt: int = 0
    heard: float | None = None
    # The worker said the message is handled (its relay.done or response arrived, even if
    # not processed yet): it is never presumed lost again.
    answered: bool = False

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
            relay["alive_every"] = self.alive_every
            if self.resend:
                window = self.resend_after * 2 ** (self.attempt - 1)
                relay["start_by"] = min(self.now() + window, self.deadline)

    def heard_from(self) -> None:
        """A worker spoke of the message (taken, alive)."""
        self.heard = self.now()

    def lost_at(self) -> float:
        """Time (the layer's) at which the message is presumed lost if nothing more is heard of it."""
        if self.resend_after is None or self.answered:
            return math.inf
        if self.heard is not None:
            return self.heard + SILENT_BEATS * self.alive_every
        if not self.resend:
            return math.inf  # it may wait in the queue until its deadline: it was not taken
        return float(self.message["relay"]["start_by"]) + NOTICE_BEATS * self.alive_every

    def wait_limit(self) -> float:
        """Seconds to wait for an answer before looking again (the deadline, or presumed lost)."""
        return max(0.0, min(self.deadline, self.lost_at()) - self.now())

    def presumed_lost(self) -> bool:
        now = self.now()
        return now < self.deadline and now >= self.lost_at()

    def past_deadline(self) -> bool:
        return self.now() >= self.deadline

    def worker_lost(self) -> bool:
        """A message that is not sent again whose worker fell silent while running it."""
        return not self.resend and self.heard is not None and self.presumed_lost()

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
