"""Validation metrics behave (W1/σ, binned W1/σ, classifier two-sample test, binned means) and the
report is written end to end from quick-trained models."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ufsim_export.metrics import (
    binned_mean,
    binned_mean_2d,
    binned_w1_over_sigma,
    c2st_auc,
    group_fidelity,
    robust_sigma,
    w1_over_sigma,
)


def test_w1_over_sigma_of_a_sample_with_itself_is_zero_and_shift_is_seen() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, 20_000)
    assert w1_over_sigma(x, x) == pytest.approx(0.0, abs=1e-12)
    assert w1_over_sigma(x, x + 0.1 * np.std(x)) == pytest.approx(0.1, rel=1e-6)  # shift of 0.1 σ
    assert w1_over_sigma(x, x * 1.5) > 0.05
    assert w1_over_sigma(x, 10 * x) == pytest.approx(w1_over_sigma(x / 2, 5 * x), rel=1e-9)
    assert w1_over_sigma(np.ones(10), np.ones(10)) == 0.0
    assert w1_over_sigma(np.ones(10), np.zeros(10)) == float("inf")


def test_w1_over_sigma_independent_samples_is_small() -> None:
    rng = np.random.default_rng(1)
    assert w1_over_sigma(rng.normal(size=50_000), rng.normal(size=50_000)) < 0.02


def test_binned_w1_finds_the_shifted_bin() -> None:
    rng = np.random.default_rng(2)
    n = 40_000
    p, eta = rng.uniform(3, 5, n), rng.uniform(2, 5, n)
    ref = rng.normal(size=n)
    model = rng.normal(size=n) + np.where((p > 4.5) & (eta > 4), 1.0, 0.0)
    res = binned_w1_over_sigma(
        ref, model, p, eta, np.array([-np.inf, 4.5, np.inf]), np.array([-np.inf, 4, np.inf])
    )
    assert res.values.shape == (2, 2)
    assert res.values[1, 1] > 0.5
    assert np.nanmax(res.values[[0, 0, 1], [0, 1, 0]]) < 0.1
    assert res.worst == res.values[1, 1]
    sparse = binned_w1_over_sigma(ref[:100], model[:100], p[:100], eta[:100], np.array([-np.inf, np.inf]),
                                  np.array([-np.inf, np.inf]))  # fmt: skip
    assert np.isnan(sparse.values).all()


def test_c2st_auc_is_half_for_identical_distributions_and_high_for_different() -> None:
    rng = np.random.default_rng(3)
    c = rng.normal(size=(6000, 2))
    same = c2st_auc(np.c_[c, rng.normal(size=6000)], np.c_[c, rng.normal(size=6000)], seed=0)
    assert abs(same - 0.5) < 0.04
    # outputs depending on the condition in the reference but not in the model: only the joint sees it
    ref = np.c_[c, c[:, 0] + 0.3 * rng.normal(size=6000)]
    mod = np.c_[c, rng.permutation(ref[:, 2])]
    assert w1_over_sigma(ref[:, 2], mod[:, 2]) == pytest.approx(0.0, abs=1e-12)
    assert c2st_auc(ref, mod, seed=0) > 0.8


def test_binned_means_and_robust_sigma() -> None:
    x = np.array([0.1, 0.2, 1.5, 1.6, 2.5])
    v = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    mean, w = binned_mean(x, v, np.array([0, 1, 2, 3]))
    np.testing.assert_allclose(mean, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(w, [2, 2, 1])
    mean, _ = binned_mean(x, v, np.array([0, 1, 2, 3]), weights=np.array([3, 1, 1, 1, 1.0]))
    assert mean[0] == pytest.approx(0.75)
    m2, w2 = binned_mean_2d(x, x, v, np.array([0, 1, 3]), np.array([0, 2, 3]))
    np.testing.assert_allclose(m2, [[0.5, np.nan], [1.0, 0.0]])
    np.testing.assert_allclose(w2, [[2, 0], [2, 1]])
    g = np.random.default_rng(4).normal(0, 3, 100_000)
    assert robust_sigma(g) == pytest.approx(3.0, rel=0.02)


def test_report_from_quick_models(shared_data: Path, tmp_path: Path) -> None:
    from ufsim_export.training import tracking
    from ufsim_export.validation.report import write_report

    data = shared_data / "lamarr-trk-2016MU"
    models = tmp_path / "models"
    tracking.train(data, models, seed=0, quick=True)
    path = write_report(data, models, tmp_path / "reports", quick=True)
    text = path.read_text()
    assert path.name == "validation.md"
    for heading in ("## Summary", "## Acceptance and tracking efficiency", "## Tracking resolution",
                    "## Tracking covariance", "## Resolution + covariance as served", "## Per-track parity",
                    "## Conversion fidelity", "## Fresh Pythia particles: acceptance and tracking efficiency",
                    "## Fresh Pythia particles: tracking resolution",
                    "## Fresh Pythia particles: tracking covariance",
                    "## Fresh Pythia particles: resolution + covariance as served",
                    "## HepMC2 crossings: tracking resolution"):  # fmt: skip
        assert heading in text
    assert "parity median" in text and "tracking_ndof.png" in text
    figures = sorted(p.name for p in (tmp_path / "reports" / "figures").glob("*.png"))
    assert "efficiency_curves.png" in figures and "tracking_resolution_overlay.png" in figures
    # the fresh particles' figures beside the held-out split's, not over them
    fresh = {"fresh_pythia_efficiency_curves.png", "fresh_pythia_tracking_covariance_binned_w1.png"}
    assert fresh <= set(figures)
    assert re.search(r"^- MISS: fresh Pythia: tracking_\w+ \w+: ", text, re.M)
    for name in figures:
        assert f"figures/{name}" in text
    # quick models are far from the targets: the report must say so with numbers
    assert "MISS" in text
    assert "recomputed" in text
    # beside each scored worst bin, the same with another noise draw: a different, finite number
    row = r"^\| (\w+) \| [0-9.]+ \| [0-9.]+ \| \S+ \| ([0-9.]+) \| .*\| ([0-9.]+)–([0-9.]+) \|"
    rows = re.findall(row, text, re.M)
    assert len(rows) >= 24
    assert all(float(lo) <= float(hi) for _, _, lo, hi in rows)
    assert any(float(lo) != float(worst) for _, worst, lo, _ in rows)
    floors = re.findall(r"PyTorch as saved vs float64 on the same rows: ([0-9.e+-]+)", text)
    assert len(floors) == 2 and all(0 < float(f) < 1e-3 for f in floors)


def test_pid_sections_score_the_committed_models(repo_root: Path, tmp_path: Path) -> None:
    from ufsim_export.validation.pid import pid_sections

    sections = pid_sections(repo_root / "export" / "models", tmp_path, quick=True)
    assert [s.title for s in sections] == [
        "isMuon (GBDT)",
        "RICH (generator)",
        "Muon system (generator, isMuon tracks)",
        "Global PID (generator, conditioned on the reference RICH/Muon/isMuon)",
    ]
    is_muon = sections[0]
    assert "30,000 fresh calibration tracks of each species" in is_muon.lines[0]
    rows = [line for line in is_muon.lines if line.startswith("| ") and not line.startswith("| species")]
    assert [r.split(" | ")[0] for r in rows] == ["| e", "| mu", "| pi", "| K", "| p"]
    # the muon efficiency of the model and its own sample agree overall, whatever the bins say
    mu = rows[1].split(" | ")
    assert float(mu[1]) > 0.8 and abs(float(mu[3])) < 0.01
    assert is_muon.checks == 10 and all(s.checks > 0 for s in sections)


def test_a_sample_too_small_for_any_efficiency_bin_is_scored_overall_only(
    repo_root: Path, shared_data: Path, tmp_path: Path
) -> None:
    import pandas as pd

    from ufsim_export.training import tracking
    from ufsim_export.validation.efficiency import efficiency_checks

    data = shared_data / "lamarr-trk-2016MU"
    particles = pd.read_parquet(data / tracking.ACCEPTANCE_FILE).iloc[:300]
    models = repo_root / "export" / "models"
    sec = efficiency_checks("tiny", particles, models, tmp_path, description="300", tag="t: ")
    assert sec.checks == 5 and not any("bin" in miss for miss in sec.misses)
    assert sum("| no bin |" in line for line in sec.lines) == 5
    enough = efficiency_checks(
        "enough", pd.read_parquet(data / tracking.ACCEPTANCE_FILE).iloc[:60_000], models, tmp_path,
        description="60,000 particles",
    )  # fmt: skip
    assert enough.checks == 10


def test_group_fidelity_sees_bias_and_width_at_fixed_particles() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 500)
    centre = rng.normal(0, 10, 40)[groups]
    reference = centre + rng.normal(size=len(groups))
    same = group_fidelity(reference, centre + rng.normal(size=len(groups)), groups)
    assert same.groups == 40 and 0.05 < same.spread < 0.2
    assert same.bias < 0.1 and 0.9 < same.width < 1.1
    # overall the shifted, widened model is hardly distinguishable (spread 10x the noise); per group it is
    off = group_fidelity(reference, centre + 0.5 + 1.5 * rng.normal(size=len(groups)), groups)
    assert 0.4 < off.bias < 0.6 and 1.4 < off.width < 1.6
    # groups below min_rows are not scored; two samples with their own row groups (halves of one)
    assert group_fidelity(reference, reference, groups, min_rows=501).groups == 0
    a, b = slice(0, None, 2), slice(1, None, 2)
    half = group_fidelity(reference[a], reference[b], groups[a], model_groups=groups[b], min_rows=250)
    assert half.groups == 40 and half.bias < 0.15


def test_fixed_particle_table_only_where_particles_repeat() -> None:
    from ufsim_export.validation.generators import FIXED_PARTICLE_ROWS, _fixed_particle_table

    rng = np.random.default_rng(1)
    reference, model = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2))
    assert _fixed_particle_table(reference, model, np.arange(4000), ["a", "b"], rng) == []
    repeated = np.repeat(np.arange(4000 // FIXED_PARTICLE_ROWS + 1), FIXED_PARTICLE_ROWS)[:4000]
    lines = _fixed_particle_table(reference, model, repeated, ["a", "b"], rng)
    assert f"the {4000 // FIXED_PARTICLE_ROWS} particles drawn" in lines[1]
    rows = [line.split(" | ")[0] for line in lines if line.startswith(("| a ", "| b "))]
    assert rows == ["| a", "| b"]
