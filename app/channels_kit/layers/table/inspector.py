"""Queue figures and worker states of a table-backed layer, read from its store.

The store holds every process's queues, so any process sees them all: a queue's depth is
its live rows, a ``!`` channel's queue is its process's part (``specific.<client>!``).
Worker states are rows with a TTL, like the Redis layer's keys.
"""

from __future__ import annotations

import dataclasses
import json
import time

from channels_kit.layers.base import QueueFigures, WorkerState
from channels_kit.layers.table.layer import TableChannelLayer


class TableInspector:
    """The ``LayerInspector`` of a ``TableChannelLayer`` (the same-host and PostgreSQL layers)."""

    shards = 1
    note = ""
    shares_worker_state = True

    def __init__(self, layer: TableChannelLayer) -> None:
        self.layer = layer
        self.prefix = layer.prefix

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        rows = await self.layer.in_store(lambda store: store.queues(self.prefix, now))
        return [QueueFigures(route, 0, depth, max(0.0, now - oldest)) for route, depth, oldest in rows]

    async def worker_states(self) -> list[WorkerState]:
        now = time.time()
        texts = await self.layer.in_store(lambda store: store.workers(self.prefix, now))
        states = [json.loads(text) for text in texts]
        return [WorkerState(**(state | {"channels": tuple(state["channels"])})) for state in states]

    async def save_worker_state(self, state: WorkerState, ttl: float) -> None:
        text, key = json.dumps(dataclasses.asdict(state)), f"{state.host}:{state.pid}"
        expires = time.time() + ttl
        await self.layer.in_store(lambda store: store.save_worker(self.prefix, key, text, expires))

    async def delete_worker_state(self, host: str, pid: int) -> None:
        await self.layer.in_store(lambda store: store.delete_worker(self.prefix, f"{host}:{pid}"))

    async def close(self) -> None:
        await self.layer.close()
