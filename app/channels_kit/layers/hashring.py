"""A consistent-hash ring with virtual nodes.

Each shard owns many points on a 64-bit ring; a key belongs to the shard owning
the first point at or after the key's hash. Adding an (N+1)th shard moves only
about 1/(N+1) of the keys, all of them to the new shard, unlike the modulo
split channels_redis uses, which moves most keys.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

DEFAULT_VNODES = 160


def hash64(value: str | bytes) -> int:
    """A stable 64-bit hash (the same in every process and Python version)."""
    if isinstance(value, str):
        value = value.encode("utf8")
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "big")


class HashRing:
    """Maps keys to node indexes; nodes are named so that positions survive reordering."""

    def __init__(self, node_names: Sequence[str], vnodes: int = DEFAULT_VNODES) -> None:
        if not node_names:
            raise ValueError("a hash ring needs at least one node")
        if len(set(node_names)) != len(node_names):
            raise ValueError(f"node names must be unique: {list(node_names)}")
        points = sorted(
            (hash64(f"{name}#{replica}"), index)
            for index, name in enumerate(node_names)
            for replica in range(vnodes)
        )
        self.size = len(node_names)
        self._positions = [position for position, _ in points]
        self._indexes = [index for _, index in points]

    def index_for(self, key: str | bytes) -> int:
        """The index of the node that owns ``key``."""
        if self.size == 1:
            return 0
        slot = bisect.bisect_left(self._positions, hash64(key))
        return self._indexes[slot % len(self._indexes)]
