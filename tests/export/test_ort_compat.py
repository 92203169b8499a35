"""Production compatibility: every kind of exported model loads and runs in onnxruntime==1.19.2.

NGC tritonserver 24.10 runs ONNX Runtime 1.19.2. This test exports every supported model kind
(each GBDT family, binary and 4-class, with every implementation, and generators) into a temporary
folder and runs them in ``.venv-ort119`` (``make venv-ort119``), a separate environment with only
onnxruntime 1.19.2 and numpy, comparing with this environment's ONNX Runtime on the same inputs.
The toy repository (the real ensemble with stand-in models) and every
``model_repository/*/1/model.onnx`` in the repository are loaded and run there too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_convert import FAMILIES, features, fitted
from test_convert_generator import N_CONDITIONS, NOISE_DIM, ResidualTanh

from ufsim_export.convert import IMPLEMENTATIONS, gbdt_to_onnx, generator_to_onnx
from ufsim_export.convert.verify import check_production_compat
from ufsim_export.models import ResidualGenerator

ROOT = Path(__file__).resolve().parents[2]
ORT119_PYTHON = ROOT / ".venv-ort119" / "bin" / "python"
ORT_VERSION = "1.19.2"
N_CHECK = 257

RUNNER = r'''
"""Run ONNX models in this environment's ONNX Runtime; write outputs and a JSON report."""
import json
import sys

import numpy as np
import onnxruntime as ort

PDG = np.array([11, -11, 13, -13, 211, -211, 321, -321, 2212, -2212], dtype=np.int32)
DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int32)": np.int32,
          "tensor(int64)": np.int64, "tensor(uint64)": np.uint64, "tensor(uint32)": np.uint32,
          "tensor(bool)": np.bool_}


def synthetic(arg, batch, rng):
    shape = [d if isinstance(d, int) else batch for d in arg.shape]
    dtype = DTYPES[arg.type]
    if arg.name == "pid":
        return rng.choice(PDG, shape).astype(dtype)
    if dtype == np.uint64:
        return rng.integers(0, 2**63, shape, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(1.0, 100.0, shape).astype(dtype)
    return rng.integers(0, 2, shape).astype(dtype)


jobs = json.load(open(sys.argv[1]))
report = {"version": ort.__version__, "results": {}}
for job in jobs:
    try:
        session = ort.InferenceSession(job["path"], providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        if job.get("inputs"):
            feeds = dict(np.load(job["inputs"]))
            n = len(next(iter(feeds.values())))
            outputs = {}
            for batch in (1, n):
                parts = [session.run(None, {k: v[s:s + batch] for k, v in feeds.items()})
                         for s in range(0, n, batch)]
                for i, name in enumerate(names):
                    outputs[f"{name}@{batch}"] = np.concatenate([p[i] for p in parts])
            np.savez(job["out"], **outputs)
        else:
            rng = np.random.default_rng(0)
            for batch in (1, 4):
                feeds = {a.name: synthetic(a, batch, rng) for a in session.get_inputs()}
                for name, value in zip(names, session.run(None, feeds)):
                    if value.ndim and value.shape[0] != batch:
                        raise ValueError(f"output {name} has shape {value.shape} for batch {batch}")
        report["results"][job["path"]] = "ok"
    except Exception as exc:  # report every model, not only the first failure
        report["results"][job["path"]] = f"{type(exc).__name__}: {exc}"
print(json.dumps(report))
'''


def _ort119() -> Path:
    if not ORT119_PYTHON.exists():
        pytest.fail(
            f"{ORT119_PYTHON} not found: the ONNX Runtime {ORT_VERSION} environment is missing; "
            "`make venv-ort119` creates it (from requirements/ort-1.19.2.txt)"
        )
    return ORT119_PYTHON


def _exports() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """name -> (model, inputs) for every kind of model the converters produce."""
    X = features(n=3_000)
    rng = np.random.default_rng(5)
    out: dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]] = {}
    for family in FAMILIES:
        for n_classes in (2, 4):
            model = fitted(family, n_classes, X)
            for implementation in IMPLEMENTATIONS:
                onnx_model = gbdt_to_onnx(model, X[:64], implementation=implementation)
                out[f"{family}-{n_classes}-{implementation}"] = (onnx_model, {"features": X[:N_CHECK]})
    torch.manual_seed(0)
    generators: dict[str, Any] = {
        "generator-residual-tanh": ResidualTanh(N_CONDITIONS, NOISE_DIM),
        "generator-lamarr-residual": ResidualGenerator(N_CONDITIONS, NOISE_DIM, 9, width=32, n_residual=3),
    }
    for name, module in generators.items():
        feeds = {
            "conditions": rng.normal(size=(N_CHECK, N_CONDITIONS)).astype(np.float32),
            "noise": rng.normal(size=(N_CHECK, NOISE_DIM)).astype(np.float32),
        }
        out[name] = (generator_to_onnx(module, N_CONDITIONS, NOISE_DIM), feeds)
    return out


def _run(python: Path, jobs: list[dict[str, Any]], tmp: Path) -> dict[str, Any]:
    (tmp / "runner.py").write_text(RUNNER)
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run(
        [str(python), str(tmp / "runner.py"), str(tmp / "jobs.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"runner failed in {python}:\n{proc.stderr[-4000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["version"] == ORT_VERSION, (
        f"{python} runs onnxruntime {report['version']}, not {ORT_VERSION}"
    )
    return report


def test_every_exported_kind_runs_in_onnxruntime_1_19_2(tmp_path: Path) -> None:
    python = _ort119()
    jobs = []
    expected: dict[str, dict[str, np.ndarray]] = {}
    for name, (model, feeds) in _exports().items():
        check_production_compat(model)
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, path)
        np.savez(tmp_path / f"{name}.in.npz", **feeds)
        jobs.append(
            {"path": str(path), "inputs": str(tmp_path / f"{name}.in.npz"), "out": str(tmp_path / name)}
        )
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        expected[name] = dict(
            zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True)
        )
    report = _run(python, jobs, tmp_path)
    failures = {Path(p).stem: r for p, r in report["results"].items() if r != "ok"}
    assert not failures, f"models that fail in onnxruntime {ORT_VERSION}: {json.dumps(failures, indent=1)}"
    for name, outputs in expected.items():
        got = np.load(tmp_path / f"{name}.npz")
        for output, value in outputs.items():
            for batch in (1, N_CHECK):
                np.testing.assert_allclose(
                    got[f"{output}@{batch}"],
                    value,
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"{name} {output} batch {batch}",
                )


def test_toy_repository_runs_in_onnxruntime_1_19_2(toy_repository: Path, tmp_path: Path) -> None:
    """The real ensemble's models (graph steps and toy learnt models), before any are trained."""
    python = _ort119()
    models = sorted(toy_repository.glob("*/1/model.onnx"))
    assert models, f"no models in {toy_repository}"
    report = _run(python, [{"path": str(p)} for p in models], tmp_path)
    failures = {Path(p).parent.parent.name: r for p, r in report["results"].items() if r != "ok"}
    assert not failures, f"toy repository models that fail in onnxruntime {ORT_VERSION}: {failures}"


def test_model_repository_runs_in_onnxruntime_1_19_2(tmp_path: Path) -> None:
    python = _ort119()
    models = sorted((ROOT / "model_repository").glob("*/1/model.onnx"))
    if not models:
        pytest.skip("model_repository/ holds no model.onnx yet (`make repository` writes them)")
    for path in models:
        check_production_compat(onnx.load(path, load_external_data=False))
    report = _run(python, [{"path": str(p)} for p in models], tmp_path)
    failures = {Path(p).parent.parent.name: r for p, r in report["results"].items() if r != "ok"}
    assert not failures, (
        f"repository models that fail in onnxruntime {ORT_VERSION}: {json.dumps(failures, indent=1)}"
    )
