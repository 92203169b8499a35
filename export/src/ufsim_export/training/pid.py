"""Train ufsim's PID models on the parametric calibration sample (:mod:`ufsim_export.calibration`).

Four models, stacked as in Lamarr (lamarr-reference §1.3), every one conditioned on the spec's
``pid_features`` (log10 p, η, n_tracks, charge and a species one-hot), so one ensemble serves every
species without routing:

- ``is_muon``: scikit-learn ``HistGradientBoostingClassifier`` (60 trees of depth ≤ 5 on 2M tracks: small
  and fast to serve, within the isMuon efficiency targets), classes [not_muon, muon], converted to ONNX-ML
  TreeEnsemble.
- ``rich``: chained generator (:mod:`.chained`), 9 conditions + 64 noise → RichDLLe, RichDLLmu,
  RichDLLK, RichDLLp; its stages also see the Cherenkov photon-yield fraction of each radiator threshold
  in the momentum range (computed from log10 p inside the model).
- ``muon``: chained generator, 9 + 64 → MuonMuLL, MuonBgLL, trained on isMuon == 1 tracks only (hadrons are
  drawn from a larger pool so that their rare mis-identified tracks are populated).
- ``global_pid``: chained generator on [pid_features, rich_response, muon_response, is_muon_flag] (16) + 64 →
  PIDe, PIDK, PIDp, PIDmu, ProbNNe, ProbNNpi, ProbNNk, ProbNNp, ProbNNmu. At serving time the muon
  generator runs for every track, so :class:`MaskedGlobalPID` multiplies the muon inputs by
  ``is_muon_flag`` inside the exported module: non-isMuon tracks see zeros, whatever the muon
  generator produced; training sees the same masked inputs (teacher forcing with the calibration's
  true RICH and Muon responses, as Lamarr does). The chain learns the non-RICH part of each
  combined DLL (added back to the RICH input inside the module) and four centred ProbNN logits (the
  fifth is minus their sum; a softmax inside the module makes the five ProbNN sum to exactly 1).

**Architecture — one stage per output.** Each generator is a chain (:class:`.chained.ChainedGenerator`):
output j comes from its own small residual generator on (conditions, outputs < j) and its own slice of
the noise. The responses are tied together tightly (MuonMuLL and MuonBgLL are two functions of one hit
distance; the RICH DLLs share photon counts; the ProbNN follow the combined DLLs); one network drawing all
outputs from shared noise blurred those relations, which the two-sample classifier saw (AUC 0.70 for rich
and muon, 0.73 for global_pid). One-dimensional conditionals keep them.

**Generator loss — weighted energy score.** No reference noise exists for these samples, so the
generators are fitted by distribution matching. Each row draws ``m = 2`` noise vectors and the loss is
the energy score ``ES = mean_j ‖G(c, z_j) − y‖ − ½ ‖G(c, z_1) − G(c, z_2)‖`` (Gneiting & Raftery 2007;
"engression", Shen & Meinshausen 2024), in the core's Gaussianised and standardised output space.
The energy score is a strictly proper scoring rule: its expectation over (c, y) is minimised only by
the true conditional distribution p(y | c), so one network fits every condition at once, with plain
stochastic gradient descent — no adversary, no mode-collapse or balance tuning, and it converges
reliably on two CPU cores within minutes (a conditional GAN needs several discriminator updates per
generator step and careful tuning for the same result). Per-row weights enter linearly,
``Σ w_i ES_i / Σ w_i``: with sPlot weights the expected weighted score equals the expected score of the
signal component alone (sWeights are unbiased for any quantity independent of the discriminating
mass), so training on a background-subtracted sample targets the pure-signal distribution; negative
weights are allowed (the normalisation uses the sample's total weight, not the batch's).

Preprocessing is Lamarr's (quantile transforms of the continuous conditions and of every output,
built into :class:`~ufsim_export.models.quantile.QuantileResidualGenerator`), so each exported ONNX
takes and returns physical units. Conversion and verification go through
``ufsim_export.training.artifacts.save_gbdt`` / ``save_generator`` (``gbdt_to_onnx`` with
``perf_tree_trav``, ``generator_to_onnx``, ``verify_classifier`` / ``verify_generator``).

Validation (held-out pure calibration sample, written into each manifest): W1/σ per output and
species (1-D Wasserstein distance over the reference's spread), a classifier two-sample AUC per model
on (conditions, outputs), and for ``is_muon`` the efficiency per momentum bin and species,
truth vs model.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss, roc_auc_score
from torch import nn

from ..convert.verify import TAIL_SIGMAS, onnx_session, run_chunks
from ..metrics import MIN_BIN_ROWS, TARGET_BIN_ROWS, c2st_auc, w1_over_sigma
from ..models.quantile import QuantileResidualGenerator
from . import calibration
from .artifacts import save_gbdt, save_generator
from .calibration import GLOBAL_COLUMNS, MASS_MEV, MUON_COLUMNS, PID_FEATURES, RICH_COLUMNS, SPECIES
from .chained import ChainedCore, ChainedGenerator, fit_chained, fit_stages
from .fitting import effective_rows, phase_space_weights
from .provenance import git_commit, library_versions
from .reproducibility import seed_everything
from .selection import keep_best, worst_bins

STEPS = ("is_muon", "rich", "muon", "global_pid")
STAGE_SIZES = {
    "rich": {"width": 64, "n_residual": 3, "steps": 120_000, "gen": 3_000_000, "candidates": 3},
    "muon": {"width": 64, "n_residual": 3, "steps": 24_000},
    "global_pid": {"width": 64, "n_residual": 3, "steps": 24_000},
}
"""Per generator: each chain stage's width and residual depth, its fit steps (batch 512) and, where not the
default 300,000, its training sample (``gen``), and how many runs (``candidates``, seeds ``seed``,
``seed + 1``, ...) are fitted to keep the best on a held-out selection sample (:func:`select_candidate`).
RICH fits 120,000 steps on 3M tracks as the best of 3 runs: the spread between runs of one configuration
(0.038-0.076 for the worst output) is larger than most differences between configurations
(``export/reports/experiments.md``)."""
BALANCE: dict[str, float] = {}
"""Exponent of a generator's (p, η) balancing weights (:func:`~.fitting.phase_space_weights`, times the
sWeights); none is balanced: for RICH it moved the error between outputs instead of lowering it
(``export/reports/experiments.md``)."""


@dataclass(frozen=True)
class BalancedPhase:
    """A second fit of every chain stage after the main one, on a fresh (p, η)-balanced sample.

    Weights are the sWeights times :func:`~.fitting.phase_space_weights` of ``exponent``; the learning rate
    is lower than the main fit's, and the quantile transforms stay the main fit's.
    """

    rows: int
    steps: int
    """Energy-score steps per stage (batch as the main fit)."""
    lr: float
    exponent: float
    quick_rows: int = 4_000
    quick_steps: int = 20


BALANCED_PHASE: dict[str, BalancedPhase] = {}
"""Generators whose main fit is followed by a balanced phase (samples of ``calibration.generate``, so not
the muon generator's isMuon selection); none since RICH's main fit uses 3M tracks, where the phase cost
more than it gave (``export/reports/experiments.md``)."""
NOISE_DIM = 64
CONTINUOUS_PID = (0, 1, 2)
"""Quantile-transformed condition columns of pid_features: log10 p, η, n_tracks (charge and one-hot
pass through)."""
RICH_THRESHOLDS_MEV: tuple[float, ...] = tuple(
    threshold
    for radiator in calibration.RADIATORS
    for threshold in sorted(radiator.threshold_mev(MASS_MEV[s]) for s in SPECIES)
    if calibration.P_MIN_MEV < threshold < calibration.P_MAX_MEV
)
"""Cherenkov thresholds m / sqrt(n² - 1) of the RICH radiators (C4F10, CF4) inside the calibration's
momentum range: 7 of the 10 (radiator, mass) pairs, from 2.6 GeV (π, C4F10) to 29.7 GeV (p, CF4). The
RICH chain gets each one's photon-yield fraction as an input (:class:`.chained.ThresholdYields`)."""
GLOBAL_INPUTS: tuple[str, ...] = (*PID_FEATURES, *RICH_COLUMNS, *MUON_COLUMNS, "is_muon_flag")
MUON_SLICE = slice(len(PID_FEATURES) + len(RICH_COLUMNS), len(PID_FEATURES) + len(RICH_COLUMNS) + 2)
P_BINS_GEV = (2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 40.0, 80.0, 200.0)
GBDT_MAX_DEPTH = 5
GBDT_MAX_ITER = 60
"""isMuon trees. Scored on 1M fresh muons in (p, η) bins (binomial σ ≤ 0.008 where it matters), 30 trees
fitted on 400k tracks were off by |Δ| 0.047-0.049 (target 0.03) at 10-30 GeV and η < 2, where the muon
stations' acceptance edge cuts the efficiency to 0.30; 60 trees on 2M tracks by 0.008-0.013 there, 0.018
at worst. They cost 0.83 against 0.40-0.59 µs a row in ONNX Runtime (one thread, rows of every species)."""
GBDT_LEARNING_RATE = 0.3
PROBNN_START = GLOBAL_COLUMNS.index("ProbNNe")
PROBNN_FLOOR = 1e-30
"""ProbNN below this is learnt as this. The reference reaches ~1e-19 (30-58 % of it is below 1e-4, so a
1e-4 floor made the model's small ProbNNs trivially distinguishable); the log-space targets must cover
that range. The logits skip the quantile transform (:class:`.chained.PartialQuantileGenerator`), so their
float32 rounding stays ~1e-7 relative and the softmax keeps the 1e-5 ONNX-vs-PyTorch budget."""
RICH_FOR_PID = [GLOBAL_INPUTS.index(c) for c in ("RichDLLe", "RichDLLk", "RichDLLp", "RichDLLmu")]
"""Condition columns of the RICH DLL under each combined DLL (PIDe, PIDK, PIDp, PIDmu)."""
GENERATOR_THREADS = 1
"""torch threads for the generator fits: on the shared 2-core machine two threads per process
oversubscribe the cores (measured 2.7x slower per step under load than one thread); small
residual networks gain nothing from intra-op parallelism."""
VERIFY_ROWS = 10_000
"""Conversion is verified on at least this many held-out condition rows (repeated in quick mode)."""
SELECTION_ROWS = 1_000_000
SELECTION_DATA_SEED = 29
"""Selection sample: ``calibration.generate`` at data seed ``seed x 1000 + 29`` (training 21, validation 23,
balanced phase 24; the report's 987,654), its noise at one more."""


class MaskedGlobalPID(nn.Module):
    """Global PID generator whose muon inputs are multiplied by ``is_muon_flag`` (the last column).

    The muon generator always runs in the ensemble; its output only means something for isMuon tracks.
    Masking inside the module makes the global PID response independent of it for the others.
    """

    def __init__(self, inner: QuantileResidualGenerator) -> None:
        super().__init__()
        self.inner = inner

    @staticmethod
    def mask(conditions: torch.Tensor) -> torch.Tensor:
        """Conditions with the two muon columns multiplied by the is_muon flag."""
        flag = conditions[:, -1:]
        return torch.cat(
            [
                conditions[:, : MUON_SLICE.start],
                conditions[:, MUON_SLICE] * flag,
                conditions[:, MUON_SLICE.stop :],
            ],
            dim=1,
        )

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Global PID outputs (physical units) for the 16 conditions and N(0, 1) noise.

        The inner generator produces the non-RICH part of the four combined DLLs (calorimeter, muon
        system: ``PIDX − RichDLLX``), which is added to the RICH input here, and four of the five
        centred ProbNN logits (:func:`global_targets`); the fifth is minus their sum, and a softmax turns
        the five into probabilities summing to exactly 1.
        A combined DLL is the RICH DLL plus other detectors' terms; learning only the latter keeps
        the tight PIDK ≈ RichDLLK relation exact instead of asking the network to copy a wide input.
        """
        out = self.inner(self.mask(conditions), noise)
        dll = out[:, :PROBNN_START] + conditions[:, RICH_FOR_PID]
        logits = out[:, PROBNN_START:]
        prob = torch.softmax(torch.cat([logits, -logits.sum(dim=1, keepdim=True)], dim=1), dim=1)
        return torch.cat([dll, prob], dim=1)

    def extra_state(self) -> dict[str, Any]:
        """Constructor arguments of the inner generator (for rebuilding from a state_dict)."""
        return {"wrapper": "MaskedGlobalPID", **self.inner.extra_state()}


def sample_sha256(frame: pd.DataFrame) -> str:
    """SHA-256 of a training sample: every column's values, in order (stable across runs and machines)."""
    digest = hashlib.sha256()
    for name in frame.columns:
        digest.update(str(name).encode())
        values = frame[name].to_numpy()
        if values.dtype == object:
            digest.update("\x00".join(map(str, values)).encode())
        else:
            digest.update(np.ascontiguousarray(values.astype(np.float64)).tobytes())
    return digest.hexdigest()


def sample_generator(module: nn.Module, conditions: NDArray[Any], *, seed: int = 0) -> NDArray[np.float64]:
    """Outputs of a generator for ``conditions`` with fresh N(0, 1) noise (float64)."""
    noise = np.random.default_rng(seed).standard_normal((len(conditions), NOISE_DIM)).astype(np.float32)
    module.eval()
    out: list[NDArray[Any]] = []
    with torch.no_grad():
        for i in range(0, len(conditions), 65536):
            c = torch.as_tensor(conditions[i : i + 65536], dtype=torch.float32)
            out.append(module(c, torch.as_tensor(noise[i : i + 65536])).numpy())
    samples: NDArray[np.float64] = np.concatenate(out).astype(np.float64)
    return samples


def generator_metrics(
    module: nn.Module,
    frame: pd.DataFrame,
    inputs: Sequence[str],
    outputs: Sequence[str],
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """W1/σ per output and species, and the two-sample AUC, of ``module`` on a held-out ``frame``."""
    conditions = frame[list(inputs)].to_numpy(np.float32)
    real = frame[list(outputs)].to_numpy(np.float64)
    fake = sample_generator(module, conditions, seed=seed)
    w1: dict[str, dict[str, float]] = {}
    for s in SPECIES:
        sel = (frame["species"] == s).to_numpy()
        if sel.sum() < 50:
            continue
        w1[s] = {c: w1_over_sigma(real[sel, j], fake[sel, j]) for j, c in enumerate(outputs)}
    worst = max(v for per in w1.values() for v in per.values())
    auc = c2st_auc(np.hstack([conditions, real]), np.hstack([conditions, fake]), seed=seed)
    return {"rows": len(frame), "w1_over_sigma": w1, "w1_over_sigma_max": worst, "two_sample_auc": auc}


def is_muon_efficiency(frame: pd.DataFrame, probability: NDArray[Any]) -> dict[str, Any]:
    """isMuon efficiency per species and momentum bin: calibration truth vs the model's mean P(isMuon)."""
    p_gev = 10 ** frame["mc_log10_p"].to_numpy() / 1e3
    bins = np.digitize(p_gev, P_BINS_GEV) - 1
    table: dict[str, dict[str, list[float | None]]] = {}
    for s in SPECIES:
        sel = (frame["species"] == s).to_numpy()
        truth: list[float | None] = []
        model: list[float | None] = []
        for b in range(len(P_BINS_GEV) - 1):
            in_bin = sel & (bins == b)
            truth.append(float(frame["isMuon"].to_numpy()[in_bin].mean()) if in_bin.any() else None)
            model.append(float(probability[in_bin].mean()) if in_bin.any() else None)
        table[s] = {"truth": truth, "model": model}
    return {"p_bins_gev": list(P_BINS_GEV), "efficiency": table}


def _base_manifest(inputs: Sequence[str], data: dict[str, Any], seconds: float, seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "inputs": {"columns": list(inputs)},
        "data": {"generator": "ufsim_export.calibration.generate", **data},
        "git_commit": git_commit(),
        "libraries": library_versions(),
        "training_seconds": round(seconds, 1),
    }


def _sizes(quick: bool, step: str = "") -> dict[str, int]:
    """Sample sizes, and for generator ``step`` its stages' width, depth and fit steps per stage."""
    if quick:
        return {"gbdt": 10_000, "gen": 8_000, "mu": 3_000, "had_pool": 12_000, "val": 10_000, "steps": 40,
                "batch": 256, "width": 32, "n_residual": 2, "gbdt_iter": 20,
                "candidates": 1, "selection_rows": 20_000}  # fmt: skip
    stage = STAGE_SIZES.get(step, STAGE_SIZES["rich"])
    return {"gbdt": 2_000_000, "gen": 300_000, "mu": 80_000, "had_pool": 1_500_000, "val": 100_000,
            "batch": 512, "gbdt_iter": GBDT_MAX_ITER, "candidates": 1, "selection_rows": SELECTION_ROWS,
            **stage}  # fmt: skip


def train_is_muon(out_dir: Path, *, seed: int, quick: bool) -> Path:
    """isMuon GBDT on every species; efficiency-vs-p validation in the manifest."""
    size = _sizes(quick)
    data_seed = seed * 1000 + 11
    frame = calibration.generate(size["gbdt"], data_seed)
    val = calibration.generate(size["val"], data_seed + 1)
    start = time.perf_counter()
    model = HistGradientBoostingClassifier(
        max_iter=size["gbdt_iter"], max_depth=GBDT_MAX_DEPTH, max_leaf_nodes=31,
        learning_rate=GBDT_LEARNING_RATE,
        min_samples_leaf=40, early_stopping=False, random_state=seed,
    )  # fmt: skip
    x = frame[list(PID_FEATURES)].to_numpy(np.float32)
    model.fit(x, frame["isMuon"].to_numpy(), sample_weight=frame["sweight"].to_numpy())
    seconds = time.perf_counter() - start
    xv = val[list(PID_FEATURES)].to_numpy(np.float32)
    prob = model.predict_proba(xv)[:, 1]
    metrics = {
        "rows": len(val),
        "log_loss": float(log_loss(val["isMuon"], prob, labels=[0, 1])),
        "roc_auc": float(roc_auc_score(val["isMuon"], prob)),
        **is_muon_efficiency(val, prob),
    }
    manifest = _base_manifest(
        PID_FEATURES,
        {
            "seed": data_seed,
            "size": len(frame),
            "data_sha256": sample_sha256(frame),
            "validation_seed": data_seed + 1,
        },
        seconds,
        seed,
    )
    manifest |= {"classes": ["not_muon", "muon"], "max_depth": GBDT_MAX_DEPTH, "validation": metrics}
    path, _ = save_gbdt(model, out_dir, "is_muon", features=xv, manifest=manifest)
    return path


def _generator(
    n_conditions: int,
    n_outputs: int,
    continuous: Sequence[int],
    size: dict[str, int],
    passthrough: Sequence[int] = (),
    thresholds_mev: Sequence[float] = (),
) -> ChainedGenerator:
    return ChainedGenerator(
        n_conditions,
        NOISE_DIM,
        n_outputs,
        width=size["width"],
        n_residual=size["n_residual"],
        continuous=continuous,
        passthrough=passthrough,
        thresholds_mev=thresholds_mev,
        log10_p_column=PID_FEATURES.index("mc_log10_p"),
    )


def _muon_sample(n_mu: int, n_hadron_pool: int, seed: int) -> pd.DataFrame:
    """isMuon == 1 tracks: muons, plus the mis-identified tracks of a larger pool of e, π, K, p."""
    muons = calibration.generate(n_mu, seed, species="mu")
    others = calibration.generate(n_hadron_pool, seed + 1, species=["e", "pi", "K", "p"])
    both = pd.concat([muons[muons["isMuon"] == 1], others[others["isMuon"] == 1]], ignore_index=True)
    return both


def global_conditions(frame: pd.DataFrame) -> NDArray[np.float64]:
    """The global PID's 16 conditions from a calibration frame (muon LLs 0 where isMuon == 0)."""
    flag = frame["isMuon"].to_numpy(np.float64)[:, None]
    muon = np.where(flag > 0, frame[list(MUON_COLUMNS)].to_numpy(np.float64), 0.0)
    return np.hstack(
        [frame[list(PID_FEATURES)].to_numpy(np.float64), frame[list(RICH_COLUMNS)].to_numpy(), muon, flag]
    )


def global_targets(frame: pd.DataFrame) -> NDArray[np.float64]:
    """Training targets of the global PID's inner generator.

    PIDe, PIDK, PIDp, PIDmu minus the matching RICH DLL (RichDLLe, RichDLLk, RichDLLp, RichDLLmu),
    and the centred log-probabilities ``ln ProbNN_k − mean_j ln ProbNN_j`` (ProbNN floored at
    PROBNN_FLOOR) of all but ProbNNmu, whose centred logit is minus their sum; the softmax of
    :class:`MaskedGlobalPID` maps them back to the five ProbNNs.
    """
    dll = frame[list(GLOBAL_COLUMNS[:PROBNN_START])].to_numpy(np.float64)
    dll = dll - frame[[GLOBAL_INPUTS[i] for i in RICH_FOR_PID]].to_numpy(np.float64)
    log_p = np.log(np.maximum(frame[list(GLOBAL_COLUMNS[PROBNN_START:])].to_numpy(np.float64), PROBNN_FLOOR))
    return np.hstack([dll, (log_p - log_p.mean(axis=1, keepdims=True))[:, :-1]])


def _training_arrays(step: str, frame: pd.DataFrame) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A generator's conditions and training targets (physical units) from a calibration frame."""
    if step == "global_pid":
        return global_conditions(frame), global_targets(frame)
    outputs = RICH_COLUMNS if step == "rich" else MUON_COLUMNS
    return frame[list(PID_FEATURES)].to_numpy(np.float64), frame[list(outputs)].to_numpy(np.float64)


def _weights(frame: pd.DataFrame, exponent: float) -> NDArray[np.float64]:
    """The sWeights, times (p, η)-balancing weights of ``exponent`` when it is not 0."""
    weights = frame["sweight"].to_numpy(np.float64)
    if exponent:
        log10p, eta = frame["mc_log10_p"].to_numpy(), frame["mc_eta"].to_numpy()
        weights = weights * phase_space_weights(log10p, eta, exponent=exponent)
    return np.asarray(weights, np.float64)


def fit_balanced_phase(
    step: str,
    chain: ChainedGenerator,
    phase: BalancedPhase,
    *,
    seed: int,
    data_seed: int,
    batch_size: int,
    quick: bool,
) -> dict[str, Any]:
    """Fit every stage of a trained ``chain`` again on a fresh balanced sample; what the manifest records.

    The quantile transforms and normalisations stay those of the main fit (so the chain's spaces do not
    move); only the stage weights continue.
    """
    if step == "muon":
        raise ValueError("a balanced phase draws calibration.generate samples; muon trains on isMuon tracks")
    rows, steps = (phase.quick_rows, phase.quick_steps) if quick else (phase.rows, phase.steps)
    frame = calibration.generate(rows, data_seed)
    cond, targets = _training_arrays(step, frame)
    weights = _weights(frame, phase.exponent)
    x = torch.as_tensor(chain.core_conditions(cond))
    y = torch.as_tensor(chain.gaussianise_outputs(targets))
    histories = fit_stages(
        cast(ChainedCore, chain.core), x, y, weights, steps=steps, batch_size=batch_size, lr=phase.lr,
        seed=seed + 100, desc=f"{step} balanced",
    )  # fmt: skip
    return {
        **asdict(phase),
        "rows": rows,
        "steps": steps,
        "data_seed": data_seed,
        "data_sha256": sample_sha256(frame),
        "effective_rows": effective_rows(weights),
        "history_per_100_steps": [[round(v, 5) for v in history] for history in histories],
    }


def train_generator_step(step: str, out_dir: Path, *, seed: int, quick: bool) -> Path:
    """Train and save one of the three generators (``rich``, ``muon``, ``global_pid``)."""
    size = _sizes(quick, step)
    data_seed = seed * 1000 + {"rich": 21, "muon": 31, "global_pid": 41}[step]
    if step == "muon":
        frame = _muon_sample(size["mu"], size["had_pool"], data_seed)
        val_all = _muon_sample(size["mu"] // 4, size["had_pool"] // 4, data_seed + 2)
        data = {"seed": data_seed, "size": len(frame), "selection": "isMuon == 1; species='mu' "
                f"n={size['mu']} + e/pi/K/p pool n={size['had_pool']} (seed + 1)"}  # fmt: skip
    else:
        frame = calibration.generate(size["gen"], data_seed)
        val_all = calibration.generate(size["val"], data_seed + 2)
        data = {"seed": data_seed, "size": len(frame)}
    data |= {"data_sha256": sample_sha256(frame), "validation_seed": data_seed + 2}
    if step == "rich":
        inputs, outputs = list(PID_FEATURES), list(RICH_COLUMNS)
        module: ChainedGenerator | MaskedGlobalPID
        module = inner = _generator(
            len(inputs), len(outputs), CONTINUOUS_PID, size, thresholds_mev=RICH_THRESHOLDS_MEV
        )
    elif step == "muon":
        inputs, outputs = list(PID_FEATURES), list(MUON_COLUMNS)
        module = inner = _generator(len(inputs), len(outputs), CONTINUOUS_PID, size)
    else:
        inputs, outputs = list(GLOBAL_INPUTS), list(GLOBAL_COLUMNS)
        continuous = (*CONTINUOUS_PID, *range(len(PID_FEATURES), len(GLOBAL_INPUTS) - 1))
        n_inner = len(outputs) - 1  # the last centred ProbNN logit is minus the others' sum
        inner = _generator(len(inputs), n_inner, continuous, size, passthrough=range(PROBNN_START, n_inner))
        module = MaskedGlobalPID(inner)
    cond, targets = _training_arrays(step, frame)
    weights = _weights(frame, BALANCE.get(step, 0.0))
    start = time.perf_counter()
    histories = fit_chained(
        inner, cond, targets, weights, steps=size["steps"], batch_size=size["batch"], seed=seed, desc=step
    )
    phase = BALANCED_PHASE.get(step)
    balanced = None if phase is None else fit_balanced_phase(
        step, inner, phase, seed=seed, data_seed=data_seed + 3, batch_size=size["batch"], quick=quick
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if step == "global_pid":
        val_frame = val_all.copy()
        val_frame[list(GLOBAL_INPUTS)] = global_conditions(val_all)
    else:
        val_frame = val_all
    metrics = generator_metrics(module, val_frame, inputs, outputs, seed=seed + 5)
    if step == "global_pid":
        probnn = sample_generator(module, val_frame[inputs].to_numpy(np.float32), seed=seed + 6)[:, 4:]
        metrics["probnn_sum"] = {"mean": float(probnn.sum(1).mean()), "std": float(probnn.sum(1).std())}
    manifest = _base_manifest(inputs, data, seconds, seed)
    manifest |= {
        "outputs": {"columns": outputs},
        "architecture": {"class": type(module).__name__, **(module.extra_state())},
        "loss": {
            "name": "weighted energy score (m=2), one-dimensional per chain stage",
            "steps_per_stage": size["steps"],
            "batch_size": size["batch"],
            "phase_space_balance": BALANCE.get(step, 0.0),
            "balanced_phase": balanced,
            "history_per_100_steps": [[round(v, 5) for v in history] for history in histories],
        },  # fmt: skip
        "validation": metrics,
    }
    verify_rows = val_frame[inputs].to_numpy(np.float32)
    if len(verify_rows) < VERIFY_ROWS:
        verify_rows = np.resize(verify_rows, (VERIFY_ROWS, len(inputs)))
    path, _ = save_generator(
        module, out_dir, step, conditions=verify_rows, noise_dim=NOISE_DIM, manifest=manifest, seed=seed,
        tail_sigmas=TAIL_SIGMAS,
    )  # fmt: skip
    return path


def weighted_training_check(*, seed: int = 0, quick: bool = True, species: str = "K",
                            background_fraction: float = 0.4) -> dict[str, float]:  # fmt: skip
    """Show that sWeighted training removes a subtracted background.

    Trains the RICH generator on a background-contaminated ``species`` sample with and without its
    sWeights; returns W1/σ of each RICH DLL against a pure-signal sample (generated on that sample's
    conditions).

    Background probes are mostly pions labelled as ``species``; without weights the model learns the
    mixture, with sWeights the signal.
    """
    seed_everything(seed)
    n, steps = (12_000, 150) if quick else (60_000, 2000)
    size = {"width": 64, "n_residual": 3} if quick else {"width": 128, "n_residual": 6}
    mixed = calibration.generate(n, seed + 101, species=species, background_fraction=background_fraction)
    pure = calibration.generate(n // 2, seed + 202, species=species)
    cond = mixed[list(PID_FEATURES)].to_numpy(np.float64)
    y = mixed[list(RICH_COLUMNS)].to_numpy(np.float64)
    result: dict[str, float] = {}
    for label, weights in (("weighted", mixed["sweight"].to_numpy()), ("unweighted", None)):
        torch.manual_seed(seed)
        module = _generator(len(PID_FEATURES), len(RICH_COLUMNS), CONTINUOUS_PID, {**size})
        fit_chained(module, cond, y, weights, steps=steps, batch_size=512, seed=seed, desc=label)
        fake = sample_generator(module, pure[list(PID_FEATURES)].to_numpy(np.float32), seed=seed + 3)
        for j, c in enumerate(RICH_COLUMNS):
            result[f"{label}_{c}"] = w1_over_sigma(pure[c].to_numpy(), fake[:, j])
    return result


def train(out_dir: Path, *, seed: int = 0, quick: bool = False, steps: Sequence[str] = STEPS) -> list[Path]:
    """Train ``steps`` (default: all four); write ``<step>.onnx``, ``<step>.json`` and the original model.

    ``quick``: tiny samples and networks (tests, < 1 min). Each generator fit uses one thread, so two
    invocations with different ``steps`` share the 2-core machine.
    """
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown PID steps {unknown}; accepted: {', '.join(STEPS)}")
    out_dir = Path(out_dir)
    paths = []
    for step in (s for s in STEPS if s in steps):
        if step == "is_muon":
            seed_everything(seed)
            paths.append(train_is_muon(out_dir, seed=seed, quick=quick))
        elif _sizes(quick, step)["candidates"] > 1:
            paths.append(train_selected(step, out_dir, seed=seed, quick=quick))
        else:
            seed_everything(seed, threads=GENERATOR_THREADS)
            paths.append(train_generator_step(step, out_dir, seed=seed, quick=quick))
    return paths


def train_selected(
    step: str, out_dir: Path, *, seed: int, quick: bool, candidates: int | None = None
) -> Path:
    """Fit ``step``'s ``candidates`` runs (seeds ``seed``, ``seed + 1``, ...); keep the best in ``out_dir``.

    Each run is exactly ``train --seed <its seed>`` of that step alone; :func:`select_candidate` picks.
    ``candidates`` defaults to the step's configured number (:data:`STAGE_SIZES`).
    """
    runs = _sizes(quick, step)["candidates"] if candidates is None else candidates
    if runs < 1:
        raise ValueError(f"candidates={runs}: need at least one run")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{step}-candidates-") as tmp:
        dirs = []
        for k in range(runs):
            seed_everything(seed + k, threads=GENERATOR_THREADS)
            dirs.append(
                train_generator_step(step, Path(tmp) / f"seed{seed + k}", seed=seed + k, quick=quick).parent
            )
        return select_candidate(step, dirs, out_dir, seed=seed, quick=quick)


def selection_sample(seed: int, rows: int) -> pd.DataFrame:
    """The held-out calibration sample candidates are compared on (a data seed no fit or report uses)."""
    return calibration.generate(rows, seed * 1000 + SELECTION_DATA_SEED)


def onnx_draws(path: Path, conditions: NDArray[Any], *, seed: int) -> NDArray[np.float64]:
    """A generator's ONNX outputs (one thread) for ``conditions``, noise as in :func:`sample_generator`."""
    conditions = np.ascontiguousarray(conditions, np.float32)
    noise = np.random.default_rng(seed).standard_normal((len(conditions), NOISE_DIM)).astype(np.float32)
    draws = run_chunks(onnx_session(path), {"conditions": conditions, "noise": noise}, 65536)
    return np.asarray(draws, np.float64)


def worst_bin_w1(
    model: Path, frame: pd.DataFrame, outputs: Sequence[str], *, seed: int, min_rows: int
) -> dict[str, float]:
    """Per output, the largest W1/σ over the report's (p, η) bins with at least ``min_rows`` rows.

    ``model`` is the generator's ONNX file: the selection scores what would be served.
    """
    fake = onnx_draws(model, frame[list(PID_FEATURES)].to_numpy(np.float32), seed=seed)
    reference = frame[list(outputs)].to_numpy(np.float64)
    log10p, eta = frame["mc_log10_p"].to_numpy(), frame["mc_eta"].to_numpy()
    return worst_bins(reference, fake, log10p, eta, outputs, min_rows=min_rows)


def select_candidate(
    step: str, candidate_dirs: Sequence[Path], out_dir: Path, *, seed: int, quick: bool
) -> Path:
    """Keep the candidate whose worst output's worst (p, η) bin is lowest on :func:`selection_sample`.

    :func:`.selection.keep_best` writes it to ``out_dir`` (atomically, the selection in the manifest).
    """
    if step != "rich":
        raise ValueError(f"step {step!r}: candidate selection compares RICH chains only (accepted: rich)")
    start = time.perf_counter()
    rows = _sizes(quick, step)["selection_rows"]
    frame = selection_sample(seed, rows)
    min_rows = MIN_BIN_ROWS if quick else TARGET_BIN_ROWS

    def score(onnx_path: Path) -> dict[str, float]:
        return worst_bin_w1(
            onnx_path, frame, RICH_COLUMNS, seed=seed * 1000 + SELECTION_DATA_SEED + 1, min_rows=min_rows
        )

    sample = {"generator": "ufsim_export.calibration.generate", "rows": rows, "min_bin_rows": min_rows,
              "seed": seed * 1000 + SELECTION_DATA_SEED}  # fmt: skip
    return keep_best(step, candidate_dirs, out_dir, score, sample, started=start)
