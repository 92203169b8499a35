"""Autoregressive generators fitted by the energy score: the architecture of the PID models.

Calibration responses are tied together tightly: MuonMuLL and MuonBgLL are two functions of one hit
distance, the four RICH DLLs share each radiator's photon counts, the ProbNN follow the combined DLLs.
One network that draws every output at once from shared noise spreads them around such relations, and a
classifier sees it (two-sample AUC 0.70 for rich and for muon). The chain rule
``p(y | c) = Π_j p(y_j | c, y_<j)`` turns the fit into one-dimensional conditionals instead:
:class:`ChainedGenerator` runs one small residual network per output (:class:`ChainedCore`), conditioned on
the conditions and on the outputs before it, each with its own slice of the noise. The quantile layers
wrap the whole chain, so the conditions are transformed once, earlier outputs are passed on in the
Gaussian space they are drawn in, and the inverse maps run once at the end. :func:`fit_chained` fits every
stage on the sample's own earlier outputs (teacher forcing, which the chain rule makes exact) by the
weighted energy score (:func:`fit_energy_score`; in one dimension it is the CRPS), so a relation that is
deterministic comes out deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm.auto import tqdm

from ..models.generators import ResidualGenerator
from ..models.quantile import MonotonePiecewiseLinear, QuantileResidualGenerator


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
    x, y = _core_sample(module, conditions, outputs)
    history = _fit_core(
        module.core, x, y, weights, steps=steps, batch_size=batch_size, lr=lr, seed=seed, desc=desc
    )
    module.eval()
    return history


def _core_sample(
    module: QuantileResidualGenerator, conditions: NDArray[Any], outputs: NDArray[Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``module``'s quantile transforms on the sample and return it in the core's space."""
    module.fit_transforms(conditions, outputs)
    x = torch.as_tensor(module.core_conditions(conditions))
    y = torch.as_tensor(module.gaussianise_outputs(outputs))
    return x, y


def _fit_core(
    core: ResidualGenerator | ChainedCore,
    x: torch.Tensor,
    y: torch.Tensor,
    weights: NDArray[Any] | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str,
) -> list[float]:
    """The energy-score loop on a core: ``core(x, noise)`` against ``y``, both in the core's space."""
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
    return history


class ChainedCore(nn.Module):
    """The chain in the core's space: stage j maps (conditions, outputs < j, its noise slice) to output j.

    Stage j is a one-output :class:`ResidualGenerator` and gets noise columns ``[j k, (j + 1) k)`` with
    ``k = noise_dim // n_outputs`` (independent noise per stage, as the chain rule needs). Same interface
    as :class:`ResidualGenerator`, so a quantile generator carries it in place of one network.
    """

    out_mean: torch.Tensor
    out_scale: torch.Tensor

    def __init__(
        self, n_conditions: int, noise_dim: int, n_outputs: int, *, width: int, n_residual: int
    ) -> None:
        super().__init__()
        if n_outputs < 1 or noise_dim < n_outputs:
            raise ValueError(
                f"need 1 <= n_outputs <= noise_dim, got n_outputs={n_outputs}, noise_dim={noise_dim}"
            )
        self.n_conditions, self.noise_dim, self.n_outputs = n_conditions, noise_dim, n_outputs
        self.stage_noise = noise_dim // n_outputs
        self.stages = nn.ModuleList(
            ResidualGenerator(n_conditions + j, self.stage_noise, 1, width=width, n_residual=n_residual)
            for j in range(n_outputs)
        )
        self.register_buffer("out_mean", torch.zeros(n_outputs))
        self.register_buffer("out_scale", torch.ones(n_outputs))

    def networks(self) -> list[ResidualGenerator]:
        """The stages, in chain order."""
        return [cast(ResidualGenerator, stage) for stage in self.stages]

    def set_normalisation(
        self, conditions: NDArray[Any], outputs: NDArray[Any], *, min_scale: float = 1e-6
    ) -> None:
        """Standardise each stage's inputs (conditions and earlier outputs) and output on the sample."""
        stages = self.networks()
        for j, stage in enumerate(stages):
            stage.set_normalisation(
                np.hstack([conditions, outputs[:, :j]]), outputs[:, j : j + 1], min_scale=min_scale
            )
        self.out_mean.copy_(torch.cat([stage.out_mean for stage in stages]))
        self.out_scale.copy_(torch.cat([stage.out_scale for stage in stages]))

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Outputs drawn stage by stage, each from the conditions, the outputs before it and its noise."""
        outputs: list[torch.Tensor] = []
        k = self.stage_noise
        for j, stage in enumerate(self.stages):
            outputs.append(stage(torch.cat([conditions, *outputs], dim=1), noise[:, j * k : (j + 1) * k]))
        return torch.cat(outputs, dim=1)


class ThresholdYields(nn.Module):
    """Cherenkov photon-yield fractions ``max(0, 1 - (p_k / p)²)`` of threshold momenta ``p_k``, from log10 p.

    ``sin²θ_c / sin²θ_max`` of a particle above the threshold ``p_k = m / sqrt(n² - 1)`` of its radiator
    and mass hypothesis, zero below: the RICH response changes character at each threshold (no photons,
    a hypothesis that predicts none), a kink in p that a smooth network of the quantile-transformed
    momentum rounds off. Given as extra core inputs, the kinks come for free.
    """

    log10_thresholds: torch.Tensor

    def __init__(self, thresholds_mev: Sequence[float], log10_p_column: int = 0) -> None:
        super().__init__()
        self.thresholds_mev = tuple(float(t) for t in thresholds_mev)
        self.log10_p_column = int(log10_p_column)
        self.register_buffer(
            "log10_thresholds", torch.log10(torch.tensor(self.thresholds_mev, dtype=torch.float64)).float()
        )

    def forward(self, conditions: torch.Tensor) -> torch.Tensor:
        """[N, k] yield fractions of each row's momentum (log10 p in column ``log10_p_column``)."""
        log10_p = conditions[:, self.log10_p_column : self.log10_p_column + 1]
        ratio2 = torch.exp((self.log10_thresholds - log10_p) * (2.0 * float(np.log(10.0))))
        return torch.relu(1.0 - ratio2)


class ChainedGenerator(PartialQuantileGenerator):
    """A quantile generator (preprocessing inside, physical units in and out) whose core is a chain.

    ``passthrough`` outputs skip the output quantile map (see :class:`PartialQuantileGenerator`);
    ``thresholds_mev`` appends the Cherenkov yield fractions (:class:`ThresholdYields`) of those threshold
    momenta to the core's inputs, from the log10 p condition in column ``log10_p_column``.
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
        thresholds_mev: Sequence[float] = (),
        log10_p_column: int = 0,
    ) -> None:
        n_core = n_conditions + len(thresholds_mev)
        chain = ChainedCore(n_core, noise_dim, n_outputs, width=width, n_residual=n_residual)
        super().__init__(
            n_conditions, noise_dim, n_outputs, width=width, n_residual=n_residual, continuous=continuous,
            n_knots=n_knots, passthrough=passthrough,
            core=chain,  # ChainedCore has the interface of the ResidualGenerator it replaces
        )  # fmt: skip
        self.yields = ThresholdYields(thresholds_mev, log10_p_column) if thresholds_mev else None

    def encode_conditions(self, conditions: torch.Tensor) -> torch.Tensor:
        """The quantile-transformed conditions, then the threshold yield fractions (if any)."""
        x = super().encode_conditions(conditions)
        if self.yields is None:
            return x
        return torch.cat([x, self.yields(conditions)], dim=1)

    def extra_state(self) -> dict[str, Any]:
        """Constructor arguments (``chained`` marks the class for loading)."""
        state = {**super().extra_state(), "chained": True}
        if self.yields is not None:
            state |= {"thresholds_mev": list(self.yields.thresholds_mev),
                      "log10_p_column": self.yields.log10_p_column}  # fmt: skip
        return state


def fit_chained(
    module: ChainedGenerator,
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
    """Fit the transforms, then each stage on the true earlier outputs; the losses per stage per 100 steps.

    Arguments as :func:`fit_energy_score` (``steps`` per stage); stage j uses seed ``seed + j``.
    """
    x, y = _core_sample(module, conditions, outputs)
    histories = fit_stages(
        cast(ChainedCore, module.core), x, y, weights, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
        desc=desc,
    )  # fmt: skip
    module.eval()
    return histories


def fit_stages(
    chain: ChainedCore,
    given: torch.Tensor,
    targets: torch.Tensor,
    weights: NDArray[Any] | None,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    desc: str,
) -> list[list[float]]:
    """Fit each stage of ``chain`` on ``given`` and the true earlier targets (teacher forcing).

    Both in the core's space; stage j uses seed ``seed + j``. Returns the losses per stage per 100 steps.
    """
    return [
        _fit_core(
            stage,
            torch.cat([given, targets[:, :j]], dim=1),
            targets[:, j : j + 1],
            weights,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed + j,
            desc=f"{desc} {j + 1}/{chain.n_outputs}",
        )  # fmt: skip
        for j, stage in enumerate(chain.networks())
    ]
