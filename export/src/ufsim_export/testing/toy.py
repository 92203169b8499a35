"""Small stand-in models for tests: the real ensemble wiring, seconds to train.

GBDTs are trained on synthetic particles with simple, physics-flavoured labels (acceptance
2 < eta < 5, more long tracks at high momentum, isMuon for muons above 3 GeV); generators are
small, randomly initialised ResidualGenerators scaled to plausible output ranges. They exercise
every code path of the service; they are not detector models.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from sklearn.ensemble import HistGradientBoostingClassifier

from ..convert.gbdt import gbdt_to_onnx
from ..convert.generator import generator_to_onnx
from ..graphs.steps import compute_features
from ..models import ResidualGenerator
from ..repository.gun import gbdt_inputs, synthetic_particles
from ..repository.writer import write_repository
from ..spec import PipelineSpec, StepSpec, default_spec_path, load_spec

# plausible (mean, spread) of each generator output column, for scaling random networks
OUTPUT_SCALES: dict[str, list[tuple[float, float]]] = {
    "tracking_resolution": [
        (0.0, 0.02),
        (0.0, 0.02),
        (0.0, 0.1),
        (0.0, 1e-4),
        (0.0, 1e-4),
        (0.0, 50.0),
        (1.2, 0.3),
        (30.0, 5.0),
        (0.05, 0.02),
    ],
    "tracking_covariance": [(-5.0, 0.3)] * 2 + [(-15.0, 0.3)] * 2 + [(-20.0, 0.3)] + [(0.0, 0.1)] * 10,
    "rich": [(0.0, 10.0)] * 4,
    "muon": [(-2.0, 1.0), (-5.0, 1.0)],
    "global_pid": [(0.0, 10.0)] * 4 + [(0.2, 0.1)] * 5,
}


def _labels(step: StepSpec, feats: dict[str, NDArray[Any]], rng: np.random.Generator) -> NDArray[Any]:
    tf, pf = feats["tracking_features"], feats["pid_features"]
    if step.name == "acceptance":
        eta = tf[:, 6] + rng.normal(0, 0.2, len(tf))
        return np.asarray((eta > 2.0) & (eta < 5.0), dtype=int)
    if step.name == "tracking_efficiency":
        score = tf[:, 3] + rng.normal(0, 0.5, len(tf))
        return np.asarray(np.digitize(score, [3.3, 4.6, 5.0]), dtype=int)
    if step.name == "is_muon":
        return np.asarray((pf[:, 5] > 0.5) & (pf[:, 0] + rng.normal(0, 0.1, len(pf)) > 3.5), dtype=int)
    raise KeyError(f"no toy labels for GBDT step {step.name!r}")


def _toy_generator(spec: PipelineSpec, step: StepSpec, seed: int) -> ResidualGenerator:
    torch.manual_seed(seed)
    assert step.noise_dim is not None
    module = ResidualGenerator(
        spec.input_width(step), step.noise_dim, step.outputs[0].width, width=32, n_residual=2
    )
    scales = np.array(OUTPUT_SCALES[step.name], dtype=np.float32)
    with torch.no_grad():
        module.out_mean.copy_(torch.from_numpy(scales[:, 0]))
        module.out_scale.copy_(torch.from_numpy(scales[:, 1]))
        module.cond_scale.fill_(3.0)
    return module.eval()


def train_toy_models(
    out_dir: Path, *, spec: PipelineSpec | None = None, seed: int = 0, n: int = 4000
) -> Path:
    """Write raw learnt models (canonical ONNX names) and manifests for every learnt step."""
    spec = spec or load_spec(default_spec_path())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    feats = compute_features(spec, synthetic_particles(n, seed, spec))
    rng = np.random.default_rng(seed)
    for i, step in enumerate(spec.learnt_steps()):
        if step.kind == "gbdt":
            X = gbdt_inputs(step, feats)
            y = _labels(step, feats, rng)
            clf = HistGradientBoostingClassifier(max_iter=8, max_depth=3, random_state=seed).fit(X, y)
            model = gbdt_to_onnx(clf, X[:64])
            (out_dir / f"{step.name}.pkl").write_bytes(pickle.dumps(clf))
        else:
            module = _toy_generator(spec, step, seed + i)
            assert step.noise_dim is not None
            model = generator_to_onnx(module, spec.input_width(step), step.noise_dim)
        onnx.save(model, out_dir / f"{step.name}.onnx")
        manifest = {"step": step.name, "kind": step.kind, "toy": True, "seed": seed}
        (out_dir / f"{step.name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def write_toy_repository(out_dir: Path, seed: int = 0, *, spec: PipelineSpec | None = None) -> Path:
    """A complete model repository (the real ensemble) with toy models, for tests."""
    spec = spec or load_spec(default_spec_path())
    out_dir = Path(out_dir)
    models = out_dir.parent / f"{out_dir.name}-toy-models"
    train_toy_models(models, spec=spec, seed=seed)
    return write_repository(spec, models, out_dir, repository_version=f"toy-{seed}")
