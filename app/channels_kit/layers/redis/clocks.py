"""Sends that a hung shard runs late write nothing: a deadline in the shard's own clock.

A shard that hangs (a paused or lost host) keeps the commands already sent to it in its
socket buffers and runs them when it wakes up, after the sender gave up on the reply and
sent the message to another shard: the message would arrive twice. Each send therefore
carries a deadline, in the shard's own clock (``TIME``), a little before the sender's
command timeout; the send script writes nothing after it and says so (``LateForDeadline``).
The shard's clock is compared with this process's once a minute (``ShardClocks``), so
hosts' clocks need not agree.
"""

from __future__ import annotations

import math
import time

import redis.exceptions
from redis.asyncio import Redis

# How often each shard's clock is compared with this process's again.
REMEASURE_SECONDS = 60.0
# A comparison whose round trip took longer than this tells too little: not kept.
MAX_ROUND_TRIP_SECONDS = 0.1
# The share of the command timeout after which a send's script writes nothing: the rest
# covers the reply's way back and the error of the clocks' comparison.
DEADLINE_SHARE = 0.75
# A send script's answer when it ran past its deadline and wrote nothing.
LATE = -1


class LateForDeadline(redis.exceptions.TimeoutError):
    """The shard ran the send after its deadline (it hung meanwhile) and wrote nothing."""


class ShardClocks:
    """Each shard's clock against this process's (``time.time()``)."""

    def __init__(self, shards: int) -> None:
        self.offsets: list[float | None] = [None] * shards
        self.measured = [-math.inf] * shards

    def due(self, index: int) -> bool:
        """Whether the shard's clock should be compared again before the next send."""
        return time.monotonic() - self.measured[index] >= REMEASURE_SECONDS

    async def measure(self, connection: Redis, index: int) -> None:
        """Compare the shard's clock with this process's (one ``TIME``). A round trip too slow
        to tell keeps the last offset for another ``REMEASURE_SECONDS``; with none yet (a
        process starting on a busy host), the next send measures again: until then sends go
        without a deadline, and a hung shard could write one twice."""
        before = time.time()
        seconds, microseconds = await connection.time()
        after = time.time()
        if after - before <= MAX_ROUND_TRIP_SECONDS:
            self.offsets[index] = seconds + microseconds / 1e6 - (before + after) / 2
        if self.offsets[index] is not None:
            self.measured[index] = time.monotonic()

    def deadline(self, index: int, command_timeout: float) -> float:
        """A send's deadline in the shard's clock; 0 (none) while its clock is unknown."""
        offset = self.offsets[index]
        if offset is None:
            return 0.0
        return time.time() + offset + command_timeout * DEADLINE_SHARE
