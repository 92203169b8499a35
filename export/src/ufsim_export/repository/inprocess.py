"""Run a model repository's step models chained in-process with ONNX Runtime, no server.

The same ONNX graphs the ensemble runs, wired by the spec: the reference for reproducibility
tests and the in-process side of the serving benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
from numpy.typing import NDArray

from ..spec import PipelineSpec, default_spec_path, load_spec


class InProcessPipeline:
    """The ensemble's steps as ONNX Runtime sessions, run in spec order."""

    def __init__(self, repository: Path, spec: PipelineSpec | None = None, *, threads: int = 1) -> None:
        self.spec = spec or load_spec(default_spec_path())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.sessions = {
            step.name: ort.InferenceSession(
                str(Path(repository) / step.name / "1" / "model.onnx"),
                options,
                providers=["CPUExecutionProvider"],
            )
            for step in self.spec.steps
        }

    def __call__(self, inputs: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        """Ensemble outputs for a batch of particles (inputs keyed by the ensemble's input names)."""
        tensors = dict(inputs)
        for step in self.spec.steps:
            session = self.sessions[step.name]
            values = session.run(None, {ref.name: tensors[ref.name] for ref in step.inputs})
            tensors.update(zip((o.name for o in session.get_outputs()), values, strict=True))
        return {t.name: tensors[t.name] for t in self.spec.outputs}
