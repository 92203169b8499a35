"""``tracking_resolution`` and ``tracking_covariance`` fitted to the Lamarr library's own function.

Lamarr's generators are deterministic maps (conditions, 128 N(0, 1) noise) -> outputs. With the library
(:mod:`.library`) we label as many (conditions, noise) pairs as we like, so the student (Lamarr's own
architecture with its quantile preprocessing built in, :class:`~.common.QuantileResidualGenerator`) is
regressed on the teacher's map: same conditions + same noise -> same outputs. Matching the map for
N(0, 1) noise makes every output distribution right for any N(0, 1) noise, and gives per-track parity.

The served covariance step is conditioned on the generated chi2PerDoF, nDoF_f and ghostProb; the
student learns it on the library's own resolution outputs of the same track (Lamarr's chain).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from .common import (
    N_THREADS,
    QuantileResidualGenerator,
    fit_deterministic,
    fit_energy,
    git_commit,
    library_versions,
    load_generator,
    save_generator,
    seed_everything,
    sha256_file,
    sha256_files,
)
from .library import DEFAULT_CACHE, LabelledSet, labelled_set, library_path

FLAG_COLUMNS = frozenset({"mc_is_e", "mc_is_mu", "mc_is_h", "is_long", "is_upstream", "is_downstream"})
TRAIN_SEED_OFFSET = 1
LABEL_ROUND_STRIDE = 100
VAL_SEED_OFFSET = 7_001
"""Labelled-set seeds: training ``seed + 1 + 100 x label_round``, held-out ``seed + 7001`` (the report uses
its own)."""
VERIFY_RTOL = 1e-4
"""Training-time ONNX check, |Δ| <= 1e-4 max(|y|, σ): float32 far tails of the inverse quantile map (steep
segments) reach a few 1e-5 σ; the report checks the exact target (1e-5 relative, or 1e-4 σ in tails)."""


@dataclass(frozen=True)
class DistillConfig:
    """Student size, labelled-set sizes and the fit schedule of one generator."""

    width: int = 128
    n_residual: int = 10
    n_train: int = 1_000_000
    n_val: int = 20_000
    epochs: int = 5
    batch_size: int = 512
    lr: float = 2e-3
    n_knots: int = 201
    energy_rows: int = 300_000
    energy_epochs: int = 1
    energy_lr: float = 3e-4
    warm_start: bool = False
    """Continue from the committed ``<step>.pt`` (its transforms and weights) instead of a fresh student."""
    label_round: int = 0
    """Which labelled sets to train on: each round draws fresh tracks and noise (its own library seeds), so
    warm-started rounds see new labels instead of refitting the same sample (train-val gap)."""
    label_sets: int = 1
    """Labelled sets of ``n_train`` tracks in this round (each cached on its own, so a round can grow)."""

    def label_seeds(self, seed: int) -> list[int]:
        """Library seeds of this round's training labels, one per labelled set."""
        first = seed + TRAIN_SEED_OFFSET + LABEL_ROUND_STRIDE * self.label_round
        return [first + k for k in range(self.label_sets)]


FULL_RESOLUTION = DistillConfig(
    n_residual=10,
    n_train=2_000_000,
    label_sets=2,
    epochs=20,
    batch_size=1024,
    lr=2e-4,
    warm_start=True,
    label_round=1,
)
FULL_COVARIANCE = replace(FULL_RESOLUTION, n_residual=8, energy_epochs=0, epochs=12)
"""Both continue the committed model (manifest ``training.warm_start``: parent sha256 and schedule, nested):
from scratch 5 epochs at batch 512 / lr 2e-3, then 12 at 1024 / 1e-3, then 16 at 1024 / 5e-4 on the same
1M labels (round 0), then 20 at 3e-4 on 4M fresh ones (round 1), then 20 at 2e-4 on the same 4M (one-cycle
each; round 1 ended with training loss = validation loss), then the covariance 12 more as configured here;
the resolution's energy fine-tune follows its first round and every round from the third."""
QUICK_RESOLUTION = DistillConfig(
    width=32, n_residual=2, n_train=6_000, n_val=2_000, epochs=1, n_knots=51, energy_rows=2_000
)
QUICK_COVARIANCE = DistillConfig(
    width=32, n_residual=2, n_train=6_000, n_val=2_000, epochs=1, n_knots=51, energy_rows=2_000
)


def student_inputs(step: str, labelled: LabelledSet) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """(conditions in the spec's column order, the library's noise, the library's outputs) for ``step``."""
    if step == "tracking_resolution":
        return labelled.conditions, labelled.noise("resolution"), labelled.resolution
    if step == "tracking_covariance":
        cond = np.column_stack([labelled.conditions, labelled.resolution[:, 6:9]]).astype(np.float32)
        return cond, labelled.noise("covariance"), labelled.covariance
    raise ValueError(f"step {step!r}: expected tracking_resolution or tracking_covariance")


def parity(model: NDArray[Any], library: NDArray[Any], names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per-track agreement for the same conditions and noise: median and 99th percentile of |Δ|/σ.

    Per output; σ is the library output's standard deviation.
    """
    sigma = np.maximum(np.std(library, axis=0), 1e-30)
    rel = np.abs(model - library) / sigma
    return {
        n: {
            "median": round(float(np.median(rel[:, j])), 5),
            "p99": round(float(np.percentile(rel[:, j], 99)), 5),
        }
        for j, n in enumerate(names)
    }


def energy_fine_tune(
    module: QuantileResidualGenerator,
    conditions: NDArray[Any],
    outputs: NDArray[Any],
    config: DistillConfig,
    *,
    seed: int,
    desc: str,
) -> dict[str, Any]:
    """Restore the spread the regression loses where it cannot resolve the map: energy score, fresh noise.

    Where the student misses part of the noise dependence, the MSE optimum is the conditional mean of the
    unresolved part, narrower than the library's distribution; a short energy-score fit (a proper scoring
    rule for the conditional distribution) on the first ``energy_rows`` tracks widens it back.
    """
    n = min(config.energy_rows, len(conditions))
    if config.energy_epochs == 0:
        return {"skipped": "energy_epochs = 0"}
    history = fit_energy(
        module.core,
        module.core_conditions(conditions[:n]),
        module.gaussianise_outputs(outputs[:n]),
        noise_dim=module.noise_dim,
        epochs=config.energy_epochs,
        batch_size=1024,
        lr=config.energy_lr,
        seed=seed + 1,
        desc=f"{desc} (energy)",
    )
    module.eval()
    return {
        "loss": "energy score of the standardised Gaussianised outputs, fresh N(0,1) noise",
        "rows": n,
        "train_loss": [round(v, 5) for v in history.train],
        "fit_seconds": round(history.seconds, 1),
    }


def train_step(
    step: str,
    data_dir: Path,
    out_dir: Path,
    particles: pd.DataFrame,
    validation_mask: NDArray[Any],
    cond_names: tuple[str, ...],
    out_names: tuple[str, ...],
    config: DistillConfig,
    *,
    seed: int,
    data_sha: str,
    cache_dir: Path | None = DEFAULT_CACHE,
    threads: int = N_THREADS,
    parent_dir: Path | None = None,
) -> Path:
    """Label (or reuse the cached labels), fit the student, verify and write ``<step>.onnx/.pt/.json``.

    The fit runs on ``threads`` torch threads; a warm start reads ``<step>.pt`` from ``parent_dir`` (default
    ``out_dir``, the committed model it replaces).
    """
    start = time.perf_counter()
    seed_everything(seed, threads=threads)
    train_particles = particles[~validation_mask].reset_index(drop=True)
    val_particles = particles[validation_mask].reset_index(drop=True)
    label_start = time.perf_counter()
    train_sets = [
        labelled_set(data_dir, train_particles, config.n_train, seed=s, cache_dir=cache_dir)
        for s in config.label_seeds(seed)
    ]
    val_set = labelled_set(data_dir, val_particles, config.n_val, seed=seed + VAL_SEED_OFFSET,
                           cache_dir=cache_dir)  # fmt: skip
    label_seconds = time.perf_counter() - label_start
    C, Z, Y = (
        np.concatenate(parts) for parts in zip(*(student_inputs(step, t) for t in train_sets), strict=True)
    )
    del train_sets
    vC, vZ, vY = student_inputs(step, val_set)
    continuous = [i for i, c in enumerate(cond_names) if c not in FLAG_COLUMNS]
    torch.manual_seed(seed)
    parent = warm_start_parent(parent_dir or out_dir, step, config)
    if parent is not None:
        module = load_generator(parent.path)
        shape = (module.core.inp.out_features, len(module.core.blocks))
        if shape != (config.width, config.n_residual):
            raise ValueError(f"{parent.path}: width x residual blocks {shape}, config says "
                             f"{(config.width, config.n_residual)}")  # fmt: skip
    else:
        module = QuantileResidualGenerator(
            C.shape[1], Z.shape[1], Y.shape[1], width=config.width, n_residual=config.n_residual,
            continuous=continuous, n_knots=config.n_knots,
        )  # fmt: skip
        module.fit_transforms(C, Y)
    history = fit_deterministic(
        module.core,
        module.core_conditions(C),
        Z,
        module.gaussianise_outputs(Y),
        val=(module.core_conditions(vC), vZ, module.gaussianise_outputs(vY)),
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=seed,
        desc=step,
    )
    del Z
    energy = energy_fine_tune(module, C, Y, config, seed=seed, desc=step)
    with torch.no_grad():
        predicted = module(torch.as_tensor(vC), torch.as_tensor(vZ)).numpy()
    manifest: dict[str, Any] = {
        "step": step,
        "inputs": list(cond_names),
        "outputs": list(out_names),
        "data": "lamarr-trk-2016MU: the shared particles' conditions, labelled by the Lamarr 2016 MagUp "
        "tracking library itself (ufsim_export.training.library)",
        "data_sha256": data_sha,
        "seed": seed,
        "git_commit": git_commit(),
        "libraries": library_versions(),
        "config": asdict(config),
        "validation_split": "20 % of events (source, event), seeded hash; never trained on",
        "architecture": (
            f"quantile transform of {len(continuous)} continuous conditions -> concat(conditions, "
            f"{vZ.shape[1]} noise) -> Dense({config.width}, tanh) -> "
            f"{config.n_residual} x residual tanh({config.width}) -> Dense({len(out_names)}) -> inverse "
            "quantile transform per output"
        ),
        "training": {
            "method": "regression of the library's deterministic map (conditions, noise) -> outputs: "
            "same conditions and noise as the library got, MSE in the Gaussianised output space",
            "labels": f"{config.n_train * config.label_sets:,} reconstructed tracks (particles drawn with "
            "P(acc) x P(reco), track type from the library's class probabilities), library seeds "
            f"{', '.join(map(str, config.label_seeds(seed)))}",
            "noise": "N(0,1), Philox keyed by (labelled-set seed, stream, chunk); regenerated, not stored",
            "labelling_seconds": round(label_seconds, 1),
            "train_loss": [round(v, 5) for v in history.train],
            "val_loss": [round(v, 5) for v in history.val],
            "fit_seconds": round(history.seconds, 1),
            "energy_fine_tune": energy,
            "warm_start": None if parent is None else parent.record(),
        },
        "validation": {
            "rows": len(vC),
            "labels": f"validation-split particles, library seed {seed + VAL_SEED_OFFSET} (fresh noise)",
            "parity_abs_delta_over_sigma": parity(predicted, vY, out_names),
        },
    }
    rows = np.resize(np.arange(len(vC)), max(len(vC), 10_000))
    path, _ = save_generator(
        module, out_dir, step, conditions=vC[rows], noise_dim=vZ.shape[1], manifest=manifest, seed=seed,
        rtol=VERIFY_RTOL,
    )  # fmt: skip
    _set_training_seconds(path, time.perf_counter() - start)
    return path


@dataclass(frozen=True)
class Parent:
    """The committed model a warm start continues from, and what it records of its own training."""

    path: Path
    sha256: str
    manifest: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The manifest entry: the parent's sha256, its schedule and its own parents (the full history)."""
        return {
            "parent": self.path.name,
            "parent_sha256": self.sha256,
            "parent_config": self.manifest.get("config"),
            "parent_training": {
                k: self.manifest.get("training", {}).get(k)
                for k in ("train_loss", "val_loss", "fit_seconds", "energy_fine_tune", "warm_start")
            },
            "parent_git_commit": self.manifest.get("git_commit"),
        }


def warm_start_parent(model_dir: Path, step: str, config: DistillConfig) -> Parent | None:
    """The committed ``<step>.pt`` and its manifest when ``config.warm_start``; a clear error if absent."""
    if not config.warm_start:
        return None
    path = Path(model_dir) / f"{step}.pt"
    manifest_path = path.with_suffix(".json")
    if not path.is_file() or not manifest_path.is_file():
        raise FileNotFoundError(f"{path}: warm start needs the committed {step}.pt and {step}.json")
    return Parent(path, sha256_file(path), json.loads(manifest_path.read_text()))


def _set_training_seconds(path: Path, seconds: float) -> None:
    manifest_path = path.with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["training_seconds"] = round(seconds, 1)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def library_sha(data_dir: Path) -> str:
    """SHA-256 of the reference library (part of the labels' provenance)."""
    return sha256_files([library_path(data_dir)])
