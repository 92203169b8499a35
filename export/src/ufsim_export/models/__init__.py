"""Learnt model architectures (PyTorch) shared by the tracking and PID trainings.

- :mod:`.generators`: conditional generators with noise as an explicit input (Lamarr's residual tanh MLP);
- :mod:`.quantile`: the quantile maps (monotone piecewise-linear layers) and the generator that carries
  them, so the exported ONNX graph takes and returns physical units.
"""

from __future__ import annotations

from .generators import ResidualGenerator
from .quantile import MonotonePiecewiseLinear, QuantileResidualGenerator

__all__ = ["MonotonePiecewiseLinear", "QuantileResidualGenerator", "ResidualGenerator"]
