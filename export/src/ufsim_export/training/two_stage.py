"""The tracking generators' two stages: the library's map where the noise resolves it, a chain for the rest.

The regression (:func:`~.fitting.fit_deterministic`) learns the library's map (conditions, 128 noise) ->
outputs, but not all of it: 4-36 % of each output's variance (chi2PerDoF and ghostProb the most) is left
over, and the MSE optimum there is a conditional mean, narrower than the library's spread. A classifier
tells it from the library (two-sample AUC 0.63 for the resolution). :class:`TwoStageCore` adds the
left-over back as a draw: a :class:`~.chained.ChainedCore` (one small network per output, fitted by the
energy score) samples the residual ``y - ŷ`` given the conditions and the regression's prediction ``ŷ``,
from noise of its own (:data:`SPREAD_NOISE` columns per output after the library's 128). So ``ŷ`` keeps
the per-track parity the regression reached, and the sum has the library's conditional distribution.

The regression may run in float64 (:data:`PRECISIONS`): its weights are fitted in float32, and only the
arithmetic of the served graph changes (a Cast in, a Cast out), so a far-tail output follows the saved
module to the conversion target instead of carrying float32's rounding through eleven layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..models.generators import ResidualGenerator
from ..models.quantile import QuantileResidualGenerator
from .chained import ChainedCore, fit_stages

LIBRARY_NOISE = 128
"""The noise columns the library's generators (and so the regression stage) take."""
SPREAD_NOISE = 4
"""Noise columns per output for the spread chain's stages, after the library's 128."""


PRECISIONS = {"float32": torch.float32, "float64": torch.float64}
"""Arithmetic the regression stage may run in; the spread chain and the quantile layers stay float32."""


def two_stage_noise_dim(n_outputs: int) -> int:
    """The served generator's noise width: the library's 128, then the spread chain's."""
    return LIBRARY_NOISE + SPREAD_NOISE * n_outputs


class TwoStageCore(nn.Module):
    """``ŷ = regression(c, z[:128])``, then ``y = ŷ + spread([c, ŷ], z[128:])``, in the core's space.

    Same interface as :class:`ResidualGenerator` where the quantile layers use it (``set_normalisation``
    and the call); each stage is fitted through its own networks.
    """

    def __init__(
        self,
        n_conditions: int,
        n_outputs: int,
        *,
        width: int,
        n_residual: int,
        spread_width: int,
        spread_residual: int,
        regression_precision: str = "float32",
    ) -> None:
        super().__init__()
        self.n_conditions, self.n_outputs = n_conditions, n_outputs
        self.noise_dim = two_stage_noise_dim(n_outputs)
        self.regression = ResidualGenerator(
            n_conditions, LIBRARY_NOISE, n_outputs, width=width, n_residual=n_residual
        )
        self.spread = ChainedCore(
            n_conditions + n_outputs, SPREAD_NOISE * n_outputs, n_outputs, width=spread_width,
            n_residual=spread_residual,
        )  # fmt: skip
        self.regression_precision = "float32"
        self.set_regression_precision(regression_precision)

    def set_regression_precision(self, precision: str) -> None:
        """Run the regression in ``precision`` (its parameters cast; values of float32 weights are exact)."""
        if precision not in PRECISIONS:
            raise ValueError(f"regression_precision={precision!r}: accepted {', '.join(PRECISIONS)}")
        self.regression.to(PRECISIONS[precision])
        self.regression_precision = precision

    def predict(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The regression's ŷ for core-space conditions and the library's 128 noise, in the inputs' dtype."""
        dtype = PRECISIONS[self.regression_precision]
        predicted: torch.Tensor = self.regression(conditions.to(dtype), noise[:, :LIBRARY_NOISE].to(dtype))
        return predicted.to(conditions.dtype)

    def set_normalisation(
        self, conditions: NDArray[Any], outputs: NDArray[Any], *, min_scale: float = 1e-6
    ) -> None:
        """The regression's standardisation; the spread chain's is set on the residuals it is fitted to."""
        self.regression.set_normalisation(conditions, outputs, min_scale=min_scale)

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The regression's prediction plus a residual drawn given the conditions and that prediction."""
        predicted = self.predict(conditions, noise)
        residual = self.spread(torch.cat([conditions, predicted], dim=1), noise[:, LIBRARY_NOISE:])
        out: torch.Tensor = predicted + residual
        return out


class TwoStageGenerator(QuantileResidualGenerator):
    """A quantile generator (physical units in and out) whose core is a :class:`TwoStageCore`."""

    def __init__(
        self,
        n_conditions: int,
        noise_dim: int,
        n_outputs: int,
        *,
        width: int = 128,
        n_residual: int = 10,
        spread_width: int = 48,
        spread_residual: int = 2,
        continuous: Sequence[int] = (),
        n_knots: int = 201,
        regression_precision: str = "float32",
    ) -> None:
        if noise_dim != two_stage_noise_dim(n_outputs):
            raise ValueError(
                f"noise_dim={noise_dim}: a two-stage generator of {n_outputs} outputs takes "
                f"{two_stage_noise_dim(n_outputs)} ({LIBRARY_NOISE} + {SPREAD_NOISE} x {n_outputs})"
            )
        core = TwoStageCore(
            n_conditions, n_outputs, width=width, n_residual=n_residual, spread_width=spread_width,
            spread_residual=spread_residual, regression_precision=regression_precision,
        )  # fmt: skip
        super().__init__(
            n_conditions, noise_dim, n_outputs, width=width, n_residual=n_residual, continuous=continuous,
            n_knots=n_knots,
            core=cast(ResidualGenerator, core),  # TwoStageCore has the interface of the network it replaces
        )  # fmt: skip
        self.spread_width, self.spread_residual = spread_width, spread_residual

    @property
    def stages(self) -> TwoStageCore:
        """The core, typed."""
        return cast(TwoStageCore, self.core)

    @classmethod
    def from_regression(
        cls, parent: QuantileResidualGenerator, *, spread_width: int, spread_residual: int
    ) -> TwoStageGenerator:
        """A two-stage generator whose transforms and regression are ``parent``'s (spread not yet fitted).

        ``parent`` is a one-network generator, or a two-stage one whose regression is taken.
        """
        module = cls(
            parent.n_conditions, two_stage_noise_dim(parent.n_outputs), parent.n_outputs,
            width=parent.width, n_residual=parent.n_residual, spread_width=spread_width,
            spread_residual=spread_residual, continuous=parent.continuous, n_knots=parent.n_knots,
        )  # fmt: skip
        module.cond_transform, module.out_transform = parent.cond_transform, parent.out_transform
        module._forward_out = parent.forward_maps()
        regression = parent.core.regression if isinstance(parent.core, TwoStageCore) else parent.core
        module.stages.regression.load_state_dict(regression.state_dict())
        return module

    def extra_state(self) -> dict[str, Any]:
        """Constructor arguments (``spread_*`` mark the class for loading)."""
        return {**super().extra_state(), "spread_width": self.spread_width,
                "spread_residual": self.spread_residual,
                "regression_precision": self.stages.regression_precision}  # fmt: skip


def predict_regression(
    module: TwoStageGenerator, conditions: NDArray[Any], noise: NDArray[Any]
) -> NDArray[Any]:
    """The regression stage's ŷ in the core's (Gaussian) space, for physical conditions and 128 noise."""
    x = torch.as_tensor(module.core_conditions(conditions))
    z = torch.as_tensor(np.asarray(noise, np.float32))
    stages = module.stages
    with torch.no_grad():
        parts = [stages.predict(x[i : i + 65_536], z[i : i + 65_536]) for i in range(0, len(x), 65_536)]
    return np.asarray(torch.cat(parts).numpy())


def regression_outputs(
    module: TwoStageGenerator, conditions: NDArray[Any], noise: NDArray[Any]
) -> NDArray[Any]:
    """The regression stage's ŷ in physical units (the served model without its spread draw)."""
    with torch.no_grad():
        gaussian = torch.as_tensor(predict_regression(module, conditions, noise))
        return np.asarray(module.out_transform(gaussian).numpy())


def fit_spread(
    module: TwoStageGenerator,
    conditions: NDArray[Any],
    noise: NDArray[Any],
    outputs: NDArray[Any],
    *,
    weights: NDArray[Any] | None = None,
    steps: int,
    batch_size: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
    desc: str = "spread",
) -> list[list[float]]:
    """Fit the spread chain on the residuals of the (fitted) regression; the losses per stage per 100 steps.

    ``conditions`` and ``outputs`` in physical units, ``noise`` the library's 128 columns the labels were
    made with, ``weights`` per track (:func:`~.fitting.phase_space_weights`) or None. Stage j is fitted on
    the true earlier residuals (teacher forcing), seed ``seed + j``.
    """
    x = module.core_conditions(conditions)
    predicted = predict_regression(module, conditions, noise)
    residual = module.gaussianise_outputs(outputs) - predicted
    given = np.hstack([x, predicted]).astype(np.float32)
    chain = module.stages.spread
    chain.set_normalisation(given, residual)
    histories = fit_stages(
        chain, torch.as_tensor(given), torch.as_tensor(residual), weights, steps=steps, batch_size=batch_size,
        lr=lr, seed=seed, desc=desc,
    )  # fmt: skip
    module.eval()
    return histories
