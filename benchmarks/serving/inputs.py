"""Realistic request data for perf_analyzer: the ensemble's particles and each composing model's inputs.

Composing models get the tensors they would see inside the ensemble, computed by running the same
ONNX graphs in-process on the same particles (so GBDT branches, sampled track types and sentinels
are realistic rather than random noise).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from ufsim_export.repository.inprocess import InProcessPipeline

from .common import ENSEMBLE, Repository


def step_inputs(repository: Repository, batch: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """For each composing model, its input tensors (by ONNX input name) for the particles ``batch``."""
    pipeline = InProcessPipeline(repository.path, repository.spec)
    tensors = dict(batch)
    per_step: dict[str, dict[str, np.ndarray]] = {}
    for step in repository.spec.steps:
        session = pipeline.sessions[step.name]
        feeds = {i.name: tensors[i.name] for i in session.get_inputs()}
        per_step[step.name] = feeds
        values = session.run(None, feeds)
        tensors.update(zip((o.name for o in session.get_outputs()), values, strict=True))
    return per_step


ROW_COPIES_BUDGET = 1 << 18
"""perf_analyzer prepares every entry's batch up front (about 16 us per 1024 rows here): entries x batch
is kept under this so that its set-up takes seconds, not minutes."""


def rows_for_batch(batch: int, available: int) -> int:
    """How many distinct particles (JSON entries) to give perf_analyzer for requests of ``batch``."""
    return max(1, min(available, max(32, ROW_COPIES_BUDGET // batch)))


def write_input_json(path: Path, tensors: dict[str, np.ndarray], rows: int | None = None) -> Path:
    """perf_analyzer ``--input-data`` JSON: one entry per row (a batch-1 request), base64 little-endian.

    perf_analyzer builds a batch-``b`` request from ``b`` consecutive entries, round-robin: with fewer
    entries than ``b`` the same particles repeat within a request.
    """
    rows = rows or len(next(iter(tensors.values())))
    data = []
    for i in range(rows):
        entry = {}
        for name, value in tensors.items():
            row = np.ascontiguousarray(value[i], dtype=value.dtype.newbyteorder("<"))
            entry[name] = {"b64": base64.b64encode(row.tobytes()).decode("ascii")}
        data.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}, separators=(",", ":")))
    return path


def model_inputs(repository: Repository, batch: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Input tensors of the ensemble and of every composing model for the particles ``batch``."""
    return {ENSEMBLE: dict(batch), **step_inputs(repository, batch)}


def tile(tensors: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """The first ``rows`` rows, repeating the tensors when they are shorter."""
    n = len(next(iter(tensors.values())))
    index = np.arange(rows) % n
    return {name: np.ascontiguousarray(value[index]) for name, value in tensors.items()}
