"""Lamarr's quantile preprocessing inside the network, so the exported ONNX graph speaks physical units.

:class:`MonotonePiecewiseLinear` is the per-column quantile map (and its inverse);
:class:`QuantileResidualGenerator` wraps a generator core with the conditions' and outputs' maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.special import ndtr
from torch import nn

from .generators import ResidualGenerator


class MonotonePiecewiseLinear(nn.Module):
    """Per-column monotone piecewise-linear map y = f_c(x_c) through knots (x_k, y_k), flat outside.

    Evaluated as ``y(lo_k) + slope_k * (x - lo_k)`` on the segment k found by a binary search, or by one
    floor where the segments are evenly spaced (gathers and comparisons only): a few operations per value
    instead of one per knot, and no sum over segments, so ONNX Runtime and PyTorch round alike.
    ``y(lo_k)`` is computed once in float64 from the stored knots. Only mapped columns are computed;
    the others pass through unchanged.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    slope: torch.Tensor
    mid: torch.Tensor
    offset: torch.Tensor
    base: torch.Tensor
    mapped: torch.Tensor
    cols: torch.Tensor
    others: torch.Tensor
    order: torch.Tensor
    start: torch.Tensor
    lo_flat: torch.Tensor
    slope_flat: torch.Tensor
    x_min: torch.Tensor
    x_max: torch.Tensor
    inv_width: torch.Tensor
    col_offset: torch.Tensor

    def __init__(self, knots_x: list[NDArray[Any] | None], knots_y: list[NDArray[Any] | None]) -> None:
        super().__init__()
        if len(knots_x) != len(knots_y):
            raise ValueError("knots_x and knots_y need one entry per column")
        n_cols = len(knots_x)
        mapped = [i for i, k in enumerate(knots_x) if k is not None]
        n_knots = max((len(k) for k in knots_x if k is not None), default=2)
        lo = np.zeros((n_cols, n_knots - 1), np.float64)
        hi = np.zeros((n_cols, n_knots - 1), np.float64)
        slope = np.zeros((n_cols, n_knots - 1), np.float64)
        mid = np.zeros(n_cols, np.float64)
        offset = np.zeros(n_cols, np.float64)
        for i in mapped:
            kx, ky = np.asarray(knots_x[i], np.float64), np.asarray(knots_y[i], np.float64)
            if kx.ndim != 1 or kx.shape != ky.shape or len(kx) < 2 or np.any(np.diff(kx) <= 0):
                raise ValueError(f"column {i}: knots_x must be strictly increasing, same length as knots_y")
            # pad with zero-width segments at the top end so every column has n_knots - 1 segments
            pad = n_knots - len(kx)
            kx = np.concatenate([kx, np.full(pad, kx[-1])])
            ky = np.concatenate([ky, np.full(pad, ky[-1])])
            m = len(kx) // 2
            lo[i], hi[i] = kx[:-1], kx[1:]
            width = np.diff(kx)
            slope[i] = np.divide(np.diff(ky), width, out=np.zeros_like(width), where=width > 0)
            mid[i], offset[i] = kx[m], ky[m]
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("hi", torch.tensor(hi, dtype=torch.float32))
        self.register_buffer("slope", torch.tensor(slope, dtype=torch.float32))
        self.register_buffer("mid", torch.tensor(mid, dtype=torch.float32))
        self.register_buffer("offset", torch.tensor(offset, dtype=torch.float32))
        self.register_buffer("base", torch.minimum(torch.maximum(self.mid[:, None], self.lo), self.hi))
        self.register_buffer("mapped", torch.tensor([k is not None for k in knots_x]))
        self._derive()
        # loading a saved state replaces the knots, so the derived tables follow (torch's hook API is untyped)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._derive())  # type: ignore[no-untyped-call]

    def _derive(self) -> None:
        """Tables over the mapped columns only, from the stored knots (segment starts in float64).

        Where every mapped column's segments have one width (the inverse maps: evenly spaced Gaussian
        knots), the segment is found by one floor instead of a binary search.
        """
        lo, hi = self.lo.double(), self.hi.double()
        slope, base = self.slope.double(), self.base.double()
        inside = torch.minimum(torch.maximum(lo[:, :, None], lo[:, None, :]), hi[:, None, :])
        start = self.offset.double()[:, None] + ((inside - base[:, None, :]) * slope[:, None, :]).sum(-1)
        cols = torch.nonzero(self.mapped).flatten()
        others = torch.nonzero(~self.mapped).flatten()
        n_segments = self.lo.shape[1]
        widths = (hi - lo)[cols]
        self._uniform = bool(
            len(cols) and torch.all(widths > 0) and torch.allclose(widths, widths[:, :1], rtol=1e-4)
        )
        for name, value in (
            ("cols", cols),
            ("others", others),
            ("order", torch.argsort(torch.cat([cols, others]))),
            ("start", start[cols].float().flatten()),
            ("lo_flat", self.lo[cols].flatten()),
            ("slope_flat", self.slope[cols].flatten()),
            ("x_min", self.lo[cols, 0].clone()),
            ("x_max", self.hi[cols, -1].clone()),
            ("inv_width", (1.0 / widths[:, 0]).float() if self._uniform else torch.zeros(len(cols))),
            ("col_offset", torch.arange(len(cols), dtype=torch.int64) * n_segments),
        ):
            self.register_buffer(name, value, persistent=False)
        self._steps = [1 << j for j in reversed(range(max(n_segments - 1, 0).bit_length()))]
        self._n_mapped, self._n_others, self._last = len(cols), len(others), n_segments - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map each column; unmapped columns are returned as they are."""
        if not self._n_mapped:
            return x
        last = self._last
        xc = torch.minimum(torch.maximum(x[:, self.cols], self.x_min), self.x_max)
        if self._uniform:
            idx = torch.clamp(torch.floor((xc - self.x_min) * self.inv_width).to(torch.int64), 0, last)
        else:
            idx = torch.zeros_like(xc, dtype=torch.int64)
            for step in self._steps:
                candidate = torch.clamp(idx + step, max=last)
                idx = torch.where(self.lo_flat[candidate + self.col_offset] <= xc, candidate, idx)
        flat = idx + self.col_offset
        y = self.start[flat] + self.slope_flat[flat] * (xc - self.lo_flat[flat])
        if not self._n_others:
            return y
        return torch.cat([y, x[:, self.others]], dim=1)[:, self.order]


def quantile_knots(
    values: NDArray[Any], *, n_knots: int = 201, u_max: float = 5.0
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Knots (x, u) of a quantile transform to N(0, 1).

    u is evenly spaced in [-u_max, u_max], x the matching empirical quantiles; tied x are merged
    (their mean u), so x is strictly increasing.
    """
    u = np.linspace(-u_max, u_max, n_knots)
    levels = ndtr(u)
    x = np.quantile(np.asarray(values, np.float64), levels)
    x_unique, inverse = np.unique(x, return_inverse=True)
    u_unique = np.bincount(inverse, weights=u) / np.bincount(inverse)
    if len(x_unique) < 2:
        x_unique = np.array([x_unique[0] - 0.5, x_unique[0] + 0.5])
        u_unique = np.array([0.0, 0.0])
    return x_unique, u_unique


class QuantileResidualGenerator(nn.Module):
    """Lamarr's generator with its preprocessing inside, so the exported ONNX speaks physical units.

    It quantile-transforms the continuous conditions, runs the residual tanh MLP
    (:class:`ResidualGenerator`) in Gaussianised output space, and maps the result back through each
    output's inverse quantile transform (monotone piecewise-linear).

    Lamarr trains its generators on QuantileTransformer(normal) inputs and outputs (lamarr-reference
    §1.1); keeping the transforms in the module makes the exported ONNX take and return physical units.
    ``core`` replaces the default network (``width`` units, ``n_residual`` blocks) by another module with
    its interface (the PID chains, :class:`~ufsim_export.training.chained.ChainedCore`).
    """

    def __init__(
        self,
        n_conditions: int,
        noise_dim: int,
        n_outputs: int,
        *,
        width: int = 128,
        n_residual: int = 10,
        continuous: Sequence[int] = (),
        n_knots: int = 201,
        core: ResidualGenerator | None = None,
    ) -> None:
        super().__init__()
        self.n_conditions, self.noise_dim, self.n_outputs = n_conditions, noise_dim, n_outputs
        self.width, self.n_residual = width, n_residual
        self.continuous = tuple(int(i) for i in continuous)
        self.n_knots = n_knots
        self.core = (
            core
            if core is not None
            else ResidualGenerator(n_conditions, noise_dim, n_outputs, width=width, n_residual=n_residual)
        )
        empty: list[NDArray[Any] | None] = [None] * n_conditions
        self.cond_transform = MonotonePiecewiseLinear(empty, empty)
        self.out_transform = MonotonePiecewiseLinear([None] * n_outputs, [None] * n_outputs)
        # knots (x, u) of each output's forward map: set by fit_transforms, else derived on first use
        self._forward_out: list[tuple[NDArray[Any], NDArray[Any]]] | None = None

    def fit_transforms(self, conditions: NDArray[Any], outputs: NDArray[Any]) -> None:
        """Fit the quantile transforms (and the core's standardisation) on the training sample."""
        cx: list[NDArray[Any] | None] = [None] * self.n_conditions
        cu: list[NDArray[Any] | None] = [None] * self.n_conditions
        for i in self.continuous:
            cx[i], cu[i] = quantile_knots(conditions[:, i], n_knots=self.n_knots)
        knots = [quantile_knots(outputs[:, j], n_knots=self.n_knots) for j in range(self.n_outputs)]
        ox, ou = [k[0] for k in knots], [k[1] for k in knots]
        self.cond_transform = MonotonePiecewiseLinear(cx, cu)
        # inverse transform: Gaussian u -> physical x
        self.out_transform = MonotonePiecewiseLinear(list(ou), list(ox))
        self._forward_out = [(np.asarray(x), np.asarray(u)) for x, u in zip(ox, ou, strict=True)]
        self.core.set_normalisation(self.core_conditions(conditions), self.gaussianise_outputs(outputs))

    def forward_maps(self) -> list[tuple[NDArray[Any], NDArray[Any]]]:
        """Knots (x, u) of each output's forward map: the fitted ones, or read back from a loaded module."""
        if self._forward_out is None:
            self._forward_out = self._forward_map_from_inverse()
        return self._forward_out

    def _forward_map_from_inverse(self) -> list[tuple[NDArray[Any], NDArray[Any]]]:
        """The forward output maps (physical -> Gaussian) read back from the inverse layer's knots.

        A loaded module has only the inverse layer; a warm start needs the forward map for its targets.
        Unmapped outputs get the identity.
        """
        layer, forward = self.out_transform, []
        everything = np.array([-1.0, 1.0]) * float(np.finfo(np.float32).max)
        for j in range(self.n_outputs):
            if not bool(layer.mapped[j]):
                forward.append((everything, everything))
                continue
            u = np.unique(np.append(layer.lo[j].double().numpy(), float(layer.hi[j, -1])))
            grid = torch.zeros(len(u), self.n_outputs)
            grid[:, j] = torch.as_tensor(u, dtype=torch.float32)
            with torch.no_grad():
                forward.append((layer(grid)[:, j].double().numpy(), u))
        return forward

    def gaussianise_outputs(self, outputs: NDArray[Any]) -> NDArray[Any]:
        """Physical outputs -> Gaussian space (the training targets of the core), float32."""
        gaussian: NDArray[np.float32] = np.stack(
            [np.interp(outputs[:, j], x, u) for j, (x, u) in enumerate(self.forward_maps())], axis=1
        ).astype(np.float32)
        return gaussian

    def core_conditions(self, conditions: NDArray[Any]) -> NDArray[Any]:
        """Physical conditions -> the core's input space (quantile-transformed), float32.

        In chunks: the piecewise-linear layer holds [rows, columns, knots] intermediates.
        """
        x = torch.as_tensor(np.asarray(conditions), dtype=torch.float32)
        with torch.no_grad():
            parts = [self.encode_conditions(x[i : i + 16384]) for i in range(0, len(x), 16384)]
        return np.asarray(torch.cat(parts).numpy() if parts else x.numpy())

    def encode_conditions(self, conditions: torch.Tensor) -> torch.Tensor:
        """Physical conditions -> the core's inputs: the quantile transform (subclasses may add features)."""
        x: torch.Tensor = self.cond_transform(conditions)
        return x

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Outputs in physical units for conditions in physical units and N(0, 1) noise."""
        y: torch.Tensor = self.out_transform(self.core(self.encode_conditions(conditions), noise))
        return y

    def extra_state(self) -> dict[str, Any]:
        """Constructor arguments, for rebuilding the module from a state_dict."""
        return {
            "n_conditions": self.n_conditions, "noise_dim": self.noise_dim, "n_outputs": self.n_outputs,
            "width": self.width, "n_residual": self.n_residual,
            "continuous": list(self.continuous), "n_knots": self.n_knots,
        }  # fmt: skip


def restore_quantile_layers(module: QuantileResidualGenerator, state: dict[str, torch.Tensor], *,
                            prefix: str = "") -> None:  # fmt: skip
    """Give ``module``'s quantile layers the buffer shapes of a saved state, so it can be loaded."""
    for name in ("cond_transform", "out_transform"):
        lo = state[f"{prefix}{name}.lo"]
        layer = MonotonePiecewiseLinear([None] * lo.shape[0], [None] * lo.shape[0])
        for buffer in ("lo", "hi", "slope", "mid", "offset", "base", "mapped"):
            setattr(layer, buffer, torch.zeros_like(state[f"{prefix}{name}.{buffer}"]))
        setattr(module, name, layer)
