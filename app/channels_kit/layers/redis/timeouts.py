"""Blocking reads that stay below the Redis client's socket timeout (the redis-py 8 trap).

redis-py 8 gives every connection a 5 s socket timeout by default, while channels_redis
blocks in ``BZPOPMIN`` for 5 s on an idle channel, so an idle ``receive()`` dies with
``TimeoutError`` (redis/redis-py#4091). The kit's layer blocks for at most half of the
smallest socket timeout of its hosts instead.

Commands that do not block have a short timeout of their own (``command_timeout_for``),
and a blocking read waits its blocking time plus that (``blocking_read_timeout``): a hung
shard is noticed within a command timeout, not after the whole socket timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import connection as redis_connection

# What redis-py uses when neither the host dict nor the URL sets a timeout.
REDIS_DEFAULT_SOCKET_TIMEOUT: float | None = getattr(redis_connection, "DEFAULT_SOCKET_TIMEOUT", None)
# A blocking read may use at most this share of the socket timeout, leaving the
# rest for the round trip on a busy network or a slow Redis.
BLOCKING_SHARE = 0.5
MIN_BLOCKING_TIMEOUT = 0.1


def host_socket_timeout(host: Mapping[str, Any]) -> float | None:
    """The socket timeout one decoded channels_redis host entry will get (None: no timeout)."""
    if "socket_timeout" in host:
        value = host["socket_timeout"]
        return None if value is None else float(value)
    address = host.get("address")
    if isinstance(address, str):
        query = parse_qs(urlsplit(address).query)
        if "socket_timeout" in query:
            return float(query["socket_timeout"][-1])
    return REDIS_DEFAULT_SOCKET_TIMEOUT


def blocking_timeout_for(hosts: Iterable[Mapping[str, Any]], preferred: float) -> float:
    """The longest blocking-read timeout that stays safely under every host's socket timeout."""
    timeouts = [t for t in (host_socket_timeout(h) for h in hosts) if t is not None]
    if not timeouts:
        return preferred
    return max(MIN_BLOCKING_TIMEOUT, min(preferred, min(timeouts) * BLOCKING_SHARE))


# How long a command that does not block (a send, a group send, a membership change, a
# ping) may go unanswered before its shard counts as hung: a paused or lost host answers
# nothing and closes nothing, and only this timeout notices it.
DEFAULT_COMMAND_TIMEOUT = 0.5


def command_timeout_for(hosts: Iterable[Mapping[str, Any]], preferred: float) -> float:
    """``preferred``, but never more than any host's socket timeout (the longest a reply may take)."""
    timeouts = [t for t in (host_socket_timeout(h) for h in hosts) if t is not None]
    return min([preferred, *timeouts])


def blocking_read_timeout(
    blocking_timeout: float, command_timeout: float, socket_timeout: float | None
) -> float:
    """The socket timeout of a blocking read: its wait plus one command's time, so that a shard
    that hung during the wait is noticed a command timeout after the wait ends (not after the
    whole socket timeout); within ``socket_timeout`` when there is one."""
    wanted = blocking_timeout + command_timeout
    return wanted if socket_timeout is None else min(wanted, socket_timeout)
