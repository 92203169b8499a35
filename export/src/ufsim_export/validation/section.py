"""The report's building blocks: a section of Markdown with its checks, the shared targets and formatting."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..convert.verify import onnx_session, run_chunks
from ..metrics import MIN_BIN_ROWS, TARGET_BIN_ROWS
from ..training import pid

W1_TARGET = 0.05
AUC_TARGET = 0.55
FIGURES = "figures"
"""The report's figure folder, beside ``validation.md``."""
PID_STEPS = pid.STEPS
MODEL_STEPS = ("acceptance", "tracking_efficiency", "tracking_resolution", "tracking_covariance", *PID_STEPS)
"""Every model the report covers, in its tables' order."""


@dataclass
class Section:
    """One part of the report: Markdown lines and the misses found (each a one-line description)."""

    title: str
    lines: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    checks: int = 0


def run_onnx(path: Path, feeds: dict[str, NDArray[Any]], batch: int = 16384) -> NDArray[np.float64]:
    """A single-output ONNX model's output on ``feeds`` (as float32), two threads, ``batch`` rows a call."""
    feeds32 = {name: np.ascontiguousarray(values, np.float32) for name, values in feeds.items()}
    out: NDArray[np.float64] = run_chunks(onnx_session(path, threads=2), feeds32, batch).astype(np.float64)
    return out


def read_manifest(models_dir: Path, step: str) -> dict[str, Any]:
    """``step``'s training manifest, or {} where it has none."""
    path = models_dir / f"{step}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def fmt(x: float, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals, "n/a" where it is missing or not finite."""
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def mark(ok: bool) -> str:
    """A table cell for a check: ok, or a bold MISS."""
    return "ok" if ok else "**MISS**"


def slug(tag: str) -> str:
    """A miss prefix (``"fresh Pythia: "``) as a file-name prefix (``"fresh_pythia_"``); "" stays ""."""
    words = "".join(c if c.isalnum() else " " for c in tag.lower()).split()
    return "".join(f"{w}_" for w in words)


def scored_bin_rows(quick: bool) -> int:
    """Reference rows a (p, η) bin needs to be scored: the target's 5,000, or 300 for the quick report."""
    return MIN_BIN_ROWS if quick else TARGET_BIN_ROWS
