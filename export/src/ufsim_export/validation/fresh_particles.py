"""Fresh particles for validation: new Pythia runs no model was trained on, labelled by the library.

The report's held-out split comes from the same generator runs as the training particles (other events);
these come from Pythia runs of their own (cards in ``cards/``, seeds no training uses), so the report also
measures fidelity on particles the models have never seen the like of. Particles go through the served
``features`` graph (the features the ensemble computes for them), the library gives their acceptance and
track-class probabilities, and reconstructed tracks are drawn and labelled as for the held-out split
(:func:`~ufsim_export.training.library.labelled_set`). The particle table is cached beside the labelled
sets, keyed by everything it depends on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ufsim_client.readers.pythia import pythia_records

from ..files import replacing
from ..repository.gun import compute_features
from ..spec import default_spec_path, load_spec
from ..training.library import (
    DEFAULT_CACHE,
    LabelledSet,
    labelled_set,
    library_path,
    probabilities,
)
from ..training.tracking import EFFICIENCY_LABELS, Columns

CARDS = Path(__file__).resolve().parent / "cards"


@dataclass(frozen=True)
class FreshSource:
    """One Pythia run: its card (a file in ``cards/``), job seed and number of events."""

    name: str
    card: str
    seed: int
    events: int


FULL_SOURCES = (
    FreshSource("pythia_minbias", "minbias.cmnd", 101, 4_000),
    FreshSource("pythia_bbbar", "bbbar.cmnd", 102, 1_600),
)
"""360,768 simulated particles (227,689 minimum-bias, 133,079 b-bbar: the training particles' 5 : 3)."""
QUICK_SOURCES = (
    FreshSource("pythia_minbias", "minbias.cmnd", 101, 40),
    FreshSource("pythia_bbbar", "bbbar.cmnd", 102, 20),
)
FRESH_SEED = 20_261_204
"""Labelled-set seed (library noise) of the fresh tracks: no training or other report set uses it."""
FULL_TRACKS = 500_000
"""Fresh tracks scored (each particle drawn about 4 times on average, with its own noise each time)."""


def pythia_particles(sources: tuple[FreshSource, ...]) -> tuple[dict[str, NDArray[Any]], NDArray[Any]]:
    """The ensemble's particle inputs (pid, origin, momentum, n_tracks) of every final-state particle.

    Returns the inputs and each particle's source index.
    """
    pid, origin, momentum, n_tracks, source = [], [], [], [], []
    for k, src in enumerate(sources):
        for p, mom, org in pythia_records(CARDS / src.card, seed=src.seed, n_events=src.events):
            pid.append(p)
            momentum.append(mom)
            origin.append(org)
            n_tracks.append(np.full(len(p), len(p), np.float32))
            source.append(np.full(len(p), k, np.int32))
    inputs = {
        "pid": np.concatenate(pid).astype(np.int32).reshape(-1, 1),
        "origin": np.concatenate(origin).astype(np.float32),
        "momentum": np.concatenate(momentum).astype(np.float32),
        "n_tracks": np.concatenate(n_tracks).reshape(-1, 1),
    }
    return inputs, np.concatenate(source)


def _cache_key(data_dir: Path, sources: tuple[FreshSource, ...]) -> str:
    digest = hashlib.sha256()
    digest.update(library_path(data_dir).read_bytes())
    digest.update(default_spec_path().read_bytes())
    digest.update(metadata.version("pythia8mc").encode())
    for src in sources:
        digest.update(f"{src}".encode())
        digest.update((CARDS / src.card).read_bytes())
    return digest.hexdigest()[:16]


def particle_frame(
    data_dir: Path, sources: tuple[FreshSource, ...], *, cache_dir: Path | None = DEFAULT_CACHE
) -> pd.DataFrame:
    """Simulated particles of ``sources``: the 12 tracking features and the library's probabilities.

    Columns: ``source``, the spec's ``tracking_features``, ``acceptance`` and the four track classes.
    """
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"fresh-particles-{_cache_key(data_dir, sources)}.parquet"
        if path.is_file():
            return pd.read_parquet(path)
    inputs, source = pythia_particles(sources)
    features = compute_features(load_spec(default_spec_path()), inputs)
    simulated = features["species"].reshape(-1) > 0
    X = features["tracking_features"][simulated]
    frame = pd.DataFrame(X.astype(np.float64), columns=list(Columns.from_spec().tracking_features))
    frame.insert(0, "source", np.array([s.name for s in sources])[source[simulated]])
    acceptance, efficiency = probabilities(data_dir, X)
    frame["acceptance"] = acceptance
    frame[list(EFFICIENCY_LABELS)] = efficiency
    if path is not None:
        with replacing(path) as tmp:
            frame.to_parquet(tmp, index=False)
    return frame


def fresh_tracks(
    data_dir: Path, sources: tuple[FreshSource, ...], n: int, *, cache_dir: Path | None = DEFAULT_CACHE
) -> tuple[pd.DataFrame, LabelledSet]:
    """The fresh particles and ``n`` reconstructed tracks drawn from them, labelled by the library."""
    frame = particle_frame(data_dir, sources, cache_dir=cache_dir)
    tracks = labelled_set(data_dir, frame, n, seed=FRESH_SEED, cache_dir=cache_dir)
    return frame, tracks
