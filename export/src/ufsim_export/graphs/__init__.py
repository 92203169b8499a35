"""Non-learnt pipeline steps as ONNX graphs: builder, exact elementary functions, counter-based RNG, steps."""

from __future__ import annotations
