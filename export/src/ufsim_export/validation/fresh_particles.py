"""Fresh particles for validation: samples no model was trained on, labelled by the library.

The report's held-out split comes from the same generator runs as the training particles (other events).
These come from elsewhere: Pythia runs of their own (cards in ``cards/``, seeds no training uses) and the
shared HepMC2 bunch crossings (LHCb's own generator output, as the main job reads it), so the report also
measures fidelity on particles the models have never seen the like of. Particles go through the served
``features`` graph (the features the ensemble computes for them), the library gives their acceptance and
track-class probabilities, and reconstructed tracks are drawn and labelled as for the held-out split
(:func:`~ufsim_export.training.library.labelled_set`). The particle table is cached beside the labelled
sets, keyed by everything it depends on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ufsim_client.readers.hepmc import read_hepmc
from ufsim_client.readers.pythia import pythia_records

from ..files import replacing
from ..graphs.steps import compute_features
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
    """One Pythia run (``card``: a file in ``cards/``, job ``seed``, ``events``) or HepMC files.

    With ``hepmc`` set, the source is the files matching that glob in the data's sibling ``lamarr-hepmc2``.
    """

    name: str
    card: str = ""
    seed: int = 0
    events: int = 0
    hepmc: str = ""

    def files(self, data_dir: Path) -> list[Path]:
        """The inputs this source reads: its card, or its HepMC files (which must exist)."""
        if not self.hepmc:
            return [CARDS / self.card]
        found = sorted((Path(data_dir).parent / HEPMC_FOLDER).glob(self.hepmc))
        if not found:
            raise FileNotFoundError(f"{Path(data_dir).parent / HEPMC_FOLDER}/{self.hepmc}: no HepMC files")
        return found

    def describe(self) -> str:
        """One line for the report."""
        if self.hepmc:
            return f"{self.name} (`{HEPMC_FOLDER}/{self.hepmc}`)"
        return f"{self.name} ({self.events:,} events, `{self.card}`, seed {self.seed})"

    def records(self, data_dir: Path) -> Iterator[tuple[NDArray[Any], NDArray[Any], NDArray[Any]]]:
        """(pid, momentum [MeV], origin [mm]) of each event's final-state particles."""
        if not self.hepmc:
            yield from pythia_records(CARDS / self.card, seed=self.seed, n_events=self.events)
            return
        for event in read_hepmc(self.files(data_dir)):
            yield event.pid, event.momentum, event.origin


HEPMC_FOLDER = "lamarr-hepmc2"
PYTHIA_SOURCES = (
    FreshSource("pythia_minbias", "minbias.cmnd", 101, 4_000),
    FreshSource("pythia_bbbar", "bbbar.cmnd", 102, 1_600),
)
"""360,768 simulated particles (227,689 minimum-bias, 133,079 b-bbar: the training particles' 5 : 3)."""
QUICK_PYTHIA_SOURCES = (
    FreshSource("pythia_minbias", "minbias.cmnd", 101, 40),
    FreshSource("pythia_bbbar", "bbbar.cmnd", 102, 20),
)
HEPMC_SOURCES = (FreshSource("hepmc2_crossings", hepmc="evt*.mc2"),)
"""The 10 shared bunch crossings (each one signal B among 1-6 collisions): 1,682 particles to simulate."""
FRESH_SEED = 20_261_204
"""Labelled-set seed (library noise) of the fresh tracks: no training or other report set uses it."""
FULL_TRACKS = 500_000
"""Fresh tracks scored per sample, each with its own noise: a few per Pythia particle, hundreds per HepMC2
particle (so those test the distributions at fixed particles)."""


def source_particles(
    data_dir: Path, sources: tuple[FreshSource, ...]
) -> tuple[dict[str, NDArray[Any]], NDArray[Any]]:
    """The ensemble's particle inputs (pid, origin, momentum, n_tracks) of every final-state particle.

    Returns the inputs and each particle's source index.
    """
    pid, origin, momentum, n_tracks, source = [], [], [], [], []
    for k, src in enumerate(sources):
        for p, mom, org in src.records(data_dir):
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
        for path in src.files(data_dir):
            digest.update(path.read_bytes())
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
    inputs, source = source_particles(data_dir, sources)
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
