"""Learnt model architectures (PyTorch) shared by the tracking and PID trainings.

- :mod:`.generators`: conditional generators with noise as an explicit input (Lamarr's residual tanh MLP).
"""

from __future__ import annotations

from .generators import ResidualGenerator

__all__ = ["ResidualGenerator"]
