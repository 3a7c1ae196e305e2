"""Replicated shards: a ``redis+sentinel://master-name`` shard reached through its Sentinels.

The shard's address names the Sentinel master (``REDIS_URLS``); the host entry carries the
Sentinels (``sentinels``: (host, port) pairs, from ``REDIS_SENTINELS``) and how to log in to
them (``sentinel_kwargs``). Each new connection asks a Sentinel which server is the primary
now, so after a failover the layer's next connection goes to the promoted replica; a
connection to a primary that was demoted fails (redis-py's ``SentinelManagedConnection``), and
the layer's retries, command timeout and shard health do the rest, as for any shard.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

SCHEME = "redis+sentinel"
# The shortest connect timeout of a replicated shard's connections, seconds.
MIN_CONNECT_TIMEOUT = 1.0


def is_sentinel_address(address: object) -> bool:
    return isinstance(address, str) and address.lower().startswith(f"{SCHEME}://")


def master_name(address: str) -> str:
    """The Sentinel master a ``redis+sentinel://[[user]:password@]name[/db]`` address names,
    as written (Sentinel names are case-sensitive; a URL's host name is not)."""
    return urlsplit(address).netloc.rpartition("@")[2]


def sentinel_pool(address: str, host: dict[str, Any], query_timeout: float) -> SentinelConnectionPool:
    """A pool of connections to the primary of ``address``'s master, found through the
    Sentinels of ``host`` (asked with ``query_timeout``); ``host``'s other entries are the
    connections' options, as for a ``redis://`` shard."""
    parts = urlsplit(address)
    options = {k: v for k, v in host.items() if k not in ("sentinels", "sentinel_kwargs", "pool_timeout")}
    options.pop("max_connections", None)  # redis-py's pool refuses beyond it; unbounded here
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    database = parts.path.strip("/")
    if database:
        options["db"] = int(database)
    # A lost primary's address may still resolve while nothing answers there: each connect
    # (and each of its retries) would wait the whole connect timeout before the Sentinels are
    # asked again. Bounded so the layer follows the promotion within a second or two.
    follow = max(MIN_CONNECT_TIMEOUT, 2 * query_timeout)
    options["socket_connect_timeout"] = min(float(options.get("socket_connect_timeout") or follow), follow)
    sentinel_options = {
        "socket_timeout": query_timeout,
        "socket_connect_timeout": options["socket_connect_timeout"],
        **host.get("sentinel_kwargs", {}),
    }
    manager = Sentinel(list(host["sentinels"]), sentinel_kwargs=sentinel_options)
    return SentinelConnectionPool(master_name(address), manager, **options)
