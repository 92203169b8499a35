"""Tracking generators against the Lamarr library itself, on tracks no model was trained on.

The held-out tracks are validation-split particles (whole events never trained on) labelled by the
library with a noise seed no training uses (:data:`REPORT_SEED`). Four views:

- distributions: each ONNX generator with fresh N(0, 1) noise vs the library (W1/σ overall and in (p, η)
  bins with >= 5,000 tracks, classifier two-sample AUC); the covariance conditioned on the library's
  track quality;
- the served chain: resolution -> covariance conditioned on the *generated* quality, vs the library's
  chain (joint AUC), and the served integer nDoF (max(floor(nDoF_f), 1)) vs the library's;
- per-track parity: the same conditions and the library's own noise, ONNX vs library, |Δ|/σ;
- conversion fidelity with the tail-aware criterion: |Δ| <= 1e-5 max(|y|, 10 σ) (1e-5 relative, or
  1e-4 σ for far-tail outputs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..training.distill import parity, student_inputs
from ..training.library import LabelledSet, labelled_set
from ..training.tracking import Columns, load_particles
from .metrics import c2st_auc, w1_over_sigma
from .report import (
    AUC_TARGET,
    FIGURES,
    W1_TARGET,
    Section,
    _eta_from_slopes,
    _mark,
    _plt,
    generator_section,
    run_onnx,
)

REPORT_SEED = 20_261_202
"""Labelled-set seed of the report's held-out tracks (training uses seed + 1 and seed + 7001)."""
FULL_ROWS = 200_000
QUICK_ROWS = 6_000
MIN_BIN_TRACKS = 5_000
PARITY_MEDIAN_TARGET = 0.05
PARITY_P99_TARGET = 0.3
FIDELITY_RTOL = 1e-5
FIDELITY_TAIL_SIGMAS = 10.0
"""Fidelity scale max(|y|, 10 σ): 1e-5 of it is 1e-5 relative, or 1e-4 σ where |y| is small."""
MODEL_NOISE_SEED = 2024


def held_out_tracks(data_dir: Path, n: int) -> LabelledSet:
    """``n`` library-labelled tracks from validation-split particles, report noise seed (cached)."""
    particles, val = load_particles(data_dir, seed=0)
    return labelled_set(data_dir, particles[val].reset_index(drop=True), n, seed=REPORT_SEED)


def served_ndof(ndof_f: np.ndarray) -> np.ndarray:
    """The ensemble's integer nDoF from the generator's nDoF_f (``graphs._build_assembly``)."""
    return np.maximum(np.floor(ndof_f), 1.0)


def _fresh_noise(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 128)).astype(np.float32)


def tracking_sections(data_dir: Path, models_dir: Path, fig_dir: Path, *, quick: bool) -> list[Section]:
    """Resolution, covariance, served chain, parity and tail-aware fidelity of the tracking generators."""
    res_path, cov_path = models_dir / "tracking_resolution.onnx", models_dir / "tracking_covariance.onnx"
    if not (res_path.exists() and cov_path.exists()):
        sec = Section("Tracking generators", ["tracking_resolution/covariance.onnx missing: not validated."])
        sec.misses.append("tracking generators missing")
        return [sec]
    cols = Columns.from_spec()
    tracks = held_out_tracks(data_dir, QUICK_ROWS if quick else FULL_ROWS)
    cond = tracks.conditions.astype(np.float64)
    log10p = cond[:, 5]
    eta = _eta_from_slopes(cond[:, 3], cond[:, 4])
    min_bin = 300 if quick else MIN_BIN_TRACKS
    note = (
        f"Reference: the library on {len(tracks):,} held-out tracks (validation-split particles, library "
        f"noise seed {REPORT_SEED}, never trained on). "
    )
    res_cond, _, res_ref = student_inputs("tracking_resolution", tracks)
    cov_cond, _, cov_ref = student_inputs("tracking_covariance", tracks)
    sections = [
        generator_section(
            "Tracking resolution (generator)", "tracking_resolution", res_cond.astype(np.float64),
            res_ref.astype(np.float64), list(cols.resolution_conditions), list(cols.resolution_outputs),
            log10p, eta, models_dir, fig_dir, quick=quick, weights_note=note, min_bin_rows=min_bin,
        ),
        generator_section(
            "Tracking covariance (generator, conditioned on the library's track quality)",
            "tracking_covariance", cov_cond.astype(np.float64), cov_ref.astype(np.float64),
            list(cols.covariance_conditions), list(cols.covariance_outputs), log10p, eta, models_dir,
            fig_dir, quick=quick, weights_note=note, min_bin_rows=min_bin,
        ),
    ]  # fmt: skip
    sections.append(chain_section(tracks, res_path, cov_path, fig_dir, quick=quick))
    sections.append(parity_section(tracks, res_path, cov_path, cols))
    return sections


def chain_section(
    tracks: LabelledSet, res_path: Path, cov_path: Path, fig_dir: Path, *, quick: bool
) -> Section:
    """The served chain (covariance on the generated quality) vs the library's, and the integer nDoF."""
    sec = Section("Resolution + covariance as served (joint), and the integer nDoF")
    n = len(tracks)
    res = run_onnx(res_path, {"conditions": tracks.conditions, "noise": _fresh_noise(n, MODEL_NOISE_SEED)})
    cov_cond = np.column_stack([tracks.conditions, res[:, 6:9]])
    cov = run_onnx(cov_path, {"conditions": cov_cond, "noise": _fresh_noise(n, MODEL_NOISE_SEED + 1)})
    reference = np.hstack([tracks.conditions, tracks.resolution, tracks.covariance]).astype(np.float64)
    model = np.hstack([tracks.conditions, res, cov])
    n_auc = min(n, 6_000 if quick else 60_000)
    sel = np.random.default_rng(MODEL_NOISE_SEED).permutation(n)[:n_auc]
    auc = c2st_auc(reference[sel], model[sel], seed=MODEL_NOISE_SEED, max_iter=30 if quick else 200)
    ok_auc = auc <= AUC_TARGET
    sec.checks += 1
    if not ok_auc:
        sec.misses.append(f"resolution + covariance (served chain): AUC = {auc:.4f} (target {AUC_TARGET})")
    ref_ndof, mod_ndof = served_ndof(tracks.resolution[:, 7]), served_ndof(res[:, 7])
    w_ndof = w1_over_sigma(ref_ndof, mod_ndof)
    values = np.arange(int(min(ref_ndof.min(), mod_ndof.min())), int(max(ref_ndof.max(), mod_ndof.max())) + 2)
    h_ref = np.histogram(ref_ndof, bins=values - 0.5)[0] / n
    h_mod = np.histogram(mod_ndof, bins=values - 0.5)[0] / n
    tv = 0.5 * float(np.abs(h_ref - h_mod).sum())
    ok_ndof = w_ndof <= W1_TARGET
    sec.checks += 1
    if not ok_ndof:
        sec.misses.append(f"served integer nDoF: W1/σ = {w_ndof:.4f} (target {W1_TARGET})")
    sec.lines += [
        f"{n:,} held-out tracks. Model = the ONNX resolution generator with fresh N(0, 1) noise, then the "
        "ONNX covariance generator conditioned on the **generated** chi2PerDoF, nDoF_f, ghostProb (as the "
        "ensemble serves them); reference = the library's resolution, then its covariance on its own "
        f"quality. Classifier two-sample test on [12 conditions, 9 + 15 outputs], {n_auc:,} + {n_auc:,} "
        f"rows, half held out: **AUC = {auc:.4f}** (target ≤ {AUC_TARGET}: {_mark(ok_auc)}).",
        "",
        "Served nDoF = max(floor(nDoF_f), 1), an integer like the library's floor(nDoF_f): "
        f"W1/σ = {w_ndof:.4f} ({_mark(ok_ndof)}), total-variation distance of the integer histograms "
        f"{tv:.4f}; integer values: library {np.all(ref_ndof == np.round(ref_ndof))}, "
        f"served {np.all(mod_ndof == np.round(mod_ndof))}.",
        "",
        f"<!-- tracking chain c2st auc {auc:.6f} -->",
    ]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    centres = values[:-1]
    ax.step(centres, h_ref, where="mid", label="library floor(nDoF_f)", color="C0")
    ax.step(centres, h_mod, where="mid", label="served nDoF (ONNX)", color="C3", ls="--")
    ax.set_xlabel("nDoF")
    ax.set_ylabel("fraction of tracks")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = fig_dir / "tracking_ndof.png"
    fig.savefig(path, dpi=72)
    plt.close(fig)
    sec.lines += ["", f"![served nDoF]({FIGURES}/{path.name})", ""]
    return sec


def parity_section(tracks: LabelledSet, res_path: Path, cov_path: Path, cols: Columns) -> Section:
    """Per-track parity: ONNX vs library for the same conditions and the library's own noise."""
    sec = Section("Per-track parity with the library (same conditions, same noise)")
    sec.lines += [
        f"{len(tracks):,} held-out tracks; each ONNX generator gets exactly the conditions and the N(0, 1) "
        "noise the library got (the covariance on the library's own track quality). |Δ|/σ per track, σ the "
        f"library output's standard deviation; targets: median ≤ {PARITY_MEDIAN_TARGET}, 99th percentile ≤ "
        f"{PARITY_P99_TARGET}.",
        "",
        "| generator | output | median \\|Δ\\|/σ | target | p99 \\|Δ\\|/σ | target |",
        "|---|---|---|---|---|---|",
    ]
    for step, path, names in (
        ("tracking_resolution", res_path, cols.resolution_outputs),
        ("tracking_covariance", cov_path, cols.covariance_outputs),
    ):
        cond, noise, reference = student_inputs(step, tracks)
        model = run_onnx(path, {"conditions": cond, "noise": noise})
        for name, stats in parity(model, reference.astype(np.float64), names).items():
            ok_med, ok_p99 = stats["median"] <= PARITY_MEDIAN_TARGET, stats["p99"] <= PARITY_P99_TARGET
            sec.checks += 2
            if not ok_med:
                sec.misses.append(
                    f"{step} {name}: parity median |Δ|/σ = {stats['median']:.4f} "
                    f"(target {PARITY_MEDIAN_TARGET})"
                )
            if not ok_p99:
                sec.misses.append(
                    f"{step} {name}: parity p99 |Δ|/σ = {stats['p99']:.4f} (target {PARITY_P99_TARGET})"
                )
            sec.lines.append(
                f"| {step} | {name} | {stats['median']:.4f} | {_mark(ok_med)} | {stats['p99']:.4f} | "
                f"{_mark(ok_p99)} |"
            )
    return sec


def tail_aware_error(expected: np.ndarray, got: np.ndarray) -> float:
    """max |got - expected| / max(|expected|, 10 σ_column): <= 1e-5 means 1e-5 relative, or 1e-4 σ."""
    expected = np.asarray(expected, np.float64)
    sigma = np.maximum(expected.std(axis=0), 1e-30)
    scale = np.maximum(np.abs(expected), FIDELITY_TAIL_SIGMAS * sigma)
    return float((np.abs(np.asarray(got, np.float64) - expected) / scale).max())


def fidelity(
    original: Path,
    onnx_path: Path,
    step: str,
    data_dir: Path,
    n: int,
    *,
    batch_sizes: tuple[int, ...] = (1, 1000),
) -> tuple[dict[int, float], int]:
    """ONNX vs the saved PyTorch generator on ``n`` held-out tracks with fresh noise: the tail-aware error
    (:func:`tail_aware_error`) per ONNX batch size, and the number of rows."""
    import torch

    from ..training.common import load_generator
    from .report import _session

    tracks = held_out_tracks(data_dir, max(n, QUICK_ROWS))
    cond, _, _ = student_inputs(step, tracks)
    cond = np.ascontiguousarray(cond[:n], np.float32)
    noise = _fresh_noise(len(cond), 5)
    module = load_generator(original)
    with torch.no_grad():
        expected = module(torch.from_numpy(cond), torch.from_numpy(noise)).numpy()
    session = _session(onnx_path)
    errors = {}
    for batch in batch_sizes:
        got = np.concatenate(
            [
                session.run(None, {"conditions": cond[i : i + batch], "noise": noise[i : i + batch]})[0]
                for i in range(0, len(cond), batch)
            ]
        )
        errors[int(batch)] = tail_aware_error(expected, got)
    return errors, len(cond)
