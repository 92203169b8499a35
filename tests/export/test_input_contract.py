"""The server's contract for any input a Triton client sends: a particle with a NaN or infinite origin,
momentum or n_tracks, a negative n_tracks or an absurd momentum is not simulated (track_type -1, every
output at its sentinel), decided inside the graphs; other particles in the same batch are unaffected.
Checked in this environment's ONNX Runtime and in onnxruntime 1.19.2 (NGC 24.10)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ufsim_export.graphs.steps import MAX_MOMENTUM_MEV, build_graph_step
from ufsim_export.repository.inprocess import InProcessPipeline
from ufsim_export.spec import PipelineSpec

ROOT = Path(__file__).resolve().parents[2]
ORT119_PYTHON = ROOT / ".venv-ort119" / "bin" / "python"

NAN, INF = np.float32(np.nan), np.float32(np.inf)
BAD = [
    ("origin", 0, NAN),
    ("origin", 1, INF),
    ("origin", 2, -INF),
    ("momentum", 0, NAN),
    ("momentum", 1, -INF),
    ("momentum", 2, INF),
    ("momentum", 2, np.float32(2 * MAX_MOMENTUM_MEV)),
    ("momentum", 0, np.float32(-2 * MAX_MOMENTUM_MEV)),
    ("momentum", 2, np.float32(3e38)),
    ("n_tracks", 0, NAN),
    ("n_tracks", 0, INF),
    ("n_tracks", 0, np.float32(-1.0)),
]
"""(input, column, value) written into one otherwise ordinary particle each."""


def _particles(n: int, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(2e3), np.log(2e5), n))
    eta, phi = rng.uniform(2.0, 5.0, n), rng.uniform(-np.pi, np.pi, n)
    pt = p / np.cosh(eta)
    momentum = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)
    return {
        "pid": rng.choice([211, -211, 321, 13, -11, 2212], (n, 1)).astype(np.int32),
        "origin": rng.normal(0, [0.02, 0.02, 40], (n, 3)).astype(np.float32),
        "momentum": momentum.astype(np.float32),
        "n_tracks": rng.integers(5, 300, (n, 1)).astype(np.float32),
        "rng_key": rng.integers(0, 2**63, (n, 1), dtype=np.uint64),
    }


def _with_bad_rows(good: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``good`` with the particles of BAD spliced in at every other row; returns the mask of bad rows."""
    n_bad = len(BAD)
    bad = {name: value[:n_bad].copy() for name, value in _particles(n_bad, seed=9).items()}
    for row, (name, column, value) in enumerate(BAD):
        bad[name][row, column] = value
    mixed = {
        name: np.empty((len(good[name]) + n_bad, *good[name].shape[1:]), good[name].dtype) for name in good
    }
    is_bad = np.zeros(len(good["pid"]) + n_bad, bool)
    is_bad[1 : 2 * n_bad : 2] = True
    for name in good:
        mixed[name][is_bad], mixed[name][~is_bad] = bad[name], good[name]
    return mixed, is_bad


def _features(spec: PipelineSpec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(
        build_graph_step(spec, spec.step("features")).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name: feeds[i.name] for i in session.get_inputs()}
    return dict(zip(names, session.run(None, inputs), strict=True))


def test_features_refuse_bad_particles_and_keep_the_others(spec: PipelineSpec) -> None:
    good = _particles(40)
    mixed, is_bad = _with_bad_rows(good)
    out = _features(spec, mixed)
    assert (out["species"][is_bad] == 0).all()
    for name, values in out.items():
        assert np.isfinite(values).all(), f"{name} is not finite"
    alone = _features(spec, good)
    assert (alone["species"] > 0).all()
    for name in out:
        np.testing.assert_array_equal(out[name][~is_bad], alone[name], err_msg=name)


def test_the_momentum_bound_is_inclusive(spec: PipelineSpec) -> None:
    feeds = _particles(2)
    feeds["momentum"][:] = [
        [0.0, 0.0, MAX_MOMENTUM_MEV],
        [0.0, 0.0, np.nextafter(np.float32(MAX_MOMENTUM_MEV), np.float32(np.inf))],
    ]
    assert _features(spec, feeds)["species"].ravel().tolist()[1] == 0
    assert _features(spec, feeds)["species"].ravel().tolist()[0] > 0


def test_ensemble_gives_sentinels_for_bad_particles(spec: PipelineSpec, toy_repository: Path) -> None:
    pipeline = InProcessPipeline(toy_repository, spec)
    good = _particles(40)
    mixed, is_bad = _with_bad_rows(good)
    out = pipeline(mixed)
    assert (out["track_type"][is_bad] == spec.track_type("outside_acceptance")).all()
    for tensor in spec.outputs:
        sentinel = tensor.sentinel_values()
        if sentinel is not None:
            assert (out[tensor.name][is_bad] == sentinel).all(), tensor.name
        assert np.isfinite(out[tensor.name].astype(np.float64)).all(), tensor.name
    alone = pipeline(good)
    for name in out:
        np.testing.assert_array_equal(out[name][~is_bad], alone[name], err_msg=name)


RUNNER = r"""
import json, sys
import numpy as np
import onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = dict(np.load(sys.argv[2]))
names = [o.name for o in session.get_outputs()]
out = dict(zip(names, session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})))
np.savez(sys.argv[3], **out)
print(json.dumps({"version": ort.__version__}))
"""


def test_features_refuse_bad_particles_in_onnxruntime_1_19_2(spec: PipelineSpec, tmp_path: Path) -> None:
    if not ORT119_PYTHON.is_file():
        pytest.skip(f"{ORT119_PYTHON} is missing: run `make venv-ort119`")
    model = tmp_path / "features.onnx"
    model.write_bytes(build_graph_step(spec, spec.step("features")).SerializeToString())
    mixed, is_bad = _with_bad_rows(_particles(40))
    np.savez(tmp_path / "in.npz", **mixed)
    done = subprocess.run(
        [str(ORT119_PYTHON), "-c", RUNNER, str(model), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == "1.19.2"
    with np.load(tmp_path / "out.npz") as old:
        assert (old["species"][is_bad] == 0).all()
        reference = _features(spec, mixed)
        for name, values in reference.items():
            assert np.isfinite(old[name]).all(), name
            np.testing.assert_allclose(old[name], values, rtol=1e-6, atol=1e-6, err_msg=name)
