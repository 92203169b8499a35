"""The primary-vertex reconstruction model: parameters from the database, graph = reference, right shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from scipy import stats

from ufsim_export.graphs import pv

ROOT = Path(__file__).resolve().parents[2]
DB = ROOT.parent / "shared" / "data" / "lamarr-hepmc2" / "PrimaryVertexSmearing.db"


def _session(params: dict) -> ort.InferenceSession:
    return ort.InferenceSession(
        pv.build_model(params).SerializeToString(), providers=["CPUExecutionProvider"]
    )


def _keys(n: int, offset: int = 0) -> np.ndarray:
    return (np.arange(offset, offset + n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)).reshape(-1, 1)


def test_committed_parameters_are_the_databases() -> None:
    if not DB.is_file():
        pytest.skip(f"{DB} absent (needs ../shared beside the repository)")
    assert pv.extract_parameters(DB) == json.loads(pv.PARAMETERS_PATH.read_text())


def test_extract_names_the_known_conditions(tmp_path: Path) -> None:
    if not DB.is_file():
        pytest.skip(f"{DB} absent (needs ../shared beside the repository)")
    with pytest.raises(ValueError, match="2016_pp_MagUp"):
        pv.extract_parameters(DB, "2099_pp_MagSideways")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pv.extract_parameters(tmp_path / "none.db")


def test_extract_command_writes_the_json(tmp_path: Path) -> None:
    if not DB.is_file():
        pytest.skip(f"{DB} absent (needs ../shared beside the repository)")
    out = tmp_path / "pv.json"
    assert pv.main(["extract", "--db", str(DB), "--condition", "2017_pp_MagDown", "--output", str(out)]) == 0
    assert pv.load_parameters(out)["condition"] == "2017_pp_MagDown"
    assert pv.main(["extract", "--db", str(tmp_path / "missing.db"), "--output", str(out)]) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [({"f1": 0.9, "f2": 0.5}, "fractions"), ({"sigma2": 0.0}, "widths"), (None, "lacks")],
)
def test_bad_parameters_are_refused(tmp_path: Path, change: dict | None, message: str) -> None:
    params = pv.load_parameters()
    if change is None:
        del params["y"]["mu"]
    else:
        params["z"].update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(params))
    with pytest.raises(ValueError, match=message):
        pv.load_parameters(path)


def test_graph_is_the_reference_and_batch_independent() -> None:
    params = pv.load_parameters()
    session = _session(params)
    true_pv = (
        np.random.default_rng(1).normal([0.85, -0.17, 0.0], [0.04, 0.04, 45.0], (1000, 3)).astype(np.float32)
    )
    keys = _keys(1000)
    position, error = session.run(None, {"true_pv": true_pv, "rng_key": keys})
    ref_position, ref_error = pv.reconstruct(params, true_pv, keys)
    np.testing.assert_array_equal(position, ref_position)
    np.testing.assert_array_equal(error, ref_error)
    alone, _ = session.run(None, {"true_pv": true_pv[17:18], "rng_key": keys[17:18]})
    np.testing.assert_array_equal(alone, position[17:18])
    # SQLamarr 0.0rc7 reports the smallest of the three widths as the uncertainty.
    assert error[0].tolist() == pytest.approx([0.01176, 0.0113, 0.07201])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_residuals_follow_the_triple_gaussian(axis: int) -> None:
    params = pv.load_parameters()
    n = 40_000
    position, _ = _session(params).run(
        None, {"true_pv": np.zeros((n, 3), np.float32), "rng_key": _keys(n, 7)}
    )
    p = params[pv.COORDS[axis]]
    fractions = (p["f1"], p["f2"], 1 - p["f1"] - p["f2"])
    widths = (p["sigma1"], p["sigma2"], p["sigma3"])

    def cdf(x: np.ndarray) -> np.ndarray:
        return sum(f * stats.norm.cdf(x, p["mu"], s) for f, s in zip(fractions, widths, strict=True))

    assert stats.kstest(position[:, axis], cdf).pvalue > 1e-3
