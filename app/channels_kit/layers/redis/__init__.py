"""The kit's Redis backend (extra ``redis``): one Redis server or several shards.

- ``layer``: ``RedisChannelLayer``, channels_redis's layer with consistent hashing,
  all-shard receives, capacity over all shards and reconnects.
- ``readers``: blocking reads that a cancelled ``receive()`` never loses a message to.
- ``outages``: shards that stop answering or come back empty (``ShardHealth``,
  ``Memberships``), and what both of those and the readers use of the layer.
- ``timeouts``: blocking reads kept below the client's socket timeout; the short timeout
  of commands that do not block, which notices a hung shard.
- ``clocks``: each send's deadline in its shard's clock, so a hung shard that wakes up
  writes nothing it was sent before the sender gave up (no message twice).
- ``full``: a shard out of memory (``noeviction``): its refusals told apart and logged.
- ``sentinel``: replicated shards (``redis+sentinel://master-name``), whose primary the
  Sentinels name on each new connection, so a failover is followed.
- ``inspector``: queue figures and worker states, for ``channels_status`` and ``/metrics``.
"""

from channels_kit.layers.redis.layer import RedisChannelLayer

__all__ = ["RedisChannelLayer"]
