"""``ufsim-export reexport``: the generators' ONNX rewritten from their saved PyTorch modules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ufsim_export.cli import main
from ufsim_export.training.provenance import sha256_file
from ufsim_export.training.reexport import knot_conditions
from ufsim_export.training.saved import inner_generator, load_module
from ufsim_export.training.two_stage import TwoStageGenerator

MODELS = Path(__file__).resolve().parents[2] / "export" / "models"


def _onnx_error(module: torch.nn.Module, onnx_path: Path, rows: int, *, seed: int) -> float:
    """max |onnx - module| / max(|module|, σ) on knot-drawn conditions and N(0, 1) noise."""
    conditions = knot_conditions(module, rows, seed=seed)
    noise_dim = inner_generator(module).noise_dim
    noise = np.random.default_rng(seed + 1).standard_normal((rows, noise_dim)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(conditions), torch.from_numpy(noise)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"conditions": conditions, "noise": noise})[0]
    scale = np.maximum(np.abs(expected), expected.std(axis=0))
    return float(np.max(np.abs(got - expected) / scale))


@pytest.mark.parametrize("step", ["muon", "global_pid"])
def test_reexported_graph_computes_the_saved_module(step: str, tmp_path: Path) -> None:
    """A plain generator and the wrapped global PID (masking, passthrough logits) both round-trip."""
    for suffix in ("onnx", "pt", "json"):
        shutil.copy(MODELS / f"{step}.{suffix}", tmp_path)
    (tmp_path / f"{step}.onnx").unlink()
    assert main(["reexport", "--models", str(tmp_path), "--steps", step]) == 0

    assert _onnx_error(load_module(tmp_path / f"{step}.pt"), tmp_path / f"{step}.onnx", 3000, seed=11) <= 1e-5

    manifest = json.loads((tmp_path / f"{step}.json").read_text())
    assert manifest["onnx_export"]["pt_sha256"] == sha256_file(tmp_path / f"{step}.pt")
    assert manifest["conversion_fidelity"]["rows"] >= 10_000


def test_reexport_without_the_saved_module_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reexport", "--models", str(tmp_path), "--steps", "rich"]) == 2
    assert "no rich.pt to re-export" in capsys.readouterr().err
    assert not (tmp_path / "rich.onnx").exists()


def test_reexport_switches_the_regression_to_float64_and_rewrites_the_saved_module(tmp_path: Path) -> None:
    """Same weights, float64 arithmetic in the graph and in the rewritten ``.pt``; recorded."""
    step = "tracking_covariance"  # trained and committed in float32
    for suffix in ("onnx", "pt", "json"):
        shutil.copy(MODELS / f"{step}.{suffix}", tmp_path)
    before = load_module(tmp_path / f"{step}.pt")
    assert (
        main(["reexport", "--models", str(tmp_path), "--steps", step, "--regression-precision", "float64"])
        == 0
    )

    module = load_module(tmp_path / f"{step}.pt")
    inner = inner_generator(module)
    assert isinstance(inner, TwoStageGenerator) and inner.stages.regression_precision == "float64"
    for (name, old), new in zip(before.state_dict().items(), module.state_dict().values(), strict=True):
        assert torch.equal(old.double(), new.double()), name
    graph = onnx.load(tmp_path / f"{step}.onnx").graph
    assert any(i.data_type == onnx.TensorProto.DOUBLE for i in graph.initializer)
    manifest = json.loads((tmp_path / f"{step}.json").read_text())
    assert manifest["onnx_export"]["regression_precision"] == "float64"
    assert manifest["onnx_export"]["pt_sha256"] == sha256_file(tmp_path / f"{step}.pt")
    assert manifest["onnx_export"]["pt_sha256"] != sha256_file(MODELS / f"{step}.pt")
    assert _onnx_error(module, tmp_path / f"{step}.onnx", 2000, seed=3) <= 2e-5


def test_regression_precision_of_a_step_without_a_regression_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for suffix in ("onnx", "pt", "json"):
        shutil.copy(MODELS / f"muon.{suffix}", tmp_path)
    before = sha256_file(tmp_path / "muon.onnx")
    argv = ["reexport", "--models", str(tmp_path), "--steps", "muon", "--regression-precision", "float64"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--regression-precision: muon has no regression stage" in err
    assert "accepted steps: tracking_covariance, tracking_resolution" in err
    assert sha256_file(tmp_path / "muon.onnx") == before
