"""The repository writer: generated configs match the committed ones, models match the spec,
and a particle's outputs do not depend on the batch it travels in."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from ufsim_export.graphs.rng import mix64
from ufsim_export.graphs.steps import compute_features
from ufsim_export.repository.gun import synthetic_particles
from ufsim_export.repository.inprocess import InProcessPipeline
from ufsim_export.repository.writer import check_model_io, write_configs, write_repository
from ufsim_export.spec import PipelineSpec, SpecError


def test_committed_configs_are_generated(spec: PipelineSpec, repo_root: Path, tmp_path: Path) -> None:
    """Configs are never hand-edited: regenerate them and diff against model_repository/."""
    committed = repo_root / "model_repository"
    written = write_configs(spec, tmp_path, json.loads((committed / "REPOSITORY.json").read_text()))
    for path in written:
        twin = committed / path.relative_to(tmp_path)
        assert twin.is_file(), f"{twin} is missing: run `make configs` and commit"
        assert filecmp.cmp(path, twin, shallow=False), f"{twin} differs from the spec: run `make configs`"
    generated = {p.relative_to(tmp_path) for p in written}
    stale = {p.relative_to(committed) for p in committed.glob("*/config.pbtxt")} - generated
    assert not stale, f"configs for models not in the spec: {sorted(map(str, stale))}"


def test_committed_models_match_the_spec(spec: PipelineSpec, repo_root: Path) -> None:
    for step in spec.steps:
        path = repo_root / "model_repository" / step.name / "1" / "model.onnx"
        assert path.is_file(), f"{path} is missing: run `make repository`"
        check_model_io(spec, step, onnx.load(path))


def test_committed_repository_is_what_make_repository_builds(
    spec: PipelineSpec, repo_root: Path, tmp_path: Path
) -> None:
    """Graph code, spec or export/models changed without `make repository`: the deployed models are stale.

    Built under umask 022, every folder and file has the mode any other would (a Triton container that
    runs as another user reads them; temporary-file modes 0o700 / 0o600 would lock it out).
    """
    old_umask = os.umask(0o022)
    try:
        built = write_repository(spec, repo_root / "export" / "models", tmp_path / "model_repository")
    finally:
        os.umask(old_umask)
    modes = {(p.is_dir(), p.stat().st_mode & 0o777) for p in [built, *built.rglob("*")]}
    assert modes == {(True, 0o755), (False, 0o644)}
    stale = [
        str(path.relative_to(built))
        for path in sorted(built.rglob("*"))
        if path.is_file()
        and not filecmp.cmp(path, repo_root / "model_repository" / path.relative_to(built), shallow=False)
    ]
    assert not stale, f"model_repository/ is out of date ({stale}): run `make repository` and commit"


def test_model_io_mismatch_names_step_and_tensor(spec: PipelineSpec, toy_repository: Path) -> None:
    model = onnx.load(toy_repository / "rich" / "1" / "model.onnx")
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(SpecError, match=r"step 'rich': output tensor 'rich_response' is FLOAT\[-1, 5\]"):
        check_model_io(spec, spec.step("rich"), model)


def test_toy_repository_has_every_model_and_manifest(spec: PipelineSpec, toy_repository: Path) -> None:
    for step in spec.steps:
        assert (toy_repository / step.name / "1" / "model.onnx").is_file()
        assert (toy_repository / step.name / "manifest.json").is_file() == (step.kind != "graph")
    assert (toy_repository / spec.name / "config.pbtxt").is_file()
    assert (toy_repository / "REPOSITORY.json").is_file()


def _inputs(n: int, seed: int) -> dict[str, np.ndarray]:
    particles = synthetic_particles(n, seed)
    particles["rng_key"] = mix64(np.arange(n, dtype=np.uint64) + np.uint64(seed << 32)).reshape(n, 1)
    return particles


def test_outputs_do_not_depend_on_batch_composition(spec: PipelineSpec, toy_repository: Path) -> None:
    """Same rng_key -> bit-identical outputs, alone, in small batches, or shuffled among others."""
    pipeline = InProcessPipeline(toy_repository, spec)
    inputs = _inputs(3000, seed=7)
    reference = pipeline(inputs)
    assert {int(t) for t in np.unique(reference["track_type"])} >= {-1, 0, 3}
    order = np.random.default_rng(0).permutation(3000)
    shuffled = {k: v[order] for k, v in inputs.items()}
    for size in (1, 7, 500, 3000):
        for start in range(0, 3000, size) if size > 1 else range(0, 40):
            chunk = {k: v[start : start + size] for k, v in shuffled.items()}
            got = pipeline(chunk)
            rows = order[start : start + size]
            for name, value in got.items():
                assert np.array_equal(value, reference[name][rows]), (name, size, start)


def test_different_keys_give_different_samples(spec: PipelineSpec, toy_repository: Path) -> None:
    pipeline = InProcessPipeline(toy_repository, spec)
    a = _inputs(2000, seed=1)
    b = dict(a, rng_key=a["rng_key"] ^ np.uint64(1))
    out_a, out_b = pipeline(a), pipeline(b)
    both = (out_a["track_type"] > 0) & (out_b["track_type"] > 0)
    assert both.sum() > 100
    assert not np.array_equal(out_a["track_state"][both.ravel()], out_b["track_state"][both.ravel()])


@pytest.fixture(scope="module")
def cpu_repository(
    spec: PipelineSpec, toy_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The toy repository with its GBDTs re-converted to ONNX-ML TreeEnsemble (CPU-only deployments)."""
    models = toy_repository.parent / f"{toy_repository.name}-toy-models"
    out = tmp_path_factory.mktemp("cpu") / "model_repository"
    return write_repository(spec, models, out, gbdt_implementation="native")


def test_native_gbdts_give_the_same_probabilities(
    spec: PipelineSpec, toy_repository: Path, cpu_repository: Path
) -> None:
    inputs = _inputs(5000, seed=3)
    features = compute_features(spec, inputs)
    for step in (s for s in spec.steps if s.kind == "gbdt"):
        if step.applies_to is not None:  # every row computed
            gate = np.full((5000, 1), step.applies_to.values[0], np.int32)
            features = {**features, step.applies_to.tensor: gate}
        native = onnx.load(cpu_repository / step.name / "1" / "model.onnx")
        assert "TreeEnsembleClassifier" in {node.op_type for node in native.graph.node}
        manifest = json.loads((cpu_repository / step.name / "manifest.json").read_text())
        assert manifest["deployed_implementation"] == "native"
        probabilities = []
        for repository in (toy_repository, cpu_repository):
            s = ort.InferenceSession(str(repository / step.name / "1" / "model.onnx"))
            probabilities.append(s.run(None, {i.name: features[i.name] for i in s.get_inputs()})[0])
        np.testing.assert_allclose(probabilities[1], probabilities[0], atol=1e-5, err_msg=step.name)
    out = InProcessPipeline(cpu_repository, spec)(inputs)
    assert {int(t) for t in np.unique(out["track_type"])} >= {-1, 0, 3}


def test_unknown_gbdt_implementation_is_refused_before_building(spec: PipelineSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'fast' is not accepted; use one of perf_tree_trav, .*native"):
        write_repository(spec, tmp_path, tmp_path / "out", gbdt_implementation="fast")
    assert not (tmp_path / "out").exists()


def test_native_gbdts_need_the_fitted_models(
    spec: PipelineSpec, toy_repository: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(toy_repository.parent / f"{toy_repository.name}-toy-models", models)
    (models / "acceptance.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=r"step 'acceptance': .*acceptance\.pkl"):
        write_repository(spec, models, tmp_path / "out", gbdt_implementation="native")
    assert not (tmp_path / "out").exists()


def test_native_repository_runs_in_onnxruntime_1_19_2(cpu_repository: Path, tmp_path: Path) -> None:
    from test_ort_compat import _ort119, _run

    models = sorted(cpu_repository.glob("*/1/model.onnx"))
    report = _run(_ort119(), [{"path": str(path)} for path in models], tmp_path)
    failures = {Path(p).parent.parent.name: r for p, r in report["results"].items() if r != "ok"}
    assert len(report["results"]) == len(models) and not failures, failures
