"""``ufsim-export reexport``: the generators' ONNX rewritten from their saved PyTorch modules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from ufsim_export.cli import main
from ufsim_export.training.common import sha256_file
from ufsim_export.training.reexport import knot_conditions
from ufsim_export.training.saved import inner_generator, load_module

MODELS = Path(__file__).resolve().parents[2] / "export" / "models"


@pytest.mark.parametrize("step", ["muon", "global_pid"])
def test_reexported_graph_computes_the_saved_module(step: str, tmp_path: Path) -> None:
    """A plain generator and the wrapped global PID (masking, passthrough logits) both round-trip."""
    for suffix in ("onnx", "pt", "json"):
        shutil.copy(MODELS / f"{step}.{suffix}", tmp_path)
    (tmp_path / f"{step}.onnx").unlink()
    assert main(["reexport", "--models", str(tmp_path), "--steps", step]) == 0

    module = load_module(tmp_path / f"{step}.pt")
    conditions = knot_conditions(module, 3000, seed=11)
    noise_dim = inner_generator(module).noise_dim
    noise = np.random.default_rng(5).standard_normal((3000, noise_dim)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(conditions), torch.from_numpy(noise)).numpy()
    session = ort.InferenceSession(str(tmp_path / f"{step}.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"conditions": conditions, "noise": noise})[0]
    scale = np.maximum(np.abs(expected), expected.std(axis=0))
    assert np.max(np.abs(got - expected) / scale) <= 1e-5

    manifest = json.loads((tmp_path / f"{step}.json").read_text())
    assert manifest["onnx_export"]["pt_sha256"] == sha256_file(tmp_path / f"{step}.pt")
    assert manifest["conversion_fidelity"]["rows"] >= 10_000


def test_reexport_without_the_saved_module_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reexport", "--models", str(tmp_path), "--steps", "rich"]) == 2
    assert "no rich.pt to re-export" in capsys.readouterr().err
    assert not (tmp_path / "rich.onnx").exists()
