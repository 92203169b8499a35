"""Acceptance and track-type efficiencies of the ONNX GBDTs against the library's probabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..metrics import binned_mean, binned_mean_2d
from ..spec import default_spec_path, load_spec
from ..training.tracking import EFFICIENCY_LABELS, Columns, load_particles
from .plots import plot_efficiency_curves
from .section import FIGURES, Section, fmt, mark, run_onnx, slug

EFF_OVERALL_TARGET = 0.01
EFF_BIN_TARGET = 0.03
MIN_EFF_BIN_WEIGHT = 500.0
"""(p, η) efficiency bins with less reference weight (particles, or particles x acceptance) are not scored."""
CURVE_LOG10P = np.linspace(2.5, 6.0, 15)
CURVE_ETA = np.linspace(1.0, 6.0, 21)
EFF_2D_LOG10P = np.array([2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0])
EFF_2D_ETA = np.array([1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5])
TRACK_TYPES: tuple[str, ...] = load_spec(default_spec_path()).step("tracking_efficiency").classes[1:]
"""Reconstructed track types, in the order of the tracking-efficiency classes after the first."""


def efficiency_section(data_dir: Path, models_dir: Path, fig_dir: Path, *, quick: bool) -> Section:
    """Acceptance and track-type efficiencies of the ONNX GBDTs vs the library, validation particles."""
    df, val = load_particles(data_dir, seed=0)
    idx = np.flatnonzero(val)
    if quick:
        idx = idx[:: max(1, len(idx) // 20000)]
    return efficiency_checks(
        "Acceptance and tracking efficiency (GBDTs)", df.iloc[idx], models_dir, fig_dir,
        description="validation particles (whole events never trained on)",
    )  # fmt: skip


def efficiency_checks(
    title: str, particles: pd.DataFrame, models_dir: Path, fig_dir: Path, *, description: str, tag: str = ""
) -> Section:
    """Section ``title``: the efficiency table and curves of ``particles`` (features, library probabilities).

    ``tag`` prefixes the misses and the figure's name (another particle sample in the same report).
    """
    sec = Section(title)
    acc_path, eff_path = models_dir / "acceptance.onnx", models_dir / "tracking_efficiency.onnx"
    if not (acc_path.exists() and eff_path.exists()):
        sec.lines.append("acceptance.onnx / tracking_efficiency.onnx missing: not validated.")
        sec.misses.append("acceptance/efficiency models missing")
        return sec
    X = particles[list(Columns.from_spec().tracking_features)].to_numpy(np.float32)
    acc_ref = particles["acceptance"].to_numpy(np.float64)
    eff_ref = particles[list(EFFICIENCY_LABELS)].to_numpy(np.float64)
    eff_ref /= eff_ref.sum(axis=1, keepdims=True)
    acc_model = run_onnx(acc_path, {"features": X})[:, 1]
    eff_model = run_onnx(eff_path, {"features": X})
    log10p, eta = X[:, 3].astype(np.float64), X[:, 6].astype(np.float64)

    # quantity -> (reference values, model values, reference weights, model weights)
    quantities: dict[str, tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]] = {
        "acceptance": (acc_ref, acc_model, np.ones_like(acc_ref), np.ones_like(acc_ref)),
        "reconstructed (in acc.)": (1 - eff_ref[:, 0], 1 - eff_model[:, 0], acc_ref, acc_model),
    }
    for k, name in enumerate(TRACK_TYPES, start=1):
        quantities[f"{name} (in acc.)"] = (eff_ref[:, k], eff_model[:, k], acc_ref, acc_model)
    sec.lines += [
        f"{len(X):,} {description}. Efficiencies are **expected** "
        "efficiencies (mean probabilities), so model and reference carry no sampling noise. Track types are "
        "per particle in acceptance, the way the ensemble samples them (acceptance first, then the class): "
        "ε_type = Σ P_acc P_type / Σ P_acc, each side with its own acceptance. 2-D check bins: log10 p "
        f"{EFF_2D_LOG10P.tolist()} x η {EFF_2D_ETA.tolist()}, scored where the reference weight is ≥ "
        f"{MIN_EFF_BIN_WEIGHT:g} ('no bin': the sample is too small for any; only the overall Δ is scored).",
        "",
        "| quantity | reference | model | Δ overall | target | worst (p, η) bin Δ | bins scored | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    curves = {}
    for name, (ref, mod, w_ref, w_mod) in quantities.items():
        overall_ref = float(np.average(ref, weights=w_ref))
        overall_mod = float(np.average(mod, weights=w_mod))
        delta = overall_mod - overall_ref
        m_ref, s_ref = binned_mean_2d(log10p, eta, ref, EFF_2D_LOG10P, EFF_2D_ETA, w_ref)
        m_mod, _ = binned_mean_2d(log10p, eta, mod, EFF_2D_LOG10P, EFF_2D_ETA, w_mod)
        inside = _inside(log10p, eta)
        m_ref_in, s_ref_in = binned_mean_2d(
            log10p[inside], eta[inside], ref[inside], EFF_2D_LOG10P, EFF_2D_ETA, w_ref[inside]
        )
        m_mod_in, _ = binned_mean_2d(
            log10p[inside], eta[inside], mod[inside], EFF_2D_LOG10P, EFF_2D_ETA, w_mod[inside]
        )
        del m_ref, s_ref, m_mod
        scored = s_ref_in >= MIN_EFF_BIN_WEIGHT
        diffs = np.abs(m_mod_in - m_ref_in)[scored]
        worst = float(diffs.max()) if diffs.size else float("nan")
        ok_overall = abs(delta) <= EFF_OVERALL_TARGET
        ok_bins = bool(diffs.size) and worst <= EFF_BIN_TARGET
        sec.checks += 2 if diffs.size else 1  # a sample too small for any bin has no bin check
        if not ok_overall:
            sec.misses.append(
                f"{tag}efficiency {name}: overall Δ = {delta:+.4f} (target ±{EFF_OVERALL_TARGET})"
            )
        if diffs.size and not ok_bins:
            n_bad = int((diffs > EFF_BIN_TARGET).sum())
            sec.misses.append(
                f"{tag}efficiency {name}: worst (p, η) bin |Δ| = {worst:.4f} (target {EFF_BIN_TARGET}; "
                f"{n_bad} of {diffs.size} bins above)"
            )
        sec.lines.append(
            f"| {name} | {overall_ref:.4f} | {overall_mod:.4f} | {delta:+.4f} | {mark(ok_overall)} | "
            f"{fmt(worst)} | {int(scored.sum())} | {mark(ok_bins) if diffs.size else 'no bin'} |"
        )
        cp, vp = efficiency_curve(log10p, ref, mod, w_ref, w_mod, CURVE_LOG10P)
        ce, ve = efficiency_curve(eta, ref, mod, w_ref, w_mod, CURVE_ETA)
        curves[name] = (cp, vp, ce, ve)
    path = fig_dir / f"{slug(tag)}efficiency_curves.png"
    plot_efficiency_curves(curves, path, title=f"Lamarr 2016 MU: ONNX GBDTs vs library ({description})")
    sec.lines += ["", f"![efficiency curves]({FIGURES}/{path.name})", ""]
    return sec


def _inside(log10p: NDArray[Any], eta: NDArray[Any]) -> NDArray[np.bool_]:
    """Rows within the 2-D check bins' outer edges (the open ends are not scored)."""
    inside: NDArray[np.bool_] = (
        (log10p >= EFF_2D_LOG10P[0]) & (log10p < EFF_2D_LOG10P[-1])
        & (eta >= EFF_2D_ETA[0]) & (eta < EFF_2D_ETA[-1])
    )  # fmt: skip
    return inside


def efficiency_curve(
    x: NDArray[Any],
    ref: NDArray[Any],
    mod: NDArray[Any],
    w_ref: NDArray[Any],
    w_mod: NDArray[Any],
    edges: NDArray[Any],
) -> tuple[NDArray[Any], NDArray[Any]]:
    """(bin centres, [reference, model] weighted mean per bin) of one efficiency along ``x``, for a curve."""
    inside = (x >= edges[0]) & (x < edges[-1])
    r, _ = binned_mean(x[inside], ref[inside], edges, w_ref[inside])
    m, _ = binned_mean(x[inside], mod[inside], edges, w_mod[inside])
    return 0.5 * (edges[1:] + edges[:-1]), np.stack([r, m])
