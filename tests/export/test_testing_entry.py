"""``python -m ufsim_export.testing`` (was ``ufsim-export toy-models``) writes the raw toy models."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from ufsim_export.spec import PipelineSpec
from ufsim_export.testing.__main__ import main


def test_writes_a_model_and_manifest_per_learnt_step(spec: PipelineSpec, tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / "toy"), "--seed", "1"]) == 0
    for step in spec.learnt_steps():
        onnx.checker.check_model(onnx.load(tmp_path / "toy" / f"{step.name}.onnx"))
        assert (tmp_path / "toy" / f"{step.name}.json").is_file()


def test_out_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err
