"""Best of several training runs: each candidate's served ONNX scored on a sample no fit or report uses.

One configuration's runs can differ by seed as much as configurations did: RICH's worst (p, η) bin
spanned 0.044-0.074 over seeds 0-2, so ``make train`` fits three RICH runs and keeps the one whose worst
output's worst bin is lowest (:func:`keep_best`); the step's module supplies the score and its sample.
The tracking generators can do the same (``DistillConfig.candidates``), measured and not adopted: their
runs differ by less than the selection sample can resolve (see that field's docstring).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..files import write_bytes
from ..metrics import ETA_EDGES, LOG10P_EDGES, binned_w1_over_sigma
from .provenance import write_manifest

Score = Callable[[Path], dict[str, float]]
"""A candidate's ``<step>.onnx`` -> per output, its worst-bin W1/σ on the selection sample."""


def worst_bins(
    reference: NDArray[Any],
    model: NDArray[Any],
    log10p: NDArray[Any],
    eta: NDArray[Any],
    outputs: Sequence[str],
    *,
    min_rows: int,
) -> dict[str, float]:
    """Per output, the largest W1/σ over the report's (p, η) bins with at least ``min_rows`` rows."""
    worst = {}
    for j, column in enumerate(outputs):
        binned = binned_w1_over_sigma(
            np.asarray(reference[:, j], np.float64), np.asarray(model[:, j], np.float64), log10p, eta,
            LOG10P_EDGES, ETA_EDGES, min_rows=min_rows,
        )  # fmt: skip
        worst[column] = round(float(np.nanmax(binned.values)), 5)
    return worst


def keep_best(
    step: str,
    candidate_dirs: Sequence[Path],
    out_dir: Path,
    score: Score,
    sample: dict[str, Any],
    *,
    started: float | None = None,
) -> Path:
    """Score each candidate's ``<step>.onnx``; copy the best one's files to ``out_dir``.

    Best = lowest worst output; its ``.onnx``, ``.pt`` and ``.json`` are each replaced atomically, the
    manifest recording the selection. The manifest's ``training_seconds`` becomes what the model cost:
    every candidate's fit and the selection (from ``started``, a ``time.perf_counter()`` taken before the
    sample was made, else now). ``sample`` describes the selection sample (recorded as is). Returns the
    ONNX path.
    """
    start = time.perf_counter() if started is None else started
    scores: dict[int, dict[str, float]] = {}
    runs: dict[int, tuple[Path, dict[str, Any]]] = {}
    for directory in map(Path, candidate_dirs):
        manifest = json.loads((directory / f"{step}.json").read_text())
        run = int(manifest["seed"])
        if run in scores:
            raise ValueError(f"{directory}: seed {run} is already a candidate")
        runs[run] = directory, manifest
        scores[run] = score(directory / f"{step}.onnx")
    chosen = min(scores, key=lambda s: max(scores[s].values()))
    source, manifest = runs[chosen]
    seconds = {run: float(m["training_seconds"]) for run, (_, m) in runs.items()}
    manifest["selection"] = {
        "criterion": "lowest worst (p, η)-bin W1/σ over the outputs (the report's bins)",
        "sample": sample,
        "worst_bin_w1_over_sigma": {str(s): v for s, v in scores.items()},
        "chosen_seed": chosen,
        "training_seconds": seconds,
        "selection_seconds": round(time.perf_counter() - start, 1),
    }
    manifest["training_seconds"] = round(
        sum(seconds.values()) + manifest["selection"]["selection_seconds"], 1
    )
    for name in (f"{step}.onnx", f"{step}.pt"):
        write_bytes(out_dir / name, (source / name).read_bytes())
    write_manifest(out_dir / f"{step}.json", manifest)
    return out_dir / f"{step}.onnx"
