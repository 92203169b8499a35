"""Tracking training in quick mode: end to end on a subsample, artifacts that pass verification, the
contract's columns, manifests with provenance; and the helpers it rests on (soft labels, noise, split,
quantile layers)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ufsim_export.convert.verify import verify_generator
from ufsim_export.models.quantile import MonotonePiecewiseLinear, QuantileResidualGenerator, quantile_knots
from ufsim_export.spec import PipelineSpec
from ufsim_export.training import distill, library, tracking
from ufsim_export.training.provenance import git_commit, sha256_files
from ufsim_export.training.reproducibility import event_split
from ufsim_export.training.saved import load_quantile_generator
from ufsim_export.training.two_stage import TwoStageGenerator, two_stage_noise_dim

STEPS = ("acceptance", "tracking_efficiency", "tracking_resolution", "tracking_covariance")


@pytest.fixture(scope="module")
def quick_models(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tracking_models")
    written = tracking.train(shared_data / "lamarr-trk-2016MU", out, seed=0, quick=True)
    assert [p.name for p in written] == [f"{s}.onnx" for s in STEPS]
    return out


def test_artifacts_follow_the_contract(quick_models: Path, spec: PipelineSpec) -> None:
    cols = tracking.Columns.from_spec(spec)
    expected = {
        "acceptance": ({"features": 12}, {"probabilities": 2}),
        "tracking_efficiency": ({"features": 12}, {"probabilities": 4}),
        "tracking_resolution": ({"conditions": 12, "noise": two_stage_noise_dim(9)}, {"output": 9}),
        "tracking_covariance": ({"conditions": 15, "noise": two_stage_noise_dim(15)}, {"output": 15}),
    }
    declared = {step.name: step.noise_dim for step in spec.steps}
    assert declared["tracking_resolution"] == two_stage_noise_dim(9) == 164
    assert declared["tracking_covariance"] == two_stage_noise_dim(15) == 188
    for step, (inputs, outputs) in expected.items():
        session = ort.InferenceSession(str(quick_models / f"{step}.onnx"), providers=["CPUExecutionProvider"])
        assert {i.name: i.shape[1] for i in session.get_inputs()} == inputs, step
        assert {o.name: o.shape[1] for o in session.get_outputs()} == outputs, step
        assert all(i.type == "tensor(float)" for i in session.get_inputs())
        manifest = json.loads((quick_models / f"{step}.json").read_text())
        assert manifest["step"] == step
        assert len(manifest["data_sha256"]) == 64 and manifest["seed"] == 0
        assert manifest["git_commit"] and manifest["libraries"]["torch"]
        assert manifest["training_seconds"] > 0
        assert max(manifest["conversion_fidelity"]["max_error"].values()) < 1e-5
        assert "validation" in manifest
    assert json.loads((quick_models / "acceptance.json").read_text())["classes"] == ["out", "in"]
    assert json.loads((quick_models / "tracking_efficiency.json").read_text())["classes"] == list(
        cols.efficiency_classes
    )
    assert json.loads((quick_models / "tracking_covariance.json").read_text())["inputs"] == list(
        cols.covariance_conditions
    )
    assert cols.covariance_conditions[-3:] == ("chi2PerDoF", "nDoF_f", "ghostProb")
    assert cols.tracking_features[:3] == ("mc_x", "mc_y", "mc_z")


def test_probabilities_are_normalised(quick_models: Path, shared_data: Path) -> None:
    df, _ = tracking.load_particles(shared_data / "lamarr-trk-2016MU")
    X = df[list(tracking.Columns.from_spec().tracking_features)].to_numpy(np.float32)[:2000]
    for step in ("acceptance", "tracking_efficiency"):
        session = ort.InferenceSession(str(quick_models / f"{step}.onnx"), providers=["CPUExecutionProvider"])
        p = session.run(None, {"features": X})[0]
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert (p >= 0).all()


def test_saved_generator_reloads_and_matches_its_onnx(quick_models: Path) -> None:
    module = load_quantile_generator(quick_models / "tracking_resolution.pt")
    assert isinstance(module, TwoStageGenerator)
    assert module.stages.regression_precision == "float64"  # as the config says, saved and served
    covariance = load_quantile_generator(quick_models / "tracking_covariance.pt")
    assert isinstance(covariance, TwoStageGenerator) and covariance.stages.regression_precision == "float32"
    rng = np.random.default_rng(1)
    df, _ = tracking.load_tracks(Path(__file__).resolve().parents[2].parent / "shared/data/lamarr-trk-2016MU")
    cond = df[list(tracking.Columns.from_spec().resolution_conditions)].to_numpy(np.float32)[:10_000]
    noise = rng.standard_normal((len(cond), module.noise_dim)).astype(np.float32)
    report = verify_generator(module, onnx.load(quick_models / "tracking_resolution.onnx"), cond, noise)
    assert report.worst < 1e-5


def test_warm_start_continues_the_committed_model_and_records_it(
    quick_models: Path, shared_data: Path, tmp_path: Path
) -> None:
    data = shared_data / "lamarr-trk-2016MU"
    particles, val = tracking.load_particles(data, seed=0)
    cols = tracking.Columns.from_spec()
    config = dataclasses.replace(distill.QUICK_RESOLUTION, warm_start=True)

    def train(cfg: distill.DistillConfig, parent_dir: Path) -> Path:
        return distill.train_step(
            "tracking_resolution", data, tmp_path, particles, val, cols.resolution_conditions,
            cols.resolution_outputs, cfg, seed=0, data_sha="test", parent_dir=parent_dir,
        )  # fmt: skip

    parent = quick_models / "tracking_resolution.pt"
    warm = json.loads(train(config, quick_models).with_suffix(".json").read_text())["training"]["warm_start"]
    assert warm["parent_sha256"] == hashlib.sha256(parent.read_bytes()).hexdigest()
    assert warm["parent_config"] == json.loads(parent.with_suffix(".json").read_text())["config"]
    assert json.loads((tmp_path / "tracking_resolution.json").read_text())["config"]["warm_start"] is True
    with pytest.raises(FileNotFoundError, match="warm start needs"):
        train(config, tmp_path / "absent")
    # a fresh label round: new tracks and noise, the parent's transforms kept (they are part of its function)
    fresh = train(dataclasses.replace(config, n_train=5_000, label_round=1, label_balance=0.75), quick_models)
    child, before = load_quantile_generator(fresh.with_suffix(".pt")), load_quantile_generator(parent)
    for name in ("cond_transform", "out_transform"):
        for buffer in ("lo", "slope", "offset"):
            kept, parent_knots = (getattr(getattr(m, name), buffer) for m in (child, before))
            torch.testing.assert_close(kept, parent_knots)
    labels = json.loads(fresh.with_suffix(".json").read_text())["training"]["labels"]
    round_seed = distill.TRAIN_SEED_OFFSET + distill.LABEL_ROUND_STRIDE
    assert f"library seeds {round_seed}" in labels and "(p, η)-balanced draw, exponent 0.75" in labels
    # the round's tracks were drawn balanced: labelled and cached under the balanced draw's own key
    key = library._cache_key(data, particles[~val].reset_index(drop=True), 5_000, round_seed, 0.75)
    assert (library.DEFAULT_CACHE / f"tracks-5000-{round_seed}-{key}.npz").is_file()
    with pytest.raises(ValueError, match="residual blocks"):
        train(dataclasses.replace(config, width=16), quick_models)
    # epochs=0 without L-BFGS: the parent's regression, bit for bit; only the spread is fitted
    kept_path = train(dataclasses.replace(config, epochs=0, lbfgs_chunks=0), quick_models).with_suffix(".pt")
    kept = load_quantile_generator(kept_path)
    assert isinstance(kept, TwoStageGenerator) and isinstance(before, TwoStageGenerator)
    for name, tensor in before.stages.regression.state_dict().items():
        torch.testing.assert_close(kept.stages.regression.state_dict()[name], tensor, rtol=0, atol=0)
    assert json.loads((tmp_path / "tracking_resolution.json").read_text())["training"]["train_loss"] == []
    with pytest.raises(ValueError, match="warm_start=True"):
        train(dataclasses.replace(config, epochs=0, warm_start=False), quick_models)
    # epochs=0 with L-BFGS chunks: the parent's regression refined, never left worse on the validation rows
    refined_path = train(dataclasses.replace(config, epochs=0, lbfgs_chunks=2), quick_models)
    lbfgs = json.loads(refined_path.with_suffix(".json").read_text())["training"]["lbfgs"]
    assert len(lbfgs["unseen_chunk_loss"]) == 2 and len(lbfgs["val_loss"]) == 3
    assert min(lbfgs["val_loss"]) < lbfgs["val_loss"][0]
    refined = load_quantile_generator(refined_path.with_suffix(".pt"))
    assert isinstance(refined, TwoStageGenerator)
    assert not torch.equal(refined.stages.regression.out.weight, before.stages.regression.out.weight)


def test_soft_label_rows_give_the_cross_entropy() -> None:
    X = np.arange(6, dtype=np.float32).reshape(3, 2)
    p = np.array([[0.2, 0.8], [1.0, 0.0], [0.5, 0.5]])
    Xr, yr, wr = tracking.soft_label_rows(X, p, np.array([1.0, 2.0, 1.0]))
    # the zero-probability row is dropped, the rest carry p x row weight
    assert len(Xr) == 5
    np.testing.assert_allclose(wr, [0.2, 0.8, 2.0, 0.5, 0.5])
    np.testing.assert_array_equal(yr, [0, 1, 0, 0, 1])
    q = np.array([0.3, 0.7])
    ce_rows = -(wr * np.log(q[yr])).sum()
    ce_soft = -(np.array([1.0, 2.0, 1.0])[:, None] * p * np.log(q)).sum()
    assert ce_rows == pytest.approx(ce_soft)


def test_library_noise_is_the_documented_stream(shared_data: Path) -> None:
    data = shared_data / "lamarr-trk-2016MU"
    noise = tracking.noise_module(data)
    rows = np.array([5, 0, 17, 3])
    got = tracking.library_noise(data, "RESOLUTION_KEY", rows)
    for k, r in enumerate(rows):
        np.testing.assert_array_equal(got[k], noise.noise(noise.RESOLUTION_KEY, int(r), int(r) + 1)[0])
    other = tracking.library_noise(data, "COVARIANCE_KEY", rows)
    assert not np.allclose(got, other)


def test_event_split_keeps_events_whole_and_is_seeded() -> None:
    source = np.array(["a"] * 1000 + ["b"] * 1000 + ["gun"] * 2000)
    event = np.concatenate(
        [np.repeat(np.arange(100), 10), np.repeat(np.arange(100), 10), -np.ones(2000, int)]
    )
    mask = event_split(source, event, val_fraction=0.2, seed=0)
    for s in ("a", "b"):
        for e in range(100):
            sel = (source == s) & (event == e)
            assert mask[sel].all() or not mask[sel].any()
    assert 0.1 < mask.mean() < 0.3
    assert 0.15 < mask[source == "gun"].mean() < 0.25
    assert not np.array_equal(mask, event_split(source, event, val_fraction=0.2, seed=1))
    np.testing.assert_array_equal(mask, event_split(source, event, val_fraction=0.2, seed=0))


def test_quantile_layers_are_exact_inverses_in_float32() -> None:
    rng = np.random.default_rng(0)
    y = (rng.standard_cauchy(20_000) * 100).astype(np.float32)
    x, u = quantile_knots(y)
    inverse = MonotonePiecewiseLinear([u], [x])
    forward = MonotonePiecewiseLinear([x], [u])
    uu = forward(torch.as_tensor(y[:, None])).numpy()
    back = inverse(torch.as_tensor(uu)).numpy()[:, 0]
    inside = (y > x[0]) & (y < x[-1])
    rel = np.abs(back - y)[inside] / np.maximum(np.abs(y[inside]), 1e-3)
    assert np.median(rel) < 1e-5 and rel.max() < 1e-2
    assert abs(float(np.std(uu[inside])) - 1.0) < 0.05
    # flat outside the knots, untouched columns pass through
    both = MonotonePiecewiseLinear([x, None], [u, None])
    out = both(torch.tensor([[1e9, 3.5], [-1e9, -2.0]])).numpy()
    np.testing.assert_allclose(out[:, 0], [u[-1], u[0]], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 1], [3.5, -2.0])


def test_piecewise_layer_is_linear_interpolation_between_its_knots() -> None:
    """The binary-search evaluation is np.interp, columns of different knot counts (padded) included."""
    rng = np.random.default_rng(3)
    x1 = np.sort(rng.normal(size=201)).astype(np.float32).astype(np.float64)
    x2 = (np.sort(rng.exponential(size=37)) * 50).astype(np.float32).astype(np.float64)
    y1, y2 = np.linspace(-5, 5, 201), np.cumsum(rng.uniform(0.1, 1.0, 37))
    layer = MonotonePiecewiseLinear([x1, x2, None], [y1, y2, None])
    grid = np.r_[x1, x2, x1[:-1] + np.diff(x1) / 3, -1e6, 1e6, 0.0]
    rows = np.stack([grid, grid, grid], axis=1).astype(np.float32)
    out = layer(torch.as_tensor(rows)).numpy().astype(np.float64)
    xs = rows.astype(np.float64)
    for j, (kx, ky) in enumerate(((x1, y1), (x2, y2))):
        np.testing.assert_allclose(out[:, j], np.interp(xs[:, j], kx, ky), rtol=0, atol=1e-6 * np.ptp(ky))
    np.testing.assert_array_equal(out[:, 2], rows[:, 2])
    # evenly spaced knots (the inverse maps): the segment is found by a floor, not a search
    u = np.linspace(-5, 5, 201).astype(np.float32).astype(np.float64)
    even = MonotonePiecewiseLinear([None, u, u], [None, x1, y1])
    assert even._uniform
    grid = np.r_[u, u[:-1] + np.diff(u) / 3, -7.0, 7.0, 0.0]
    rows = np.stack([grid, grid, grid], axis=1).astype(np.float32)
    out = even(torch.as_tensor(rows)).numpy().astype(np.float64)
    np.testing.assert_array_equal(out[:, 0], rows[:, 0])
    for j, ky in ((1, x1), (2, y1)):
        np.testing.assert_allclose(out[:, j], np.interp(rows[:, j], u, ky), rtol=0, atol=1e-6 * np.ptp(ky))


def test_quantile_generator_round_trips_through_state_dict(tmp_path: Path) -> None:
    from ufsim_export.training.artifacts import save_original

    rng = np.random.default_rng(0)
    cond = np.c_[rng.normal(size=(3000, 2)), rng.integers(0, 2, (3000, 1))].astype(np.float32)
    out = np.c_[rng.exponential(size=3000), rng.normal(size=3000)].astype(np.float32)
    module = QuantileResidualGenerator(3, 8, 2, width=16, n_residual=2, continuous=[0, 1])
    module.fit_transforms(cond, out)
    save_original(module, tmp_path / "g.pt")
    again = load_quantile_generator(tmp_path / "g.pt")
    z = torch.randn(50, 8)
    c = torch.as_tensor(cond[:50])
    torch.testing.assert_close(again(c, z), module(c, z))


def test_sha256_files_depends_on_content(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    first = sha256_files([a, b])
    assert first == sha256_files([b, a])
    b.write_bytes(b"three")
    assert sha256_files([a, b]) != first


def test_git_commit_is_dirty_for_code_not_for_trained_models(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "export" / "models").mkdir(parents=True)
    (tmp_path / "export" / "models" / "step.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git_commit(tmp_path)
    assert len(head) == 40
    (tmp_path / "export" / "models" / "step.json").write_text('{"trained": true}')
    assert git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{head}-dirty"
