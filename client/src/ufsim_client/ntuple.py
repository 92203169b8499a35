"""The output ntuple's layout: one row per simulated particle, LHCb-like column names.

Truth columns come from the request the client sent; reconstructed columns from the server's outputs
(:data:`ufsim_client.contract.OUTPUT_COLUMNS`). The table is documented in client/README.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ufsim_client.batching import Request
from ufsim_client.contract import OUTPUT_COLUMNS
from ufsim_client.events import pseudorapidity

__all__ = ["TRUTH_COLUMNS", "make_columns", "schema"]

TRUTH_COLUMNS: dict[str, type[np.generic]] = {
    "eventNumber": np.int64,
    "particleIndex": np.int32,
    "TRUEID": np.int32,
    "TRUEORIGINVERTEX_X": np.float32,
    "TRUEORIGINVERTEX_Y": np.float32,
    "TRUEORIGINVERTEX_Z": np.float32,
    "TRUEP_X": np.float32,
    "TRUEP_Y": np.float32,
    "TRUEP_Z": np.float32,
    "TRUEP": np.float32,
    "TRUEETA": np.float32,
    "nTracks": np.float32,
    "rngKey": np.uint64,
}
"""Truth columns: name -> dtype."""


def schema() -> dict[str, np.dtype[Any]]:
    """Every ntuple column, in order, with its dtype."""
    columns = {name: np.dtype(dtype) for name, dtype in TRUTH_COLUMNS.items()}
    for datatype, names in OUTPUT_COLUMNS.values():
        for name in names:
            columns[name] = np.dtype(np.int32 if datatype == "INT32" else np.float32)
    return columns


def make_columns(request: Request, outputs: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """The ntuple rows of one request, from what was sent and what came back."""
    inputs = request.inputs
    origin = inputs["origin"].reshape(-1, 3)
    momentum = inputs["momentum"].reshape(-1, 3)
    columns: dict[str, NDArray[Any]] = {
        "eventNumber": request.event,
        "particleIndex": request.index,
        "TRUEID": inputs["pid"].reshape(-1),
        "TRUEORIGINVERTEX_X": origin[:, 0],
        "TRUEORIGINVERTEX_Y": origin[:, 1],
        "TRUEORIGINVERTEX_Z": origin[:, 2],
        "TRUEP_X": momentum[:, 0],
        "TRUEP_Y": momentum[:, 1],
        "TRUEP_Z": momentum[:, 2],
        "TRUEP": np.linalg.norm(momentum.astype(np.float64), axis=1),
        "TRUEETA": pseudorapidity(momentum),
        "nTracks": inputs["n_tracks"].reshape(-1),
        "rngKey": inputs["rng_key"].reshape(-1),
    }
    n = len(request)
    for tensor, (_, names) in OUTPUT_COLUMNS.items():
        values = outputs[tensor].reshape(n, len(names))
        for i, name in enumerate(names):
            columns[name] = values[:, i]
    types = schema()
    return {name: np.ascontiguousarray(columns[name], dtype=types[name]) for name in types}
