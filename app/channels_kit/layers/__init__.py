"""Channel layer backends of the kit, and the contract they meet.

- ``base``: the layer API the kit relies on (Protocols), the inspector contract behind
  ``channels_status`` and ``/metrics``, and ``inspector_for()``.
- ``hashring``: the consistent-hash ring that places ``!`` channels and groups on shards.
- ``redis``: the Redis backend (extra ``redis``), one server or several shards.
- ``rabbitmq``: the RabbitMQ backend (extra ``rabbitmq``).
- ``table``: what the two table backends share: messages as rows of a shared table.
- ``postgres``: the PostgreSQL backend (extra ``postgres``), a table layer.
- ``local``: the same-host backend, a table layer on one SQLite file (no server).
- ``memory_inspector``: how the kit inspects Channels' own in-memory layer (not a layer).
- ``memory``: the old import path of ``memory_inspector``.

``channels_kit.layers.RedisChannelLayer`` is the Redis backend's layer, imported on
first use, so that this package imports without the ``redis`` extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RedisChannelLayer"]


def __getattr__(name: str) -> Any:
    if name == "RedisChannelLayer":
        from channels_kit.layers.redis import RedisChannelLayer

        return RedisChannelLayer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
