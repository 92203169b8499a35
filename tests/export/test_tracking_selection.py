"""The tracking generators as the best of several runs: scored against the library on a sample of its own."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ufsim_export.training import distill, tracking

STEP = "tracking_resolution"
QUICK_TWO = dataclasses.replace(distill.QUICK_RESOLUTION, candidates=2, selection_rows=3_000)


@pytest.fixture(scope="module")
def inputs(shared_data: Path) -> dict[str, object]:
    data = shared_data / "lamarr-trk-2016MU"
    particles, val = tracking.load_particles(data, seed=0)
    cols = tracking.Columns.from_spec()
    return {"data_dir": data, "particles": particles, "validation_mask": val,
            "cond_names": cols.resolution_conditions, "out_names": cols.resolution_outputs}  # fmt: skip


def test_the_lower_worst_bin_of_two_runs_is_kept_with_its_record(inputs: dict, tmp_path: Path) -> None:
    path = distill.train_selected(STEP, out_dir=tmp_path, config=QUICK_TWO, seed=3, data_sha="test", **inputs)
    assert path == tmp_path / f"{STEP}.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{STEP}.{s}" for s in ("json", "onnx", "pt")]
    manifest = json.loads((tmp_path / f"{STEP}.json").read_text())
    selection = manifest["selection"]
    scores = {int(s): max(v.values()) for s, v in selection["worst_bin_w1_over_sigma"].items()}
    assert sorted(scores) == [3, 4]
    assert selection["chosen_seed"] == min(scores, key=scores.get) == manifest["seed"]
    assert set(selection["worst_bin_w1_over_sigma"]["3"]) == set(inputs["out_names"])
    assert selection["sample"]["library_seed"] == 3 + distill.SELECTION_SEED_OFFSET
    assert manifest["training_seconds"] == pytest.approx(
        sum(selection["training_seconds"].values()) + selection["selection_seconds"], abs=0.2
    )


def test_a_degraded_run_loses_whatever_its_order(
    inputs: dict, tmp_path: Path, inflated_candidate: Callable[[Path, Path, str, int], None]
) -> None:
    good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "out"
    distill.train_step(STEP, out_dir=good, config=distill.QUICK_RESOLUTION, seed=3, data_sha="test",
                       **{k: v for k, v in inputs.items()})  # fmt: skip
    inflated_candidate(good, bad, STEP, 9)
    select = {k: inputs[k] for k in ("data_dir", "out_names")}
    val_particles = inputs["particles"][inputs["validation_mask"]].reset_index(drop=True)
    for order in ([bad, good], [good, bad]):
        distill.select_candidate(STEP, order, out, val_particles=val_particles, seed=3, rows=3_000, **select)
        kept = json.loads((out / f"{STEP}.json").read_text())["selection"]
        assert kept["chosen_seed"] == 3
        assert max(kept["worst_bin_w1_over_sigma"]["9"].values()) > max(
            kept["worst_bin_w1_over_sigma"]["3"].values()
        )
        assert (out / f"{STEP}.onnx").read_bytes() == (good / f"{STEP}.onnx").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [f"{STEP}.{s}" for s in ("json", "onnx", "pt")]


def test_a_config_needs_at_least_one_run() -> None:
    with pytest.raises(ValueError, match=r"DistillConfig.candidates=0: need at least one run"):
        dataclasses.replace(distill.QUICK_RESOLUTION, candidates=0)


def test_training_routes_a_multi_run_config_through_the_selection(
    inputs: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tracking.train`` fits once by default and goes through ``train_selected`` when candidates > 1."""
    calls: list[str] = []
    monkeypatch.setattr(distill, "train_step", lambda step, **kw: calls.append(f"step {kw['seed']}"))
    monkeypatch.setattr(distill, "train_selected", lambda step, **kw: calls.append(f"selected {kw['seed']}"))
    args = (inputs["data_dir"], tmp_path, tracking.Columns.from_spec(), tracking.QUICK, 5, 1)
    tracking._train_resolution(*args)
    monkeypatch.setattr(distill, "QUICK_RESOLUTION", QUICK_TWO)
    tracking._train_resolution(*args)
    assert calls == ["step 5", "selected 5"]
