"""Writing a trained model: convert to ONNX, verify against the original, write both and the manifest.

``<step>.onnx``, ``<step>.pt`` or ``<step>.pkl`` (the original, when small enough to commit) and
``<step>.json`` (the manifest, :mod:`.provenance`).
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..convert import save_model
from ..convert.gbdt import gbdt_to_onnx
from ..convert.generator import generator_to_onnx
from ..convert.verify import VerificationReport, verify_classifier, verify_generator
from ..files import write_bytes
from .provenance import write_manifest

ORIGINAL_MAX_BYTES = 5 * 1024 * 1024
"""Originals (``.pkl``/``.pt``) are committed next to the ONNX only below this size."""


def save_original(module: nn.Module, path: Path) -> str | None:
    """Write ``module`` (class, constructor arguments, state_dict) to ``path``; its name, None if too big."""
    return _save_original(path, _torch_bytes(module))


def _save_original(path: Path, payload: bytes) -> str | None:
    if len(payload) >= ORIGINAL_MAX_BYTES:
        path.unlink(missing_ok=True)
        return None
    write_bytes(path, payload)
    return path.name


def save_generator(
    module: nn.Module,
    out_dir: Path,
    step: str,
    *,
    conditions: NDArray[Any],
    noise_dim: int,
    manifest: dict[str, Any],
    seed: int = 0,
    rtol: float = 1e-5,
    tail_sigmas: float = 1.0,
) -> tuple[Path, VerificationReport]:
    """Convert with ``generator_to_onnx``, verify to ``rtol`` (of ``max(|y|, tail_sigmas σ)``), and write.

    Verified on ``conditions`` (>= 10k rows) with fresh N(0, 1) noise; writes ``<step>.onnx``,
    ``<step>.pt`` (state_dict, when < 5 MB) and ``<step>.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    module.eval()
    n_conditions = conditions.shape[1]
    onnx_model = generator_to_onnx(module, n_conditions, noise_dim)
    noise = np.random.default_rng(seed + 7).standard_normal((len(conditions), noise_dim)).astype(np.float32)
    report = verify_generator(
        module, onnx_model, conditions, noise, name=step, rtol=rtol, tail_sigmas=tail_sigmas
    )
    save_model(onnx_model, out_dir / f"{step}.onnx")
    original = save_original(module, out_dir / f"{step}.pt")
    manifest = {
        **manifest,
        "step": step,
        "kind": "generator",
        "noise_dim": noise_dim,
        "original": original,
        "conversion_fidelity": {"metric": report.kind, "max_error": report.max_error, "rows": report.n_rows},
    }
    write_manifest(out_dir / f"{step}.json", manifest)
    return out_dir / f"{step}.onnx", report


def _torch_bytes(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    extra_state = getattr(module, "extra_state", None)
    extra = extra_state() if callable(extra_state) else {}
    torch.save({"class": type(module).__name__, "kwargs": extra, "state_dict": module.state_dict()}, buffer)
    return buffer.getvalue()


def save_gbdt(
    model: Any,
    out_dir: Path,
    step: str,
    *,
    features: NDArray[Any],
    manifest: dict[str, Any],
    implementation: str = "native",
) -> tuple[Path, VerificationReport]:
    """Convert with ``gbdt_to_onnx`` (default ONNX-ML TreeEnsemble, fastest on CPU), verify, and write.

    Verified on ``features`` (>= 10k rows); writes ``<step>.onnx``, ``<step>.pkl`` (when < 5 MB) and
    ``<step>.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    features = np.ascontiguousarray(features, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        onnx_model = gbdt_to_onnx(model, features[:256], implementation=implementation)
        report = verify_classifier(model, onnx_model, features, name=step)
    save_model(onnx_model, out_dir / f"{step}.onnx")
    original = _save_original(out_dir / f"{step}.pkl", pickle.dumps(model))
    manifest = {
        **manifest,
        "step": step,
        "kind": "gbdt",
        "n_classes": len(model.classes_),
        "implementation": implementation,
        "original": original,
        "conversion_fidelity": {"metric": report.kind, "max_error": report.max_error, "rows": report.n_rows},
    }
    write_manifest(out_dir / f"{step}.json", manifest)
    return out_dir / f"{step}.onnx", report
