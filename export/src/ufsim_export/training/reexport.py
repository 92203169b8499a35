"""Re-export the generators' ONNX graphs from their saved PyTorch modules, without retraining.

Why: how a trained module is written as ONNX can change (a cheaper evaluation of the same function)
while its weights and knots, kept in ``<step>.pt``, do not. The conversion is verified as at training
time, on conditions drawn from each column's own quantile knots (flags 0 or 1). A two-stage generator's
regression may be switched to another arithmetic on the way (``regression_precision``): the weights stay,
and ``<step>.pt`` is rewritten so the saved module computes what the graph does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from torch import nn

from ..convert import generator_to_onnx, save_model
from ..convert.verify import VerificationReport, verify_generator
from .artifacts import save_original
from .distill import VERIFY_RTOL
from .provenance import git_commit, sha256_file, write_manifest
from .saved import inner_generator, load_module
from .two_stage import TwoStageGenerator

DISTILLED = frozenset({"tracking_resolution", "tracking_covariance"})
"""Steps verified to the distillation's tolerance (:data:`.distill.VERIFY_RTOL`); the others to 1e-5."""
VERIFY_ROWS = 20_000


def knot_conditions(module: nn.Module, n_rows: int, *, seed: int) -> NDArray[np.float32]:
    """Verification conditions: mapped columns uniform in a random knot segment, others 0 or 1.

    Every segment is equally likely, so the tails are covered as well as the core.
    """
    layer = inner_generator(module).cond_transform
    lo, hi = layer.lo.numpy().astype(np.float64), layer.hi.numpy().astype(np.float64)
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, lo.shape[1], size=(n_rows, lo.shape[0]))
    cols = np.arange(lo.shape[0])
    inside = lo[cols, segment] + rng.uniform(size=segment.shape) * (hi[cols, segment] - lo[cols, segment])
    flags = rng.integers(0, 2, size=segment.shape).astype(np.float64)
    return np.where(layer.mapped.numpy(), inside, flags).astype(np.float32)


def reexport(
    models_dir: Path, step: str, *, seed: int = 0, regression_precision: str | None = None
) -> VerificationReport:
    """Write ``<step>.onnx`` anew from ``<step>.pt``, verify it, and record the export in ``<step>.json``.

    ``regression_precision`` (two-stage generators only) changes the regression's arithmetic first and
    rewrites ``<step>.pt`` with it.
    """
    pt_path = models_dir / f"{step}.pt"
    module = load_module(pt_path)
    inner = inner_generator(module)
    if regression_precision is not None:
        if not isinstance(inner, TwoStageGenerator):
            raise ValueError(
                f"{step}: regression_precision applies to the two-stage tracking generators, "
                f"not a {type(inner).__name__}"
            )
        inner.stages.set_regression_precision(regression_precision)
    conditions = knot_conditions(module, VERIFY_ROWS, seed=seed)
    noise = np.random.default_rng(seed + 7).standard_normal((VERIFY_ROWS, inner.noise_dim)).astype(np.float32)
    model = generator_to_onnx(module, inner.n_conditions, inner.noise_dim)
    rtol = VERIFY_RTOL if step in DISTILLED else 1e-5
    report = verify_generator(module, model, conditions, noise, name=step, rtol=rtol)
    save_model(model, models_dir / f"{step}.onnx")
    if regression_precision is not None:
        save_original(module, pt_path)
    manifest_path = models_dir / f"{step}.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["conversion_fidelity"] = {
        "metric": f"|y_onnx - y| <= {rtol:g} * max(|y|, column spread)",
        "max_error": report.max_error,
        "rows": report.n_rows,
    }
    manifest["onnx_export"] = {
        "from": f"{step}.pt",
        "pt_sha256": sha256_file(pt_path),
        "git_commit": git_commit(),
        "verified_on": f"{VERIFY_ROWS:,} conditions drawn from the quantile knots, seed {seed}",
    }
    if isinstance(inner, TwoStageGenerator):
        manifest["onnx_export"]["regression_precision"] = inner.stages.regression_precision
    write_manifest(manifest_path, manifest)
    return report
