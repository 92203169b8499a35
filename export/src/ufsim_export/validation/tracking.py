"""The tracking generators' sections of the report.

Distributions on held-out and fresh tracks, the served chain with its integer nDoF, and per-track parity
with the library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..metrics import c2st_auc, w1_over_sigma
from ..training.distill import parity, student_inputs
from ..training.library import LabelledSet, log10p_eta
from ..training.tracking import Columns
from .efficiency import efficiency_checks
from .fresh_particles import (
    FRESH_SEED,
    HEPMC_SOURCES,
    PYTHIA_SOURCES,
    QUICK_PYTHIA_SOURCES,
    FreshSource,
    fresh_tracks,
)
from .fresh_particles import FULL_TRACKS as FRESH_TRACKS
from .generators import generator_section
from .plots import plot_ndof
from .section import AUC_TARGET, FIGURES, W1_TARGET, Section, mark, run_onnx, scored_bin_rows, slug
from .tracking_library import (
    FULL_ROWS,
    MODEL_NOISE_SEED,
    PARITY_MEDIAN_TARGET,
    PARITY_P99_TARGET,
    QUICK_ROWS,
    REPORT_SEED,
    fresh_noise,
    held_out_tracks,
    onnx_noise_dim,
    regression_stage,
    served_ndof,
    with_spread_noise,
)


def tracking_sections(data_dir: Path, models_dir: Path, fig_dir: Path, *, quick: bool) -> list[Section]:
    """Resolution, covariance, served chain, parity and tail-aware fidelity of the tracking generators."""
    res_path, cov_path = models_dir / "tracking_resolution.onnx", models_dir / "tracking_covariance.onnx"
    if not (res_path.exists() and cov_path.exists()):
        sec = Section("Tracking generators", ["tracking_resolution/covariance.onnx missing: not validated."])
        sec.misses.append("tracking generators missing")
        return [sec]
    tracks = held_out_tracks(data_dir, QUICK_ROWS if quick else FULL_ROWS)
    note = (
        f"Reference: the library on {len(tracks):,} held-out tracks (validation-split particles, library "
        f"noise seed {REPORT_SEED}, never trained on). "
    )
    titles = (
        "Tracking resolution (generator)",
        "Tracking covariance (generator, conditioned on the library's track quality)",
        "Resolution + covariance as served (joint), and the integer nDoF",
    )
    sections = distribution_sections(
        tracks, models_dir, fig_dir, quick=quick, note=note, titles=titles, description="held-out tracks"
    )
    sections.append(parity_section(tracks, res_path, cov_path, Columns.from_spec()))
    return sections


def distribution_sections(
    tracks: LabelledSet,
    models_dir: Path,
    fig_dir: Path,
    *,
    quick: bool,
    note: str,
    titles: tuple[str, str, str],
    description: str,
    tag: str = "",
    particles: NDArray[Any] | None = None,
) -> list[Section]:
    """Resolution, covariance (on the library's quality) and the served chain on one sample of tracks.

    ``titles``: the three sections'; ``tag``/``particles`` as in :func:`~.generators.generator_section`.
    """
    cols = Columns.from_spec()
    log10p, eta = log10p_eta(tracks.conditions.astype(np.float64))
    sections = []
    for title, step, cond_names, out_names in (
        (titles[0], "tracking_resolution", cols.resolution_conditions, cols.resolution_outputs),
        (titles[1], "tracking_covariance", cols.covariance_conditions, cols.covariance_outputs),
    ):
        cond, _, ref = student_inputs(step, tracks)
        sections.append(
            generator_section(
                title, step, cond.astype(np.float64), ref.astype(np.float64), list(cond_names),
                list(out_names), log10p, eta, models_dir, fig_dir, quick=quick, weights_note=note,
                min_bin_rows=scored_bin_rows(quick), tag=tag, particles=particles,
            )
        )  # fmt: skip
    res_path, cov_path = models_dir / "tracking_resolution.onnx", models_dir / "tracking_covariance.onnx"
    chain = chain_section(
        tracks, res_path, cov_path, fig_dir, quick=quick, title=titles[2], description=description, tag=tag
    )
    return [*sections, chain]


FRESH_SAMPLES = (
    ("Fresh Pythia particles", "fresh Pythia: ", "new Pythia runs", PYTHIA_SOURCES, QUICK_PYTHIA_SOURCES),
    ("HepMC2 crossings", "HepMC2: ", "the shared HepMC2 bunch crossings", HEPMC_SOURCES, HEPMC_SOURCES),
)
"""(heading, miss prefix, what they are, full sources, quick sources) of the fresh samples."""


def fresh_sections(data_dir: Path, models_dir: Path, fig_dir: Path, *, quick: bool) -> list[Section]:
    """Efficiencies, both tracking generators and the served chain on each fresh sample.

    New Pythia runs and the HepMC2 crossings (:mod:`.fresh_particles`), not the training particles' other
    events: how the models do on particles they have never seen the like of.
    """
    sections = []
    for heading, tag, what, full, quick_sources in FRESH_SAMPLES:
        sources = quick_sources if quick else full
        sections += _fresh_sample_sections(
            data_dir, models_dir, fig_dir, sources, heading=heading, tag=tag,
            description=f"{what} no model was trained on: {', '.join(s.describe() for s in sources)}",
            quick=quick,
        )  # fmt: skip
    return sections


def _fresh_sample_sections(
    data_dir: Path,
    models_dir: Path,
    fig_dir: Path,
    sources: tuple[FreshSource, ...],
    *,
    heading: str,
    tag: str,
    description: str,
    quick: bool,
) -> list[Section]:
    particles, tracks = fresh_tracks(data_dir, sources, QUICK_ROWS if quick else FRESH_TRACKS)
    sections = [
        efficiency_checks(
            f"{heading}: acceptance and tracking efficiency", particles, models_dir, fig_dir,
            description=f"simulated particles of {description}", tag=tag,
        )
    ]  # fmt: skip
    res_path, cov_path = models_dir / "tracking_resolution.onnx", models_dir / "tracking_covariance.onnx"
    if not (res_path.exists() and cov_path.exists()):
        sections[0].misses.append(f"{tag}tracking generators missing")
        return sections
    note = (
        f"Reference: the library on {len(tracks):,} tracks drawn from those {len(particles):,} particles "
        f"(library noise seed {FRESH_SEED}). "
    )
    titles = (
        f"{heading}: tracking resolution",
        f"{heading}: tracking covariance",
        f"{heading}: resolution + covariance as served",
    )
    sections += distribution_sections(
        tracks, models_dir, fig_dir, quick=quick, note=note, titles=titles,
        description=f"tracks of the {heading[0].lower() + heading[1:]}", tag=tag,
        particles=np.unique(tracks.conditions, axis=0, return_inverse=True)[1].ravel(),
    )  # fmt: skip
    return sections


def chain_section(
    tracks: LabelledSet,
    res_path: Path,
    cov_path: Path,
    fig_dir: Path,
    *,
    quick: bool,
    title: str,
    description: str,
    tag: str = "",
) -> Section:
    """The served chain (covariance on the generated quality) vs the library's, and the integer nDoF.

    ``tag`` prefixes the misses and the figure's name (another sample of tracks).
    """
    sec = Section(title)
    n = len(tracks)
    res_noise = fresh_noise(n, MODEL_NOISE_SEED, onnx_noise_dim(res_path))
    res = run_onnx(res_path, {"conditions": tracks.conditions, "noise": res_noise})
    cov_cond = np.column_stack([tracks.conditions, res[:, 6:9]])
    cov_noise = fresh_noise(n, MODEL_NOISE_SEED + 1, onnx_noise_dim(cov_path))
    cov = run_onnx(cov_path, {"conditions": cov_cond, "noise": cov_noise})
    reference = np.hstack([tracks.conditions, tracks.resolution, tracks.covariance]).astype(np.float64)
    model = np.hstack([tracks.conditions, res, cov])
    n_auc = min(n, 6_000 if quick else 60_000)
    sel = np.random.default_rng(MODEL_NOISE_SEED).permutation(n)[:n_auc]
    auc = c2st_auc(reference[sel], model[sel], seed=MODEL_NOISE_SEED, max_iter=30 if quick else 200)
    ok_auc = auc <= AUC_TARGET
    sec.checks += 1
    if not ok_auc:
        sec.misses.append(
            f"{tag}resolution + covariance (served chain): AUC = {auc:.4f} (target {AUC_TARGET})"
        )
    ref_ndof, mod_ndof = served_ndof(tracks.resolution[:, 7]), served_ndof(res[:, 7])
    w_ndof = w1_over_sigma(ref_ndof, mod_ndof)
    values = np.arange(int(min(ref_ndof.min(), mod_ndof.min())), int(max(ref_ndof.max(), mod_ndof.max())) + 2)
    h_ref = np.histogram(ref_ndof, bins=values - 0.5)[0] / n
    h_mod = np.histogram(mod_ndof, bins=values - 0.5)[0] / n
    tv = 0.5 * float(np.abs(h_ref - h_mod).sum())
    ok_ndof = w_ndof <= W1_TARGET
    sec.checks += 1
    if not ok_ndof:
        sec.misses.append(f"{tag}served integer nDoF: W1/σ = {w_ndof:.4f} (target {W1_TARGET})")
    sec.lines += [
        f"{n:,} {description}. Model = the ONNX resolution generator with fresh N(0, 1) noise, then the "
        "ONNX covariance generator conditioned on the **generated** chi2PerDoF, nDoF_f, ghostProb (as the "
        "ensemble serves them); reference = the library's resolution, then its covariance on its own "
        f"quality. Classifier two-sample test on [12 conditions, 9 + 15 outputs], {n_auc:,} + {n_auc:,} "
        f"rows, half held out: **AUC = {auc:.4f}** (target ≤ {AUC_TARGET}: {mark(ok_auc)}).",
        "",
        "Served nDoF = max(floor(nDoF_f), 1), an integer like the library's floor(nDoF_f): "
        f"W1/σ = {w_ndof:.4f} ({mark(ok_ndof)}), total-variation distance of the integer histograms "
        f"{tv:.4f}; integer values: library {np.all(ref_ndof == np.round(ref_ndof))}, "
        f"served {np.all(mod_ndof == np.round(mod_ndof))}.",
        "",
        f"<!-- {slug(tag)}tracking chain c2st auc {auc:.6f} -->",
    ]
    path = fig_dir / f"{slug(tag)}tracking_ndof.png"
    plot_ndof(values[:-1], h_ref, h_mod, path)
    sec.lines += ["", f"![served nDoF]({FIGURES}/{path.name})", ""]
    return sec


def parity_section(tracks: LabelledSet, res_path: Path, cov_path: Path, cols: Columns) -> Section:
    """Per-track parity: ONNX vs library for the same conditions and the library's own noise."""
    sec = Section("Per-track parity with the library (same conditions, same noise)")
    sec.lines += [
        f"{len(tracks):,} held-out tracks; each ONNX generator gets exactly the conditions and the N(0, 1) "
        "noise the library got (the covariance on the library's own track quality), then fresh noise for "
        "its spread chain, which draws what the regression could not resolve. |Δ|/σ per track, σ the "
        f"library output's standard deviation; targets: median ≤ {PARITY_MEDIAN_TARGET}, 99th percentile ≤ "
        f"{PARITY_P99_TARGET}. 'ŷ alone' = the same for the regression stage (the saved module without its "
        "spread draw; not served, not scored): how far the deterministic part follows the library.",
        "",
        "| generator | output | median \\|Δ\\|/σ | target | p99 \\|Δ\\|/σ | target | ŷ alone: median, p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for step, path, names in (
        ("tracking_resolution", res_path, cols.resolution_outputs),
        ("tracking_covariance", cov_path, cols.covariance_outputs),
    ):
        cond, noise, reference = student_inputs(step, tracks)
        served_noise = with_spread_noise(noise, onnx_noise_dim(path), 11)
        model = run_onnx(path, {"conditions": cond, "noise": served_noise})
        original = path.with_suffix(".pt")
        regressed = regression_stage(original, cond, noise) if original.exists() else None
        stage = parity(regressed, reference, names) if regressed is not None else {}
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
            regression_cell = (
                f"{stage[name]['median']:.4f}, {stage[name]['p99']:.4f}" if name in stage else "–"
            )
            sec.lines.append(
                f"| {step} | {name} | {stats['median']:.4f} | {mark(ok_med)} | {stats['p99']:.4f} | "
                f"{mark(ok_p99)} | {regression_cell} |"
            )
    return sec
