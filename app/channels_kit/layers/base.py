"""The contract between the kit and a channel layer backend, in one place.

- ``ChannelLayer``: the Channels layer API that the kit's worker, relay and views call.
- ``DrainableLayer``: a layer that can hand back what it fetched but did not deliver
  (``requeue_pending``), so that a stopping worker loses nothing. The kit's layers are.
- ``LayerInspector``: how the kit reads a backend's queues and keeps the workers' state,
  for ``channels_status`` and ``/metrics``. ``inspector_for(layer)`` finds the one of a
  layer; a new backend adds a row to ``INSPECTORS``.

The behaviour behind the API is what the conformance suite (``channels_kit.testing``)
checks, for every backend alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from django.utils.module_loading import import_string


@runtime_checkable
class ChannelLayer(Protocol):
    """The Channels layer API (``channels.layers.BaseChannelLayer``) as the kit uses it."""

    extensions: list[str]

    async def send(self, channel: str, message: dict[str, Any]) -> None: ...

    async def receive(self, channel: str) -> dict[str, Any]: ...

    async def new_channel(self, prefix: str = ...) -> str: ...

    async def group_add(self, group: str, channel: str) -> None: ...

    async def group_discard(self, group: str, channel: str) -> None: ...

    async def group_send(self, group: str, message: dict[str, Any]) -> None: ...

    async def flush(self) -> None: ...

    def require_valid_group_name(self, name: str) -> bool: ...

    def require_valid_channel_name(self, name: str, receive: bool = False) -> bool: ...


@runtime_checkable
class DrainableLayer(ChannelLayer, Protocol):
    """A layer that gives back, on a worker's shutdown, what it fetched and never delivered."""

    async def requeue_pending(self) -> int:
        """Stop receiving in this event loop; put fetched, undelivered messages back; say how many."""
        ...


@dataclass(frozen=True)
class QueueFigures:
    """One channel's queue on one shard (``shard`` None: all shards together)."""

    channel: str
    shard: int | None
    depth: int
    oldest_age: float  # seconds since the oldest queued message was sent; 0 when empty


@dataclass(frozen=True)
class WorkerState:
    """One worker process, as it last published itself."""

    host: str
    pid: int
    channels: tuple[str, ...]
    busy: int
    received: int
    handled: int
    failed: int
    started: float  # epoch seconds
    updated: float  # epoch seconds of the last heartbeat


class LayerInspector(Protocol):
    """Reads a backend's queues and stores the workers' published states."""

    #: How many servers (shards) the layer spreads over; figures are per shard.
    shards: int
    #: The layer's key prefix, shown in reports ('' when it has none).
    prefix: str
    #: Said in every report, e.g. that the figures are this process's only.
    note: str
    #: Whether a state saved here is seen by other processes (not so in memory).
    shares_worker_state: bool

    async def queue_figures(self, now: float) -> list[QueueFigures]:
        """Every non-empty queue on every shard."""
        ...

    async def worker_states(self) -> list[WorkerState]:
        """Every worker state saved and not yet expired (one per shard that holds it)."""
        ...

    async def save_worker_state(self, state: WorkerState, ttl: float) -> None:
        """Store ``state``, replacing the process's previous one; it vanishes after ``ttl`` seconds."""
        ...

    async def delete_worker_state(self, host: str, pid: int) -> None:
        """Remove a process's state (a clean exit)."""
        ...

    async def close(self) -> None:
        """Release the connections this process opened for the layer."""
        ...


# (layer class, its inspector class), as import paths, so that a backend that is not
# installed costs nothing. Subclasses match too: the kit's Redis layer is a channels_redis one.
INSPECTORS: tuple[tuple[str, str], ...] = (
    ("channels_redis.core.RedisChannelLayer", "channels_kit.layers.redis.inspector.RedisInspector"),
    # The same-host (SQLite) and PostgreSQL layers.
    ("channels_kit.layers.table.TableChannelLayer", "channels_kit.layers.table.inspector.TableInspector"),
    (
        "channels_kit.layers.rabbitmq.RabbitMQChannelLayer",
        "channels_kit.layers.rabbitmq.inspector.RabbitMQInspector",
    ),
    ("channels.layers.InMemoryChannelLayer", "channels_kit.layers.memory_inspector.MemoryInspector"),
)


def inspector_for(layer: ChannelLayer) -> LayerInspector | None:
    """The inspector of ``layer``'s backend; None when the kit cannot inspect that backend."""
    for layer_path, inspector_path in INSPECTORS:
        try:
            layer_class = import_string(layer_path)
        except ImportError:
            continue  # that backend is not installed, so ``layer`` is not one of its layers
        if isinstance(layer, layer_class):
            return import_string(inspector_path)(layer)
    return None


def backend_name(layer: object) -> str:
    """``module.Class`` of a layer, as reports name it."""
    return f"{type(layer).__module__}.{type(layer).__qualname__}"
