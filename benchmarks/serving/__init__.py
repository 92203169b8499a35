"""Serving benchmarks: perf_analyzer grids and the side-by-side Triton / in-process / per-particle run."""
