"""Throughput of an ONNX Runtime session, shared by the CPU micro-benchmarks."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort


def rows_per_second(session: ort.InferenceSession, feeds: dict[str, np.ndarray], min_time: float) -> float:
    """Rows/s of back-to-back ``session.run`` on one batch for at least ``min_time`` seconds (one warm-up)."""
    session.run(None, feeds)
    rows = len(next(iter(feeds.values())))
    calls, start = 0, time.perf_counter()
    while True:
        session.run(None, feeds)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls * rows / elapsed
