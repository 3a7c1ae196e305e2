"""Queue figures and worker states of the same-host layer, read from its file.

The file holds every process's queues, so any process of the host sees them all: a
queue's depth is its live rows, a ``!`` channel's queue is its process's part
(``specific.<client>!``). Worker states are rows with a TTL, like the Redis layer's.
"""

from __future__ import annotations

import dataclasses
import json
import time

from channels_kit.layers.base import QueueFigures, WorkerState
from channels_kit.layers.local.layer import LocalChannelLayer
from channels_kit.layers.local.store import Store


class LocalInspector:
    """The ``LayerInspector`` of ``LocalChannelLayer``: one shard, the file."""

    shards = 1
    note = ""
    shares_worker_state = True

    def __init__(self, layer: LocalChannelLayer) -> None:
        self.layer = layer
        self.prefix = layer.prefix

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        rows = await self.layer.in_store(Store.queues, self.prefix, now)
        return [QueueFigures(route, 0, depth, max(0.0, now - oldest)) for route, depth, oldest in rows]

    async def worker_states(self) -> list[WorkerState]:
        states = [
            json.loads(text) for text in await self.layer.in_store(Store.workers, self.prefix, time.time())
        ]
        return [WorkerState(**(state | {"channels": tuple(state["channels"])})) for state in states]

    async def save_worker_state(self, state: WorkerState, ttl: float) -> None:
        text = json.dumps(dataclasses.asdict(state))
        await self.layer.in_store(
            Store.save_worker, self.prefix, f"{state.host}:{state.pid}", text, time.time() + ttl
        )

    async def delete_worker_state(self, host: str, pid: int) -> None:
        await self.layer.in_store(Store.delete_worker, self.prefix, f"{host}:{pid}")

    async def close(self) -> None:
        await self.layer.close()
