"""ufsim-export: from trained models to a verified Triton model repository.

Map of the package, by layer in pipeline order (a layer imports only the ones above it;
``tests/export/test_layers.py`` checks it):

- :mod:`.spec`: the declarative pipeline spec (tensor names, dtypes, shapes, units, sentinels, wiring).
- :mod:`.graphs`: the non-learnt steps as ONNX graphs (builder, exact elementary functions,
  counter-based random numbers from ``rng_key``, the steps) and adapters for learnt models.
- :mod:`.models`: reference model architectures (PyTorch).
- :mod:`.convert`: GBDTs and generators to ONNX; :mod:`.convert.verify` proves they match.
- :mod:`.metrics`: W1/sigma and the classifier two-sample test, used by training and validation.
- :mod:`.training`: training from data and fixed seeds, and the PID calibration sample generator.
- :mod:`.validation`: the validation report.
- :mod:`.repository`: writes ``model_repository/`` (configs, ensemble, models, manifests), runs it
  in-process, documents the contract.
- :mod:`.cli`: the ``ufsim-export`` command line; :mod:`.testing`: stand-ins for tests, never
  imported by the modules above.
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
