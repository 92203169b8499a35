"""Gun particles and the feature rows the ensemble's GBDTs receive for them.

Re-converted GBDTs (``gbdt_implementation``) are verified on these rows before a repository is
written, so they live with the writer, not with the test stand-ins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..graphs.steps import compute_features
from ..spec import PipelineSpec, StepSpec, default_spec_path, load_spec


def gun_pdg_ids(spec: PipelineSpec) -> NDArray[Any]:
    """PDG ids the gun shoots: each simulated species of the spec and its antiparticle."""
    return np.array([sign * s.pdg for s in spec.species for sign in (1, -1)], dtype=np.int32)


def synthetic_particles(n: int, seed: int, spec: PipelineSpec | None = None) -> dict[str, NDArray[Any]]:
    """Particles from a simple gun: species uniform, log10 p in [3, 5.5], eta in [1, 6]."""
    pdg_ids = gun_pdg_ids(spec or load_spec(default_spec_path()))
    rng = np.random.default_rng(seed)
    p = 10 ** rng.uniform(3.0, 5.5, n)
    eta = rng.uniform(1.0, 6.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    pt = p / np.cosh(eta)
    momentum = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)
    origin = rng.normal([0.8, -0.2, 0.0], [0.05, 0.05, 40.0], (n, 3))
    return {
        "pid": rng.choice(pdg_ids, n).reshape(n, 1).astype(np.int32),
        "origin": origin.astype(np.float32),
        "momentum": momentum.astype(np.float32),
        "n_tracks": rng.uniform(10, 300, (n, 1)).astype(np.float32),
    }


def gbdt_inputs(step: StepSpec, feats: dict[str, NDArray[Any]]) -> NDArray[Any]:
    """The feature matrix a GBDT step receives, from the ``features`` graph's outputs."""
    parts = []
    for ref in step.tensor_inputs:
        x = feats[ref.name]
        parts.append(x[:, list(ref.columns)] if ref.columns is not None else x)
    rows: NDArray[np.float32] = np.concatenate(parts, axis=1).astype(np.float32)
    return rows


def served_gbdt_rows(spec: PipelineSpec, n: int, seed: int) -> dict[str, NDArray[Any]]:
    """GBDT step name -> the feature rows it receives in the ensemble, for ``n`` gun particles."""
    feats = compute_features(spec, synthetic_particles(n, seed, spec))
    return {step.name: gbdt_inputs(step, feats) for step in spec.learnt_steps() if step.kind == "gbdt"}
