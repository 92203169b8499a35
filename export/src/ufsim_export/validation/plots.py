"""The report's figures: overlays, efficiency curves, binned W1/σ maps, the served nDoF, fitting histories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..metrics import ETA_EDGES, LOG10P_EDGES


def _plt() -> Any:
    import matplotlib  # optional dependency (extra `train`), and the backend is set before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred with matplotlib, after the backend is set

    return plt


def _save(fig: Any, path: Path) -> None:
    """Lay out, write as a 72 dpi PNG and close ``fig`` (pyplot keeps every open figure otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    _plt().close(fig)


def plot_overlays(
    reference: NDArray[Any], model: NDArray[Any], names: list[str], path: Path, *, title: str
) -> None:
    """Histogram overlays per output (central 99.8 % of the reference, log y), model vs reference."""
    plt = _plt()
    n = len(names)
    cols = 5 if n > 9 else 3
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for j, name in enumerate(names):
        ax = axes.flat[j]
        lo, hi = np.percentile(reference[:, j], [0.1, 99.9])
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        bins = np.linspace(lo, hi, 60)
        ax.hist(reference[:, j], bins=bins, histtype="stepfilled", alpha=0.35, label="reference", color="C0")
        ax.hist(model[:, j], bins=bins, histtype="step", label="model (ONNX)", color="C3")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_efficiency_curves(
    curves: dict[str, tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]],
    path: Path,
    *,
    title: str,
) -> None:
    """Efficiency curves, model vs reference and their difference: one column per quantity.

    Rows are (vs log10 p, vs η); ``curves[name] = (centres_p, (ref, model) vs p stacked, centres_eta,
    ... vs eta)``.
    """
    plt = _plt()
    names = list(curves)
    fig, axes = plt.subplots(
        4, len(names), figsize=(3.3 * len(names), 7.5), squeeze=False,
        gridspec_kw={"height_ratios": [3, 1, 3, 1]},
    )  # fmt: skip
    for k, name in enumerate(names):
        cp, vp, ce, ve = curves[name]
        for row, (centres, values, label) in enumerate(((cp, vp, "log10(p / MeV)"), (ce, ve, "η"))):
            ax, axd = axes[2 * row, k], axes[2 * row + 1, k]
            ax.plot(centres, values[0], "o-", ms=3, label="reference", color="C0")
            ax.plot(centres, values[1], "s--", ms=3, label="model (ONNX)", color="C3")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{name} vs {label}", fontsize=9)
            ax.tick_params(labelsize=7)
            axd.axhline(0, color="k", lw=0.5)
            axd.plot(centres, values[1] - values[0], "s-", ms=3, color="C3")
            axd.set_ylabel("model − ref", fontsize=7)
            axd.set_xlabel(label, fontsize=8)
            axd.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def plot_binned_w1(values: dict[str, NDArray[Any]], path: Path, *, title: str) -> None:
    """Worst-bin map: W1/σ per output and (p, η) bin as a heat map (rows = outputs, columns = bins)."""
    plt = _plt()
    names = list(values)
    grid = np.array([values[n].reshape(-1) for n in names])
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(names) + 1.5))
    im = ax.imshow(
        grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(0.1, float(np.nanmax(grid, initial=0)))
    )
    ax.set_yticks(range(len(names)), names, fontsize=7)
    n_p, n_e = len(LOG10P_EDGES) - 1, len(ETA_EDGES) - 1
    labels = [f"p{i} η{j}" for i in range(n_p) for j in range(n_e)]
    ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
    fig.colorbar(im, ax=ax, label="W1/σ (bin)")
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def plot_ndof(values: NDArray[Any], reference: NDArray[Any], model: NDArray[Any], path: Path) -> None:
    """The served integer nDoF's histogram against the library's floor(nDoF_f) (fractions per value)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.step(values, reference, where="mid", label="library floor(nDoF_f)", color="C0")
    ax.step(values, model, where="mid", label="served nDoF (ONNX)", color="C3", ls="--")
    ax.set_xlabel("nDoF")
    ax.set_ylabel("fraction of tracks")
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_lineage(curves: dict[str, tuple[NDArray[Any], NDArray[Any]]], path: Path) -> None:
    """Validation loss after each epoch against the training rows seen so far, log-log, per regression."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for step, (seen, loss) in curves.items():
        ax.plot(seen, loss, marker=".", ms=3, label=step)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training rows seen")
    ax.set_ylabel("validation MSE (Gaussianised)")
    ax.legend(fontsize=7)
    _save(fig, path)
