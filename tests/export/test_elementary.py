"""Batch-independent elementary functions: accurate, and the same bits in numpy and any ONNX Runtime.

ONNX Runtime's vectorised Log/Sin/Cos/Atan/Asin/Acos (and Sqrt in 1.19.2) round a batch's scalar tail
differently from its packets, so a row's result depends on where it sits in the batch. These tests
check the replacements in :mod:`ufsim_export.graphs.elementary` against float64 numpy, against their own
numpy evaluation bit for bit (in this runtime and in 1.19.2), and that no shipped graph still uses
a position-dependent operator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from test_ort_compat import _ort119, _run

from ufsim_export.graphs import elementary as el
from ufsim_export.graphs.builder import GraphBuilder

POSITION_DEPENDENT = {"Log", "Sin", "Cos", "Tan", "Atan", "Asin", "Acos", "Sqrt", "Pow"}
N = 20_011  # odd, so every vector width leaves a scalar tail


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    positive = np.exp(rng.uniform(np.log(1e-9), np.log(1e18), N)).astype(np.float32)
    positive[:6] = [1.0, 2.0, 0.5, np.sqrt(2.0), 1e-9, 1e18]
    signed = (rng.choice([-1.0, 1.0], N) * np.exp(rng.uniform(np.log(1e-6), np.log(1e12), N))).astype(
        np.float32
    )
    signed[:3] = [0.0, -0.0, 0.39999998]
    turns = rng.uniform(0.0, 1.0, N).astype(np.float32)
    turns[:5] = [0.0, 0.25, 0.5, 0.75, 1.0]
    angle = rng.uniform(-np.pi, np.pi, N)
    radius = np.exp(rng.uniform(np.log(1e-3), np.log(1e5), N))
    x = (radius * np.cos(angle)).astype(np.float32)
    y = (radius * np.sin(angle)).astype(np.float32)
    x[:4], y[:4] = [0.0, 1.0, -1.0, 0.0], [0.0, 0.0, 0.0, -2.0]
    return {
        "positive": positive.reshape(-1, 1),
        "signed": signed.reshape(-1, 1),
        "turns": turns.reshape(-1, 1),
        "x": x.reshape(-1, 1),
        "y": y.reshape(-1, 1),
    }


def _functions(o: el.Ops, v: dict) -> dict:  # type: ignore[type-arg]
    """Every public function, evaluated with ``o`` on the named inputs ``v``."""
    cos, sin = el.cos_sin_turns(o, v["turns"])
    return {
        "log": el.log(o, v["positive"], min_exp=-30, max_exp=60),
        "sqrt": el.sqrt(o, v["positive"], min_exp=-30, max_exp=60),
        "asinh": el.asinh(o, v["signed"]),
        "atan2": el.atan2(o, v["y"], v["x"]),
        "cos": cos,
        "sin": sin,
    }


def _model() -> onnx.ModelProto:
    b = GraphBuilder("elementary")
    names = {name: b.input(name, "FP32", 1) for name in _inputs()}
    for name, value in _functions(el.GraphOps(b), names).items():
        b.output(value, name, "FP32", 1)
    return b.build()


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return _functions(el.NumpyOps(), _inputs())


def test_accuracy_against_float64(reference: dict[str, np.ndarray]) -> None:
    v = {k: a.astype(np.float64) for k, a in _inputs().items()}
    exact = {
        "log": np.log(v["positive"]),
        "sqrt": np.sqrt(v["positive"]),
        "asinh": np.arcsinh(v["signed"]),
        "atan2": np.arctan2(v["y"], v["x"]),
        "cos": np.cos(2 * np.pi * v["turns"]),
        "sin": np.sin(2 * np.pi * v["turns"]),
    }
    ulp = {k: np.spacing(np.abs(e).astype(np.float32)).astype(np.float64) for k, e in exact.items()}
    assert np.max(np.abs(reference["log"] - exact["log"]) / np.maximum(ulp["log"], 1e-7)) <= 4
    assert np.max(np.abs(reference["sqrt"] - exact["sqrt"]) / ulp["sqrt"]) <= 1
    np.testing.assert_allclose(reference["asinh"], exact["asinh"], rtol=1e-6, atol=0)
    for name in ("atan2", "cos", "sin"):
        np.testing.assert_allclose(reference[name], exact[name], rtol=0, atol=5e-7, err_msg=name)
    assert reference["atan2"][0, 0] == 0.0 and reference["sqrt"][0, 0] == 1.0
    assert np.array_equal(el.sqrt(el.NumpyOps(), np.zeros((3, 1), np.float32)), np.zeros((3, 1)))


def _by_batch(session: ort.InferenceSession, feeds: dict[str, np.ndarray], batch: int) -> list[np.ndarray]:
    parts = [session.run(None, {k: a[s : s + batch] for k, a in feeds.items()}) for s in range(0, N, batch)]
    return [np.concatenate(column) for column in zip(*parts, strict=True)]


def test_graph_gives_the_numpy_bits_in_any_batch(reference: dict[str, np.ndarray]) -> None:
    model = _model()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feeds = _inputs()
    for batch in (N, 1, 7, 1000):
        for name, value in zip(names, _by_batch(session, feeds, batch), strict=True):
            assert np.array_equal(value, reference[name]), f"{name} differs from numpy at batch {batch}"


def test_graph_gives_the_numpy_bits_in_onnxruntime_1_19_2(
    reference: dict[str, np.ndarray], tmp_path: Path
) -> None:
    python = _ort119()
    onnx.save(_model(), tmp_path / "elementary.onnx")
    np.savez(tmp_path / "in.npz", **_inputs())
    job = {
        "path": str(tmp_path / "elementary.onnx"),
        "inputs": str(tmp_path / "in.npz"),
        "out": str(tmp_path / "o"),
    }
    report = _run(python, [job], tmp_path)
    assert set(report["results"].values()) == {"ok"}, report
    got = np.load(tmp_path / "o.npz")
    for name, value in reference.items():
        for batch in (1, N):
            assert np.array_equal(got[f"{name}@{batch}"], value), f"{name} differs at batch {batch}"


def test_no_shipped_graph_uses_a_position_dependent_operator(toy_repository: Path) -> None:
    used = {
        path.parent.parent.name: sorted(
            {node.op_type for node in onnx.load(path).graph.node} & POSITION_DEPENDENT
        )
        for path in sorted(toy_repository.glob("*/1/model.onnx"))
    }
    assert used and not any(used.values()), f"position-dependent operators in: {used}"
