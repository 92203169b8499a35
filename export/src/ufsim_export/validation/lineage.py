"""The tracking regressions' fitting history, read from their manifests, and the rate more fitting gains.

Each warm-started fit records its parent's configuration and training record (``training.warm_start``),
so a committed regression's manifest holds every round it went through. Per-track parity is set by how
closely the regression follows the library, so the rate at which its validation loss still falls with the
rows it has seen says how far more of the same fitting could take it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .plots import plot_lineage
from .section import FIGURES, read_manifest

STEPS = ("tracking_resolution", "tracking_covariance")


@dataclass(frozen=True)
class Round:
    """One fit of the regression: rows per epoch, its label round, schedule, the validation loss per epoch."""

    rows: int
    labels: int
    lr: float
    batch_size: int
    val_loss: tuple[float, ...]

    @property
    def epochs(self) -> int:
        """Epochs fitted: one validation loss each."""
        return len(self.val_loss)


def rounds(manifest: Mapping[str, Any]) -> list[Round]:
    """The regression's fitting rounds, oldest first; rounds that did not refit it (no epochs) are skipped."""
    found: list[Round] = []
    config: Mapping[str, Any] | None = manifest.get("config")
    training: Mapping[str, Any] | None = manifest.get("training")
    while config is not None and training is not None:
        losses = tuple(float(v) for v in training.get("val_loss") or ())
        if losses:
            found.append(
                Round(
                    rows=int(config["n_train"]),
                    labels=int(config.get("label_round") or 0),
                    lr=float(config["lr"]),
                    batch_size=int(config["batch_size"]),
                    val_loss=losses,
                )
            )
        parent = training.get("warm_start") or {}
        config, training = parent.get("parent_config"), parent.get("parent_training")
    return found[::-1]


def rows_seen(history: list[Round]) -> NDArray[np.float64]:
    """Cumulative training rows seen after each epoch of ``history``, in order."""
    per_epoch = [r.rows for r in history for _ in r.val_loss]
    return np.cumsum(per_epoch, dtype=np.float64)


def round_ends(history: list[Round]) -> NDArray[np.float64]:
    """Cumulative training rows seen at the end of each round of ``history``."""
    return np.cumsum([r.rows * r.epochs for r in history], dtype=np.float64)


def loss_exponent(history: list[Round]) -> float:
    """b in loss ∝ rows_seen^-b, fitted in log-log to the rounds' final losses from the second round on.

    The first round starts from random weights: its fall is not the rate further fitting continues at.
    nan with fewer than two such rounds.
    """
    ends = round_ends(history)[1:]
    finals = np.array([r.val_loss[-1] for r in history[1:]])
    if len(finals) < 2:
        return float("nan")
    slope = np.polyfit(np.log(ends), np.log(finals), 1)[0]
    return float(-slope)


def lineage_lines(models_dir: Path, fig_dir: Path) -> list[str]:
    """The report's table of rounds per tracking regression, its figure and the fitted rate."""
    lines = [
        "Every round that refitted the regression, oldest first, from the manifests' `training.warm_start` "
        "chain: the mean squared error of the Gaussianised outputs on its held-out tracks after each epoch. "
        "Labels are the library-labelled set of that label round; the curve jumps where a round starts on "
        "new labels, or after the energy-score fine-tune that followed the resolution's first "
        "rounds. b is fitted to the rounds' final losses from the second round on, loss ∝ rows^-b: at that "
        "rate, halving the loss takes 2^(1/b) times the rows seen.",
        "",
        "| regression | round | labels | rows x epochs | lr | batch | final loss | rows seen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    curves: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    rates: list[str] = []
    for step in STEPS:
        history = rounds(read_manifest(models_dir, step))
        if not history:
            continue
        seen = rows_seen(history)
        curves[step] = (seen, np.array([v for r in history for v in r.val_loss]))
        for i, (r, end) in enumerate(zip(history, round_ends(history), strict=True), 1):
            lines.append(
                f"| {step} | {i} | {r.labels} | {r.rows:,} x {r.epochs} | {r.lr:g} | {r.batch_size} | "
                f"{r.val_loss[-1]:.4f} | {int(end):,} |"
            )
        b = loss_exponent(history)
        halving = f"{2 ** (1 / b):,.0f}x" if np.isfinite(b) and b > 0 else "n/a"
        rates.append(
            f"- {step}: b = {b:.3f}; half the loss at this rate: {halving} the {int(seen[-1]):,} rows seen."
        )
    if not curves:
        return ["No tracking regression manifest with a fitting history."]
    path = fig_dir / "regression_lineage.png"
    plot_lineage(curves, path)
    return [*lines, "", *rates, "", f"![regression lineage]({FIGURES}/{path.name})"]
