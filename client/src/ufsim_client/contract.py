"""What the client needs from the ``pipeline`` ensemble, checked against the server's model metadata.

The client never trusts this module for tensor layouts it can read from the server: names, datatypes
and shapes come from ``get_model_metadata`` and are only *checked* here. What is client knowledge is
the meaning of each output column, i.e. the ntuple branch names (see client/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ufsim_client.errors import ContractError

__all__ = [
    "IDENTITY_PREFIX",
    "INPUTS",
    "OUTPUT_COLUMNS",
    "Contract",
    "TensorSpec",
    "parse_identity",
    "parse_metadata",
]

IDENTITY_PREFIX = "ufsim_"
"""Ensemble parameters ``ufsim_repository_version`` and ``ufsim_sha256_<model>`` (written by ufsim-export)."""

INPUTS: dict[str, tuple[str, int]] = {
    "pid": ("INT32", 1),
    "origin": ("FP32", 3),
    "momentum": ("FP32", 3),
    "n_tracks": ("FP32", 1),
    "rng_key": ("UINT64", 1),
}
"""Inputs the client sends: name -> (Triton datatype, values per particle)."""

_COV = [f"TRACK_COV_{i}{j}" for i in range(5) for j in range(i, 5)]

OUTPUT_COLUMNS: dict[str, tuple[str, list[str]]] = {
    "track_type": ("INT32", ["TRACK_Type"]),
    "track_state": ("FP32", ["TRACK_X", "TRACK_Y", "TRACK_Z", "TRACK_TX", "TRACK_TY", "TRACK_P"]),
    "track_quality": ("FP32", ["TRACK_CHI2NDOF", "TRACK_NDOF", "TRACK_GhostProb"]),
    "track_covariance": ("FP32", _COV),
    "is_muon": ("INT32", ["isMuon"]),
    "rich_dll": ("FP32", ["RichDLLe", "RichDLLmu", "RichDLLk", "RichDLLp"]),
    "muon_ll": ("FP32", ["MuonMuLL", "MuonBgLL"]),
    "global_pid": (
        "FP32",
        ["PIDe", "PIDK", "PIDp", "PIDmu", "ProbNNe", "ProbNNpi", "ProbNNk", "ProbNNp", "ProbNNmu"],
    ),
}
"""Outputs the client writes: tensor name -> (Triton datatype, ntuple column per value)."""

_NUMPY = {"INT32": np.int32, "FP32": np.float32, "UINT64": np.uint64, "INT64": np.int64, "FP64": np.float64}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor as the server declares it; ``shape`` excludes the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The numpy dtype matching :attr:`datatype`."""
        return np.dtype(_NUMPY[self.datatype])


@dataclass(frozen=True)
class Contract:
    """The validated interface of one served model."""

    model: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    max_batch_size: int


def _specs(entries: list[dict[str, Any]], batched: bool) -> dict[str, TensorSpec]:
    specs = {}
    for entry in entries:
        shape = tuple(int(d) for d in entry.get("shape", []))
        if batched:
            shape = shape[1:]
        specs[entry["name"]] = TensorSpec(entry["name"], entry["datatype"], shape)
    return specs


def parse_metadata(metadata: dict[str, Any], config: dict[str, Any], *, url: str = "") -> Contract:
    """Check the JSON model metadata and config of a server and return its :class:`Contract`.

    Raises:
        ContractError: listing every missing tensor and every datatype or shape that differs.
    """
    model = metadata.get("name", "?")
    max_batch = int(config.get("max_batch_size", 0))
    batched = max_batch > 0
    inputs = _specs(metadata.get("inputs", []), batched)
    outputs = _specs(metadata.get("outputs", []), batched)
    problems = []
    wanted = [("input", n, dt, w, inputs) for n, (dt, w) in INPUTS.items()]
    wanted += [("output", n, dt, len(cols), outputs) for n, (dt, cols) in OUTPUT_COLUMNS.items()]
    for kind, name, datatype, width, have in wanted:
        spec = have.get(name)
        if spec is None:
            problems.append(f"missing {kind} {name!r} ({datatype}[{width}])")
            continue
        if spec.datatype != datatype:
            problems.append(f"{kind} {name!r} is {spec.datatype}, expected {datatype}")
        size = int(np.prod(spec.shape)) if spec.shape else 1
        if any(d < 0 for d in spec.shape) or size != width:
            problems.append(
                f"{kind} {name!r} has shape {list(spec.shape)}, expected {width} value(s) per particle"
            )
    if not batched:
        problems.append("the model has max_batch_size 0; the client needs a batched model (particles)")
    if problems:
        where = f" at {url}" if url else ""
        raise ContractError(
            f"model {model!r}{where} does not match what ufsim-client needs: " + "; ".join(problems)
        )
    return Contract(model, inputs, outputs, max_batch)


def parse_identity(config: dict[str, Any]) -> dict[str, Any] | None:
    """The repository identity an ensemble config declares in its parameters; None when it has none.

    Returns ``{"repository_version": str, "models": {model: sha256}}``.
    """
    parameters = config.get("parameters") or {}
    values = {
        key[len(IDENTITY_PREFIX) :]: str((value or {}).get("string_value", ""))
        for key, value in parameters.items()
        if key.startswith(IDENTITY_PREFIX)
    }
    if "repository_version" not in values:
        return None
    models = {key[len("sha256_") :]: sha for key, sha in values.items() if key.startswith("sha256_")}
    return {"repository_version": values["repository_version"], "models": dict(sorted(models.items()))}
