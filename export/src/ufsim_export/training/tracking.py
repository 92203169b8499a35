"""Tracking reference models trained on the Lamarr 2016 MagUp sample (``shared/data/lamarr-trk-2016MU``).

- ``acceptance`` and ``tracking_efficiency``: LightGBM classifiers (25 and 20 trees per class, depth <= 6:
  cheap to serve, within the efficiency targets; converted to ONNX-ML TreeEnsemble) fitted to the
  library's **probabilities** as soft labels: each particle appears once per class with weight = the
  library's probability of that class, so the boosting loss is exactly the cross-entropy to the
  library's distribution (sampled labels would add Bernoulli noise for nothing). The efficiency is the
  library's function of all particles (Lamarr evaluates it after sampling acceptance, §7 of
  lamarr-reference); the pipeline only uses it for particles sampled in acceptance, so each particle's
  loss is weighted by 0.1 + 0.9 * acceptance (focus where it is used, without abandoning the rest).
- ``tracking_resolution`` and ``tracking_covariance``: Lamarr's generator architecture with its quantile
  preprocessing built in (:class:`~ufsim_export.models.quantile.QuantileResidualGenerator`), fitted to the
  library's own deterministic map (conditions, noise) -> outputs on tracks labelled by the library itself
  (:mod:`.library`, :mod:`.distill`). The covariance generator is conditioned on the library's own
  track-quality outputs (chi2PerDoF, nDoF_f, ghostProb) of the same track.

A validation split of whole events (20 %, :func:`~.reproducibility.event_split`) is never trained on; the
manifests carry metrics measured on it.
"""

from __future__ import annotations

import functools
import importlib.util
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from tqdm.auto import tqdm

from ..spec import PipelineSpec, default_spec_path, load_spec
from . import distill
from .artifacts import save_gbdt
from .library import library_path
from .provenance import git_commit, library_versions, set_training_seconds, sha256_files
from .reproducibility import N_THREADS, event_split, seed_everything

ACCEPTANCE_FILE = "train_acceptance_efficiency.parquet"
RESOLUTION_FILE = "train_resolution_covariance.parquet"
EFFICIENCY_LABELS = ("eff_not_recoed", "eff_long", "eff_upstream", "eff_downstream")
VAL_FRACTION = 0.2
EFFICIENCY_WEIGHT_FLOOR = 0.1
STEPS = ("acceptance", "tracking_efficiency", "tracking_resolution", "tracking_covariance")


@dataclass(frozen=True)
class GBDTConfig:
    """LightGBM hyperparameters (bounded depth, so Hummingbird perf_tree_trav stays possible on GPUs)."""

    n_estimators: int = 300
    max_depth: int = 7
    num_leaves: int = 64
    learning_rate: float = 0.1
    min_child_samples: int = 200
    reg_lambda: float = 1.0
    subsample: float = 0.5
    max_rows: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything `make train` fixes, per model."""

    acceptance: GBDTConfig
    efficiency: GBDTConfig


FULL = TrainConfig(
    acceptance=GBDTConfig(n_estimators=25, max_depth=6, num_leaves=32, learning_rate=0.4),
    efficiency=GBDTConfig(n_estimators=20, max_depth=6, num_leaves=32, learning_rate=0.4),
)
QUICK = TrainConfig(
    acceptance=GBDTConfig(n_estimators=10, max_depth=4, num_leaves=15, max_rows=20_000),
    efficiency=GBDTConfig(n_estimators=10, max_depth=4, num_leaves=15, max_rows=20_000),
)


@dataclass(frozen=True)
class Columns:
    """Tensor columns of the tracking steps, read from the pipeline spec (the contract)."""

    tracking_features: tuple[str, ...]
    acceptance_classes: tuple[str, ...]
    efficiency_classes: tuple[str, ...]
    resolution_conditions: tuple[str, ...]
    resolution_outputs: tuple[str, ...]
    covariance_conditions: tuple[str, ...]
    covariance_outputs: tuple[str, ...]

    @classmethod
    def from_spec(cls, spec: PipelineSpec | None = None) -> Columns:
        """Columns in spec order; the covariance conditions are resolution_conditions + quality outputs."""
        spec = spec or load_spec(default_spec_path())
        res_cond = spec.tensor("resolution_conditions").columns
        res_out = spec.tensor("resolution_residuals").columns
        cov_step = spec.step("tracking_covariance")
        quality = next(ref for ref in cov_step.inputs if ref.name == "resolution_residuals").columns or ()
        return cls(
            tracking_features=spec.tensor("tracking_features").columns,
            acceptance_classes=spec.step("acceptance").classes,
            efficiency_classes=spec.step("tracking_efficiency").classes,
            resolution_conditions=res_cond,
            resolution_outputs=res_out,
            covariance_conditions=res_cond + tuple(res_out[i] for i in quality),
            covariance_outputs=spec.tensor("covariance_parameters").columns,
        )


# ------------------------------------------------------------------------------------------- data
def noise_module(data_dir: Path) -> ModuleType:
    """The data's own ``noise.py`` (imported from the data folder, not copied)."""
    spec = importlib.util.spec_from_file_location("lamarr_trk_noise", Path(data_dir) / "noise.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{data_dir}/noise.py: cannot import the noise regenerator")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def library_noise(data_dir: Path, key_name: str, rows: ArrayLike) -> NDArray[Any]:
    """The exact N(0, 1) noise the library used for ``rows`` (``noise_row``) of stream ``key_name``."""
    noise = noise_module(data_dir)
    key = getattr(noise, key_name)
    rows = np.asarray(rows, np.int64)
    lo, hi = int(rows.min()), int(rows.max()) + 1
    if hi - lo <= 2 * len(rows):
        block: NDArray[Any] = noise.noise(key, lo, hi)[rows - lo]
        return block
    parts: list[NDArray[Any]] = [noise.noise(key, int(r), int(r) + 1) for r in rows]
    return np.concatenate(parts)


def data_hash(data_dir: Path) -> str:
    """SHA-256 of the two parquet files and noise.py."""
    return sha256_files([data_dir / ACCEPTANCE_FILE, data_dir / RESOLUTION_FILE, data_dir / "noise.py"])


@functools.lru_cache(maxsize=2)
def load_particles(data_dir: Path, *, seed: int = 0) -> tuple[pd.DataFrame, NDArray[np.bool_]]:
    """The acceptance/efficiency sample and its validation mask (whole events); cached, do not modify."""
    df = pd.read_parquet(Path(data_dir) / ACCEPTANCE_FILE)
    return df, event_split(
        df["source"].to_numpy(), df["event"].to_numpy(), val_fraction=VAL_FRACTION, seed=seed
    )


@functools.lru_cache(maxsize=2)
def load_tracks(data_dir: Path, *, seed: int = 0) -> tuple[pd.DataFrame, NDArray[np.bool_]]:
    """The resolution/covariance sample and its validation mask (the same events as :func:`load_particles`).

    Gun particles (event -1) are split per row in each file, so a gun track's particle row may sit on
    the other side; the two files' models are trained and validated separately, so this cannot leak.
    """
    df = pd.read_parquet(Path(data_dir) / RESOLUTION_FILE)
    return df, event_split(
        df["source"].to_numpy(), df["event"].to_numpy(), val_fraction=VAL_FRACTION, seed=seed
    )


def _subsample(n: int, max_rows: int | None, rng: np.random.Generator) -> NDArray[np.integer[Any]]:
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(rng.choice(n, max_rows, replace=False))


# ------------------------------------------------------------------------------------------- GBDTs
def soft_label_rows(
    X: NDArray[Any],
    probabilities: NDArray[np.floating[Any]],
    weights: NDArray[np.floating[Any]] | None = None,
    *,
    min_weight: float = 1e-6,
) -> tuple[NDArray[Any], NDArray[np.integer[Any]], NDArray[np.floating[Any]]]:
    """Each row once per class with weight p_class (x the row weight), for training on soft labels.

    The weighted log-loss of these rows is the cross-entropy to the soft labels. Rows below
    ``min_weight`` are dropped (no contribution).
    """
    n, k = probabilities.shape
    w = probabilities * (1.0 if weights is None else weights[:, None])
    Xr = np.repeat(X, k, axis=0)
    yr = np.tile(np.arange(k), n)
    wr = w.reshape(-1)
    keep = wr > min_weight
    return Xr[keep], yr[keep], wr[keep]


def fit_gbdt(
    X: NDArray[Any],
    probabilities: NDArray[np.floating[Any]],
    weights: NDArray[np.floating[Any]] | None,
    config: GBDTConfig,
    seed: int,
) -> Any:
    """LightGBM classifier on soft labels, deterministic for a seed and 2 threads."""
    from lightgbm import LGBMClassifier  # optional dependency (extra `train`)

    Xr, yr, wr = soft_label_rows(
        X.astype(np.float32), probabilities.astype(np.float64), weights, min_weight=1e-4
    )
    model = LGBMClassifier(
        n_estimators=config.n_estimators,
        max_depth=config.max_depth,
        num_leaves=config.num_leaves,
        learning_rate=config.learning_rate,
        min_child_samples=config.min_child_samples,
        reg_lambda=config.reg_lambda,
        subsample=config.subsample,
        subsample_freq=1 if config.subsample < 1 else 0,
        random_state=seed,
        n_jobs=2,
        deterministic=True,
        force_row_wise=True,
        verbose=-1,
    )
    model.fit(Xr, yr, sample_weight=wr)
    return model


def predict_proba(model: Any, X: NDArray[Any]) -> NDArray[np.float64]:
    """``model.predict_proba`` without LightGBM's feature-name warning (we always pass arrays)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        proba: NDArray[np.float64] = model.predict_proba(X)
        return proba


def classifier_metrics(
    predicted: NDArray[np.floating[Any]],
    reference: NDArray[np.floating[Any]],
    weights: NDArray[np.floating[Any]] | None = None,
) -> dict[str, Any]:
    """Held-out agreement of predicted and reference class probabilities."""
    w = np.ones(len(reference)) if weights is None else weights
    eps = 1e-7
    ce = -(reference * np.log(np.clip(predicted, eps, 1))).sum(axis=1)
    entropy = -(reference * np.log(np.clip(reference, eps, 1))).sum(axis=1)
    return {
        "rows": len(reference),
        "kl_divergence": float(np.average(ce - entropy, weights=w)),
        "mean_abs_probability_error": np.average(np.abs(predicted - reference), axis=0, weights=w).tolist(),
        "overall_probability_difference": (
            np.average(predicted, axis=0, weights=w) - np.average(reference, axis=0, weights=w)
        ).tolist(),
    }


# ------------------------------------------------------------------------------------------- training
def _base_manifest(
    step: str, inputs: tuple[str, ...], data_sha: str, seed: int, config: Any
) -> dict[str, Any]:
    return {
        "step": step,
        "inputs": list(inputs),
        "data": "lamarr-trk-2016MU (Lamarr 2016 MagUp tracking library labels)",
        "data_sha256": data_sha,
        "seed": seed,
        "git_commit": git_commit(),
        "libraries": library_versions(),
        "config": asdict(config),
        "validation_split": f"{VAL_FRACTION:.0%} of events (source, event), seeded hash; never trained on",
    }


def train(
    data_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    quick: bool = False,
    order: tuple[str, ...] = (),
    steps: tuple[str, ...] = STEPS,
    threads: int = N_THREADS,
) -> list[Path]:
    """Train the four tracking models from ``data_dir`` and write their artifacts to ``out_dir``.

    Writes ``<step>.onnx/.json`` (+ originals). ``quick``: tiny subsample, tiny networks, one epoch
    (tests). ``order``: train these steps first (the models do not depend on each other; each step
    seeds itself). ``steps``: train only these. ``threads``: torch threads of each generator fit (1 when
    two fits share the 2-core machine).
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    config = QUICK if quick else FULL
    cols = Columns.from_spec()
    data_sha = data_hash(data_dir)
    written: list[Path] = []
    jobs: list[tuple[str, Callable[[], Path]]] = [
        ("acceptance", lambda: _train_acceptance(data_dir, out_dir, cols, config, data_sha, seed)),
        ("tracking_efficiency", lambda: _train_efficiency(data_dir, out_dir, cols, config, data_sha, seed)),
        ("tracking_resolution", lambda: _train_resolution(data_dir, out_dir, cols, config, seed, threads)),
        ("tracking_covariance", lambda: _train_covariance(data_dir, out_dir, cols, config, seed, threads)),
    ]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"steps {unknown}: expected some of {list(STEPS)}")
    jobs = [job for job in jobs if job[0] in steps]
    if order:
        jobs = sorted(jobs, key=lambda job: order.index(job[0]) if job[0] in order else len(order))
    for name, job in tqdm(jobs, desc="tracking models", unit="model"):
        start = time.perf_counter()
        path = job()
        tqdm.write(f"{name}: {time.perf_counter() - start:.0f} s -> {path}")
        written.append(path)
    return written


def _particles(
    data_dir: Path, seed: int, max_rows: int | None
) -> tuple[pd.DataFrame, NDArray[np.integer[Any]], NDArray[np.integer[Any]]]:
    df, val = load_particles(data_dir, seed=0)
    rng = np.random.default_rng(seed)
    train_idx = np.flatnonzero(~val)[_subsample(int((~val).sum()), max_rows, rng)]
    val_idx = np.flatnonzero(val)[_subsample(int(val.sum()), max_rows, rng)]
    return df, train_idx, val_idx


def _train_acceptance(
    data_dir: Path, out_dir: Path, cols: Columns, config: TrainConfig, data_sha: str, seed: int
) -> Path:
    start = time.perf_counter()
    seed_everything(seed)
    df, tr, va = _particles(data_dir, seed, config.acceptance.max_rows)
    X = df[list(cols.tracking_features)].to_numpy(np.float32)
    acc = df["acceptance"].to_numpy(np.float64)
    probs = np.stack([1 - acc, acc], axis=1)
    model = fit_gbdt(X[tr], probs[tr], None, config.acceptance, seed)
    manifest = _base_manifest("acceptance", cols.tracking_features, data_sha, seed, config.acceptance)
    manifest["classes"] = list(cols.acceptance_classes)
    manifest["labels"] = "soft: the library's P(in acceptance), one weighted row per class"
    manifest["validation"] = classifier_metrics(predict_proba(model, X[va]), probs[va])
    path, _ = save_gbdt(model, out_dir, "acceptance", features=_verification_rows(X, va), manifest=manifest)
    set_training_seconds(path, time.perf_counter() - start)
    return path


def _train_efficiency(
    data_dir: Path, out_dir: Path, cols: Columns, config: TrainConfig, data_sha: str, seed: int
) -> Path:
    start = time.perf_counter()
    seed_everything(seed)
    df, tr, va = _particles(data_dir, seed, config.efficiency.max_rows)
    X = df[list(cols.tracking_features)].to_numpy(np.float32)
    probs = df[list(EFFICIENCY_LABELS)].to_numpy(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    acc = df["acceptance"].to_numpy(np.float64)
    weights = EFFICIENCY_WEIGHT_FLOOR + (1 - EFFICIENCY_WEIGHT_FLOOR) * acc
    model = fit_gbdt(X[tr], probs[tr], weights[tr], config.efficiency, seed)
    manifest = _base_manifest(
        "tracking_efficiency", cols.tracking_features, data_sha, seed, config.efficiency
    )
    manifest["classes"] = list(cols.efficiency_classes)
    manifest["labels"] = (
        "soft: the library's four class probabilities, one weighted row per class; particle weight "
        f"{EFFICIENCY_WEIGHT_FLOOR} + {1 - EFFICIENCY_WEIGHT_FLOOR} x acceptance"
    )
    manifest["denominator"] = (
        "all particles, as the library's efficiency function is defined; the ensemble samples acceptance "
        "first and draws the class only for particles in acceptance (Lamarr's acceptance x efficiency), "
        "so validation weights particles by P(in acceptance)"
    )
    manifest["validation"] = classifier_metrics(predict_proba(model, X[va]), probs[va], acc[va])
    path, _ = save_gbdt(
        model, out_dir, "tracking_efficiency", features=_verification_rows(X, va), manifest=manifest
    )
    set_training_seconds(path, time.perf_counter() - start)
    return path


def _verification_rows(X: NDArray[Any], preferred: NDArray[np.integer[Any]], n: int = 10_000) -> NDArray[Any]:
    """At least 10k rows (the verifier's minimum): the validation rows first, then any others."""
    rows = preferred[:n]
    if len(rows) < n:
        rest = np.setdiff1d(np.arange(len(X)), rows)[: n - len(rows)]
        rows = np.concatenate([rows, rest])
    chosen: NDArray[Any] = X[rows]
    return chosen


def _train_resolution(
    data_dir: Path, out_dir: Path, cols: Columns, config: TrainConfig, seed: int, threads: int
) -> Path:
    return _train_from_library(
        "tracking_resolution", data_dir, out_dir, cols.resolution_conditions, cols.resolution_outputs,
        distill.QUICK_RESOLUTION if config is QUICK else distill.FULL_RESOLUTION, seed, threads,
    )  # fmt: skip


def _train_covariance(
    data_dir: Path, out_dir: Path, cols: Columns, config: TrainConfig, seed: int, threads: int
) -> Path:
    return _train_from_library(
        "tracking_covariance", data_dir, out_dir, cols.covariance_conditions, cols.covariance_outputs,
        distill.QUICK_COVARIANCE if config is QUICK else distill.FULL_COVARIANCE, seed, threads,
    )  # fmt: skip


def _train_from_library(
    step: str,
    data_dir: Path,
    out_dir: Path,
    cond_cols: tuple[str, ...],
    out_cols: tuple[str, ...],
    config: distill.DistillConfig,
    seed: int,
    threads: int,
) -> Path:
    """The generator fitted to the library's own map on library-labelled tracks (:mod:`.distill`).

    With ``config.candidates`` > 1, the best of that many runs (:func:`.distill.train_selected`).
    """
    particles, val = load_particles(data_dir, seed=0)
    fit = distill.train_step if config.candidates == 1 else distill.train_selected
    return fit(
        step, out_dir=out_dir, config=config, seed=seed, data_dir=data_dir, particles=particles,
        validation_mask=val, cond_names=cond_cols, out_names=out_cols, threads=threads,
        data_sha=sha256_files([data_dir / ACCEPTANCE_FILE, library_path(data_dir)]),
    )  # fmt: skip
