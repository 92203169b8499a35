from __future__ import annotations

import numpy as np

from ufsim_client.keys import rng_keys, splitmix64

MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_splitmix64_matches_reference() -> None:
    # SplitMix64 seeded with 0 yields 0xE220A8397B1DCDAF first (java.util.SplittableRandom).
    assert int(splitmix64([0])[0]) == 0xE220A8397B1DCDAF
    values = [0, 1, 2**63, MASK]
    assert [int(v) for v in splitmix64(np.array(values, dtype=np.uint64))] == [_mix(v) for v in values]


def test_rng_keys_are_the_documented_chain() -> None:
    for seed, event, index in [(0, 0, 0), (42, 7, 3), (2**40, 123456, 9999), (-1, 5, 1)]:
        expected = _mix(_mix(_mix(seed & MASK) ^ event) ^ index)
        assert int(rng_keys(seed, [event], [index])[0]) == expected


def test_rng_keys_do_not_depend_on_grouping() -> None:
    events = np.repeat(np.arange(50), 20)
    index = np.tile(np.arange(20), 50)
    together = rng_keys(7, events, index)
    apart = np.concatenate([rng_keys(7, events[i : i + 13], index[i : i + 13]) for i in range(0, 1000, 13)])
    np.testing.assert_array_equal(together, apart)
    assert together.dtype == np.uint64
    assert len(np.unique(together)) == 1000


def test_rng_keys_change_with_seed_event_and_index() -> None:
    base = rng_keys(1, [2], [3])[0]
    assert rng_keys(2, [2], [3])[0] != base
    assert rng_keys(1, [3], [3])[0] != base
    assert rng_keys(1, [2], [4])[0] != base
    assert rng_keys(1, [3], [2])[0] != base
