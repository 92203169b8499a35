"""Smoke test of the CPU and memory benchmark's code paths (benchmarks/cpu): no timing is checked."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from cpu import lamarr_c, report, sample, served, sqlamarr_chain

SHARED_MISSING = sample.shared_available()
needs_shared = pytest.mark.skipif(SHARED_MISSING is not None, reason=f"{SHARED_MISSING}")
needs_cc = pytest.mark.skipif(lamarr_c.compiler() is None, reason="no C compiler")


@needs_shared
@needs_cc
def test_library_harness_times_every_function(tmp_path: Path) -> None:
    particles, chosen = sample.shared_particles(40)
    res, cov = sample.track_conditions(30)
    acc_in = chosen[list(sample.ACCEPTANCE_COLUMNS)].to_numpy()
    cost = lamarr_c.time_library(sample.library_path(), acc_in, res, cov, tmp_path, 0.0)
    assert sorted(cost.us_per_call) == sorted(lamarr_c.FUNCTIONS)
    assert all(v > 0 for v in cost.us_per_call.values())
    assert 0.0 < cost.reconstructed_fraction < 1.0
    assert cost.us_per_particle > cost.us_per_call["acceptance"]
    assert len(particles) == 40 and particles.ensemble_inputs()["rng_key"].dtype == np.uint64


@needs_cc
def test_library_harness_names_a_library_it_cannot_load(tmp_path: Path) -> None:
    rows = np.zeros((2, 12)), np.zeros((2, 12)), np.zeros((2, 15))
    with pytest.raises(RuntimeError, match="dlopen"):
        lamarr_c.time_library(tmp_path / "absent.so", *rows, tmp_path, 0.0)


@needs_shared
def test_sqlamarr_chain_on_one_crossing(tmp_path: Path) -> None:
    pytest.importorskip("SQLamarr", reason="SQLamarr is a benchmark requirement (requirements/bench.txt)")
    run = sqlamarr_chain.run_chain(
        [sample.HEPMC_DIR / "evt0.mc2"],
        sample.library_path(),
        sample.HEPMC_DIR / "PrimaryVertexSmearing.db",
        tmp_path,
    )
    assert 0 < run.tracks <= run.charged
    assert not list(tmp_path.iterdir())


def test_process_accounting_reads_this_process() -> None:
    me = [os.getpid()]
    assert served.cpu_seconds(me) > 0
    assert served.pss_bytes(me) > 0
    assert os.getpid() in served.group_members(os.getpgid(0))
    assert served.mem_available() > 0


def test_gun_sample_and_parquet_table(tmp_path: Path) -> None:
    particles = sample.gun_particles(500)
    table = particles.write_parquet(tmp_path / "p.parquet")
    from ufsim_client import read_parquet

    assert sum(len(event.pid) for event in read_parquet(table)) == len(particles)
    inputs = particles.ensemble_inputs()
    assert {k: v.shape[1] for k, v in inputs.items()} == {
        "pid": 1, "origin": 3, "momentum": 3, "n_tracks": 1, "rng_key": 1,
    }  # fmt: skip


def test_report_files(tmp_path: Path) -> None:
    results = report.Results("machine", "cmd", "model_repository", "sample")
    library = "Lamarr library, C, one particle per call (tracking only)"
    results.paths = [
        {"path": library, "particles": 10, "cpu_us_per_particle": 600.0, "server_us_per_particle": "",
         "client_us_per_particle": "", "wall_s": ""},
        {"path": "served", "particles": 10, "cpu_us_per_particle": 30.0, "server_us_per_particle": 25.0,
         "client_us_per_particle": 5.0, "wall_s": 1.0},
    ]  # fmt: skip
    results.steps = {"features": 1.0, "acceptance": 2.0}
    results.library_calls = {"acceptance": 100.0}
    results.hepmc = [
        {"way": "SQLamarr", "repeat": 0, "particles": 5, "cpu_s": 2.0, "wall_s": 3.0},
        {"way": "ufsim", "repeat": 0, "particles": 5, "cpu_s": 0.5, "wall_s": 1.0},
    ]
    results.memory = [(0.0, 10**9, "fresh"), (1.0, 2 * 10**9, "1 at once")]
    written = report.write(results, tmp_path)
    assert {p.name for p in written} >= {"paths.csv", "steps.csv", "memory.csv", "report.md", "memory.png"}
    text = (tmp_path / "report.md").read_text()
    assert "| served | 30.0 | 20.0× |" in text
    assert "ufsim takes 4.0× less CPU than SQLamarr" in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
