"""The pipeline spec: the shipped spec is valid, and wiring mistakes name the step and tensor."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from ufsim_export.spec import Gate, PipelineSpec, SpecError, default_spec_path, parse_spec


@pytest.fixture()
def raw() -> dict[str, Any]:
    return yaml.safe_load(default_spec_path().read_text())


def _step(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in raw["steps"] if s["name"] == name)


def test_shipped_spec_matches_the_contract(spec: PipelineSpec) -> None:
    assert spec.name == "pipeline"
    assert [(t.name, t.dtype, t.dims) for t in spec.inputs] == [
        ("pid", "INT32", (1,)),
        ("origin", "FP32", (3,)),
        ("momentum", "FP32", (3,)),
        ("n_tracks", "FP32", (1,)),
        ("rng_key", "UINT64", (1,)),
    ]
    assert [(t.name, t.dtype, t.dims) for t in spec.outputs] == [
        ("track_type", "INT32", (1,)),
        ("track_state", "FP32", (6,)),
        ("track_quality", "FP32", (3,)),
        ("track_covariance", "FP32", (15,)),
        ("is_muon", "INT32", (1,)),
        ("rich_dll", "FP32", (4,)),
        ("muon_ll", "FP32", (2,)),
        ("global_pid", "FP32", (9,)),
    ]
    learnt = {s.name for s in spec.learnt_steps()}
    assert learnt == {
        "acceptance",
        "tracking_efficiency",
        "tracking_resolution",
        "tracking_covariance",
        "is_muon",
        "rich",
        "muon",
        "global_pid",
    }


def test_missing_upstream_tensor_names_step_and_tensor(raw: dict[str, Any]) -> None:
    _step(raw, "rich")["inputs"] = ["pid_featurez", "rng_key"]
    with pytest.raises(SpecError, match=r"step 'rich'.*'pid_featurez'"):
        parse_spec(raw)


def test_step_order_matters(raw: dict[str, Any]) -> None:
    steps = raw["steps"]
    steps.insert(0, steps.pop(next(i for i, s in enumerate(steps) if s["name"] == "acceptance")))
    with pytest.raises(SpecError, match=r"step 'acceptance'.*'tracking_features'"):
        parse_spec(raw)


def test_unused_tensor_is_rejected(raw: dict[str, Any]) -> None:
    _step(raw, "assembly")["inputs"].remove("muon_response")
    _step(raw, "global_pid")["inputs"].remove("muon_response")
    with pytest.raises(SpecError, match=r"never used.*'muon_response'.*step 'muon'"):
        parse_spec(raw)


def test_dtype_mismatch_with_ensemble_output(raw: dict[str, Any]) -> None:
    out = next(o for o in _step(raw, "track_sampling")["outputs"] if o["name"] == "track_type")
    out["dtype"] = "FP32"
    with pytest.raises(SpecError, match=r"step 'track_sampling'.*'track_type' is FP32\[1\].*INT32\[1\]"):
        parse_spec(raw)


def test_shape_mismatch_with_ensemble_output(raw: dict[str, Any]) -> None:
    out = next(o for o in _step(raw, "track_sampling")["outputs"] if o["name"] == "track_type")
    out["dims"] = [2]
    with pytest.raises(SpecError, match=r"'track_type' is INT32\[2\]"):
        parse_spec(raw)


def test_gates_resolve_track_type_names(spec: PipelineSpec) -> None:
    gates = {step.name: step.applies_to for step in spec.steps if step.applies_to}
    reconstructed = tuple(spec.track_type(n) for n in ("long", "upstream", "downstream"))
    assert gates["tracking_resolution"] == Gate("track_type", reconstructed)
    assert gates["muon"] == Gate("is_muon", (1,))
    assert "track_type" not in [ref.name for ref in spec.step("rich").tensor_inputs]
    assert "track_type" in [ref.name for ref in spec.step("rich").inputs]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: _step(r, "rich").update(stream=2),
            r"stream 2 is already used by step 'tracking_resolution'",
        ),
        (
            lambda r: _step(r, "rich").pop("noise_dim"),
            r"step 'rich': a generator needs a positive 'noise_dim'",
        ),
        (lambda r: _step(r, "rich").update(kind="lstm"), r"step 'rich': kind 'lstm'"),
        (lambda r: r["inputs"][0].update(dtype="FP16"), r"tensor 'pid' has dtype 'FP16'; accepted"),
        (
            lambda r: _step(r, "tracking_covariance")["inputs"][1].update(columns=[6, 9]),
            r"selects columns \[9\] outside 0..8",
        ),
        (lambda r: _step(r, "acceptance").update(classes=["a", "b", "c"]), r"2 columns for 3 classes"),
        (
            lambda r: _step(r, "rich").update(applies_to={"tensor": "track_type", "values": ["lng"]}),
            r"step 'rich': applies_to: value 'lng' is not an integer or a track type name; accepted names: "
            r"\['downstream', 'long'",
        ),
        (
            lambda r: _step(r, "muon").update(applies_to={"tensor": "is_muon", "values": ["long"]}),
            r"value 'long' is not an integer .* \(for tensor 'track_type' only\)",
        ),
        (
            lambda r: _step(r, "global_pid").update(applies_to={"tensor": "is_muon_flag", "values": [1]}),
            r"step 'global_pid': applies_to: 'is_muon_flag' is also listed in inputs; name it only here",
        ),
        (
            lambda r: _step(r, "rich").update(applies_to={"tensor": "is_muon_probability", "values": [1]}),
            r"step 'rich': applies_to needs a learnt step and an INT32 tensor of one column; "
            r"'is_muon_probability' is FP32\[2\]",
        ),
        (
            lambda r: _step(r, "pid_sampling").update(applies_to={"tensor": "species", "values": [3]}),
            r"step 'pid_sampling': applies_to needs a learnt step .* on a graph step",
        ),
        (
            lambda r: _step(r, "rich").update(applies_to={"tensor": "track_type", "values": []}),
            r"values",
        ),
        (
            lambda r: r["outputs"].append({"name": "ghost", "dtype": "FP32", "dims": [1]}),
            r"ensemble output 'ghost' is not produced",
        ),
    ],
)
def test_malformed_specs(raw: dict[str, Any], mutate: Any, message: str) -> None:
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(SpecError, match=message):
        parse_spec(broken)
