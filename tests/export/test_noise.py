"""The generators' normal noise: exact N(0, 1) to float32-useful precision, and the same bits anywhere.

:func:`ufsim_export.graphs.rng.normals` is a table inverse CDF on counter-based words; these tests check
its distribution on 10^6 draws, its accuracy against float64, and that the ONNX graph gives numpy's bits
in this ONNX Runtime and in 1.19.2 (NGC 24.10), at any batch size, with no position-dependent operator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from scipy import special, stats
from test_elementary import POSITION_DEPENDENT
from test_ort_compat import _ort119, _run

from ufsim_export.graphs import rng
from ufsim_export.graphs.builder import GraphBuilder

STREAM = 5
DIM = 5  # odd: the table needs no pairs
ROWS = 200_000  # 10^6 draws
MAX_ABS_Z = 6.3379578  # |Phi^-1(2^-33)|, the most extreme value 32 bits can give


def _keys(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, (n, 1), dtype=np.uint64, endpoint=False)


def _model(dim: int = DIM) -> onnx.ModelProto:
    b = GraphBuilder("noise")
    key = b.input("rng_key", "UINT64", 1)
    b.output(rng.normals_graph(b, key, STREAM, dim), "z", "FP32", dim)
    return b.build()


@pytest.fixture(scope="module")
def keys() -> np.ndarray:
    return _keys(ROWS)


@pytest.fixture(scope="module")
def draws(keys: np.ndarray) -> np.ndarray:
    return rng.normals(keys, STREAM, DIM)


def _exact(keys: np.ndarray) -> np.ndarray:
    """float64 Phi^-1 of what the table reads: sign bit 63, tail probability from bits 62..32 as float32."""
    words = rng.words(keys, STREAM, DIM)
    m = ((words << np.uint64(1)) >> np.uint64(33)).astype(np.float32).astype(np.float64)
    sign = np.where((words >> np.uint64(63)) == 1, -1.0, 1.0)
    return -special.ndtri((m + 0.5) * 2.0**-32) * sign


def test_moments_match_a_standard_normal(draws: np.ndarray) -> None:
    z = draws.astype(np.float64).ravel()
    n = z.size
    # 5 standard errors of each sample moment under N(0, 1)
    assert abs(z.mean()) < 5 * np.sqrt(1 / n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    assert np.all(np.abs(np.corrcoef(draws, rowvar=False) - np.eye(DIM)) < 5 / np.sqrt(ROWS))


def test_kolmogorov_smirnov_against_a_standard_normal(draws: np.ndarray) -> None:
    assert stats.kstest(draws.ravel(), "norm").pvalue > 1e-3


@pytest.mark.parametrize("sigmas", [2, 3, 4])
def test_tail_fractions_within_statistical_error(draws: np.ndarray, sigmas: int) -> None:
    n = draws.size
    expected = 2 * stats.norm.sf(sigmas)
    observed = np.count_nonzero(np.abs(draws) > sigmas) / n
    assert abs(observed - expected) < 5 * np.sqrt(expected * (1 - expected) / n), (observed, expected)


def test_each_draw_is_the_float64_quantile_of_its_bits(keys: np.ndarray, draws: np.ndarray) -> None:
    assert np.abs(draws - _exact(keys)).max() < 3e-6
    assert np.abs(draws).max() <= MAX_ABS_Z
    assert rng.quantile_table()[:, 0].max() == np.float32(MAX_ABS_Z)


def test_quantile_table_matches_float64_at_every_cell_start() -> None:
    table = rng.quantile_table()
    shifts = np.repeat(np.array([19, 14, 9, 4, 0], dtype=np.float64), [4096, 4096, 4096, 4096, 2048])
    cells = np.concatenate([np.arange(4096.0)] * 4 + [np.arange(2048.0)])
    exact = -special.ndtri((cells * 2.0**shifts + 0.5) * 2.0**-32)
    assert np.array_equal(table[:, 0], exact.astype(np.float32))
    assert np.all(table[shifts == 0, 1] == 0) and np.all(table[shifts > 0, 1] < 0)  # |z| falls as p grows


def test_graph_gives_the_numpy_bits_at_any_batch_size(keys: np.ndarray, draws: np.ndarray) -> None:
    session = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"])
    n = 20_011
    for batch in (1, 7, 1000, n):
        stop = n if batch > 1 else 3001  # batch 1 over 3001 rows keeps the test quick
        parts = [
            session.run(None, {"rng_key": keys[s : min(s + batch, stop)]})[0] for s in range(0, stop, batch)
        ]
        assert np.array_equal(np.concatenate(parts), draws[:stop]), f"differs from numpy at batch {batch}"


@pytest.mark.parametrize("dim", [1, 3, 64])
def test_any_noise_dim_matches_numpy(dim: int) -> None:
    keys = _keys(4_001, seed=dim)
    session = ort.InferenceSession(_model(dim).SerializeToString(), providers=["CPUExecutionProvider"])
    z = session.run(None, {"rng_key": keys})[0]
    assert z.shape == (4_001, dim) and np.array_equal(z, rng.normals(keys, STREAM, dim))
    assert np.array_equal(rng.normals(keys, STREAM, dim)[:, :1], rng.normals(keys, STREAM, 1))


def test_graph_gives_the_numpy_bits_in_onnxruntime_1_19_2(tmp_path: Path) -> None:
    python = _ort119()
    keys = _keys(3_001, seed=7)
    onnx.save(_model(), tmp_path / "noise.onnx")
    np.savez(tmp_path / "in.npz", rng_key=keys)
    job = {
        "path": str(tmp_path / "noise.onnx"),
        "inputs": str(tmp_path / "in.npz"),
        "out": str(tmp_path / "o"),
    }
    report = _run(python, [job], tmp_path)
    assert set(report["results"].values()) == {"ok"}, report
    got = np.load(tmp_path / "o.npz")
    for batch in (1, len(keys)):
        assert np.array_equal(got[f"z@{batch}"], rng.normals(keys, STREAM, DIM)), f"differs at batch {batch}"


def test_graph_uses_no_position_dependent_operator() -> None:
    used = {node.op_type for node in _model().graph.node}
    assert used and not used & POSITION_DEPENDENT, used
    assert not used & {"Exp", "Tanh", "Erf", "Div"}, used
