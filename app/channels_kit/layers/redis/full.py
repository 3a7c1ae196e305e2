"""A Redis shard at its ``maxmemory``: it refuses writes, and the sender hears it.

The kit's Redis runs with ``maxmemory-policy noeviction`` (images/redis/redis.conf): at its
memory limit a shard refuses a write (``OOM command not allowed when used memory >
'maxmemory'``) instead of evicting whole queues, a live socket's reply channel among them.
The layer turns that refusal into what a full channel gives: ``ChannelFull`` for ``send``,
a member skipped (logged) for ``group_send``. Reads delete, and a full Redis serves them,
so receivers drain it.

- ``out_of_memory``: whether a ``ResponseError`` is that refusal.
- ``MemoryRefusals``: a WARNING per shard and kind of write at most every
  ``WARN_EVERY_SECONDS``, with how many refusals it stands for.
"""

from __future__ import annotations

import logging
import math
import time

import redis.exceptions

logger = logging.getLogger(__name__)

# At most one warning per shard and kind of write (send, group_send) this often.
WARN_EVERY_SECONDS = 10.0


def out_of_memory(error: BaseException) -> bool:
    """Whether Redis refused a write because it is at ``maxmemory`` (policy ``noeviction``).
    redis-py maps the ``OOM`` reply to ``OutOfMemoryError``; Redis before 7 wraps a refusal
    inside a script in ``ERR Error running script``."""
    return isinstance(error, redis.exceptions.OutOfMemoryError) or "OOM command not allowed" in str(error)


class MemoryRefusals:
    """Writes that shards refused at their ``maxmemory``, logged without flooding the log."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.last_warning: dict[tuple[int, str], float] = {}
        self.unlogged: dict[tuple[int, str], int] = {}

    def refused(self, index: int, kind: str, what: str) -> None:
        """Shard ``index`` refused a write of ``kind``; ``what`` names it (channel, group)."""
        key = (index, kind)
        count = self.unlogged.get(key, 0) + 1
        now = time.monotonic()
        if now - self.last_warning.get(key, -math.inf) < WARN_EVERY_SECONDS:
            self.unlogged[key] = count
            return
        self.last_warning[key] = now
        self.unlogged[key] = 0
        logger.warning(
            "Redis shard %s is at its maxmemory and refused %s (%d %s refusal(s) on it since the "
            "last such warning; nothing is evicted: receivers drain it, or raise its maxmemory)",
            self.names[index],
            what,
            count,
            kind,
        )
