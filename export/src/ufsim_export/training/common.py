"""Helpers shared by the tracking and PID trainings: provenance, splits, generator fits, artifacts.

- provenance: :func:`sha256_files`, :func:`git_commit`, :func:`library_versions`, :func:`write_manifest`;
- reproducibility: :func:`seed_everything` (also pins torch to 2 threads: the machines are shared);
- data: :func:`event_split` (validation split by event, never by particle, so no event straddles it);
- generators: :class:`QuantileResidualGenerator` (Lamarr's preprocessing, quantile transforms of the
  continuous conditions and of every output, built into the network so the ONNX graph takes and
  returns physical units), :func:`fit_deterministic` (fit (conditions, noise) -> outputs when the
  noise of every label is known);
- artifacts: :func:`save_generator`, :func:`save_gbdt` convert with ``ufsim_export.convert``, verify
  with ``ufsim_export.verify`` and write ``<step>.onnx`` (+ the original when small) and the manifest.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
import platform
import random
import subprocess
import time
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.special import ndtr
from torch import nn
from tqdm.auto import tqdm

from ufsim_client.keys import splitmix64

from ..convert import save_model
from ..convert.gbdt import gbdt_to_onnx
from ..convert.generator import generator_to_onnx
from ..convert.verify import VerificationReport, verify_classifier, verify_generator
from ..files import write_bytes, write_text
from ..models import ResidualGenerator

ORIGINAL_MAX_BYTES = 5 * 1024 * 1024
"""Originals (``.pkl``/``.pt``) are committed next to the ONNX only below this size."""
LIBRARIES = (
    "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "lightgbm", "torch", "hummingbird-ml", "onnx",
    "onnxruntime",
)  # fmt: skip
N_THREADS = 2


# ------------------------------------------------------------------------------------------- provenance
def sha256_files(paths: Iterable[Path]) -> str:
    """SHA-256 over the named files' bytes, in sorted path order (names included, so renames count)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of one file's bytes (what ``sha256sum`` prints)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


TRAINING_OUTPUTS = ("export/models", "model_repository", "export/reports")
"""What training and validation write: changes there do not make the code that trains ``-dirty``."""


def git_commit(repo: Path | None = None) -> str:
    """HEAD of this package's repository (``-dirty`` when tracked code differs), or ``unknown``.

    The trained models, the repository and the reports are outputs, not code: one model finishing while
    another trains must not mark the second's provenance dirty.
    """
    cwd = repo or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--",
             *(f":(top,exclude){path}" for path in TRAINING_OUTPUTS)],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries a model depends on (``absent`` when not installed)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as indented JSON (numpy scalars and arrays converted), ending with a newline."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return write_text(path, json.dumps(manifest, indent=2, default=default) + "\n")


def set_training_seconds(path: Path, seconds: float) -> Path:
    """Record the wall time a step's training took in the manifest beside ``path`` (``<step>.json``)."""
    manifest_path = Path(path).with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["training_seconds"] = round(seconds, 1)
    return write_manifest(manifest_path, manifest)


# ------------------------------------------------------------------------------------------- reproducibility
def seed_everything(seed: int, *, threads: int = N_THREADS) -> np.random.Generator:
    """Seed Python, numpy and torch, make torch deterministic on ``threads`` threads; return a numpy RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def event_split(
    source: NDArray[Any], event: NDArray[Any], *, val_fraction: float = 0.2, seed: int = 0
) -> NDArray[Any]:
    """Boolean mask of validation rows: whole (source, event) groups, chosen by a seeded hash.

    Event -1 (the particle gun, one particle per "event") is split per row by its position instead.
    The same (source, event) lands on the same side in every file, so an event's particles and its
    reconstructed tracks are on the same side.
    """
    source = np.asarray(source).astype(str)
    event = np.asarray(event, np.int64)
    names, codes = np.unique(source, return_inverse=True)
    source_ids = np.array([zlib.crc32(n.encode()) for n in names], np.uint64)[codes]
    index = np.where(event == -1, np.arange(len(event), dtype=np.int64) | (1 << 40), event)
    key = (
        (source_ids << np.uint64(42)) ^ index.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    )
    return (splitmix64(key) >> np.uint64(11)).astype(np.float64) * 2.0**-53 < val_fraction


# ------------------------------------------------------------------------------------------- generators
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
    its interface (the PID chains, :class:`~.chained.ChainedCore`).
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


# ------------------------------------------------------------------------------------------- artifacts
def save_original(module: nn.Module, path: Path) -> str | None:
    """Write ``module`` (class, constructor arguments, state_dict) to ``path``; its name, None if too big."""
    return _save_original(path, _torch_bytes(module))


def _save_original(path: Path, payload: bytes) -> str | None:
    if len(payload) >= ORIGINAL_MAX_BYTES:
        path.unlink(missing_ok=True)
        return None
    write_bytes(path, payload)
    return path.name


def save_generator(
    module: nn.Module,
    out_dir: Path,
    step: str,
    *,
    conditions: NDArray[Any],
    noise_dim: int,
    manifest: dict[str, Any],
    seed: int = 0,
    rtol: float = 1e-5,
    tail_sigmas: float = 1.0,
) -> tuple[Path, VerificationReport]:
    """Convert with ``generator_to_onnx``, verify to ``rtol`` (of ``max(|y|, tail_sigmas σ)``), and write.

    Verified on ``conditions`` (>= 10k rows) with fresh N(0, 1) noise; writes ``<step>.onnx``,
    ``<step>.pt`` (state_dict, when < 5 MB) and ``<step>.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    module.eval()
    n_conditions = conditions.shape[1]
    onnx_model = generator_to_onnx(module, n_conditions, noise_dim)
    noise = np.random.default_rng(seed + 7).standard_normal((len(conditions), noise_dim)).astype(np.float32)
    report = verify_generator(
        module, onnx_model, conditions, noise, name=step, rtol=rtol, tail_sigmas=tail_sigmas
    )
    save_model(onnx_model, out_dir / f"{step}.onnx")
    original = save_original(module, out_dir / f"{step}.pt")
    manifest = {
        **manifest,
        "step": step,
        "kind": "generator",
        "noise_dim": noise_dim,
        "original": original,
        "conversion_fidelity": {"metric": report.kind, "max_error": report.max_error, "rows": report.n_rows},
    }
    write_manifest(out_dir / f"{step}.json", manifest)
    return out_dir / f"{step}.onnx", report


def _torch_bytes(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    extra_state = getattr(module, "extra_state", None)
    extra = extra_state() if callable(extra_state) else {}
    torch.save({"class": type(module).__name__, "kwargs": extra, "state_dict": module.state_dict()}, buffer)
    return buffer.getvalue()


def save_gbdt(
    model: Any,
    out_dir: Path,
    step: str,
    *,
    features: NDArray[Any],
    manifest: dict[str, Any],
    implementation: str = "native",
) -> tuple[Path, VerificationReport]:
    """Convert with ``gbdt_to_onnx`` (default ONNX-ML TreeEnsemble, fastest on CPU), verify, and write.

    Verified on ``features`` (>= 10k rows); writes ``<step>.onnx``, ``<step>.pkl`` (when < 5 MB) and
    ``<step>.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    features = np.ascontiguousarray(features, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        onnx_model = gbdt_to_onnx(model, features[:256], implementation=implementation)
        report = verify_classifier(model, onnx_model, features, name=step)
    save_model(onnx_model, out_dir / f"{step}.onnx")
    original = _save_original(out_dir / f"{step}.pkl", pickle.dumps(model))
    manifest = {
        **manifest,
        "step": step,
        "kind": "gbdt",
        "n_classes": len(model.classes_),
        "implementation": implementation,
        "original": original,
        "conversion_fidelity": {"metric": report.kind, "max_error": report.max_error, "rows": report.n_rows},
    }
    write_manifest(out_dir / f"{step}.json", manifest)
    return out_dir / f"{step}.onnx", report


def restore_quantile_layers(module: QuantileResidualGenerator, state: dict[str, torch.Tensor], *,
                            prefix: str = "") -> None:  # fmt: skip
    """Give ``module``'s quantile layers the buffer shapes of a saved state, so it can be loaded."""
    for name in ("cond_transform", "out_transform"):
        lo = state[f"{prefix}{name}.lo"]
        layer = MonotonePiecewiseLinear([None] * lo.shape[0], [None] * lo.shape[0])
        for buffer in ("lo", "hi", "slope", "mid", "offset", "base", "mapped"):
            setattr(layer, buffer, torch.zeros_like(state[f"{prefix}{name}.{buffer}"]))
        setattr(module, name, layer)
