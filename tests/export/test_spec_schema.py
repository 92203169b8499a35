"""The spec's schema (pydantic, unknown keys forbidden) and the facts every layer reads from the spec."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from ufsim_client import report
from ufsim_client.contract import OUTPUT_COLUMNS
from ufsim_client.events import SIMULATED_PIDS
from ufsim_export.graphs.steps import build_graph_step
from ufsim_export.repository.gun import gun_pdg_ids
from ufsim_export.spec import PipelineSpec, SpecError, default_spec_path, load_spec, parse_spec


@pytest.fixture()
def raw() -> dict[str, Any]:
    return yaml.safe_load(default_spec_path().read_text())


def _step(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in raw["steps"] if s["name"] == name)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda r: r.update(max_batch_sise=1024),
            r"^max_batch_sise: unknown key 'max_batch_sise'; accepted: .*max_batch_size",
        ),
        (
            lambda r: r["outputs"][1].update(sentinal=-1.0),
            r"^outputs\[track_state\]\.sentinal: unknown key 'sentinal'; accepted: .*sentinel",
        ),
        (
            lambda r: _step(r, "rich")["outputs"][0].update(colums=["a"]),
            r"^steps\[rich\]\.outputs\[rich_response\]\.colums: unknown key 'colums'",
        ),
        (
            lambda r: _step(r, "tracking_covariance")["inputs"][1].update(cols=[6]),
            r"^steps\[tracking_covariance\]\.inputs\[resolution_residuals\]\.cols: unknown key 'cols'; "
            r"accepted: name, columns$",
        ),
        (lambda r: _step(r, "rich").update(nois_dim=64), r"^steps\[rich\]\.nois_dim: unknown key"),
        (lambda r: r["species"][0].update(charge=-1), r"^species\[e\]\.charge: unknown key 'charge'"),
    ],
)
def test_unknown_keys_fail_with_their_path(raw: dict[str, Any], mutate: Any, message: str) -> None:
    """A misspelt key no longer parses and falls back to a default: it names its path and the keys."""
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(SpecError, match=message):
        parse_spec(broken)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(max_batch_size="big"), r"^max_batch_size: .*integer.*\(got 'big'\)"),
        (lambda r: r.update(instance_count=0), r"^instance_count: .*greater than 0"),
        (lambda r: r["species"][4].update(pdg=-2212), r"^species\[p\]\.pdg: .*greater than 0"),
        (lambda r: r["species"].append({"name": "e", "pdg": 12}), r"species name declared more than once"),
        (lambda r: r["track_types"][2].update(code=0), r"track type code declared more than once: \[0\]"),
        (lambda r: r.pop("track_types"), r"^track_types: required key is missing"),
        (lambda r: _step(r, "rich")["inputs"].append(5), r"^steps\[rich\]\.inputs\[2\]: .*\(got 5\)"),
        (lambda r: r["outputs"][5].update(sentinel="x"), r"^outputs\[rich_dll\]\.sentinel\b.*valid number"),
    ],
)
def test_bad_values_name_the_field(raw: dict[str, Any], mutate: Any, message: str) -> None:
    """Wrong types and duplicates name the field and what is accepted."""
    broken = copy.deepcopy(raw)
    mutate(broken)
    with pytest.raises(SpecError, match=message):
        parse_spec(broken)


def test_load_spec_names_the_file(raw: dict[str, Any], tmp_path: Path) -> None:
    raw["steps"][0]["outputs"][1]["sentinal"] = 0.0
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(raw))
    where = r"steps\[features\]\.outputs\[tracking_features\]\.sentinal: unknown key"
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}: {where}"):
        load_spec(path)


def test_a_top_level_list_is_rejected() -> None:
    with pytest.raises(SpecError, match=r"^pipeline spec: .*dictionary"):
        parse_spec([1, 2])


def _run(spec: PipelineSpec, step: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    model = build_graph_step(spec, spec.step(step))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = session.run(None, inputs)
    return {t.name: v for t, v in zip(spec.step(step).outputs, outputs, strict=True)}


def test_species_come_from_the_spec(raw: dict[str, Any]) -> None:
    """Declaring the 'p' species as a Lambda (3122) makes the features graph and the gun follow."""
    raw["species"][4]["pdg"] = 3122
    spec = parse_spec(raw)
    assert 3122 in gun_pdg_ids(spec) and 2212 not in gun_pdg_ids(spec)
    pid = np.array([[3122], [-3122], [2212], [321]], np.int32)
    n = len(pid)
    out = _run(
        spec,
        "features",
        {
            "pid": pid,
            "origin": np.zeros((n, 3), np.float32),
            "momentum": np.tile(np.array([[100.0, 0.0, 10_000.0]], np.float32), (n, 1)),
            "n_tracks": np.full((n, 1), 50.0, np.float32),
        },
    )
    assert out["species"][:, 0].tolist() == [5, 5, 0, 4]
    is_p = list(spec.tensor("pid_features").columns).index("is_p")
    assert out["pid_features"][:, is_p].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_track_type_codes_come_from_the_spec(raw: dict[str, Any]) -> None:
    """With 'long' declared as code 7, PID applies to track type 7 and no longer to 3."""
    next(t for t in raw["track_types"] if t["name"] == "long")["code"] = 7
    spec = parse_spec(raw)
    out = _run(
        spec,
        "pid_sampling",
        {
            "is_muon_probability": np.array([[0.0, 1.0], [0.0, 1.0]], np.float32),
            "track_type": np.array([[7], [3]], np.int32),
            "rng_key": np.array([[1], [2]], np.uint64),
        },
    )
    assert out["is_muon"][:, 0].tolist() == [1, int(np.asarray(spec.tensor("is_muon").sentinel))]


@pytest.mark.parametrize("tensor", ["is_muon", "rich_dll", "muon_ll", "global_pid"])
def test_client_pid_columns_match_the_spec(spec: PipelineSpec, tensor: str) -> None:
    """The client's ntuple branches for PID carry the spec's column names (RichDLLk, not RichDLLK)."""
    dtype, columns = OUTPUT_COLUMNS[tensor]
    declared = spec.tensor(tensor)
    assert dtype == declared.dtype
    assert columns == list(declared.columns or [tensor.replace("is_muon", "isMuon")])


def test_client_copies_of_species_and_track_types_match_the_spec(spec: PipelineSpec) -> None:
    """The client imports nothing from export, so its copies are checked against the spec here."""
    assert sorted(int(p) for p in SIMULATED_PIDS) == sorted(s.pdg for s in spec.species)
    assert report.SPECIES == {s.pdg: s.name for s in spec.species}
    assert sorted(report.TRACK_TYPES) == sorted(t.code for t in spec.track_types)
