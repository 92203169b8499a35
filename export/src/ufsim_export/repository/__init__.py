"""The Triton model repository: writer (configs, ensemble, models, manifests), in-process runner, docs."""

from __future__ import annotations
