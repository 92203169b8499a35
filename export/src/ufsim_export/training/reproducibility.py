"""Seeds and the validation split: what makes a rerun of a training give the same model."""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ufsim_client.keys import splitmix64

N_THREADS = 2


def seed_everything(seed: int, *, threads: int = N_THREADS) -> np.random.Generator:
    """Seed Python, numpy and torch, make torch deterministic on ``threads`` threads; return a numpy RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def event_split(
    source: NDArray[Any], event: NDArray[Any], *, val_fraction: float = 0.2, seed: int = 0
) -> NDArray[Any]:
    """Boolean mask of validation rows: whole (source, event) groups, chosen by a seeded hash.

    Event -1 (the particle gun, one particle per "event") is split per row by its position instead.
    The same (source, event) lands on the same side in every file, so an event's particles and its
    reconstructed tracks are on the same side.
    """
    source = np.asarray(source).astype(str)
    event = np.asarray(event, np.int64)
    names, codes = np.unique(source, return_inverse=True)
    source_ids = np.array([zlib.crc32(n.encode()) for n in names], np.uint64)[codes]
    index = np.where(event == -1, np.arange(len(event), dtype=np.int64) | (1 << 40), event)
    key = (
        (source_ids << np.uint64(42)) ^ index.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    )
    return (splitmix64(key) >> np.uint64(11)).astype(np.float64) * 2.0**-53 < val_fraction
