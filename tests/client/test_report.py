"""``ufsim report``: categories, efficiencies with binomial intervals, IP, PID with flow bins, overlays."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ufsim_client.cli import main
from ufsim_client.ntuple import schema
from ufsim_client.report import read_provenance, write_report
from ufsim_client.writers import open_writer


def _ntuple(path: Path, seed: int, n: int = 3000, k_shift: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    c = {name: np.zeros(n, dtype) for name, dtype in schema().items()}
    c["eventNumber"] = np.arange(n) // 30
    c["TRUEID"] = rng.choice([211, -211, 321, 13, 2212, 11], n).astype(np.int32)
    c["TRUEP"] = np.exp(rng.uniform(np.log(2000), np.log(150000), n)).astype(np.float32)
    c["TRUEETA"] = rng.uniform(1.8, 5.2, n).astype(np.float32)
    c["TRUEP_Z"] = np.where(np.arange(n) % 50 == 0, -1.0, c["TRUEP"]).astype(np.float32)  # 2% backwards
    backwards = c["TRUEP_Z"] <= 0
    in_acc = (rng.uniform(size=n) < 0.8) & ~backwards
    kind = rng.choice([0, 3, 4, 5], n, p=[0.1, 0.7, 0.1, 0.1])
    c["TRACK_Type"] = np.where(in_acc, kind, -1).astype(np.int32)
    long = c["TRACK_Type"] == 3
    c["TRACK_P"] = np.where(c["TRACK_Type"] > 0, c["TRUEP"] * (1 + rng.normal(0, 0.005, n)), -9999).astype(
        np.float32
    )
    kaon = np.abs(c["TRUEID"]) == 321
    c["RichDLLk"] = np.where(long, rng.normal(0, 10, n) + 25 * kaon + k_shift, -1000).astype(np.float32)
    c["RichDLLk"][np.flatnonzero(long)[:5]] = 500.0  # far in the tail: must show as overflow
    c["PIDmu"] = np.where(long, rng.normal(0, 3, n), -1000).astype(np.float32)
    c["ProbNNpi"] = np.where(long, rng.uniform(0, 1, n), -1).astype(np.float32)
    c["IP_OWNPV"] = np.where(c["TRACK_Type"] > 0, rng.exponential(0.05, n), -9999).astype(np.float32)
    c["IPCHI2_OWNPV"] = np.where(c["TRACK_Type"] > 0, rng.chisquare(2, n), -9999).astype(np.float32)
    c["isMuon"] = np.where(long, rng.integers(0, 2, n), -1).astype(np.int32)
    writer = open_writer(path)
    writer.set_provenance({"ufsim_version": "test", "seed": seed, "inputs": [{"name": "evt0.mc2"}]})
    writer.write(c)
    writer.close()


def test_single_report_sections(tmp_path: Path) -> None:
    _ntuple(tmp_path / "a.root", 1)
    report = write_report(tmp_path / "a.root", tmp_path / "out").read_text()
    assert "3000 particles in 100 events" in report and "seed 1" in report
    # not simulated (pz <= 0) is its own category, apart from out of acceptance
    row = next(line for line in report.splitlines() if line.startswith("| pi |"))
    cells = [float(x) for x in row.split("|")[4:10]]
    assert cells[0] > 0 and cells[1] > 0.1 and sum(cells) == pytest.approx(1, abs=0.01)
    for png in (
        "efficiency_pi.png",
        "efficiency_K.png",
        "momentum_resolution.png",
        "ip_ownpv.png",
        "richdllk.png",
    ):
        assert png in report
        assert (tmp_path / "out" / png).stat().st_size > 5000
    # The five RichDLLk values at 500 are not cut: they are the overflow of the range.
    rich = report[report.index("### RichDLLk") :]
    overflow = [float(m) for m in re.findall(r"\| [0-9.e+-]+ \| ([0-9.]+) \|\n", rich.split("###")[1])]
    assert sum(overflow) > 0


def test_overlay_of_two_ntuples_via_the_command_line(tmp_path: Path) -> None:
    _ntuple(tmp_path / "a.parquet", 1)
    _ntuple(tmp_path / "b.root", 2, k_shift=5.0)
    assert (
        main(
            ["report", str(tmp_path / "a.parquet"), str(tmp_path / "b.root"), "--output", str(tmp_path / "o")]
        )
        == 0
    )
    report = (tmp_path / "o" / "report.md").read_text()
    assert "A: a.parquet" in report and "B: b.root" in report
    assert "| K | A: a.parquet |" in report and "| K | B: b.root |" in report
    assert read_provenance(tmp_path / "b.root")["seed"] == 2


def test_three_ntuples_are_refused(tmp_path: Path) -> None:
    _ntuple(tmp_path / "a.root", 1, n=300)
    paths = [str(tmp_path / "a.root")] * 3
    assert main(["report", *paths, "--output", str(tmp_path / "o")]) == 2
