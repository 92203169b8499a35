"""Prove that an exported ONNX model computes what the original model computes, and runs in production.

Each check runs ONNX Runtime on every row at several batch sizes (1, 2 and 1000 by default: batch
size 1 catches shape bugs such as axis-less ``Squeeze``, 2 the smallest real batch, 1000 the
vectorised path) and compares with the original model on the same FP32 inputs. A failed check
raises :class:`VerificationError`, whose message names the model and shows the worst rows.

Tolerances:

- classifiers: ``max |p_onnx - p_original| <= atol`` over all rows and classes.
- generators: per element ``|y_onnx - y| <= rtol * max(|y|, s_j)``, where ``s_j`` is the spread
  (standard deviation over the rows checked) of output column ``j`` of the original. Relative to the
  value where the value is large, relative to the column's natural scale near zero, where a pure
  relative error would explode. A constant column uses its absolute mean, and 1 if that is 0. With
  ``tail_sigmas`` k the scale is ``max(|y|, k s_j)``: the fidelity target's tail-aware form (k = 10,
  :data:`TAIL_SIGMAS`: 1e-5 relative, or 1e-4 of the spread where a heavy-tailed output is far out).

:func:`check_production_compat` checks what ONNX Runtime 1.19.2 (NGC tritonserver 24.10) accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray

MAX_IR_VERSION = 10
MAX_OPSET = {"": 21, "ai.onnx": 21, "ai.onnx.ml": 5}
"""Highest IR version and opsets ONNX Runtime 1.19.2 loads (checked with onnxruntime==1.19.2)."""
MIN_ROWS = 10_000
TAIL_SIGMAS = 10.0
"""The fidelity target's tail-aware scale max(|y|, 10 σ): 1e-5 of it is 1e-5 relative, or 1e-4 σ."""
N_WORST = 5


class VerificationError(RuntimeError):
    """ONNX and original model disagree beyond tolerance; the message shows the worst rows."""


class CompatibilityError(ValueError):
    """The ONNX model uses an IR version, opset or domain that ONNX Runtime 1.19.2 cannot load."""


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of one verification: largest error per batch size (the metric defined by ``kind``)."""

    name: str
    kind: str
    n_rows: int
    tolerance: float
    max_error: dict[int, float] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        """Largest error over all batch sizes."""
        return max(self.max_error.values())

    def summary(self) -> str:
        """One line for logs and reports."""
        per_batch = ", ".join(f"batch {b}: {e:.2e}" for b, e in self.max_error.items())
        return f"{self.name or 'model'} ({self.kind}, {self.n_rows} rows): {per_batch}"


def check_production_compat(onnx_model: onnx.ModelProto) -> None:
    """Raise :class:`CompatibilityError` unless ONNX Runtime 1.19.2 loads the model as it is.

    That is: IR <= 10, opset <= 21, ai.onnx.ml <= 5, no other domains, and unique node names.
    """
    problems = []
    if onnx_model.ir_version > MAX_IR_VERSION:
        problems.append(f"IR version {onnx_model.ir_version} > {MAX_IR_VERSION}")
    for opset in onnx_model.opset_import:
        limit = MAX_OPSET.get(opset.domain)
        if limit is None:
            problems.append(f"operator domain {opset.domain!r} is not one of {sorted(MAX_OPSET)}")
        elif opset.version > limit:
            problems.append(f"opset {opset.domain or 'ai.onnx'} {opset.version} > {limit}")
    names = [n.name for n in onnx_model.graph.node]
    unnamed, duplicated = names.count(""), len(names) - len(set(names))
    if unnamed or duplicated:
        # ORT 1.19.2's GatherSliceToSplitFusion names fused nodes after the originals and then refuses
        # the model: "two nodes with same node name (/GatherSliceToSplitFusion/)"
        problems.append(
            f"{unnamed} unnamed and {duplicated} duplicated node names (give every node a unique name)"
        )
    if problems:
        raise CompatibilityError(
            f"model {onnx_model.graph.name!r} cannot run in ONNX Runtime 1.19.2 (tritonserver 24.10): "
            + "; ".join(problems)
            + " — export with opset <= 21 and onnx <= 1.16"
        )


def onnx_session(onnx_model: onnx.ModelProto | Path, *, threads: int = 1) -> ort.InferenceSession:
    """A CPU session (``threads`` intra-op threads, one by default) of a model in memory or on disk."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    source = str(onnx_model) if isinstance(onnx_model, Path) else onnx_model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_chunks(session: ort.InferenceSession, feeds: dict[str, NDArray[Any]], batch: int) -> NDArray[Any]:
    """The session's first output on ``feeds``, run ``batch`` rows at a time."""
    n = len(next(iter(feeds.values())))
    parts = [
        session.run(None, {k: v[start : start + batch] for k, v in feeds.items()})[0]
        for start in range(0, n, batch)
    ]
    return np.concatenate(parts, axis=0)


def _fmt(row: NDArray[Any]) -> str:
    return np.array2string(np.asarray(row), precision=6, threshold=12, edgeitems=4, max_line_width=200)


def _compare(
    *,
    name: str,
    kind: str,
    session: ort.InferenceSession,
    feeds: dict[str, NDArray[Any]],
    expected: NDArray[Any],
    error: Callable[[NDArray[Any]], NDArray[Any]],
    tolerance: float,
    batch_sizes: Sequence[int],
) -> VerificationReport:
    n_rows = len(expected)
    report = VerificationReport(name=name, kind=kind, n_rows=n_rows, tolerance=tolerance)
    for batch in batch_sizes:
        got = run_chunks(session, feeds, int(batch))
        if got.shape != expected.shape:
            raise VerificationError(
                f"{name or 'model'}: ONNX output shape {got.shape} at batch size {batch}, "
                f"original {expected.shape}"
            )
        err = error(got)
        err = np.where(np.isnan(err), np.inf, err)
        row_err = err.max(axis=1)
        report.max_error[int(batch)] = float(row_err.max())
        if row_err.max() > tolerance:
            worst = np.argsort(row_err)[::-1][:N_WORST]
            lines = [
                f"{name or 'model'}: ONNX differs from the original ({kind}) at batch size {batch}: "
                f"max error {row_err.max():.3e} > {tolerance:g} in {int((row_err > tolerance).sum())} "
                f"of {n_rows} rows. Worst rows:"
            ]
            for i in worst:
                inputs = "  ".join(f"{k}={_fmt(v[i])}" for k, v in feeds.items())
                lines.append(
                    f"  row {i}: error {row_err[i]:.3e}\n    inputs   {inputs}\n"
                    f"    original {_fmt(expected[i])}\n    onnx     {_fmt(got[i])}"
                )
            raise VerificationError("\n".join(lines))
    return report


def _check_rows(n: int, min_rows: int, name: str) -> None:
    if n < min_rows:
        raise ValueError(f"{name or 'model'}: verification needs at least {min_rows} rows, got {n}")


def verify_classifier(
    model: Any,
    onnx_model: onnx.ModelProto,
    X: NDArray[Any],
    *,
    atol: float = 1e-5,
    batch_sizes: Sequence[int] = (1, 2, 1000),
    name: str = "",
    min_rows: int = MIN_ROWS,
) -> VerificationReport:
    """Compare ``model.predict_proba`` with the ONNX ``probabilities`` on all rows of ``X`` (as FP32)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    _check_rows(len(X), min_rows, name)
    session = onnx_session(onnx_model)
    expected = np.asarray(model.predict_proba(X), dtype=np.float64)
    (input_name,) = [i.name for i in session.get_inputs()]
    return _compare(
        name=name,
        kind=f"max |p_onnx - p| <= {atol:g}",
        session=session,
        feeds={input_name: X},
        expected=expected,
        error=lambda got: np.abs(got.astype(np.float64) - expected),
        tolerance=atol,
        batch_sizes=batch_sizes,
    )


def column_scale(y: NDArray[Any]) -> NDArray[Any]:
    """Natural scale of each output column: its spread, else its absolute mean, else 1."""
    spread = y.std(axis=0)
    mean = np.abs(y.mean(axis=0))
    return np.where(spread > 0, spread, np.where(mean > 0, mean, 1.0))


def verify_generator(
    module: Any,
    onnx_model: onnx.ModelProto,
    conditions: NDArray[Any],
    noise: NDArray[Any],
    *,
    rtol: float = 1e-5,
    tail_sigmas: float = 1.0,
    batch_sizes: Sequence[int] = (1, 2, 1000),
    name: str = "",
    min_rows: int = MIN_ROWS,
) -> VerificationReport:
    """Compare ``module(conditions, noise)`` (torch, FP32) with the ONNX ``output``; see the module doc."""
    import torch  # deferred: only generators need torch; GBDT verification runs without it

    conditions = np.ascontiguousarray(conditions, dtype=np.float32)
    noise = np.ascontiguousarray(noise, dtype=np.float32)
    if len(conditions) != len(noise):
        raise ValueError(f"{name or 'model'}: {len(conditions)} condition rows but {len(noise)} noise rows")
    _check_rows(len(conditions), min_rows, name)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            expected = module(torch.from_numpy(conditions), torch.from_numpy(noise)).numpy()
    finally:
        module.train(was_training)
    expected = expected.astype(np.float64)
    scale = np.maximum(np.abs(expected), tail_sigmas * column_scale(expected))
    spread = "column spread" if tail_sigmas == 1 else f"{tail_sigmas:g} column spread"
    session = onnx_session(onnx_model)
    return _compare(
        name=name,
        kind=f"|y_onnx - y| <= {rtol:g} * max(|y|, {spread})",
        session=session,
        feeds={"conditions": conditions, "noise": noise},
        expected=expected,
        error=lambda got: np.abs(got.astype(np.float64) - expected) / scale,
        tolerance=rtol,
        batch_sizes=batch_sizes,
    )
