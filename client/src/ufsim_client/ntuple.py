"""The output ntuple's layout: one row per simulated particle, LHCb-like column names.

Truth columns come from the request the client sent; reconstructed columns from the server's outputs
(:data:`ufsim_client.contract.OUTPUT_COLUMNS`) and, for the primary vertex and impact parameters, from
the ``pv_reconstruction`` model (:mod:`ufsim_client.vertices`). The table is documented in
client/README.md; :data:`UNITS` gives each column's unit (written into ROOT branch titles and parquet
field metadata).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ufsim_client.batching import Request
from ufsim_client.contract import OUTPUT_COLUMNS
from ufsim_client.events import MC_COLUMNS, pseudorapidity
from ufsim_client.vertices import NO_VALUE, impact_parameters

__all__ = ["PV_COLUMNS", "TRUTH_COLUMNS", "UNITS", "make_columns", "schema"]

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
    **{name: dtype for name, (dtype, _) in MC_COLUMNS.items()},
    "nPVs": np.int32,
    "TRUEOWNPV_X": np.float32,
    "TRUEOWNPV_Y": np.float32,
    "TRUEOWNPV_Z": np.float32,
}
"""Truth columns: name -> dtype."""

PV_COLUMNS: tuple[str, ...] = (
    "OWNPV_X",
    "OWNPV_Y",
    "OWNPV_Z",
    "OWNPV_XERR",
    "OWNPV_YERR",
    "OWNPV_ZERR",
    "IP_OWNPV",
    "IPCHI2_OWNPV",
)
"""Reconstructed PV of the particle's own collision and the track's impact parameter (float32)."""

_MM = ("TRUEORIGINVERTEX_", "TRUEOWNPV_", "OWNPV_", "TRACK_X", "TRACK_Y", "TRACK_Z")
UNITS: dict[str, str] = {
    **{f"{prefix}{axis}": "mm" for prefix in _MM[:3] for axis in "XYZ"},
    **{f"OWNPV_{axis}ERR": "mm" for axis in "XYZ"},
    **{name: "mm" for name in _MM[3:]},
    **{name: "MeV" for name in ("TRUEP_X", "TRUEP_Y", "TRUEP_Z", "TRUEP", "TRACK_P")},
    "TRACK_TX": "1 (dx/dz)",
    "TRACK_TY": "1 (dy/dz)",
    "IP_OWNPV": "mm",
    "IPCHI2_OWNPV": "1",
    **{
        f"TRACK_COV_{i}{j}": f"{u[i]}*{u[j]}"
        for i in range(5)
        for j in range(i, 5)
        for u in [("mm", "mm", "1", "1", "1/MeV")]
    },
}
"""Unit of every dimensioned column (MeV, mm, as HepMC and LHCb); other columns are counts, ids or flags."""


def schema() -> dict[str, np.dtype[Any]]:
    """Every ntuple column, in order, with its dtype."""
    columns = {name: np.dtype(dtype) for name, dtype in TRUTH_COLUMNS.items()}
    for datatype, names in OUTPUT_COLUMNS.values():
        for name in names:
            columns[name] = np.dtype(np.int32 if datatype == "INT32" else np.float32)
    for name in PV_COLUMNS:
        columns[name] = np.dtype(np.float32)
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
    columns.update(_truth(request, n))
    columns.update(_vertex_columns(request, outputs, columns, n))
    types = schema()
    return {name: np.ascontiguousarray(columns[name], dtype=types[name]) for name in types}


def _truth(request: Request, n: int) -> dict[str, NDArray[Any]]:
    truth = {
        name: request.truth.get(name, np.full(n, default, dtype))
        for name, (dtype, default) in MC_COLUMNS.items()
    }
    truth["nPVs"] = request.truth.get("nPVs", np.zeros(n, np.int32))
    has_pv = request.pv_row >= 0 if len(request.pv_row) == n else np.zeros(n, bool)
    true_pv = np.full((n, 3), NO_VALUE)
    true_pv[has_pv] = request.pv_true[request.pv_row[has_pv]]
    for axis, name in enumerate("XYZ"):
        truth[f"TRUEOWNPV_{name}"] = true_pv[:, axis]
    return truth


def _vertex_columns(
    request: Request, outputs: dict[str, NDArray[Any]], columns: dict[str, NDArray[Any]], n: int
) -> dict[str, NDArray[Any]]:
    """OWNPV_* from the PV model's outputs and IP/IPCHI2 of reconstructed tracks; NO_VALUE elsewhere."""
    out = {name: np.full(n, NO_VALUE) for name in PV_COLUMNS}
    if "pv_position" not in outputs or len(request.pv_row) != n:
        return out
    has_pv = request.pv_row >= 0
    rows = request.pv_row[has_pv]
    position = outputs["pv_position"].reshape(-1, 3)[rows]
    error = outputs["pv_error"].reshape(-1, 3)[rows]
    for axis, name in enumerate("XYZ"):
        out[f"OWNPV_{name}"][has_pv] = position[:, axis]
        out[f"OWNPV_{name}ERR"][has_pv] = error[:, axis]
    track = has_pv & (columns["TRACK_Type"] > 0)
    if track.any():
        state = np.stack([columns[f"TRACK_{v}"][track] for v in ("X", "Y", "Z", "TX", "TY")], axis=1)
        cov = np.stack([columns[f"TRACK_COV_{i}{j}"][track] for i in range(5) for j in range(i, 5)], axis=1)
        pv_rows = request.pv_row[track]
        pv = outputs["pv_position"].reshape(-1, 3)[pv_rows]
        pv_error = outputs["pv_error"].reshape(-1, 3)[pv_rows]
        out["IP_OWNPV"][track], out["IPCHI2_OWNPV"][track] = impact_parameters(state, cov, pv, pv_error)
    return out
