"""An inspector of Channels' in-memory layer (not a layer): this process's own queues, nothing more.

The layer lives inside one process, so its figures are that process's own and other
processes' queues and workers are invisible; reports say so.
"""

from __future__ import annotations

from channels.layers import InMemoryChannelLayer

from channels_kit.layers.base import QueueFigures, WorkerState

IN_MEMORY_NOTE = (
    "in-memory channel layer: these are this process's own queues; other processes' queues "
    "and workers are invisible (only the Redis layer can be inspected from outside)"
)


class MemoryInspector:
    """The ``LayerInspector`` of ``InMemoryChannelLayer``: one shard, no shared worker state."""

    shards = 1
    prefix = ""
    note = IN_MEMORY_NOTE
    shares_worker_state = False

    def __init__(self, layer: InMemoryChannelLayer) -> None:
        self.layer = layer

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        figures = []
        for channel, queue in list(self.layer.channels.items()):
            # asyncio.Queue has no peek; its deque holds (expires_at, message) pairs, oldest first.
            items = getattr(queue, "_queue", None)
            if not queue.qsize() or not items:
                continue
            sent = items[0][0] - self.layer.expiry
            figures.append(QueueFigures(channel, 0, queue.qsize(), max(0.0, now - sent)))
        return figures

    async def worker_states(self) -> list[WorkerState]:
        return []

    async def save_worker_state(self, state: WorkerState, ttl: float) -> None:
        """Nothing to do: no other process could read it."""

    async def delete_worker_state(self, host: str, pid: int) -> None:
        """Nothing was saved."""

    async def close(self) -> None:
        """The layer holds no connection."""
