"""Validation of the learnt models against their reference: metrics and the Markdown report.

- :mod:`.metrics`: 1-D Wasserstein distance over the reference spread (overall and in bins),
  classifier two-sample test (held-out AUC), efficiency curves;
- :mod:`.report`: ``make validate`` -> ``export/reports/validation.md`` with PNG plots.
"""

from __future__ import annotations
