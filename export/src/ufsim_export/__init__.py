"""ufsim-export: from trained models to a verified Triton model repository.

Map of the package (data flows top to bottom):

- :mod:`.spec`: the declarative pipeline spec (tensor names, dtypes, shapes, units, sentinels, wiring).
- :mod:`.rng`: counter-based random numbers from ``rng_key``, in numpy and as ONNX nodes.
- :mod:`.onnx_builder` / :mod:`.graphs`: the non-learnt steps as ONNX graphs, and adapters for learnt models.
- :mod:`.convert`: GBDTs through Hummingbird, PyTorch generators, to ONNX; :mod:`.verify` proves they match.
- :mod:`.models`, :mod:`.training`, :mod:`.calibration`: reference model architectures, training, PID sample.
- :mod:`.repository`: writes ``model_repository/`` (configs, ensemble, models, manifests).
- :mod:`.toy`: small models for tests; :mod:`.cli`: the ``ufsim-export`` command line.
"""

from __future__ import annotations

from .repository.writer import write_configs, write_repository
from .spec import PipelineSpec, SpecError, StepSpec, TensorSpec, default_spec_path, load_spec

__all__ = [
    "PipelineSpec",
    "SpecError",
    "StepSpec",
    "TensorSpec",
    "default_spec_path",
    "load_spec",
    "write_configs",
    "write_repository",
]
