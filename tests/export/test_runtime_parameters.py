"""The spec's ``onnxruntime_parameters`` reach every composing model's config.pbtxt; bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ufsim_export.repository.writer import write_configs
from ufsim_export.spec import PipelineSpec, SpecError, default_spec_path, parse_spec


def test_parameters_are_written_to_every_composing_model(spec: PipelineSpec, tmp_path: Path) -> None:
    assert dict(spec.onnxruntime_parameters)["max_rows_per_run"] == "4096"
    write_configs(spec, tmp_path)
    for step in spec.steps:
        config = text_format.Parse((tmp_path / step.name / "config.pbtxt").read_text(), mc.ModelConfig())
        written = {key: value.string_value for key, value in config.parameters.items()}
        assert written == {"intra_op_thread_count": "1", **dict(spec.onnxruntime_parameters)}
    ensemble = text_format.Parse((tmp_path / spec.name / "config.pbtxt").read_text(), mc.ModelConfig())
    assert not ensemble.parameters


def test_parameters_default_to_none() -> None:
    raw = yaml.safe_load(default_spec_path().read_text())
    del raw["onnxruntime_parameters"]
    assert parse_spec(raw).onnxruntime_parameters == ()


def test_a_non_string_value_is_named() -> None:
    raw = yaml.safe_load(default_spec_path().read_text())
    raw["onnxruntime_parameters"] = {"max_rows_per_run": 8192}
    with pytest.raises(SpecError, match="onnxruntime_parameters.max_rows_per_run: Input should be a valid"):
        parse_spec(raw)
