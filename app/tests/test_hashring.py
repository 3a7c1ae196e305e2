"""The hash ring: stable, balanced, and adding a shard moves few keys."""

import pytest

from channels_kit.layers.hashring import HashRing

KEYS = [f"specific.{n:05d}!" for n in range(10_000)]
SHARDS = [f"redis://redis-{n}:6379/0" for n in range(1, 6)]


def test_same_names_same_placement_in_any_order():
    forward = HashRing(SHARDS[:4])
    backward = HashRing(list(reversed(SHARDS[:4])))
    for key in KEYS[:500]:
        assert SHARDS[forward.index_for(key)] == list(reversed(SHARDS[:4]))[backward.index_for(key)]


def test_keys_spread_evenly_over_four_shards():
    ring = HashRing(SHARDS[:4])
    counts = [0] * 4
    for key in KEYS:
        counts[ring.index_for(key)] += 1
    assert min(counts) > 0.75 * len(KEYS) / 4, counts
    assert max(counts) < 1.25 * len(KEYS) / 4, counts


def test_adding_a_fifth_shard_moves_at_most_a_fifth_plus_five_percent():
    four, five = HashRing(SHARDS[:4]), HashRing(SHARDS)
    moved = [key for key in KEYS if SHARDS[four.index_for(key)] != SHARDS[five.index_for(key)]]
    assert len(moved) <= (1 / 5 + 0.05) * len(KEYS), len(moved)
    # Every key that moved went to the new shard: no reshuffling among the old ones.
    assert all(five.index_for(key) == 4 for key in moved)


def test_rejects_empty_and_duplicate_nodes():
    with pytest.raises(ValueError):
        HashRing([])
    with pytest.raises(ValueError):
        HashRing(["a", "a"])
    assert HashRing(["only"]).index_for("anything") == 0
