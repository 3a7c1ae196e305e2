"""The same-host channel layer (no extra, no server): the processes of one machine, or the
containers of one host through a shared volume, share one SQLite file.

"Local" as in one host, every process of it (``CHANNEL_BACKEND=local``), unlike
Channels' in-memory layer, which lives inside a single process.

- ``store``: the file, its tables and transactions, and the checks that refuse a file
  shared across machines.
- ``layer``: ``LocalChannelLayer``, the table layer (``channels_kit.layers.table``) on it.
"""

from channels_kit.layers.local.layer import LocalChannelLayer

__all__ = ["LocalChannelLayer"]
