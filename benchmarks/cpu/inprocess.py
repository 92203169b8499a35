"""The ensemble's ONNX graphs chained in this process with ONNX Runtime (1 thread): CPU per step."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ufsim_export.repository.inprocess import InProcessPipeline


def step_costs(repository: Path, inputs: dict[str, np.ndarray], batch: int, repeats: int) -> dict[str, float]:
    """Process CPU microseconds per particle of each step (best of ``repeats`` passes over ``inputs`` in
    batches of ``batch``), in spec order."""
    pipeline = InProcessPipeline(repository, threads=1)
    n = len(inputs["pid"])
    best: dict[str, float] = {}
    for _ in range(repeats):
        used = dict.fromkeys((s.name for s in pipeline.spec.steps), 0.0)
        for start in range(0, n, batch):
            tensors = {name: value[start : start + batch] for name, value in inputs.items()}
            for step in pipeline.spec.steps:
                session = pipeline.sessions[step.name]
                feeds = {ref.name: tensors[ref.name] for ref in step.inputs}
                begin = time.process_time()
                values = session.run(None, feeds)
                used[step.name] += time.process_time() - begin
                tensors.update(zip((o.name for o in session.get_outputs()), values, strict=True))
        for name, seconds in used.items():
            best[name] = min(best.get(name, np.inf), 1e6 * seconds / n)
    return best
