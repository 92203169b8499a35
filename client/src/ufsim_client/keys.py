"""Per-particle random keys: a SplitMix64 chain over (seed, event number, particle index).

The server draws all of a particle's randomness from its ``rng_key``, so the key must depend only on
the job seed, the event number and the particle's index within its event, never on batching::

    key = mix(mix(mix(seed) ^ event) ^ index)

where ``mix`` is SplitMix64's output function applied after adding the golden-ratio increment
(Steele, Lea, Flood 2014; the ``splitmix64`` of java.util.SplittableRandom):
``z += 0x9E3779B97F4A7C15; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB;
return z ^ z>>31``, all arithmetic modulo 2**64. Seeds, events and indices are taken modulo 2**64.

Primary vertex ``k`` of an event (the PV model's ``rng_key``) uses index ``PV_INDEX_OFFSET + k``, which
no particle index (int32) reaches, so PV and particle noise never share a key.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["PV_INDEX_OFFSET", "pv_keys", "rng_keys", "splitmix64"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def _as_u64(values: ArrayLike) -> NDArray[np.uint64]:
    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64).view(np.uint64) if arr.dtype.kind == "i" else arr.astype(np.uint64)
    if arr.dtype == object or arr.ndim == 0:
        return np.asarray(np.vectorize(lambda v: int(v) & _MASK, otypes=[np.uint64])(arr), dtype=np.uint64)
    raise TypeError(f"rng key components must be integers, not {arr.dtype}")


def splitmix64(values: ArrayLike) -> NDArray[np.uint64]:
    """SplitMix64 mixing of each value (vectorised, wrapping uint64 arithmetic)."""
    z = np.array(_as_u64(values), dtype=np.uint64, copy=True)
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def rng_keys(seed: int, event: ArrayLike, index: ArrayLike) -> NDArray[np.uint64]:
    """Keys for particles ``index`` of events ``event`` (broadcast together) in a job seeded ``seed``."""
    seed_key = splitmix64(np.asarray([int(seed) & _MASK], dtype=np.uint64))
    ev, idx = np.broadcast_arrays(_as_u64(event), _as_u64(index))
    return splitmix64(splitmix64(seed_key ^ ev) ^ idx)


PV_INDEX_OFFSET = 1 << 32
"""Added to a primary vertex's index within its event to form its key's index."""


def pv_keys(seed: int, event: ArrayLike, pv: ArrayLike) -> NDArray[np.uint64]:
    """Keys of primary vertices ``pv`` (index within the event) of events ``event``."""
    return rng_keys(seed, event, np.asarray(pv, dtype=np.int64) + PV_INDEX_OFFSET)
