"""The tracking regressions' fitting history is read from their manifests' warm-start chain."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from ufsim_export.validation.lineage import lineage_lines, loss_exponent, rounds, rows_seen


def _chain(fits: list[tuple[int, int, list[float]]]) -> dict[str, Any]:
    """A manifest whose warm-start chain holds ``fits`` (rows, label round, val losses), oldest first."""
    node: dict[str, Any] | None = None
    for rows, label_round, losses in fits:
        config = {"n_train": rows, "lr": 1e-3, "batch_size": 1024, "label_round": label_round}
        training: dict[str, Any] = {"val_loss": losses}
        if node is not None:
            training["warm_start"] = {"parent_config": node["config"], "parent_training": node["training"]}
        node = {"config": config, "training": training}
    assert node is not None
    return node


def test_rounds_are_read_oldest_first_and_rounds_without_epochs_are_skipped() -> None:
    manifest = _chain([(100, 0, [0.5, 0.4]), (200, 1, [0.3]), (200, 1, []), (400, 2, [0.25, 0.2, 0.15])])
    history = rounds(manifest)
    assert [(r.rows, r.labels, r.epochs) for r in history] == [(100, 0, 2), (200, 1, 1), (400, 2, 3)]
    assert rows_seen(history).tolist() == [100, 200, 400, 800, 1200, 1600]
    assert rounds({}) == []


def test_loss_exponent_recovers_a_power_law_from_the_second_round_on() -> None:
    b = 0.2
    fits = [(1_000, 0, [5.0])]  # a first round far off the law: it must not enter the fit
    seen = 1_000
    for rows in (1_000, 3_000, 10_000):
        seen += rows
        fits.append((rows, 1, [2.0 * seen**-b]))
    assert loss_exponent(rounds(_chain(fits))) == pytest.approx(b, rel=1e-9)
    assert math.isnan(loss_exponent(rounds(_chain([(10, 0, [1.0]), (10, 1, [0.5])]))))


def test_lineage_section_from_the_committed_manifests(repo_root: Path, tmp_path: Path) -> None:
    models = repo_root / "export" / "models"
    history = rounds(json.loads((models / "tracking_resolution.json").read_text()))
    assert len(history) >= 2 and all(r.epochs > 0 for r in history)
    lines = lineage_lines(models, tmp_path)
    text = "\n".join(lines)
    assert "| tracking_resolution | 1 |" in text and "| tracking_covariance | 1 |" in text
    rates = [float(x) for x in re.findall(r"b = ([0-9.]+);", text)]
    assert len(rates) == 2 and all(0 < b < 1 for b in rates)
    assert (tmp_path / "regression_lineage.png").stat().st_size > 0
    assert lineage_lines(tmp_path, tmp_path) == ["No tracking regression manifest with a fitting history."]
