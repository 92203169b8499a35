"""Stand-ins for tests and benchmarks (small models, synthetic particles); production never imports it."""

from __future__ import annotations
