"""Autoregressive generators fitted by the energy score: the architecture of the PID models.

Calibration responses are tied together tightly: MuonMuLL and MuonBgLL are two functions of one hit
distance, the four RICH DLLs share each radiator's photon counts, the ProbNN follow the combined DLLs.
One network that draws every output at once from shared noise spreads them around such relations, and a
classifier sees it (two-sample AUC 0.70 for rich and for muon). The chain rule
``p(y | c) = Π_j p(y_j | c, y_<j)`` turns the fit into one-dimensional conditionals instead:
:class:`ChainedGenerator` holds one small :class:`PartialQuantileGenerator` per output, conditioned on the
conditions and on the outputs before it, each with its own slice of the noise. :func:`fit_chained` fits
every stage on the sample's own earlier outputs (teacher forcing, which the chain rule makes exact) by the
weighted energy score (:func:`fit_energy_score`; in one dimension it is the CRPS), so a relation that is
deterministic comes out deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm.auto import tqdm

from .common import MonotonePiecewiseLinear, QuantileResidualGenerator, restore_quantile_layers


class PartialQuantileGenerator(QuantileResidualGenerator):
    """:class:`QuantileResidualGenerator` whose ``passthrough`` outputs skip the quantile transform.

    The global PID's centred ProbNN logits reach ±16; an inverse quantile map on them (steep float32
    segments) adds rounding that the softmax passes on, up to the 1e-5 conversion-fidelity budget
    between PyTorch and ONNX Runtime. Those columns are only standardised (the core's
    ``out_mean``/``out_scale``), which is exact to float32 rounding.
    """

    def __init__(self, *args: Any, passthrough: Sequence[int] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passthrough = tuple(int(j) for j in passthrough)

    def fit_transforms(self, conditions: NDArray[Any], outputs: NDArray[Any]) -> None:
        """Fit the transforms, then replace the passthrough columns' output maps by the identity."""
        super().fit_transforms(conditions, outputs)
        if not self.passthrough:
            return
        inverse_x: list[NDArray[Any] | None] = []
        inverse_y: list[NDArray[Any] | None] = []
        forward = self.forward_maps()
        for j, (x, u) in enumerate(forward):
            inverse_x.append(None if j in self.passthrough else u)
            inverse_y.append(None if j in self.passthrough else x)
            if j in self.passthrough:
                forward[j] = (x, x)
        self.out_transform = MonotonePiecewiseLinear(inverse_x, inverse_y)
        self.core.set_normalisation(self.core_conditions(conditions), self.gaussianise_outputs(outputs))

    def extra_state(self) -> dict[str, Any]:
        """Constructor arguments (adds the passthrough output columns)."""
        return {**super().extra_state(), "passthrough": list(self.passthrough)}


def fit_energy_score(
    module: QuantileResidualGenerator,
    conditions: NDArray[Any],
    outputs: NDArray[Any],
    weights: NDArray[Any] | None = None,
    *,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 2e-3,
    seed: int = 0,
    desc: str = "energy score",
) -> list[float]:
    """Fit ``module`` (transforms fitted here) by the weighted energy score; returns the loss per 100 steps.

    ``conditions`` and ``outputs`` in physical units; ``weights`` per row (sWeights, negative allowed),
    None for unit weights. Adam with a one-cycle learning rate; m = 2 noise draws per row.
    """
    module.fit_transforms(conditions, outputs)
    core = module.core
    x = torch.as_tensor(module.core_conditions(conditions))
    y = torch.as_tensor(module.gaussianise_outputs(outputs))
    y = (y - core.out_mean) / core.out_scale
    w = torch.ones(len(x)) if weights is None else torch.as_tensor(np.asarray(weights, np.float32))
    w = w / w.mean()
    gen = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(core.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    history: list[float] = []
    running = 0.0
    core.train()
    for step in tqdm(range(steps), desc=desc, leave=False, mininterval=5.0):
        idx = torch.randint(len(x), (batch_size,), generator=gen)
        xb, yb, wb = x[idx], y[idx], w[idx]
        noise = torch.randn((2 * batch_size, core.noise_dim), generator=gen)
        pred = (core(xb.repeat(2, 1), noise) - core.out_mean) / core.out_scale
        p1, p2 = pred[:batch_size], pred[batch_size:]
        dist: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
        dist = lambda a, b: torch.sqrt(((a - b) ** 2).sum(dim=1) + 1e-8)  # noqa: E731
        score = 0.5 * (dist(p1, yb) + dist(p2, yb)) - 0.5 * dist(p1, p2)
        loss = (wb * score).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
        optimiser.step()
        schedule.step()
        running += float(loss.detach())
        if (step + 1) % 100 == 0:
            history.append(running / 100)
            running = 0.0
    core.eval()
    module.eval()
    return history


class ChainedGenerator(nn.Module):
    """``n_outputs`` one-output generators in a chain: stage j draws output j from (conditions, outputs < j).

    Stage j gets noise columns ``[j k, (j + 1) k)`` with ``k = noise_dim // n_outputs`` (independent noise
    per stage, as the chain rule needs); the outputs it conditions on are quantile-transformed like the
    continuous conditions. ``passthrough`` outputs skip the output quantile map (see
    :class:`PartialQuantileGenerator`).
    """

    def __init__(
        self,
        n_conditions: int,
        noise_dim: int,
        n_outputs: int,
        *,
        width: int = 64,
        n_residual: int = 3,
        continuous: Sequence[int] = (),
        n_knots: int = 201,
        passthrough: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if n_outputs < 1 or noise_dim < n_outputs:
            raise ValueError(
                f"need 1 <= n_outputs <= noise_dim, got n_outputs={n_outputs}, noise_dim={noise_dim}"
            )
        self.n_conditions, self.noise_dim, self.n_outputs = n_conditions, noise_dim, n_outputs
        self.stage_noise = noise_dim // n_outputs
        self.continuous = tuple(int(i) for i in continuous)
        self.passthrough = tuple(int(j) for j in passthrough)
        self.stages = nn.ModuleList(
            PartialQuantileGenerator(
                n_conditions + j,
                self.stage_noise,
                1,
                width=width,
                n_residual=n_residual,
                continuous=(*self.continuous, *range(n_conditions, n_conditions + j)),
                n_knots=n_knots,
                passthrough=(0,) if j in self.passthrough else (),
            )
            for j in range(n_outputs)
        )

    @property
    def cond_transform(self) -> MonotonePiecewiseLinear:
        """The quantile transform of the chain's own conditions (the first stage's)."""
        first: PartialQuantileGenerator = self.stages[0]  # type: ignore[assignment]
        return first.cond_transform

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Outputs in physical units, drawn stage by stage (conditions in physical units, N(0, 1) noise)."""
        outputs: list[torch.Tensor] = []
        k = self.stage_noise
        for j, stage in enumerate(self.stages):
            outputs.append(stage(torch.cat([conditions, *outputs], dim=1), noise[:, j * k : (j + 1) * k]))
        return torch.cat(outputs, dim=1)

    def extra_state(self) -> dict[str, Any]:
        """Constructor arguments, for rebuilding the chain from a state_dict (``chained`` marks the class)."""
        first: PartialQuantileGenerator = self.stages[0]  # type: ignore[assignment]
        return {
            "chained": True,
            "n_conditions": self.n_conditions,
            "noise_dim": self.noise_dim,
            "n_outputs": self.n_outputs,
            "width": first.core.inp.out_features,
            "n_residual": len(first.core.blocks),
            "continuous": list(self.continuous),
            "n_knots": first.n_knots,
            "passthrough": list(self.passthrough),
        }

    def restore_layers(self, state: dict[str, torch.Tensor], *, prefix: str = "") -> None:
        """Give every stage's quantile layers the buffer shapes of a saved state, so it can be loaded."""
        for j, stage in enumerate(self.stages):
            restore_quantile_layers(stage, state, prefix=f"{prefix}stages.{j}.")  # type: ignore[arg-type]


def fit_chained(
    chain: ChainedGenerator,
    conditions: NDArray[Any],
    outputs: NDArray[Any],
    weights: NDArray[Any] | None = None,
    *,
    steps: int = 3000,
    batch_size: int = 1024,
    lr: float = 2e-3,
    seed: int = 0,
    desc: str = "chain",
) -> list[list[float]]:
    """Fit each stage on the sample's true earlier outputs; returns each stage's loss per 100 steps.

    Arguments as :func:`fit_energy_score` (``steps`` per stage); stage j uses seed ``seed + j``.
    """
    histories: list[list[float]] = []
    for j, stage in enumerate(chain.stages):
        histories.append(
            fit_energy_score(
                stage,
                np.hstack([conditions, outputs[:, :j]]),
                outputs[:, j : j + 1],
                weights,
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                seed=seed + j,
                desc=f"{desc} {j + 1}/{chain.n_outputs}",
            )
        )
    chain.eval()
    return histories
