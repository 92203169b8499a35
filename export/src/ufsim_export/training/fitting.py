"""Fitting a generator's core to labels it must reproduce: balancing weights, Adam, L-BFGS refinement."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm.auto import tqdm


def phase_space_weights(
    log10p: NDArray[Any], eta: NDArray[Any], *, exponent: float, bins: int = 24, cap: float = 10.0
) -> NDArray[Any]:
    """Per-track weights (ρ̄ / ρ)^exponent, mean 1, from the tracks' density ρ in a (log10 p, η) histogram.

    The spread chain's loss is an average over tracks, so sparse corners of (p, η) (high η at low p) get
    little of its capacity; ``exponent`` 0 gives unit weights, 1 a flat (p, η) distribution. Each
    weight is capped at ``cap`` times the mean, so a few tracks cannot dominate a batch.
    """
    log10p, eta = np.asarray(log10p, np.float64), np.asarray(eta, np.float64)
    counts, p_edges, eta_edges = np.histogram2d(log10p, eta, bins=bins)
    density = counts[np.digitize(log10p, p_edges[1:-1]), np.digitize(eta, eta_edges[1:-1])]
    weights = (density.mean() / density) ** exponent
    for _ in range(20):  # cap, renormalise, until the cap holds after normalisation
        weights = np.minimum(weights / weights.mean(), cap)
    return np.asarray(weights / weights.mean())


def effective_rows(weights: NDArray[Any]) -> int:
    """Kish's effective sample size (Σw)² / Σw² of weighted rows: how many unit-weight rows they are worth."""
    weights = np.asarray(weights, np.float64)
    return round(float(weights.sum() ** 2 / (weights**2).sum()))


@dataclass
class FitHistory:
    """Per-epoch losses of a generator fit (mean squared error in the core's output space)."""

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    seconds: float = 0.0


def output_scale(core: nn.Module, n_outputs: int) -> torch.Tensor:
    """The core's output standardisation (``out_scale``), or ones where it has none."""
    scale: torch.Tensor = getattr(core, "out_scale", torch.ones(n_outputs))
    return scale


def fit_deterministic(
    core: nn.Module,
    conditions: NDArray[Any],
    noise: NDArray[Any],
    targets: NDArray[Any],
    *,
    val: tuple[NDArray[Any], NDArray[Any], NDArray[Any]] | None = None,
    epochs: int = 30,
    batch_size: int = 512,
    lr: float = 2e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    loss: str = "mse",
    desc: str = "fit",
) -> FitHistory:
    """Fit ``core(conditions, noise) ≈ targets`` (all already in the core's spaces): Adam, one-cycle LR.

    When every label was produced from known noise, the reference generator is a deterministic
    function of (conditions, noise); matching it for the library's N(0, 1) noise makes the output
    distribution right for any N(0, 1) noise. Targets are standardised with the core's buffers
    (``out_mean``/``out_scale``) when it has them, so every output weighs the same.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(conditions, dtype=torch.float32)
    z = torch.as_tensor(noise, dtype=torch.float32)
    y = torch.as_tensor(targets, dtype=torch.float32)
    mean = getattr(core, "out_mean", torch.zeros(y.shape[1]))
    scale = output_scale(core, y.shape[1])
    criterion = nn.MSELoss() if loss == "mse" else nn.SmoothL1Loss(beta=0.1)
    n = len(x)
    steps_per_epoch = max(1, n // batch_size)
    optimiser = torch.optim.Adam(core.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    history = FitHistory()
    start = time.perf_counter()

    bar = tqdm(range(epochs), desc=desc, unit="epoch", leave=False)
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        running = 0.0
        core.train()
        for step in range(steps_per_epoch):
            idx = perm[step * batch_size : (step + 1) * batch_size]
            pred = core(x[idx], z[idx])
            batch_loss = criterion((pred - mean) / scale, (y[idx] - mean) / scale)
            optimiser.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimiser.step()
            schedule.step()
            running += float(batch_loss.detach())
        history.train.append(running / steps_per_epoch)
        if val is not None:
            history.val.append(standardised_mse(core, *val))
        shown = f"{history.val[-1]:.4f}" if history.val else "-"
        bar.set_postfix(train=f"{history.train[-1]:.4f}", val=shown)
    core.eval()
    history.seconds = time.perf_counter() - start
    return history


def standardised_mse(
    core: nn.Module, conditions: NDArray[Any], noise: NDArray[Any], targets: NDArray[Any]
) -> float:
    """Mean squared error of ``core`` in its standardised output space (each output weighs the same)."""
    scale = output_scale(core, targets.shape[1])
    x, z, y = (torch.as_tensor(a, dtype=torch.float32) for a in (conditions, noise, targets))
    core.eval()
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(x), 8192):
            total += float(((core(x[i : i + 8192], z[i : i + 8192]) - y[i : i + 8192]) / scale).pow(2).sum())
    return total / (len(x) * y.shape[1])


def _lbfgs_chunk(
    core: nn.Module, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, scale: torch.Tensor, iterations: int
) -> float:
    """``iterations`` full-batch L-BFGS steps on one chunk; returns the chunk's loss before them."""
    optimiser = torch.optim.LBFGS(
        core.parameters(), max_iter=iterations, history_size=30, line_search_fn="strong_wolfe",
        tolerance_grad=0.0, tolerance_change=0.0,
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimiser.zero_grad(set_to_none=True)
        loss: torch.Tensor = ((core(x, z) - y) / scale).pow(2).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    core.train()
    before: torch.Tensor = optimiser.step(closure)  # type: ignore[no-untyped-call]
    return float(before.detach())


def refine_lbfgs(
    core: nn.Module,
    conditions: NDArray[Any],
    noise: NDArray[Any],
    targets: NDArray[Any],
    *,
    val: tuple[NDArray[Any], NDArray[Any], NDArray[Any]],
    chunks: int,
    rows: int = 200_000,
    iterations: int = 15,
    seed: int = 0,
    desc: str = "L-BFGS",
) -> FitHistory:
    """Refine a fitted regression by full-batch L-BFGS, a few iterations on each chunk of unseen rows.

    Adam's minibatch noise leaves the distilled regression on a plateau that curvature-aware full-batch
    steps go below; few iterations per chunk and fresh rows each chunk keep any one chunk from being
    overfitted. The state with the lowest validation loss is kept. ``history.val`` starts with the loss
    before any step; ``history.train`` is each chunk's loss before its steps (on rows not yet refined on
    while the chunks have not wrapped around the sample).
    """
    scale = output_scale(core, targets.shape[1])
    order = np.random.default_rng(seed).permutation(len(conditions))
    history = FitHistory(val=[standardised_mse(core, *val)])
    best = (history.val[0], copy.deepcopy(core.state_dict()))
    start = time.perf_counter()
    bar = tqdm(range(chunks), desc=desc, unit="chunk", leave=False)
    for k in bar:
        first = (k * rows) % len(order)
        idx = order[first : first + rows]
        x, z, y = (torch.as_tensor(a[idx], dtype=torch.float32) for a in (conditions, noise, targets))
        history.train.append(_lbfgs_chunk(core, x, z, y, scale, iterations))
        history.val.append(standardised_mse(core, *val))
        if history.val[-1] < best[0]:
            best = (history.val[-1], copy.deepcopy(core.state_dict()))
        bar.set_postfix(unseen=f"{history.train[-1]:.4f}", val=f"{history.val[-1]:.4f}")
    core.load_state_dict(best[1])
    core.eval()
    history.seconds = time.perf_counter() - start
    return history
