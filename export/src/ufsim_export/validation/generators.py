"""One ONNX generator against its reference sample, in distribution.

W1/σ overall and per (p, η) bin, a classifier two-sample test, and the bias and width at fixed particles
where particles repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..metrics import (
    ETA_EDGES,
    LOG10P_EDGES,
    MIN_BIN_ROWS,
    BinnedW1,
    binned_w1_over_sigma,
    c2st_auc,
    group_fidelity,
    robust_sigma,
    w1_over_sigma,
)
from .plots import plot_binned_w1, plot_overlays
from .section import AUC_TARGET, FIGURES, W1_TARGET, Section, fmt, mark, read_manifest, run_onnx, slug
from .tracking_library import onnx_noise_dim

NOISE_REDRAWS = 3
"""Other noise draws of each generator whose worst (p, η) bin the tables show beside the scored one (not
scored): how much of a bin's pass or miss is the draw rather than the model."""


def _edges_text() -> str:
    """The scored (p, η) bins' inner edges, for the tables' captions."""

    def joined(edges: NDArray[Any]) -> str:
        return ", ".join(f"{e:g}" for e in edges[1:-1])

    return f"log10(p/MeV) edges {joined(LOG10P_EDGES)}; η edges {joined(ETA_EDGES)} (4 x 4 bins, open ends)"


def generator_section(
    title: str,
    step: str,
    conditions: NDArray[Any],
    reference: NDArray[Any],
    cond_names: list[str],
    out_names: list[str],
    log10p: NDArray[Any],
    eta: NDArray[Any],
    models_dir: Path,
    fig_dir: Path,
    *,
    quick: bool,
    seed: int = 2024,
    noise_dim: int | None = None,
    weights_note: str = "",
    min_bin_rows: int = MIN_BIN_ROWS,
    tag: str = "",
    particles: NDArray[Any] | None = None,
) -> Section:
    """W1/σ (overall, per (p, η) bin), overlays and C2ST of one ONNX generator against its reference.

    ``tag`` prefixes the misses and the figures' names (another sample of the same generator).
    ``particles``: each row's particle (an id), where particles repeat: adds the fixed-particle table.
    """
    sec = Section(title)
    path = models_dir / f"{step}.onnx"
    if not path.exists():
        sec.lines.append(f"{step}.onnx missing: not validated.")
        sec.misses.append(f"{step}: model missing")
        return sec
    manifest = read_manifest(models_dir, step)
    noise_dim = int(noise_dim or manifest.get("noise_dim") or onnx_noise_dim(path))
    noise = np.random.default_rng(seed).standard_normal((len(conditions), noise_dim))
    model = run_onnx(path, {"conditions": conditions, "noise": noise})
    redraws = [
        run_onnx(path, {"conditions": conditions,
                        "noise": np.random.default_rng([seed, k]).standard_normal(noise.shape)})
        for k in range(1, (1 if quick else NOISE_REDRAWS) + 1)
    ]  # fmt: skip
    rng = np.random.default_rng(seed + 1)
    half = rng.permutation(len(reference))
    a, b = half[: len(half) // 2], half[len(half) // 2 :]
    sec.lines += [
        f"{len(conditions):,} held-out rows; model = `{step}.onnx` with fresh N(0, 1) noise (numpy "
        f"default_rng({seed}), not the training stream). {weights_note}"
        "Per-bin W1/σ divides by the bin's own reference σ; bins need ≥ "
        f"{min_bin_rows:,} rows ({_edges_text()}). 'floor' = W1/σ between two random halves of the "
        "reference: what sample size alone gives (a perfect model scores about 0.7 x this; where the bin "
        "floor itself exceeds the target, this validation sample cannot resolve the target in that bin). "
        "'W1/σ_robust' divides by IQR/1.349 instead (heavy tails inflate σ). 'other draws' = the worst "
        f"bin's W1/σ with {len(redraws)} other noise draws on the same rows (numpy default_rng([{seed}, k]), "
        "min–max, not scored): how much of a bin's pass or miss is the draw.",
        "",
        "| output | W1/σ | floor | target | worst bin W1/σ | floor (worst bin) | target | other draws "
        "(worst bin) | W1/σ_robust |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    binned = {}

    def by_bin(j: int, sample: NDArray[Any]) -> BinnedW1:
        return binned_w1_over_sigma(
            reference[:, j], sample[:, j], log10p, eta, LOG10P_EDGES, ETA_EDGES, min_rows=min_bin_rows
        )

    for j, name in enumerate(out_names):
        w = w1_over_sigma(reference[:, j], model[:, j])
        floor = w1_over_sigma(reference[a, j], reference[b, j], sigma=np.std(reference[:, j]))
        wb = by_bin(j, model)
        sigma_r = robust_sigma(reference[:, j])
        w_rob = w1_over_sigma(reference[:, j], model[:, j], sigma=sigma_r) if sigma_r > 0 else float("nan")
        worst_at = np.nanargmax(wb.values) if np.isfinite(wb.values).any() else None
        floor_worst = (
            _bin_floor(reference[:, j], log10p, eta, worst_at, rng) if worst_at is not None else float("nan")
        )
        redrawn = [by_bin(j, r).worst for r in redraws]
        binned[name] = wb.values
        ok, ok_bins = w <= W1_TARGET, bool(np.isfinite(wb.worst)) and wb.worst <= W1_TARGET
        sec.checks += 2
        if not ok:
            sec.misses.append(f"{tag}{step} {name}: W1/σ = {w:.4f} (target {W1_TARGET})")
        if not ok_bins:
            n_bad = int((wb.values > W1_TARGET).sum())
            sec.misses.append(
                f"{tag}{step} {name}: worst (p, η) bin W1/σ = {wb.worst:.4f} (target {W1_TARGET}; "
                f"{n_bad} of {int(np.isfinite(wb.values).sum())} bins above)"
            )
        sec.lines.append(
            f"| {name} | {w:.4f} | {floor:.4f} | {mark(ok)} | {fmt(wb.worst)} | {fmt(floor_worst)} | "
            f"{mark(ok_bins)} | {fmt(min(redrawn))}–{fmt(max(redrawn))} | {fmt(w_rob)} |"
        )
    n_auc = min(len(conditions), 6_000 if quick else 60_000)
    sel = rng.permutation(len(conditions))[:n_auc]
    auc = c2st_auc(
        np.hstack([conditions[sel], reference[sel]]),
        np.hstack([conditions[sel], model[sel]]),
        seed=seed,
        max_iter=30 if quick else 200,
    )
    # the floor of the test: the same classifier on two halves of the reference (conditions differ)
    sec.checks += 1
    ok_auc = auc <= AUC_TARGET
    if not ok_auc:
        sec.misses.append(f"{tag}{step}: classifier two-sample AUC = {auc:.4f} (target {AUC_TARGET})")
    sec.lines += [
        "",
        f"**Classifier two-sample test** (HistGradientBoostingClassifier, {n_auc:,} reference + {n_auc:,} "
        f"model rows of [{len(cond_names)} conditions, {len(out_names)} outputs], half held out): "
        f"**AUC = {auc:.4f}** (target ≤ {AUC_TARGET}: {mark(ok_auc)}).",
        "",
    ]
    if particles is not None:
        sec.lines += _fixed_particle_table(reference, model, particles, out_names, rng)
    sec.lines.append(f"<!-- {slug(tag)}{step} c2st auc {auc:.6f} -->")
    overlay = fig_dir / f"{slug(tag)}{step}_overlay.png"
    plot_overlays(reference, model, out_names, overlay, title=f"{step}: ONNX model vs reference")
    heat = fig_dir / f"{slug(tag)}{step}_binned_w1.png"
    plot_binned_w1(binned, heat, title=f"{step}: W1/σ per (p, η) bin (target {W1_TARGET})")
    sec.lines += [
        f"![{step} overlays]({FIGURES}/{overlay.name})",
        "",
        f"![{step} binned W1]({FIGURES}/{heat.name})",
        "",
    ]
    return sec


FIXED_PARTICLE_ROWS = 300
"""Tracks a particle needs for the fixed-particle table."""


def _fixed_particle_table(
    reference: NDArray[Any],
    model: NDArray[Any],
    particles: NDArray[Any],
    out_names: list[str],
    rng: np.random.Generator,
) -> list[str]:
    """Bias and width at fixed particles (:func:`~ufsim_export.metrics.group_fidelity`), with their floors.

    Nothing where no particle is drawn often enough (a sample of many particles, each drawn a few times).
    """
    fits = [
        group_fidelity(reference[:, j], model[:, j], particles, min_rows=FIXED_PARTICLE_ROWS)
        for j in range(len(out_names))
    ]
    n_groups = fits[0].groups
    if not n_groups:
        return []
    order = rng.permutation(len(particles))
    order = order[np.argsort(particles[order], kind="stable")]
    a, b = order[0::2], order[1::2]
    rows = []
    for j, (name, fit) in enumerate(zip(out_names, fits, strict=True)):
        floor = group_fidelity(
            reference[a, j], reference[b, j], particles[a], model_groups=particles[b],
            min_rows=FIXED_PARTICLE_ROWS // 2,
        )  # fmt: skip
        rows.append(
            f"| {name} | {fmt(fit.spread, 3)} | {fmt(fit.bias, 3)}, {fmt(fit.bias_p90, 3)} | "
            f"{fmt(floor.bias, 3)}, {fmt(floor.bias_p90, 3)} | {fmt(fit.width, 3)} "
            f"({fmt(fit.width_p10, 2)}–{fmt(fit.width_p90, 2)}) | {fmt(floor.width_p10, 2)}–"
            f"{fmt(floor.width_p90, 2)} |"
        )
    return [
        "",
        f"**At fixed particles** (not scored): the {n_groups:,} particles drawn as ≥ {FIXED_PARTICLE_ROWS} "
        "tracks. 'spread' = the library's standard deviation at a fixed particle over its overall one "
        "(median); |bias| = the model's mean minus the library's at a fixed particle, over that spread "
        "(median, 90th percentile); width = the model's standard deviation over the library's there "
        "(median, 10th–90th percentile). 'floor' = the same between two halves of the library's tracks of "
        "each particle (half the tracks, so a perfect model scores about 0.7 x the floor's bias).",
        "",
        "| output | spread | \\|bias\\|: median, p90 | floor | width: median (p10–p90) | floor (p10–p90) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _bin_floor(
    reference: NDArray[Any],
    log10p: NDArray[Any],
    eta: NDArray[Any],
    flat_bin: int | np.integer[Any],
    rng: np.random.Generator,
) -> float:
    """W1/σ between two random halves of the reference rows of one (p, η) bin (its sampling floor)."""
    n_e = len(ETA_EDGES) - 1
    i, j = divmod(int(flat_bin), n_e)
    sel = np.flatnonzero(
        (np.digitize(log10p, LOG10P_EDGES[1:-1]) == i) & (np.digitize(eta, ETA_EDGES[1:-1]) == j)
    )
    if len(sel) < 2:
        return float("nan")
    perm = rng.permutation(sel)
    half = len(perm) // 2
    return w1_over_sigma(reference[perm[:half]], reference[perm[half:]], sigma=np.std(reference[sel]))
