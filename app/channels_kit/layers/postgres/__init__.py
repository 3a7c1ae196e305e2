"""The kit's channel layer on PostgreSQL (extra ``postgres``): a small site can drop Redis.

- ``store``: the tables, and the statements that send, take and count.
- ``listener``: the LISTEN thread that wakes a process's pollers on NOTIFY.
- ``layer``: ``PostgresChannelLayer``, the table layer (``channels_kit.layers.table``) on them.
"""

from channels_kit.layers.postgres.layer import PostgresChannelLayer

__all__ = ["PostgresChannelLayer"]
