"""``ufsim report``: a short markdown report with PNG plots from an ntuple written by ``ufsim simulate``.

Plots: track-type fractions per species, momentum resolution (p_reco - p_true)/p_true of long tracks,
RichDLLk for pions vs kaons and PIDmu for muons vs pions (long tracks, where PID applies).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ufsim_client import extras
from ufsim_client.errors import InputError

__all__ = ["read_ntuple", "write_report"]

log = logging.getLogger(__name__)

TRACK_TYPES = {
    -1: "not simulated / out of acceptance",
    0: "not reconstructed",
    3: "long",
    4: "upstream",
    5: "downstream",
}
SPECIES = {11: "e", 13: "mu", 211: "pi", 321: "K", 2212: "p"}


def read_ntuple(path: str | os.PathLike[str], *, tree: str = "ufsim") -> dict[str, NDArray[Any]]:
    """All columns of a ``.root`` (TTree ``tree``) or ``.parquet`` ntuple as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ntuple {str(path)!r} does not exist")
    if path.suffix.lower() == ".root":
        uproot = extras.uproot()
        with uproot.open(str(path)) as handle:
            trees = [key.split(";")[0] for key, cls in handle.classnames().items() if cls == "TTree"]
            if tree not in trees:
                raise InputError("tree", f"{str(path)!r} has no TTree {tree!r}; its TTrees: {trees}")
            return dict(handle[tree].arrays(library="np"))
    pq = extras.pyarrow_parquet()
    table = pq.read_table(str(path))
    return {name: table.column(name).to_numpy() for name in table.column_names}


def _hist(ax: Any, samples: dict[str, NDArray[Any]], bins: NDArray[np.float64], xlabel: str) -> None:
    for label, values in samples.items():
        if len(values):
            ax.hist(values, bins=bins, histtype="step", density=True, label=f"{label} ({len(values)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("normalised")
    ax.legend()


def write_report(
    ntuple: str | os.PathLike[str], output: str | os.PathLike[str], *, tree: str = "ufsim"
) -> Path:
    """Write ``report.md`` and its PNG plots into the directory ``output``; returns the markdown path."""
    plt = extras.matplotlib_pyplot()
    data = read_ntuple(ntuple, tree=tree)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    pid = np.abs(data["TRUEID"])
    track_type = data["TRACK_Type"]
    long = track_type == 3
    n = len(pid)
    events = len(np.unique(data["eventNumber"])) if n else 0
    lines = [
        f"# ufsim report: {Path(ntuple).name}",
        "",
        f"{n} particles in {events} events.",
        "",
        "## Track types",
        "",
        "![track types](track_types.png)",
        "",
        "| species | particles | " + " | ".join(TRACK_TYPES.values()) + " |",
        "|---|---|" + "---|" * len(TRACK_TYPES),
    ]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(TRACK_TYPES)
    for k, (code, name) in enumerate(TRACK_TYPES.items()):
        fractions = [np.mean(track_type[pid == p] == code) if (pid == p).any() else 0.0 for p in SPECIES]
        ax.bar(np.arange(len(SPECIES)) + k * width, fractions, width, label=name)
    for p, name in SPECIES.items():
        sel = pid == p
        cells = [f"{np.mean(track_type[sel] == code):.3f}" if sel.any() else "-" for code in TRACK_TYPES]
        lines.append(f"| {name} | {int(sel.sum())} | " + " | ".join(cells) + " |")
    ax.set_xticks(np.arange(len(SPECIES)) + 0.4 - width / 2, list(SPECIES.values()))
    ax.set_ylabel("fraction")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(out / "track_types.png", dpi=100)
    plt.close(fig)

    resolution = (data["TRACK_P"][long] - data["TRUEP"][long]) / data["TRUEP"][long]
    fig, ax = plt.subplots(figsize=(6, 4))
    _hist(ax, {"long tracks": resolution}, np.linspace(-0.05, 0.05, 101), "(p_reco - p_true) / p_true")
    fig.tight_layout()
    fig.savefig(out / "momentum_resolution.png", dpi=100)
    plt.close(fig)
    lines += [
        "",
        "## Momentum resolution (long tracks)",
        "",
        "![momentum resolution](momentum_resolution.png)",
        "",
    ]
    if len(resolution):
        q16, q50, q84 = np.percentile(resolution, [16, 50, 84])
        lines.append(
            f"{len(resolution)} long tracks: median {q50:.2e}, "
            f"half-width of the central 68% {(q84 - q16) / 2:.2e}."
        )
    else:
        lines.append("No long tracks.")

    for name, column, hypotheses, bins in (
        ("rich_dllk", "RichDLLk", {"pi": 211, "K": 321}, np.linspace(-100, 100, 81)),
        ("pidmu", "PIDmu", {"mu": 13, "pi": 211}, np.linspace(-20, 20, 81)),
    ):
        valid = long & (data[column] > -999)
        fig, ax = plt.subplots(figsize=(6, 4))
        _hist(ax, {label: data[column][valid & (pid == p)] for label, p in hypotheses.items()}, bins, column)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        lines += ["", f"## {column} (long tracks)", "", f"![{column}]({name}.png)", ""]
        for label, p in hypotheses.items():
            sel = valid & (pid == p)
            if sel.any():
                lines.append(f"- {label}: {int(sel.sum())} tracks, mean {np.mean(data[column][sel]):.2f}")
    muons, pions = long & (pid == 13), long & (pid == 211)
    if muons.any() and pions.any():
        lines += [
            "",
            f"isMuon efficiency for long muons {np.mean(data['isMuon'][muons] == 1):.3f}, "
            f"mis-identification of long pions {np.mean(data['isMuon'][pions] == 1):.4f}.",
        ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    log.info("wrote %s", report)
    return report
