"""Smoke test of benchmarks/noise_cost.py on the committed models: every generator runs with both noise
graphs (gated steps fed a value they compute) and the report is written; no timing is checked."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import noise_cost


def test_noise_cost_runs_every_generator(tmp_path: Path) -> None:
    argv = ["--rows", "64", "--repeats", "1", "--min-time", "0.01", "--out", str(tmp_path)]
    assert noise_cost.main(argv) == 0
    report = (tmp_path / "noise_cost.md").read_text()
    for step in ("tracking_resolution", "tracking_covariance", "rich", "muon", "global_pid"):
        assert f"| {step} |" in report
    assert "| tracking_resolution | 164 |" in report
