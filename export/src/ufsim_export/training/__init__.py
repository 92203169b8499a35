"""Training of the reference models from data and fixed seeds (``ufsim-export train``).

The models:

- :mod:`.tracking`: acceptance and tracking efficiency (GBDTs) and the tracking generators' entry point;
- :mod:`.distill`: ``tracking_resolution`` and ``tracking_covariance`` fitted to the Lamarr library's
  function, as :mod:`.two_stage` generators, on labels from :mod:`.library`;
- :mod:`.pid`: the PID models, :mod:`.chained` generators trained on the :mod:`.calibration` sample;
- :mod:`.selection`: the best of several runs; :mod:`.reexport`: new ONNX graphs from saved modules.

What they share:

- :mod:`.fitting` (weights, Adam, L-BFGS), :mod:`.reproducibility` (seeds, the event-level validation
  split), :mod:`.artifacts` (convert, verify, write), :mod:`.provenance` (what a manifest records),
  :mod:`.saved` (rebuild a saved generator). The quantile-preprocessed generator they all fit is
  :mod:`ufsim_export.models.quantile`.
"""

from __future__ import annotations
