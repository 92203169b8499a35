"""PID training: artifact contract (ONNX I/O, manifests), global-PID masking, sWeighted training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pandas")
pytest.importorskip("scipy")

import onnx
import onnxruntime as ort
import torch

from ufsim_export.models.quantile import QuantileResidualGenerator
from ufsim_export.training import calibration, pid
from ufsim_export.training.chained import ChainedGenerator, ThresholdYields, fit_chained, fit_energy_score

MODELS = Path(__file__).resolve().parents[2] / "export" / "models"
GENERATORS = {"rich": (9, 4), "muon": (9, 2), "global_pid": (16, 9)}


@pytest.fixture(scope="module")
def quick_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pid")
    paths = pid.train(out, seed=1, quick=True)
    assert [p.name for p in paths] == ["is_muon.onnx", "rich.onnx", "muon.onnx", "global_pid.onnx"]
    return out


def _io(path: Path) -> tuple[dict[str, list], dict[str, list]]:
    model = onnx.load(path)

    def dims(values: list) -> dict[str, list]:
        return {
            v.name: [d.dim_value if d.dim_value else d.dim_param for d in v.type.tensor_type.shape.dim]
            for v in values
        }

    return dims(model.graph.input), dims(model.graph.output)


def _check_artifacts(directory: Path) -> None:
    inputs, outputs = _io(directory / "is_muon.onnx")
    assert list(inputs) == ["features"] and inputs["features"][1] == 9
    assert list(outputs) == ["probabilities"] and outputs["probabilities"][1] == 2
    for step, (n_cond, n_out) in GENERATORS.items():
        inputs, outputs = _io(directory / f"{step}.onnx")
        assert inputs == {"conditions": [inputs["conditions"][0], n_cond], "noise": [inputs["noise"][0], 64]}
        assert list(outputs) == ["output"] and outputs["output"][1] == n_out
    for step in ("is_muon", *GENERATORS):
        manifest = json.loads((directory / f"{step}.json").read_text())
        assert manifest["step"] == step
        assert manifest["data"]["generator"] == "ufsim_export.calibration.generate"
        assert len(manifest["data"]["data_sha256"]) == 64
        assert {"seed", "size"} <= set(manifest["data"])
        assert {"git_commit", "libraries", "training_seconds", "validation", "conversion_fidelity"} <= set(
            manifest
        )
        if step == "is_muon":
            assert manifest["kind"] == "gbdt" and manifest["classes"] == ["not_muon", "muon"]
            assert manifest["max_depth"] <= 8
            assert manifest["conversion_fidelity"]["rows"] >= 10_000
        else:
            assert manifest["kind"] == "generator" and manifest["noise_dim"] == 64
            assert manifest["validation"]["w1_over_sigma"]
            assert 0.0 <= manifest["validation"]["two_sample_auc"] <= 1.0
        assert max(manifest["conversion_fidelity"]["max_error"].values()) <= 1e-5


def test_quick_training_writes_the_artifact_contract(quick_models: Path) -> None:
    _check_artifacts(quick_models)
    for step in ("is_muon", *GENERATORS):
        assert json.loads((quick_models / f"{step}.json").read_text())["seed"] == 1, step


def test_onnx_runs_and_probnn_sums_to_one(quick_models: Path) -> None:
    frame = calibration.generate(500, seed=3)
    features = frame[list(calibration.PID_FEATURES)].to_numpy(np.float32)
    session = ort.InferenceSession(str(quick_models / "is_muon.onnx"), providers=["CPUExecutionProvider"])
    (prob,) = session.run(None, {"features": features})
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    conditions = pid.global_conditions(frame).astype(np.float32)
    noise = np.random.default_rng(0).standard_normal((len(frame), 64)).astype(np.float32)
    session = ort.InferenceSession(str(quick_models / "global_pid.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"conditions": conditions, "noise": noise})
    assert out.shape == (500, 9)
    np.testing.assert_allclose(out[:, 4:].sum(axis=1), 1.0, atol=1e-5)


def test_global_pid_ignores_muon_inputs_without_is_muon(quick_models: Path) -> None:
    """The muon generator always runs in the ensemble; for isMuon == 0 its output must not matter."""
    frame = calibration.generate(400, seed=4)
    conditions = pid.global_conditions(frame).astype(np.float32)
    conditions[:, -1] = 0.0
    noise = np.random.default_rng(1).standard_normal((len(frame), 64)).astype(np.float32)
    garbage = conditions.copy()
    garbage[:, pid.MUON_SLICE] = np.random.default_rng(2).uniform(-1000, 50, (len(frame), 2))
    session = ort.InferenceSession(str(quick_models / "global_pid.onnx"), providers=["CPUExecutionProvider"])
    (a,) = session.run(None, {"conditions": conditions, "noise": noise})
    (b,) = session.run(None, {"conditions": garbage, "noise": noise})
    np.testing.assert_array_equal(a, b)
    conditions[:, -1] = 1.0
    garbage[:, -1] = 1.0
    (c,) = session.run(None, {"conditions": conditions, "noise": noise})
    (d,) = session.run(None, {"conditions": garbage, "noise": noise})
    assert not np.allclose(c, d), "for isMuon tracks the muon response is used"


def test_energy_score_fit_learns_a_conditional_distribution() -> None:
    """y ~ N(2c, (0.5 + 0.5|c|)^2): the fitted generator's conditional mean and spread follow."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    c = rng.uniform(-1, 1, (20_000, 1))
    y = 2 * c + rng.normal(size=c.shape) * (0.5 + 0.5 * np.abs(c))
    module = QuantileResidualGenerator(1, 64, 1, width=32, n_residual=2, continuous=(0,))
    fit_energy_score(module, c, y, steps=1500, batch_size=512, lr=3e-3)
    for value, (mean, spread) in ((-0.8, (-1.6, 0.9)), (0.0, (0.0, 0.5)), (0.8, (1.6, 0.9))):
        out = pid.sample_generator(module, np.full((4000, 1), value, np.float32), seed=1)[:, 0]
        assert out.mean() == pytest.approx(mean, abs=0.2)
        assert out.std() == pytest.approx(spread, rel=0.3)


def test_chain_keeps_a_deterministic_relation_between_outputs() -> None:
    """y1 ~ N(c, 1) and y2 = exp(y1 / 2) exactly (like MuonMuLL and MuonBgLL, two functions of one hit
    distance): the chain draws y2 on the curve, and each output's spread follows the conditions.

    One generator drawing both outputs from shared noise, fitted the same way, lands a median 0.022-0.025 σ
    off the curve; the chain 0.005-0.006 σ.
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    c = rng.uniform(-1, 1, (20_000, 1))
    y1 = c[:, 0] + rng.normal(size=len(c))
    y = np.column_stack([y1, np.exp(y1 / 2)])
    chain = ChainedGenerator(1, 8, 2, width=32, n_residual=2, continuous=(0,))
    histories = fit_chained(chain, c, y, steps=1500, batch_size=512, lr=3e-3)
    assert len(histories) == 2 and histories[1][-1] < histories[1][0]
    for value in (-0.8, 0.8):
        out = pid.sample_generator(chain, np.full((4000, 1), value, np.float32), seed=1)
        assert out[:, 0].mean() == pytest.approx(value, abs=0.2)
        assert out[:, 0].std() == pytest.approx(1.0, rel=0.2)
        off_curve = np.abs(out[:, 1] - np.exp(out[:, 0] / 2)) / out[:, 1].std()
        assert np.median(off_curve) < 0.012, np.median(off_curve)


def test_threshold_yields_are_the_cherenkov_photon_fractions() -> None:
    """Zero below each threshold, sin²θ / sin²θ_max of the calibration's radiators above it."""
    layer = ThresholdYields(pid.RICH_THRESHOLDS_MEV, log10_p_column=1)
    p = np.array([2000.0, 2637.0, 3000.0, 20_000.0, 150_000.0])
    conditions = torch.tensor(np.column_stack([np.zeros(len(p)), np.log10(p)]), dtype=torch.float32)
    got = layer(conditions).numpy()
    expected = np.zeros_like(got)
    pairs = {radiator.threshold_mev(mass): (radiator, mass)
             for radiator in calibration.RADIATORS for mass in calibration.MASS_MEV.values()}  # fmt: skip
    for k, threshold in enumerate(pid.RICH_THRESHOLDS_MEV):
        radiator, mass = pairs[threshold]
        # the calibration's own photon-yield fraction of a particle of this mass in this radiator
        expected[:, k] = calibration._cherenkov(p, mass, radiator)[1]
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert got[0].max() == 0.0 and got[-1].min() > 0.0
    assert len(pid.RICH_THRESHOLDS_MEV) == 7


def test_threshold_features_survive_saving_and_onnx(tmp_path: Path) -> None:
    """A chain with threshold inputs saves, reloads and exports to ONNX with the same outputs."""
    from ufsim_export.training.artifacts import save_generator
    from ufsim_export.training.saved import load_module

    rng = np.random.default_rng(0)
    c = np.column_stack([rng.uniform(3.3, 5.3, 3000), rng.normal(size=3000)])
    y = np.column_stack([np.maximum(0.0, 1.0 - (3000.0 / 10 ** c[:, 0]) ** 2) + rng.normal(0, 0.1, 3000),
                         rng.normal(size=3000)])  # fmt: skip
    chain = ChainedGenerator(
        2, 4, 2, width=16, n_residual=1, continuous=(0, 1), thresholds_mev=(3000.0, 9000.0)
    )
    fit_chained(chain, c, y, steps=30, batch_size=256)
    assert chain.core.n_conditions == 4
    rows = np.resize(c, (10_000, 2)).astype(np.float32)
    onnx_path, _ = save_generator(chain, tmp_path, "chain", conditions=rows, noise_dim=4, manifest={}, seed=0)
    loaded = load_module(tmp_path / "chain.pt")
    cond = torch.tensor(c[:200], dtype=torch.float32)
    noise = torch.randn(200, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(cond, noise), chain(cond, noise))
    session = ort.InferenceSession(str(onnx_path))
    got = session.run(None, {"conditions": cond.numpy(), "noise": noise.numpy()})[0]
    np.testing.assert_allclose(got, chain(cond, noise).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_chain_rejects_more_outputs_than_noise_columns() -> None:
    with pytest.raises(ValueError, match="n_outputs <= noise_dim"):
        ChainedGenerator(3, 2, 4)


def test_sweighted_training_recovers_the_signal() -> None:
    """A kaon sample with 40 % background (mostly pions labelled as kaons): the generator trained with
    sWeights reproduces the pure-kaon RICH response better than the one trained without."""
    result = pid.weighted_training_check(seed=0, quick=True)
    for column in ("RichDLLk", "RichDLLp"):
        assert result[f"weighted_{column}"] < result[f"unweighted_{column}"], result
    weighted = np.mean([result[f"weighted_{c}"] for c in calibration.RICH_COLUMNS])
    unweighted = np.mean([result[f"unweighted_{c}"] for c in calibration.RICH_COLUMNS])
    assert weighted < 0.8 * unweighted, result


@pytest.mark.skipif(not (MODELS / "global_pid.onnx").exists(), reason="PID models not trained yet")
def test_committed_models_follow_the_contract() -> None:
    _check_artifacts(MODELS)
    manifest = json.loads((MODELS / "is_muon.json").read_text())
    eff = manifest["validation"]["efficiency"]["mu"]
    assert eff["model"][-3] == pytest.approx(eff["truth"][-3], abs=0.03)


def test_train_command_trains_only_the_named_pid_steps(tmp_path: Path) -> None:
    """`ufsim-export train --steps rich` writes the RICH model and nothing else (no tracking data needed)."""
    from ufsim_export.cli import main

    assert (
        main(["train", "--quick", "--steps", "rich", "--out", str(tmp_path), "--data", str(tmp_path / "no")])
        == 0
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rich.json", "rich.onnx", "rich.pt"]
    manifest = json.loads((tmp_path / "rich.json").read_text())
    assert manifest["architecture"]["chained"] is True
    assert len(manifest["loss"]["history_per_100_steps"]) == 4


def test_balanced_fit_weights_the_sweights_by_phase_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a BALANCE entry the chain fits sWeight x (p, η) weight (not the sWeights alone), as recorded."""
    seen: list[np.ndarray] = []
    samples = []
    generate = calibration.generate

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(np.asarray(args[3]))
        return fit_chained(*args, **kwargs)

    def sample_spy(*args: Any, **kwargs: Any) -> Any:
        samples.append(generate(*args, **kwargs))
        return samples[-1]

    monkeypatch.setattr(pid, "BALANCE", {"rich": 0.5})
    monkeypatch.setattr(pid, "fit_chained", spy)
    monkeypatch.setattr(calibration, "generate", sample_spy)
    pid.train(tmp_path, seed=1, quick=True, steps=("rich",))
    ratio = seen[0] / samples[0]["sweight"].to_numpy()  # the first sample drawn is the training one
    assert ratio.std() > 0.1 and ratio.mean() == pytest.approx(1.0, rel=0.05)
    manifest = json.loads((tmp_path / "rich.json").read_text())
    assert manifest["loss"]["phase_space_balance"] == 0.5
    assert "10 column spread" in manifest["conversion_fidelity"]["metric"]


def test_balanced_phase_continues_the_chain_on_a_fresh_weighted_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the main fit, the stages fit again on a fresh sample with balanced sWeights; spaces unchanged."""
    calls: list[dict[str, Any]] = []
    real_fit_stages = pid.fit_stages

    def spy(chain: Any, given: Any, targets: Any, weights: Any, **kwargs: Any) -> Any:
        maps = [u.copy() for _, u in chain_module[0].forward_maps()]
        out = real_fit_stages(chain, given, targets, weights, **kwargs)
        kept = all(
            np.array_equal(a, u) for a, (_, u) in zip(maps, chain_module[0].forward_maps(), strict=True)
        )
        calls.append({"weights": np.asarray(weights), "rows": len(given), "lr": kwargs["lr"], "kept": kept})
        return out

    chain_module: list[Any] = []
    real_fit_chained = pid.fit_chained

    def chained_spy(module: Any, *args: Any, **kwargs: Any) -> Any:
        chain_module.append(module)
        return real_fit_chained(module, *args, **kwargs)

    phase = pid.BalancedPhase(rows=10_000, steps=200, lr=3e-4, exponent=0.5, quick_rows=3_000, quick_steps=7)
    monkeypatch.setattr(pid, "BALANCED_PHASE", {"rich": phase})
    monkeypatch.setattr(pid, "fit_stages", spy)
    monkeypatch.setattr(pid, "fit_chained", chained_spy)
    pid.train(tmp_path, seed=1, quick=True, steps=("rich",))
    assert len(calls) == 1
    call = calls[0]
    assert call["rows"] == 3_000 and call["lr"] == 3e-4 and call["kept"]
    assert call["weights"].std() > 0.1 and call["weights"].mean() == pytest.approx(1.0, rel=0.05)
    recorded = json.loads((tmp_path / "rich.json").read_text())["loss"]["balanced_phase"]
    assert recorded["rows"] == 3_000 and recorded["steps"] == 7 and recorded["exponent"] == 0.5
    assert recorded["data_seed"] == 1 * 1000 + 21 + 3
    assert [len(h) for h in recorded["history_per_100_steps"]] == [0, 0, 0, 0]
    assert 0 < recorded["effective_rows"] < 3_000


def test_balanced_phase_refuses_the_muon_selection() -> None:
    chain = pid._generator(9, 2, pid.CONTINUOUS_PID, {"width": 8, "n_residual": 1})
    phase = pid.BalancedPhase(rows=10, steps=1, lr=1e-3, exponent=0.5)
    with pytest.raises(ValueError, match="muon trains on isMuon tracks"):
        pid.fit_balanced_phase("muon", chain, phase, seed=0, data_seed=0, batch_size=8, quick=True)


def test_pid_training_rejects_an_unknown_step(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="unknown PID steps \\['kaon'\\]; accepted: is_muon, rich, muon, global_pid"
    ):
        pid.train(tmp_path, quick=True, steps=("rich", "kaon"))


def test_every_learnt_step_of_the_spec_has_a_trainer() -> None:
    """The tracking and PID trainings together cover exactly the spec's learnt steps (the CLI's choices)."""
    from ufsim_export.spec import default_spec_path, load_spec
    from ufsim_export.training import tracking

    learnt = [step.name for step in load_spec(default_spec_path()).learnt_steps()]
    assert sorted((*tracking.STEPS, *pid.STEPS)) == sorted(learnt)


def test_selection_keeps_the_candidate_with_the_lowest_worst_bin(tmp_path: Path) -> None:
    """Two runs (seeds 1, 2) are fitted; the one whose worst (p, η) bin is lower is kept, with the record."""
    path = pid.train_selected("rich", tmp_path, seed=1, quick=True, candidates=2)
    assert path == tmp_path / "rich.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rich.json", "rich.onnx", "rich.pt"]
    manifest = json.loads((tmp_path / "rich.json").read_text())
    selection = manifest["selection"]
    scores = {int(s): max(v.values()) for s, v in selection["worst_bin_w1_over_sigma"].items()}
    assert sorted(scores) == [1, 2]
    assert selection["chosen_seed"] == min(scores, key=scores.get) == manifest["seed"]
    assert selection["sample"]["seed"] == 1 * 1000 + pid.SELECTION_DATA_SEED
    assert set(selection["worst_bin_w1_over_sigma"]["1"]) == set(calibration.RICH_COLUMNS)
    runs = selection["training_seconds"]
    assert sorted(runs) == ["1", "2"]
    assert manifest["training_seconds"] == pytest.approx(
        sum(runs.values()) + selection["selection_seconds"], abs=0.2
    )


def test_selection_rejects_a_degraded_candidate(
    tmp_path: Path, inflated_candidate: Callable[[Path, Path, str, int], None]
) -> None:
    """A candidate whose served draws are inflated loses, whatever its order; the good files are kept."""
    good, bad, out = tmp_path / "good", tmp_path / "bad", tmp_path / "out"
    pid.train_generator_step("rich", good, seed=1, quick=True)
    inflated_candidate(good, bad, "rich", 7)
    pid.select_candidate("rich", [bad, good], out, seed=1, quick=True)
    kept = json.loads((out / "rich.json").read_text())
    scores = kept["selection"]["worst_bin_w1_over_sigma"]
    assert kept["selection"]["chosen_seed"] == 1 and max(scores["7"].values()) > max(scores["1"].values())
    assert (out / "rich.onnx").read_bytes() == (good / "rich.onnx").read_bytes()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_selection_refuses_repeated_seeds_and_other_steps(tmp_path: Path) -> None:
    pid.train_generator_step("rich", tmp_path / "a", seed=1, quick=True)
    with pytest.raises(ValueError, match="seed 1 is already a candidate"):
        pid.select_candidate("rich", [tmp_path / "a", tmp_path / "a"], tmp_path / "out", seed=1, quick=True)
    with pytest.raises(ValueError, match="accepted: rich"):
        pid.select_candidate("muon", [tmp_path / "a"], tmp_path / "out", seed=1, quick=True)
    with pytest.raises(ValueError, match="at least one run"):
        pid.train_selected("rich", tmp_path / "out", seed=1, quick=True, candidates=0)


def test_full_training_fits_rich_as_the_best_of_its_configured_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make train` goes through the selection for RICH (3 runs) and fits the other generators once."""
    calls: list[tuple[str, int | None]] = []

    def selected(step: str, out_dir: Path, **kwargs: Any) -> Path:
        calls.append((step, kwargs.get("candidates")))
        return out_dir / f"{step}.onnx"

    monkeypatch.setattr(pid, "train_selected", selected)
    monkeypatch.setattr(pid, "train_generator_step", lambda step, out_dir, **kw: out_dir / f"{step}.onnx")
    pid.train(tmp_path, seed=0, quick=False, steps=("rich", "muon"))
    assert calls == [("rich", None)]
    assert pid._sizes(False, "rich")["candidates"] == 3 and pid._sizes(False, "muon")["candidates"] == 1
