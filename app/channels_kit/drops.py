"""Messages the stack dropped: a WARNING that names the channel, and a counter for /metrics.

A channel layer may drop a message by design: a group member whose channel is full misses
it, a shard at its ``maxmemory`` refuses it, a relay gives up on an event no worker
finished. None of that may be silent (issue #27): whoever drops calls ``dropped()``,
which counts it per operation and reason (``channels_messages_dropped_total`` on every
worker's and Daphne's ``/metrics``) and logs a WARNING on ``channels_kit.drops`` naming the
channel. So that a flood does not flood the log too, one channel's drops of one kind are
logged at most every ``WARN_EVERY_SECONDS``: the next warning says how many came since.
The counters are exact.

Listeners (``add_listener``) hear of every drop as it happens: the relay's worker half tells
an interface whose group member channel overflowed, so that its sockets hear it too.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("channels_kit.drops")

# At most one warning per (operation, reason, channel) this often.
WARN_EVERY_SECONDS = 10.0
# Channels remembered for the rate limit before the quiet ones are forgotten.
MAX_REMEMBERED = 10_000

#: Called with (operation, reason, channel) for each drop, where it happens.
Listener = Callable[[str, str, str], None]


class DropLog:
    """The drops of one process: counters by (operation, reason), warnings by channel."""

    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._last_warning: dict[tuple[str, str, str], float] = {}
        self._unlogged: dict[tuple[str, str, str], int] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def dropped(self, operation: str, reason: str, channel: str, count: int = 1, detail: str = "") -> None:
        """``count`` messages of ``operation`` (``group_send``, ``relay event``...) for
        ``channel`` were dropped because of ``reason`` (``full``, ``refused``, ``timeout``...);
        ``detail`` adds context to the warning (the group)."""
        key = (operation, reason, channel)
        now = time.monotonic()
        with self._lock:
            self.counts[(operation, reason)] += count
            since = self._unlogged.pop(key, 0) + count
            if now - self._last_warning.get(key, -math.inf) < WARN_EVERY_SECONDS:
                self._unlogged[key] = since
                warn = False
            else:
                self._last_warning[key] = now
                warn = True
                self._forget_quiet(now)
            listeners = list(self._listeners)
        if warn:
            logger.warning(
                "dropped %d message(s) of %s to %s%s: %s%s",
                since,
                operation,
                channel,
                f" ({detail})" if detail else "",
                reason,
                f" (counting the last {WARN_EVERY_SECONDS:g} s)" if since > count else "",
            )
        for listener in listeners:
            try:
                listener(operation, reason, channel)
            except Exception:  # a listener must not turn a drop into a failed send
                logger.exception("a drop listener failed")

    def count(self, operation: str, reason: str, count: int = 1) -> None:
        """Count drops that their dropper warns of itself (in words of its own)."""
        with self._lock:
            self.counts[(operation, reason)] += count

    def _forget_quiet(self, now: float) -> None:
        if len(self._last_warning) <= MAX_REMEMBERED:
            return
        for key, when in list(self._last_warning.items()):
            if now - when >= WARN_EVERY_SECONDS:
                del self._last_warning[key]
                self._unlogged.pop(key, None)

    def snapshot(self) -> dict[tuple[str, str], int]:
        """The counters now: (operation, reason) -> messages dropped since the process started."""
        with self._lock:
            return dict(self.counts)

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)


#: The process's one drop log.
DROPS = DropLog()
dropped = DROPS.dropped
