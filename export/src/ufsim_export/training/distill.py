"""``tracking_resolution`` and ``tracking_covariance`` fitted to the Lamarr library's own function.

Lamarr's generators are deterministic maps (conditions, 128 N(0, 1) noise) -> outputs. With the library
(:mod:`.library`) we label as many (conditions, noise) pairs as we like, so the student (Lamarr's own
architecture with its quantile preprocessing built in,
:class:`~ufsim_export.models.quantile.QuantileResidualGenerator`) is regressed on the teacher's map: same
conditions + same noise -> same outputs. Matching the map for N(0, 1) noise makes every output distribution
right for any N(0, 1) noise, and gives per-track parity.

The served covariance step is conditioned on the generated chi2PerDoF, nDoF_f and ghostProb; the
student learns it on the library's own resolution outputs of the same track (Lamarr's chain).

What limits per-track parity is how closely the regression follows the map: about 10x smaller errors than
these CPU budgets reach (fits in the library's own spaces, wider and longer students and Sobolev training
were measured: ``export/reports/experiments.md``).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from ..convert.verify import onnx_session, run_chunks
from ..metrics import MIN_BIN_ROWS, TARGET_BIN_ROWS
from .artifacts import save_generator
from .fitting import FitHistory, effective_rows, fit_deterministic, phase_space_weights, refine_lbfgs
from .library import DEFAULT_CACHE, LabelledSet, labelled_set, library_path, log10p_eta
from .provenance import git_commit, library_versions, set_training_seconds, sha256_file, sha256_files
from .reproducibility import N_THREADS, seed_everything
from .saved import load_quantile_generator
from .selection import Score, keep_best, worst_bins
from .two_stage import (
    LIBRARY_NOISE,
    PRECISIONS,
    SPREAD_NOISE,
    TwoStageGenerator,
    fit_spread,
    regression_outputs,
    two_stage_noise_dim,
)

FLAG_COLUMNS = frozenset({"mc_is_e", "mc_is_mu", "mc_is_h", "is_long", "is_upstream", "is_downstream"})
TRAIN_SEED_OFFSET = 1
LABEL_ROUND_STRIDE = 100
VAL_SEED_OFFSET = 7_001
SELECTION_SEED_OFFSET = 9_001
"""Labelled-set seeds: training ``seed + 1 + 100 x label_round``, held-out ``seed + 7001``, the candidates'
selection sample ``seed + 9001`` (the report uses its own)."""
VERIFY_RTOL = 2e-4
"""Training-time ONNX check (a guard against export bugs), |Δ| <= 2e-4 max(|y|, σ); the report checks the
exact target (1e-5 relative, or 1e-4 σ in tails). In float32 throughout, the core's rounding (|Δz| up to
2e-5 after the regression and the spread chain; the inverse map adds 1.5e-6), amplified by the steep far
tails of the inverse quantile maps, reached 1.1e-4 of |y| in 1 of 20,000 knot-drawn rows (dp 151,148
against 151,132 MeV) and 1.1e-5 on the report's held-out tracks, as much as PyTorch's own float32 is off
float64: hence :attr:`DistillConfig.regression_precision`."""


@dataclass(frozen=True)
class DistillConfig:
    """Student size, labelled-set sizes and the fit schedule of one generator's two stages."""

    width: int = 128
    n_residual: int = 10
    n_train: int = 1_000_000
    n_val: int = 20_000
    epochs: int = 5
    """Regression epochs; 0 keeps the warm start's regression as it is and fits only the spread chain."""
    batch_size: int = 512
    lr: float = 2e-3
    n_knots: int = 201
    lbfgs_chunks: int = 0
    """L-BFGS refinement of the regression after its Adam epochs (:func:`~.fitting.refine_lbfgs`): chunks
    of fresh training rows; 0 for none."""
    lbfgs_rows: int = 200_000
    lbfgs_iterations: int = 15
    """L-BFGS iterations per chunk: few enough that no chunk is overfitted."""
    spread_width: int = 48
    spread_residual: int = 2
    """Spread stages of 48 units and 2 residual layers: 64 x 3 gained 0.003-0.005 of AUC at 1.5x the CPU
    (``export/reports/experiments.md``)."""
    spread_rows: int = 1_000_000
    """Training tracks the spread chain is fitted on (the first ones of the round's labels)."""
    spread_steps: int = 24_000
    """Energy-score steps per spread stage (batch 512)."""
    spread_balance: float = 0.0
    """Exponent of the spread chain's (p, η) balancing weights (:func:`~.fitting.phase_space_weights`);
    0 for unit weights."""
    label_balance: float = 0.0
    """Exponent of the (p, η) balancing of the round's training draw (:func:`~.library.labelled_set`):
    the tracks themselves are drawn balanced, so sparse corners get more distinct labelled tracks instead
    of heavier weights; 0 for the natural draw. The validation labels are always drawn naturally."""
    warm_start: bool = False
    """Continue from the committed ``<step>.pt`` (transforms and regression) instead of a fresh student."""
    label_round: int = 0
    """Which labelled sets to train on: each round draws fresh tracks and noise (its own library seeds), so
    warm-started rounds see new labels instead of refitting the same sample (train-val gap)."""
    label_sets: int = 1
    """Labelled sets of ``n_train`` tracks in this round (each cached on its own, so a round can grow)."""
    regression_precision: str = "float32"
    """Arithmetic of the saved and served regression stage (``float32`` or ``float64``; fitted in float32
    either way): the full configs say why (:data:`FULL_COVARIANCE`, which documents both)."""
    candidates: int = 1
    """Runs (seeds ``seed``, ``seed + 1``, ...) fitted; the best on the selection sample is kept
    (:func:`train_selected`). The tracking generators fit one: their runs differ by less than the sparse bins'
    sampling noise, so a 1M-track selection sample cannot rank them (``export/reports/experiments.md``)."""
    selection_rows: int = 1_000_000
    """Library-labelled validation-split tracks the candidates are scored on."""

    def __post_init__(self) -> None:
        if self.candidates < 1:
            raise ValueError(f"DistillConfig.candidates={self.candidates}: need at least one run")
        if self.regression_precision not in PRECISIONS:
            raise ValueError(
                f"DistillConfig.regression_precision={self.regression_precision!r}: accepted "
                f"{', '.join(PRECISIONS)}"
            )

    def label_seeds(self, seed: int) -> list[int]:
        """Library seeds of this round's training labels, one per labelled set."""
        first = seed + TRAIN_SEED_OFFSET + LABEL_ROUND_STRIDE * self.label_round
        return [first + k for k in range(self.label_sets)]


FULL_RESOLUTION = DistillConfig(
    n_residual=10,
    n_train=2_000_000,
    label_sets=1,
    epochs=6,
    batch_size=1024,
    lr=2e-4,
    warm_start=True,
    label_round=2,
    label_balance=0.75,
    spread_rows=2_000_000,
    regression_precision="float64",
)
FULL_COVARIANCE = replace(
    FULL_RESOLUTION, n_residual=8, epochs=0, spread_steps=40_000, regression_precision="float32"
)
"""The resolution refits its committed regression by MSE (6 epochs at lr 2e-4), the covariance keeps its
own (``epochs=0``); each then fits its spread chain on the regression's residuals. Both train on 2M
library-labelled tracks drawn (p, η)-balanced (``label_balance`` 0.75, round 2, library seed 201) at unit
weights; the covariance's 15 spread stages fit 40,000 steps each. The resolution's regression runs in
float64 in the graph (float32's rounding, amplified by the far tails' inverse quantile maps, missed the
1e-5 ONNX target), at 2.2x that model's CPU. The regressions' history and every variant measured:
``export/reports/experiments.md``."""
QUICK_RESOLUTION = DistillConfig(
    width=32, n_residual=2, n_train=6_000, n_val=2_000, epochs=1, n_knots=51, spread_width=16,
    spread_residual=1, spread_rows=6_000, spread_steps=50, lbfgs_chunks=1, lbfgs_rows=3_000,
    lbfgs_iterations=5, spread_balance=0.5, regression_precision="float64",
)  # fmt: skip
QUICK_COVARIANCE = replace(QUICK_RESOLUTION, regression_precision="float32")


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
    drawn = config.label_balance
    train_sets = [
        labelled_set(data_dir, train_particles, config.n_train, seed=s, cache_dir=cache_dir, balance=drawn)
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
    module = _student(parent, config, C, Y, continuous)
    history, refined = FitHistory(), FitHistory()
    if config.epochs or config.lbfgs_chunks:
        # the regression's spaces: quantile-transformed conditions, Gaussianised outputs
        x, targets = module.core_conditions(C), module.gaussianise_outputs(Y)
        val = (module.core_conditions(vC), vZ, module.gaussianise_outputs(vY))
        regression = module.stages.regression
        if config.epochs:
            history = fit_deterministic(
                regression, x, Z, targets, val=val, epochs=config.epochs, batch_size=config.batch_size,
                lr=config.lr, seed=seed, desc=step,
            )  # fmt: skip
        if config.lbfgs_chunks:
            refined = refine_lbfgs(
                regression, x, Z, targets, val=val, chunks=config.lbfgs_chunks, rows=config.lbfgs_rows,
                iterations=config.lbfgs_iterations, seed=seed, desc=f"{step} L-BFGS",
            )  # fmt: skip
        del x, targets
    n_spread = min(config.spread_rows, len(C))
    weights = None
    balance: dict[str, Any] = {"exponent": config.spread_balance, "effective_rows": None, "max_weight": None}
    if config.spread_balance:
        weights = phase_space_weights(*log10p_eta(C[:n_spread]), exponent=config.spread_balance)
        balance |= {"effective_rows": effective_rows(weights),
                    "max_weight": round(float(weights.max()), 3)}  # fmt: skip
    spread_start = time.perf_counter()
    spread = fit_spread(
        module, C[:n_spread], Z[:n_spread], Y[:n_spread], weights=weights, steps=config.spread_steps,
        seed=seed, desc=f"{step} spread",
    )  # fmt: skip
    spread_seconds = time.perf_counter() - spread_start
    del Z
    module.stages.set_regression_precision(config.regression_precision)  # the validation sees what is saved
    extra = np.random.default_rng(seed + VAL_SEED_OFFSET).standard_normal(
        (len(vC), module.noise_dim - LIBRARY_NOISE), dtype=np.float32
    )
    with torch.no_grad():
        predicted = module(torch.as_tensor(vC), torch.as_tensor(np.hstack([vZ, extra]))).numpy()
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
            f"quantile transform of {len(continuous)} continuous conditions -> regression: concat("
            f"conditions, noise[:{LIBRARY_NOISE}]) -> Dense({config.width}, tanh) -> {config.n_residual} x "
            f"residual tanh({config.width}) -> Dense({len(out_names)}) = ŷ "
            f"(in {config.regression_precision}) -> spread chain: per output j, "
            f"concat(conditions, ŷ, residuals < j, {SPREAD_NOISE} noise) -> Dense({config.spread_width}, "
            f"tanh) -> {config.spread_residual} x residual -> Dense(1) -> ŷ + residuals -> inverse "
            "quantile transform per output"
        ),
        "training": {
            "method": "regression of the library's deterministic map (conditions, noise) -> outputs: "
            "same conditions and noise as the library got, MSE in the Gaussianised output space; then the "
            "spread chain on the regression's residuals (energy score per stage, fresh noise)",
            "labels": f"{config.n_train * config.label_sets:,} reconstructed tracks (particles drawn with "
            "P(acc) x P(reco), track type from the library's class probabilities"
            + (f"; (p, η)-balanced draw, exponent {config.label_balance}" if config.label_balance else "")
            + f"), library seeds {', '.join(map(str, config.label_seeds(seed)))}",
            "noise": "N(0,1), Philox keyed by (labelled-set seed, stream, chunk); regenerated, not stored",
            "labelling_seconds": round(label_seconds, 1),
            "train_loss": [round(v, 5) for v in history.train],
            "val_loss": [round(v, 5) for v in history.val],
            "fit_seconds": round(history.seconds, 1),
            "lbfgs": {
                "unseen_chunk_loss": [round(v, 5) for v in refined.train],
                "val_loss": [round(v, 5) for v in refined.val],
                "fit_seconds": round(refined.seconds, 1),
            },
            "spread": {
                "rows": n_spread,
                "balance": balance,
                "steps_per_stage": config.spread_steps,
                "final_loss_per_stage": [round(h[-1], 5) if h else None for h in spread],
                "fit_seconds": round(spread_seconds, 1),
            },
            "warm_start": None if parent is None else parent.record(),
        },
        "validation": {
            "rows": len(vC),
            "labels": f"validation-split particles, library seed {seed + VAL_SEED_OFFSET} (fresh noise)",
            "parity_abs_delta_over_sigma": parity(predicted, vY, out_names),
            "parity_regression_stage": parity(regression_outputs(module, vC, vZ), vY, out_names),
        },
    }
    rows = np.resize(np.arange(len(vC)), max(len(vC), 10_000))
    path, _ = save_generator(
        module, out_dir, step, conditions=vC[rows], noise_dim=module.noise_dim, manifest=manifest, seed=seed,
        rtol=VERIFY_RTOL,
    )  # fmt: skip
    set_training_seconds(path, time.perf_counter() - start)
    return path


def train_selected(step: str, out_dir: Path, config: DistillConfig, *, seed: int, **inputs: Any) -> Path:
    """Fit ``config.candidates`` runs of :func:`train_step` (seeds ``seed``, ``seed + 1``, ...), keep one.

    ``inputs`` are :func:`train_step`'s other arguments, by keyword (``data_dir``, ``particles``,
    ``validation_mask``, ``cond_names``, ``out_names``, ``data_sha``, optionally ``cache_dir``, ``threads``).
    Each run warm-starts from ``out_dir``'s model when the config says so; :func:`select_candidate` picks.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{step}-candidates-") as tmp:
        dirs = [
            train_step(
                step, out_dir=Path(tmp) / f"seed{seed + k}", config=config, seed=seed + k, parent_dir=out_dir,
                **inputs,
            ).parent
            for k in range(config.candidates)
        ]  # fmt: skip
        particles, mask = inputs["particles"], inputs["validation_mask"]
        return select_candidate(
            step, dirs, out_dir, inputs["data_dir"], particles[mask].reset_index(drop=True),
            inputs["out_names"], seed=seed, rows=config.selection_rows,
            cache_dir=inputs.get("cache_dir", DEFAULT_CACHE),
        )  # fmt: skip


def select_candidate(
    step: str,
    candidate_dirs: Sequence[Path],
    out_dir: Path,
    data_dir: Path,
    val_particles: pd.DataFrame,
    out_names: tuple[str, ...],
    *,
    seed: int,
    rows: int,
    cache_dir: Path | None = DEFAULT_CACHE,
) -> Path:
    """Keep the candidate whose worst output's worst (p, η) bin is lowest against the library.

    The selection sample: ``rows`` validation-split tracks labelled by the library at seed
    ``seed + 9001`` (no fit, manifest or report uses it), fresh noise for the candidates' ONNX.
    :func:`.selection.keep_best` writes the winner to ``out_dir``.
    """
    start = time.perf_counter()
    sample_seed = seed + SELECTION_SEED_OFFSET
    labelled = labelled_set(data_dir, val_particles, rows, seed=sample_seed, cache_dir=cache_dir)
    conditions, _, reference = student_inputs(step, labelled)
    log10p, eta = log10p_eta(labelled.conditions)
    min_rows = TARGET_BIN_ROWS if rows >= 200_000 else MIN_BIN_ROWS
    score = _worst_bin_score(
        conditions, reference, log10p, eta, out_names, seed=sample_seed, min_rows=min_rows
    )
    sample = {"tracks": rows, "particles": "validation split", "library_seed": sample_seed,
              "noise_seed": sample_seed, "min_bin_rows": min_rows}  # fmt: skip
    return keep_best(step, candidate_dirs, out_dir, score, sample, started=start)


def _worst_bin_score(
    conditions: NDArray[Any],
    reference: NDArray[Any],
    log10p: NDArray[Any],
    eta: NDArray[Any],
    out_names: tuple[str, ...],
    *,
    seed: int,
    min_rows: int,
) -> Score:
    """Per output worst-bin W1/σ of an ONNX generator against ``reference``.

    The noise is drawn once from ``seed``, so every candidate gets the same.
    """
    feeds = {
        "conditions": np.ascontiguousarray(conditions, np.float32),
        "noise": np.random.default_rng(seed).standard_normal(
            (len(conditions), two_stage_noise_dim(len(out_names))), dtype=np.float32
        ),
    }

    def score(onnx_path: Path) -> dict[str, float]:
        model = run_chunks(onnx_session(onnx_path), feeds, 65_536)
        return worst_bins(reference, model, log10p, eta, out_names, min_rows=min_rows)

    return score


def _student(
    parent: Parent | None,
    config: DistillConfig,
    conditions: NDArray[Any],
    outputs: NDArray[Any],
    continuous: list[int],
) -> TwoStageGenerator:
    """The two-stage student: the parent's transforms and regression, or fresh ones fitted on the sample."""
    if parent is None:
        if config.epochs == 0:
            raise ValueError("epochs=0 keeps the warm start's regression: it needs warm_start=True")
        module = TwoStageGenerator(
            conditions.shape[1], two_stage_noise_dim(outputs.shape[1]), outputs.shape[1], width=config.width,
            n_residual=config.n_residual, spread_width=config.spread_width,
            spread_residual=config.spread_residual, continuous=continuous, n_knots=config.n_knots,
        )  # fmt: skip
        module.fit_transforms(conditions, outputs)
        return module
    previous = load_quantile_generator(parent.path)
    module = TwoStageGenerator.from_regression(
        previous, spread_width=config.spread_width, spread_residual=config.spread_residual
    )
    regression = module.stages.regression
    shape = (regression.inp.out_features, len(regression.blocks))
    if shape != (config.width, config.n_residual):
        raise ValueError(f"{parent.path}: width x residual blocks {shape}, config says "
                         f"{(config.width, config.n_residual)}")  # fmt: skip
    return module


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
                for k in ("train_loss", "val_loss", "fit_seconds", "energy_fine_tune", "spread", "warm_start")
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


def library_sha(data_dir: Path) -> str:
    """SHA-256 of the reference library (part of the labels' provenance)."""
    return sha256_files([library_path(data_dir)])
