"""Validation of the learnt models against their reference: ``make validate`` and its Markdown report.

- :mod:`.report`: ``write_report`` -> ``export/reports/validation.md`` with PNG plots, from the sections:
- :mod:`.efficiency` (acceptance and track types), :mod:`.generators` (one generator in distribution),
  :mod:`.tracking` (the tracking generators on held-out and fresh tracks, the served chain, per-track
  parity), :mod:`.pid`, :mod:`.fidelity` (ONNX vs original), :mod:`.lineage` (the tracking
  regressions' fitting history from their manifests); :mod:`.section` and :mod:`.plots` are what
  they share;
- the samples: :mod:`.tracking_library` (held-out library-labelled tracks), :mod:`.fresh_particles`
  (new Pythia runs, the HepMC2 crossings), :mod:`.pv_sqlamarr` (primary vertices as SQLamarr draws them).

The metrics themselves are :mod:`ufsim_export.metrics`.
"""

from __future__ import annotations
