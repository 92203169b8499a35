"""Conversion fidelity: each ONNX model against its original, recomputed where the original is committed."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import onnx

from ..convert.verify import TAIL_SIGMAS, verify_classifier
from ..training.tracking import Columns, load_particles
from . import tracking_library
from .section import MODEL_STEPS, Section, read_manifest

FIDELITY_TARGET = 1e-5


def fidelity_section(data_dir: Path, models_dir: Path, *, quick: bool) -> Section:
    """ONNX vs original: recomputed where the original is committed, else from the manifest."""
    sec = Section("Conversion fidelity (ONNX vs original)")
    sec.lines += [
        "| model | original | metric | max error (batch sizes) | source |",
        "|---|---|---|---|---|",
    ]
    cols = Columns.from_spec()
    n = 10_000 if quick else 50_000
    for step in MODEL_STEPS:
        manifest = read_manifest(models_dir, step)
        if not manifest:
            continue
        onnx_path = models_dir / f"{step}.onnx"
        original = manifest.get("original")
        source = "manifest (training time)"
        fid = manifest.get("conversion_fidelity", {})
        metric, errors = fid.get("metric", "?"), fid.get("max_error", {})
        try:
            model_proto = onnx.load(onnx_path)
            loose = 1e9  # measure, do not raise: the report compares with the target itself
            if (
                original
                and (models_dir / original).exists()
                and step in ("acceptance", "tracking_efficiency")
            ):
                df, val = load_particles(data_dir, seed=0)
                X = df[list(cols.tracking_features)].to_numpy(np.float32)[np.flatnonzero(val)[:n]]
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="X does not have valid feature names")
                    model = pickle.loads((models_dir / original).read_bytes())
                    rep = verify_classifier(
                        model, model_proto, X, name=step, batch_sizes=(1, 1000), atol=loose
                    )
                metric = f"max |p_onnx - p| <= {FIDELITY_TARGET:g}"
                errors, source = rep.max_error, f"recomputed, {len(X):,} validation rows"
            elif original and (models_dir / original).exists() and step.startswith("tracking_"):
                errors, rows, floor = tracking_library.fidelity(
                    models_dir / original, onnx_path, step, data_dir, 10_000 if quick else n
                )
                metric = (
                    f"|y_onnx - y| <= {FIDELITY_TARGET:g} * max(|y|, {TAIL_SIGMAS:g} column σ) "
                    f"(relative, or {FIDELITY_TARGET * TAIL_SIGMAS:g} σ in far tails)"
                )
                source = (
                    f"recomputed, {rows:,} held-out tracks; PyTorch as saved vs float64 on the same rows: "
                    f"{floor:.1e}"
                )
            worst = max((float(e) for e in errors.values()), default=0.0)
            if worst > FIDELITY_TARGET:
                sec.misses.append(
                    f"{step}: ONNX vs original max error {worst:.1e} (target {FIDELITY_TARGET:g}; {source})"
                )
        except Exception as exc:  # reported, never hidden
            sec.misses.append(f"{step}: conversion fidelity check failed: {exc}".splitlines()[0][:200])
            source = f"recomputation FAILED: {type(exc).__name__}"
        err_text = ", ".join(f"{b}: {float(e):.1e}" for b, e in errors.items()) or "n/a"
        metric = str(metric).replace("|", "\\|")
        sec.lines.append(f"| {step} | {original or '(not committed)'} | {metric} | {err_text} | {source} |")
        sec.checks += 1
    return sec
