"""The PID models against a fresh calibration sample: isMuon efficiencies, RICH, muon and global PID."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..metrics import binned_mean_2d
from ..training import calibration
from ..training.pid import GLOBAL_INPUTS, global_conditions
from .efficiency import (
    CURVE_ETA,
    CURVE_LOG10P,
    EFF_2D_ETA,
    EFF_2D_LOG10P,
    EFF_BIN_TARGET,
    EFF_OVERALL_TARGET,
    MIN_EFF_BIN_WEIGHT,
    efficiency_curve,
)
from .generators import generator_section
from .plots import plot_efficiency_curves
from .section import FIGURES, PID_STEPS, Section, fmt, mark, run_onnx, scored_bin_rows

PID_ROWS = 3_000_000
"""Calibration rows the PID generators are scored on (the parametric sample costs 3 s a million). At
200,000 rows the least populated scored (p, η) bins had a sampling floor near the 0.05 target; at 1,000,000
the worst bins' floors were still up to 0.027, so a perfect model would score up to 0.019 there from the
sample alone, and MuonMuLL's worst bin read 0.040-0.055 over four noise draws where 3,000,000 rows read
0.028-0.032. At 3,000,000 one more RICH bin (below 3.2 GeV, 3.5 < η < 4.5) reaches 5,000 rows."""
IS_MUON_ROWS = 1_000_000
"""Fresh tracks of each species isMuon is scored on (at most; the quick report's fewer): binomial σ ≤ 0.008
where the efficiency is steep."""


def pid_sections(models_dir: Path, fig_dir: Path, *, quick: bool) -> list[Section]:
    """PID models against a fresh calibration sample, when their artifacts and generator exist."""
    present = [s for s in PID_STEPS if (models_dir / f"{s}.onnx").exists()]
    if not present:
        return [Section("PID", ["No PID artifacts in the models folder: not validated here."])]
    n = 30_000 if quick else PID_ROWS
    frame = calibration.generate(n, seed=987_654)
    features = frame[list(calibration.PID_FEATURES)].to_numpy(np.float64)
    log10p, eta = features[:, 0], features[:, 1]
    sections: list[Section] = []
    if "is_muon" in present:
        sections.append(_is_muon_section(models_dir, fig_dir, min(n, IS_MUON_ROWS)))
    note = f"Reference: `calibration.generate({n}, seed=987654)` (a sample no model was trained on). "
    min_bin = scored_bin_rows(quick)
    everything = slice(None)  # a view: no copy of the 3M-row arrays
    is_muon = frame["isMuon"].to_numpy() == 1
    # step -> (title, rows, conditions, their names, outputs, note on the rows)
    generators = {
        "rich": (
            "RICH (generator)", everything, features, calibration.PID_FEATURES, calibration.RICH_COLUMNS, "",
        ),
        "muon": (
            "Muon system (generator, isMuon tracks)", is_muon, features, calibration.PID_FEATURES,
            calibration.MUON_COLUMNS, "isMuon == 1 rows only. ",
        ),
        "global_pid": (
            "Global PID (generator, conditioned on the reference RICH/Muon/isMuon)", everything,
            global_conditions(frame), GLOBAL_INPUTS, calibration.GLOBAL_COLUMNS, "",
        ),
    }  # fmt: skip
    for step, (title, rows, conditions, cond_names, out_names, rows_note) in generators.items():
        if step not in present:
            continue
        section = generator_section(
            title, step, conditions[rows], frame.loc[rows, list(out_names)].to_numpy(np.float64),
            list(cond_names), list(out_names), log10p[rows], eta[rows], models_dir, fig_dir, quick=quick,
            weights_note=note + rows_note, min_bin_rows=min_bin,
        )  # fmt: skip
        sections.append(section)
    return sections


def _is_muon_section(models_dir: Path, fig_dir: Path, n: int) -> Section:
    """isMuon efficiency per species, on ``n`` fresh tracks of each species (one calibration sample each).

    One sample per species rather than their mixture: the reference is the sampled decision, so a
    (p, η) bin's binomial σ must stay well below the 0.03 target for a miss to mean something.
    """
    sec = Section("isMuon (GBDT)")
    sec.lines += [
        f"{n:,} fresh calibration tracks of each species (`calibration.generate({n}, seed=987655 + k, "
        "species=...)`). Reference = the sampled isMuon decisions (so it carries binomial noise, shown as "
        "the floor); model = mean ONNX P(isMuon). 2-D bins: log10 p "
        f"{EFF_2D_LOG10P.tolist()} x η {EFF_2D_ETA.tolist()}, scored with ≥ {MIN_EFF_BIN_WEIGHT:g} tracks.",
        "",
        "| species | reference | model | Δ overall | target | worst bin Δ | its binomial σ | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    curves = {}
    for k, s in enumerate(calibration.SPECIES):
        frame = calibration.generate(n, seed=987_655 + k, species=s)
        features = frame[list(calibration.PID_FEATURES)].to_numpy(np.float64)
        log10p, eta = features[:, 0], features[:, 1]
        mod = run_onnx(models_dir / "is_muon.onnx", {"features": features})[:, 1]
        ref = frame["isMuon"].to_numpy(np.float64)
        delta = float(mod.mean() - ref.mean())
        m_ref, cnt = binned_mean_2d(log10p, eta, ref, EFF_2D_LOG10P, EFF_2D_ETA)
        m_mod, _ = binned_mean_2d(log10p, eta, mod, EFF_2D_LOG10P, EFF_2D_ETA)
        scored = cnt >= MIN_EFF_BIN_WEIGHT
        diffs = np.where(scored, np.abs(m_mod - m_ref), np.nan)
        worst = float(np.nanmax(diffs)) if scored.any() else float("nan")
        at = np.nanargmax(diffs) if scored.any() else None
        sig = (
            float(np.sqrt(max(m_ref.flat[at] * (1 - m_ref.flat[at]), 1e-12) / cnt.flat[at]))
            if at is not None
            else 0
        )
        ok, ok_bins = abs(delta) <= EFF_OVERALL_TARGET, bool(scored.any()) and worst <= EFF_BIN_TARGET
        sec.checks += 2
        if not ok:
            sec.misses.append(f"isMuon {s}: overall Δ = {delta:+.4f} (target ±{EFF_OVERALL_TARGET})")
        if not ok_bins:
            sec.misses.append(f"isMuon {s}: worst (p, η) bin |Δ| = {worst:.4f} (target {EFF_BIN_TARGET})")
        sec.lines.append(
            f"| {s} | {ref.mean():.4f} | {mod.mean():.4f} | {delta:+.4f} | {mark(ok)} | {fmt(worst)} | "
            f"{sig:.4f} | {mark(ok_bins)} |"
        )
        ones = np.ones_like(ref)
        cp, vp = efficiency_curve(log10p, ref, mod, ones, ones, CURVE_LOG10P)
        ce, ve = efficiency_curve(eta, ref, mod, ones, ones, CURVE_ETA)
        curves[f"isMuon {s}"] = (cp, vp, ce, ve)
    path = fig_dir / "is_muon_curves.png"
    plot_efficiency_curves(curves, path, title="isMuon: ONNX GBDT vs calibration sample")
    sec.lines += ["", f"![isMuon curves]({FIGURES}/{path.name})", ""]
    return sec
