"""The non-learnt steps and the in-graph RNG, run in ONNX Runtime against numpy references."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from ufsim_export.graphs import rng
from ufsim_export.graphs.builder import GraphBuilder
from ufsim_export.graphs.steps import adapt_learnt, build_graph_step
from ufsim_export.spec import PipelineSpec


def _session(model) -> ort.InferenceSession:  # type: ignore[no-untyped-def]
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(spec: PipelineSpec, step: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = _session(build_graph_step(spec, spec.step(step)))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


def _keys(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64 - 1, size=(n, 1), dtype=np.uint64)


def test_features_reproduce_the_reference_sample(spec: PipelineSpec, shared_data) -> None:  # type: ignore[no-untyped-def]
    data = pd.read_parquet(shared_data / "lamarr-trk-2016MU" / "train_acceptance_efficiency.parquet")
    data = data.sample(5000, random_state=3)
    out = _run(
        spec,
        "features",
        {
            "pid": data[["pid"]].to_numpy(np.int32),
            "origin": data[["mc_x", "mc_y", "mc_z"]].to_numpy(np.float32),
            "momentum": data[["px", "py", "pz"]].to_numpy(np.float32),
            "n_tracks": np.full((len(data), 1), 42.0, np.float32),
        },
    )
    columns = list(spec.tensor("tracking_features").columns)
    np.testing.assert_allclose(out["tracking_features"], data[columns].to_numpy(), rtol=2e-4, atol=2e-5)
    assert np.all(out["species"] > 0)
    assert np.all(out["pid_features"][:, 2] == 42.0)
    np.testing.assert_allclose(out["pid_features"][:, 4:].sum(axis=1), 1.0)


def test_closest_to_beam_matches_the_resolution_sample(spec: PipelineSpec, shared_data) -> None:  # type: ignore[no-untyped-def]
    """ctb_* in the resolution sample are the origin propagated to the point closest to the beam."""
    acc = pd.read_parquet(shared_data / "lamarr-trk-2016MU" / "train_acceptance_efficiency.parquet")
    res = pd.read_parquet(shared_data / "lamarr-trk-2016MU" / "train_resolution_covariance.parquet").head(
        3000
    )
    merged = res.merge(acc, on=["source", "event", "pid", "mc_tx", "mc_ty", "mc_log10_p"], how="inner")
    assert len(merged) > 1000
    out = _run(
        spec,
        "features",
        {
            "pid": merged[["pid"]].to_numpy(np.int32),
            "origin": merged[["mc_x", "mc_y", "mc_z"]].to_numpy(np.float32),
            "momentum": merged[["px", "py", "pz"]].to_numpy(np.float32),
            "n_tracks": np.zeros((len(merged), 1), np.float32),
        },
    )
    np.testing.assert_allclose(
        out["ctb_features"][:, :3], merged[["ctb_x", "ctb_y", "ctb_z"]].to_numpy(), rtol=1e-3, atol=2e-3
    )


def test_unsupported_species_and_backward_particles_are_not_simulated(spec: PipelineSpec) -> None:
    out = _run(
        spec,
        "features",
        {
            "pid": np.array([[22], [2112], [211], [-321]], np.int32),
            "origin": np.zeros((4, 3), np.float32),
            "momentum": np.array([[0, 0, 1e4], [0, 0, 1e4], [10, 0, -1e4], [10, 10, 1e4]], np.float32),
            "n_tracks": np.zeros((4, 1), np.float32),
        },
    )
    assert out["species"].ravel().tolist() == [0, 0, 0, 4]
    assert np.all(np.isfinite(out["tracking_features"]))


def test_rng_graph_matches_numpy_reference() -> None:
    b = GraphBuilder("rng")
    key = b.input("rng_key", "UINT64", 1)
    b.output(rng.uniforms_graph(b, key, 3, 6), "u", "FP32", 6)
    b.output(rng.normals_graph(b, key, 5, 64), "z", "FP32", 64)
    session = _session(b.build())
    keys = _keys(20000)
    u, z = session.run(None, {"rng_key": keys})
    assert np.array_equal(u, rng.uniforms(keys, 3, 6))
    assert np.array_equal(z, rng.normals(keys, 5, 64))
    assert 0.0 < u.min() and u.max() < 1.0
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 0.03
    # different streams and neighbouring keys give independent numbers
    assert abs(np.corrcoef(rng.uniforms(keys, 1, 1)[:, 0], rng.uniforms(keys, 2, 1)[:, 0])[0, 1]) < 0.03
    seq = np.arange(20000, dtype=np.uint64).reshape(-1, 1)
    assert abs(np.corrcoef(rng.uniforms(seq, 1, 1)[:-1, 0], rng.uniforms(seq, 1, 1)[1:, 0])[0, 1]) < 0.03
    # bit-identical for a particle alone or in any batch
    for start, size in ((0, 1), (17, 1), (5, 7), (100, 1000)):
        part = session.run(None, {"rng_key": keys[start : start + size]})
        assert np.array_equal(part[0], u[start : start + size]) and np.array_equal(
            part[1], z[start : start + size]
        )


def test_acceptance_and_track_sampling_follow_the_probabilities(spec: PipelineSpec) -> None:
    n = 40000
    p_in = np.full((n, 1), 0.7, np.float32)
    eff = np.tile(np.array([[0.1, 0.6, 0.2, 0.1]], np.float32), (n, 1))
    species = np.full((n, 1), 3, np.int32)
    species[:100] = 0
    ctb = np.random.default_rng(0).normal(size=(n, 9)).astype(np.float32)
    keys = _keys(n)
    accepted = _run(
        spec,
        "acceptance_sampling",
        {
            "acceptance_probability": np.concatenate([1 - p_in, p_in], axis=1),
            "species": species,
            "rng_key": keys,
        },
    )["in_acceptance"]
    assert np.all(accepted[:100] == 0)
    assert abs(accepted[100:].mean() - 0.7) < 0.01
    # tracking_efficiency gives 0 outside the acceptance (applies_to): the class draw must not need it
    eff = np.where(accepted == 1, eff, 0.0).astype(np.float32)
    out = _run(
        spec,
        "track_sampling",
        {"in_acceptance": accepted, "efficiency_probability": eff, "ctb_features": ctb, "rng_key": keys},
    )
    tt = out["track_type"].ravel()
    np.testing.assert_array_equal(tt == -1, accepted.ravel() == 0)
    frac = {t: np.mean(tt[100:] == t) for t in (-1, 0, 3, 4, 5)}
    expected = {-1: 0.3, 0: 0.07, 3: 0.42, 4: 0.14, 5: 0.07}
    for t, f in expected.items():
        assert abs(frac[t] - f) < 0.012, (t, frac[t], f)
    cond = out["resolution_conditions"]
    np.testing.assert_array_equal(cond[:, :9], ctb)
    np.testing.assert_array_equal(
        cond[:, 9:], np.stack([tt == 3, tt == 4, tt == 5], axis=1).astype(np.float32)
    )


def test_pid_sampling_applies_to_long_tracks_only(spec: PipelineSpec) -> None:
    n = 20000
    track_type = np.random.default_rng(2).choice([-1, 0, 3, 4, 5], n).reshape(n, 1).astype(np.int32)
    prob = np.tile(np.array([[0.25, 0.75]], np.float32), (n, 1))
    out = _run(
        spec, "pid_sampling", {"is_muon_probability": prob, "track_type": track_type, "rng_key": _keys(n)}
    )
    long = track_type.ravel() == 3
    assert set(np.unique(out["is_muon"][~long])) == {-1}
    assert abs(out["is_muon"][long].mean() - 0.75) < 0.02
    np.testing.assert_array_equal(
        out["is_muon_flag"].ravel(), (out["is_muon"].ravel() == 1).astype(np.float32)
    )


def test_assembly_builds_state_covariance_and_sentinels(spec: PipelineSpec) -> None:
    rs = np.random.default_rng(4)
    n = 6
    track_type = np.array([[3], [4], [0], [-1], [5], [3]], np.int32)
    is_muon = np.array([[1], [-1], [-1], [-1], [-1], [0]], np.int32)
    true_state = rs.normal(size=(n, 6)).astype(np.float32)
    residuals = rs.normal(size=(n, 9)).astype(np.float32)
    residuals[:, 7] = [12.7, 30.2, 5.0, 1.0, 0.3, 18.9]
    cov_params = np.concatenate([rs.normal(-3, 1, (n, 5)), rs.uniform(-1.3, 1.3, (n, 10))], axis=1).astype(
        np.float32
    )
    rich, muon, gpid = (rs.normal(size=(n, k)).astype(np.float32) for k in (4, 2, 9))
    out = _run(
        spec,
        "assembly",
        {
            "true_state": true_state,
            "track_type": track_type,
            "resolution_residuals": residuals,
            "covariance_parameters": cov_params,
            "is_muon": is_muon,
            "rich_response": rich,
            "muon_response": muon,
            "global_pid_response": gpid,
        },
    )
    reco = track_type.ravel() > 0
    np.testing.assert_allclose(out["track_state"][reco], (true_state + residuals[:, :6])[reco], rtol=1e-6)
    assert np.all(out["track_state"][~reco] == -9999.0) and np.all(out["track_covariance"][~reco] == -9999.0)
    assert out["track_quality"][0, 1] == 12.0 and out["track_quality"][4, 1] == 1.0
    # covariance: full 5x5 from sigma and clipped correlations, then the upper triangle row-major
    sigma = np.exp(0.5 * cov_params[:, :5].astype(np.float64))
    corr = np.clip(cov_params[:, 5:], -1, 1)
    order = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4)]
    for row in np.flatnonzero(reco):
        full = np.diag(sigma[row] ** 2)
        for k, (i, j) in enumerate(order):
            full[i, j] = full[j, i] = corr[row, k] * sigma[row, i] * sigma[row, j]
        np.testing.assert_allclose(out["track_covariance"][row], full[np.triu_indices(5)], rtol=1e-5)
    long = track_type.ravel() == 3
    np.testing.assert_array_equal(out["rich_dll"][long], rich[long])
    assert np.all(out["rich_dll"][~long] == -1000.0)
    assert np.all(out["muon_ll"][0] == muon[0]) and np.all(out["muon_ll"][1:] == -1000.0)
    assert np.all(out["global_pid"][~long][:, :4] == -1000.0) and np.all(
        out["global_pid"][~long][:, 4:] == -1.0
    )
    assert np.all((out["global_pid"][long][:, 4:] >= 0) & (out["global_pid"][long][:, 4:] <= 1))


@pytest.mark.parametrize(
    "step", ["features", "acceptance_sampling", "track_sampling", "pid_sampling", "assembly"]
)
def test_graph_steps_are_deterministic_bytes(spec: PipelineSpec, step: str) -> None:
    """Regenerating a graph gives the same bytes, so the committed repository can be diffed."""
    a = build_graph_step(spec, spec.step(step)).SerializeToString()
    assert a == build_graph_step(spec, spec.step(step)).SerializeToString()


@pytest.mark.parametrize("step_name", ["tracking_covariance", "muon", "is_muon"])
def test_gated_step_computes_only_its_rows(spec: PipelineSpec, step_name: str) -> None:
    """applies_to: the gated rows get the bits the ungated step gives them, the others 0, for any mix."""
    step = spec.step(step_name)
    assert step.applies_to is not None
    raw = onnx.load(Path(__file__).resolve().parents[2] / "export" / "models" / f"{step_name}.onnx")
    ungated = dataclasses.replace(
        step, applies_to=None, inputs=tuple(r for r in step.inputs if r.name != step.applies_to.tensor)
    )
    gated_session = _session(adapt_learnt(spec, step, onnx.ModelProto.FromString(raw.SerializeToString())))
    full_session = _session(adapt_learnt(spec, ungated, raw))
    n = 257
    rng_ = np.random.default_rng(4)
    feeds = {ref.name: rng_.uniform(0.0, 3.0, (n, spec.tensor(ref.name).width)).astype(np.float32)
             for ref in step.tensor_inputs}  # fmt: skip
    if step.uses_rng:
        feeds["rng_key"] = _keys(n)
    full = full_session.run(None, feeds)[0]
    allowed = np.asarray(step.applies_to.values, np.int32)
    mixed = rng_.choice(np.r_[allowed, -1, 0], (n, 1))
    for gate in (mixed, np.full((n, 1), -1), np.full((n, 1), allowed[0])):
        got = gated_session.run(None, {**feeds, step.applies_to.tensor: gate.astype(np.int32)})[0]
        chosen = np.isin(gate[:, 0], allowed)
        np.testing.assert_array_equal(got[chosen], full[chosen])
        assert not got[~chosen].any()
