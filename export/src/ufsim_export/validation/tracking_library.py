"""Tracking generators against the Lamarr library itself, on tracks no model was trained on.

The report's tracking sections (``report.tracking_sections``) rest on these helpers.

The held-out tracks are validation-split particles (whole events never trained on) labelled by the
library with a noise seed no training uses (:data:`REPORT_SEED`). Four views:

- distributions: each ONNX generator with fresh N(0, 1) noise vs the library (W1/σ overall and in (p, η)
  bins with >= 5,000 tracks, classifier two-sample AUC); the covariance conditioned on the library's
  track quality;
- the served chain: resolution -> covariance conditioned on the *generated* quality, vs the library's
  chain (joint AUC), and the served integer nDoF (max(floor(nDoF_f), 1)) vs the library's;
- per-track parity: the same conditions and the library's own noise (the spread chain's extra columns
  drawn fresh), ONNX vs library, |Δ|/σ; and the regression stage alone (``ŷ``, from the saved module);
- conversion fidelity with the tail-aware criterion: |Δ| <= 1e-5 max(|y|, 10 σ) (1e-5 relative, or
  1e-4 σ for far-tail outputs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from ..convert.verify import TAIL_SIGMAS
from ..training.distill import student_inputs
from ..training.library import LabelledSet, labelled_set
from ..training.saved import load_quantile_generator
from ..training.tracking import load_particles
from ..training.two_stage import LIBRARY_NOISE, TwoStageGenerator, regression_outputs

REPORT_SEED = 20_261_202
"""Labelled-set seed of the report's held-out tracks (training uses seed + 1 and seed + 7001)."""
FULL_ROWS = 1_000_000
"""Held-out tracks the report scores (labelled once, about 5 min on 2 cores, then cached). At 200,000 the
worst (p, η) bins' sampling floors (two halves of the reference) were 0.02-0.04, so a perfect model would
have scored 0.015-0.03 there and several bin checks passed or missed by the draw. At 1,000,000, over three
draws of the spread chains of the time (unweighted; commit 839af87), the 13 bins scored before measured at
most 0.045 but for nDoF_f (0.056-0.063 at 10-32 GeV, η > 4.5), and three more bins reach the 5,000 tracks
the target counts (η > 4.5 below 10 GeV, η < 2.5 at 10-32 GeV): the resolution's dx, dy and ghostProb and
several covariance outputs reached 0.055-0.076 there."""
QUICK_ROWS = 6_000
PARITY_MEDIAN_TARGET = 0.05
PARITY_P99_TARGET = 0.3
MODEL_NOISE_SEED = 2024


def held_out_tracks(data_dir: Path, n: int) -> LabelledSet:
    """``n`` library-labelled tracks from validation-split particles, report noise seed (cached)."""
    particles, val = load_particles(data_dir, seed=0)
    return labelled_set(data_dir, particles[val].reset_index(drop=True), n, seed=REPORT_SEED)


def served_ndof(ndof_f: NDArray[Any]) -> NDArray[Any]:
    """The ensemble's integer nDoF from the generator's nDoF_f (``graphs._build_assembly``)."""
    return np.asarray(np.maximum(np.floor(ndof_f), 1.0))


def onnx_noise_dim(onnx_path: Path) -> int:
    """The noise width an ONNX generator takes (its second input), read from the graph."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return int(graph.input[1].type.tensor_type.shape.dim[1].dim_value)


def fresh_noise(n: int, seed: int, dim: int = LIBRARY_NOISE) -> NDArray[Any]:
    """``n`` rows of N(0, 1) noise from numpy's default_rng(seed), float32."""
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def with_spread_noise(library_noise: NDArray[Any], dim: int, seed: int) -> NDArray[Any]:
    """The library's 128 noise columns, then fresh ones up to ``dim`` (the spread chain's draw)."""
    extra = fresh_noise(len(library_noise), seed, dim - library_noise.shape[1])
    return np.hstack([library_noise, extra])


def regression_stage(original: Path, conditions: NDArray[Any], noise: NDArray[Any]) -> NDArray[Any] | None:
    """The regression stage's outputs (``ŷ`` in physical units) of a saved two-stage generator, else None."""
    module = load_quantile_generator(original)
    if not isinstance(module, TwoStageGenerator):
        return None
    return np.asarray(regression_outputs(module, conditions, noise), np.float64)


def tail_aware_error(expected: NDArray[Any], got: NDArray[Any]) -> float:
    """max |got - expected| / max(|expected|, 10 σ_column): <= 1e-5 means 1e-5 relative, or 1e-4 σ."""
    expected = np.asarray(expected, np.float64)
    sigma = np.maximum(expected.std(axis=0), 1e-30)
    scale = np.maximum(np.abs(expected), TAIL_SIGMAS * sigma)
    return float((np.abs(np.asarray(got, np.float64) - expected) / scale).max())


def fidelity(
    original: Path,
    onnx_path: Path,
    step: str,
    data_dir: Path,
    n: int,
    *,
    batch_sizes: tuple[int, ...] = (1, 1000),
) -> tuple[dict[int, float], int, float]:
    """ONNX vs the saved PyTorch generator on ``n`` held-out tracks with fresh noise.

    Returns the tail-aware error (:func:`tail_aware_error`) per ONNX batch size, the number of rows, and
    the same error of the PyTorch module as saved (float32, or a float64 regression stage) against itself
    in float64 throughout: the rounding the network amplifies on its own, which no implementation of the
    same arithmetic can be expected to beat by much.
    """
    tracks = held_out_tracks(data_dir, max(n, QUICK_ROWS))
    cond, _, _ = student_inputs(step, tracks)
    cond = np.ascontiguousarray(cond[:n], np.float32)
    module = load_quantile_generator(original)
    noise = fresh_noise(len(cond), 5, module.noise_dim)
    with torch.no_grad():
        expected = module(torch.from_numpy(cond), torch.from_numpy(noise)).numpy()
        exact = module.double()(torch.from_numpy(cond).double(), torch.from_numpy(noise).double()).numpy()
    rounding_floor = tail_aware_error(exact, expected)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    errors = {}
    for batch in batch_sizes:
        got = np.concatenate(
            [
                session.run(None, {"conditions": cond[i : i + batch], "noise": noise[i : i + batch]})[0]
                for i in range(0, len(cond), batch)
            ]
        )
        errors[int(batch)] = tail_aware_error(expected, got)
    return errors, len(cond), rounding_floor
