"""Lamarr-style conditional generator: conditions + noise -> outputs, residual tanh MLP.

Input standardisation and output de-standardisation live in buffers, so the exported ONNX graph
takes conditions in physical units and returns outputs in physical units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn


class ResidualGenerator(nn.Module):
    """Dense(width, tanh) -> n_residual x [h + tanh(W h + b)] -> Dense(n_outputs), on (conditions, noise).

    Lamarr's tracking resolution generator is ``ResidualGenerator(12, 128, 9, width=128, n_residual=10)``.
    """

    cond_mean: torch.Tensor
    cond_scale: torch.Tensor
    out_mean: torch.Tensor
    out_scale: torch.Tensor

    def __init__(
        self,
        n_conditions: int,
        noise_dim: int,
        n_outputs: int,
        *,
        width: int = 128,
        n_residual: int = 10,
    ) -> None:
        super().__init__()
        self.n_conditions = n_conditions
        self.noise_dim = noise_dim
        self.n_outputs = n_outputs
        self.inp = nn.Linear(n_conditions + noise_dim, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(n_residual))
        self.out = nn.Linear(width, n_outputs)
        self.register_buffer("cond_mean", torch.zeros(n_conditions))
        self.register_buffer("cond_scale", torch.ones(n_conditions))
        self.register_buffer("out_mean", torch.zeros(n_outputs))
        self.register_buffer("out_scale", torch.ones(n_outputs))

    def set_normalisation(
        self, conditions: NDArray[Any], outputs: NDArray[Any], *, min_scale: float = 1e-6
    ) -> None:
        """Standardise conditions and outputs with the training sample's mean and spread."""
        for name, arr in (("cond", conditions), ("out", outputs)):
            mean = torch.as_tensor(np.mean(arr, axis=0), dtype=torch.float32)
            scale = torch.as_tensor(np.maximum(np.std(arr, axis=0), min_scale), dtype=torch.float32)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_scale").copy_(scale)

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Outputs in physical units for the given conditions and N(0, 1) noise."""
        x = (conditions - self.cond_mean) / self.cond_scale
        h = torch.tanh(self.inp(torch.cat([x, noise], dim=1)))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        y: torch.Tensor = self.out(h) * self.out_scale + self.out_mean
        return y
