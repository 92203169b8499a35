"""``ufsim report``: what a physicist looks at in an ntuple, or two overlaid (``ufsim report A B``).

Markdown (``report.md``) with PNG plots, drawn with hist/boost-histogram and mplhep's LHCb style:

- categories per species: *not simulated* (a species the service does not simulate, or pz <= 0: the
  server could not simulate it) apart from *out of acceptance* (simulated, outside the acceptance),
  then not reconstructed, long, upstream, downstream;
- efficiency versus p and η per species and track type, with Clopper-Pearson (binomial) 68% intervals:
  acceptance = in acceptance / simulated, track type T = type T / in acceptance;
- momentum resolution of long tracks versus p (mean and half-width of the central 68%);
- IP and IPχ² of long tracks to their own PV;
- PID variables of long tracks per species, ranges from the data with underflow and overflow drawn.

With two ntuples, every plot overlays B (dashed) on A (solid) with a ratio panel B / A.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ufsim_client import extras
from ufsim_client.errors import InputError

__all__ = ["read_ntuple", "read_provenance", "write_report"]

log = logging.getLogger(__name__)

RECONSTRUCTED_TRACK_TYPES = {3: "long", 4: "upstream", 5: "downstream"}
"""Track types of reconstructed tracks (the spec's codes > 0), as the report names them."""
CATEGORIES = ("not simulated", "out of acceptance", "not reconstructed", "long", "upstream", "downstream")
SPECIES = {11: "e", 13: "mu", 211: "pi", 321: "K", 2212: "p"}
PID_VARIABLES = (
    "RichDLLe",
    "RichDLLmu",
    "RichDLLk",
    "RichDLLp",
    "PIDe",
    "PIDmu",
    "PIDK",
    "PIDp",
    "ProbNNe",
    "ProbNNpi",
    "ProbNNk",
    "ProbNNp",
    "ProbNNmu",
)
NO_VALUE = -9999.0
COLORS = ("C0", "C1", "C2", "C3", "C4")


def _root_trees(handle: Any) -> list[str]:
    return [key.split(";")[0] for key, cls in handle.classnames().items() if cls == "TTree"]


def read_ntuple(path: str | os.PathLike[str], *, tree: str = "ufsim") -> dict[str, NDArray[Any]]:
    """All columns of a ``.root`` (TTree ``tree``) or ``.parquet`` ntuple as numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ntuple {str(path)!r} does not exist")
    if path.suffix.lower() == ".root":
        uproot = extras.uproot()
        with uproot.open(str(path)) as handle:
            trees = _root_trees(handle)
            if tree not in trees:
                raise InputError("tree", f"{str(path)!r} has no TTree {tree!r}; its TTrees: {trees}")
            return dict(handle[tree].arrays(library="np"))
    pq = extras.pyarrow_parquet()
    table = pq.read_table(str(path))
    return {name: table.column(name).to_numpy() for name in table.column_names}


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``ufsim`` provenance record of an ntuple (:mod:`ufsim_client.provenance`), None if it has none."""
    path = Path(path)
    if path.suffix.lower() == ".root":
        with extras.uproot().open(str(path)) as handle:
            return json.loads(str(handle["ufsim_provenance"])) if "ufsim_provenance" in handle else None
    metadata = extras.pyarrow_parquet().read_schema(str(path)).metadata or {}
    return json.loads(metadata[b"ufsim"]) if b"ufsim" in metadata else None


@dataclass
class _Sample:
    """One ntuple with the derived quantities the plots need."""

    label: str
    data: dict[str, NDArray[Any]]
    provenance: dict[str, Any] | None
    species: NDArray[np.int64] = field(init=False)
    category: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        d = self.data
        self.species = np.abs(d["TRUEID"]).astype(np.int64)
        track_type = d["TRACK_Type"]
        simulated = np.isin(self.species, list(SPECIES)) & (d["TRUEP_Z"] > 0)
        category = np.full(len(track_type), 1)
        category[~simulated] = 0
        for index, code in ((2, 0), (3, 3), (4, 4), (5, 5)):
            category[simulated & (track_type == code)] = index
        self.category = category

    def of(self, pid: int) -> NDArray[np.bool_]:
        return np.asarray(self.species == pid, dtype=bool)

    @property
    def long(self) -> NDArray[np.bool_]:
        return np.asarray(self.data["TRACK_Type"] == 3, dtype=bool)


def _style() -> Any:
    plt = extras.matplotlib_pyplot()
    mplhep = extras.mplhep()
    plt.style.use(mplhep.style.LHCb2)
    plt.rcParams.update(
        {"figure.figsize": (8, 6), "font.size": 14, "axes.labelsize": 16, "legend.fontsize": 11}
    )
    return plt


def _figure(plt: Any, ncols: int, ratio: bool) -> tuple[Any, Any, Any]:
    if ratio:
        fig, axes = plt.subplots(
            2,
            ncols,
            figsize=(7 * ncols, 7),
            sharex="col",
            gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05},
        )
        axes = np.asarray(axes).reshape(2, ncols)
        return fig, axes[0], axes[1]
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 5.5))
    return fig, np.atleast_1d(axes), None


def _save(plt: Any, fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _efficiency(
    hist: Any,
    intervals: Any,
    axis: Any,
    values: NDArray[Any],
    passed: NDArray[np.bool_],
    total: NDArray[np.bool_],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Efficiency per bin with Clopper-Pearson 68% errors (lower, upper); NaN where the bin is empty."""
    num = hist.Hist(axis).fill(values[total & passed]).values()
    den = hist.Hist(axis).fill(values[total]).values()
    eff = _ratio(num, den)
    err = np.full((2, len(den)), np.nan)
    ok = den > 0
    if ok.any():
        err[:, ok] = intervals.ratio_uncertainty(num[ok], den[ok], uncertainty_type="efficiency")
    return eff, err[0], err[1]


def _efficiency_plots(plt: Any, samples: list[_Sample], out: Path, lines: list[str]) -> None:
    hist = extras.hist()
    intervals = extras.hist_intervals()
    axes_spec = {
        "p": (hist.axis.Regular(16, 2e3, 2e5, transform=hist.axis.transform.log), "TRUEP", "p [MeV]"),
        "eta": (hist.axis.Regular(15, 2.0, 5.0), "TRUEETA", r"$\eta$"),
    }
    lines += ["", "## Efficiency versus p and η", ""]
    lines.append(
        "Acceptance = in acceptance / simulated; long, upstream, downstream = that track type / in "
        "acceptance. Error bars: Clopper-Pearson 68% intervals."
    )
    for pid, name in SPECIES.items():
        if not any(s.of(pid).any() for s in samples):
            continue
        fig, main, ratio = _figure(plt, 2, len(samples) > 1)
        for col, (axis, column, xlabel) in enumerate(axes_spec.values()):
            centers = axis.centers
            curves: dict[str, list[NDArray[np.float64]]] = {}
            for k, sample in enumerate(samples):
                sel = sample.of(pid)
                simulated = sel & (sample.category > 0)
                in_acc = sel & (sample.category >= 2)
                values = sample.data[column]
                defs = {"acceptance": (in_acc, simulated)}
                track_type = sample.data["TRACK_Type"]
                defs |= {t: (track_type == code, in_acc) for code, t in RECONSTRUCTED_TRACK_TYPES.items()}
                for c, (curve, (passed, total)) in enumerate(defs.items()):
                    eff, lo, hi = _efficiency(hist, intervals, axis, values, passed, total)
                    curves.setdefault(curve, []).append(eff)
                    main[col].errorbar(
                        centers,
                        eff,
                        yerr=[lo, hi],
                        color=COLORS[c],
                        ls="-" if k == 0 else "--",
                        marker="o" if k == 0 else "s",
                        ms=4,
                        label=f"{curve}" + (f" ({sample.label})" if len(samples) > 1 else ""),
                    )
            main[col].set_ylim(0, 1.15)
            main[col].set_ylabel(f"efficiency ({name})")
            if column == "TRUEP":
                main[col].set_xlim(2e3, 2e5)
                main[col].set_xscale("log")
            if ratio is not None:
                for c, effs in enumerate(curves.values()):
                    ratio[col].plot(
                        centers, _ratio(effs[1], effs[0]), color=COLORS[c], marker="o", ms=3, ls=""
                    )
                ratio[col].axhline(1, color="grey", lw=1)
                ratio[col].set_ylim(0.8, 1.2)
                ratio[col].set_ylabel("B / A")
                ratio[col].set_xlabel(xlabel)
            else:
                main[col].set_xlabel(xlabel)
        main[0].legend(ncol=2 if len(samples) > 1 else 1, fontsize=9)
        png = f"efficiency_{name}.png"
        _save(plt, fig, out / png)
        lines += ["", f"### {name}", "", f"![efficiency {name}]({png})"]


def _resolution_plot(plt: Any, samples: list[_Sample], out: Path, lines: list[str]) -> None:
    hist = extras.hist()
    axis = hist.axis.Regular(12, 2e3, 2e5, transform=hist.axis.transform.log)
    lines += ["", "## Momentum resolution of long tracks versus p", ""]
    lines.append(
        "δp/p = (p_reco − p_true)/p_true per true-momentum bin: mean and half-width of the central 68%."
    )
    fig, main, ratio = _figure(plt, 1, len(samples) > 1)
    widths = []
    for k, sample in enumerate(samples):
        long = sample.long
        p = sample.data["TRUEP"][long]
        dp = (sample.data["TRACK_P"][long] - p) / p
        index = axis.index(p)
        mean, width, err = (np.full(axis.size, np.nan) for _ in range(3))
        for b in range(axis.size):
            values = dp[index == b]
            if len(values) >= 10:
                q16, q50, q84 = np.percentile(values, [16, 50, 84])
                mean[b], width[b] = q50, (q84 - q16) / 2
                err[b] = width[b] / np.sqrt(2 * len(values))
        widths.append(width)
        style = {"ls": "-" if k == 0 else "--", "marker": "o" if k == 0 else "s", "ms": 4}
        main[0].errorbar(
            axis.centers, width, yerr=err, color="C0", label=f"68% half-width {sample.label}", **style
        )
        main[0].plot(axis.centers, mean, color="C1", label=f"median {sample.label}", **style)
        if len(p):
            q16, q84 = np.percentile(dp, [16, 84])
            lines.append(
                f"- {sample.label}: {len(p)} long tracks, central-68% half-width {(q84 - q16) / 2:.2e}"
            )
        else:
            lines.append(f"- {sample.label}: no long tracks")
    main[0].set_xlim(2e3, 2e5)
    main[0].set_xscale("log")
    main[0].set_ylabel(r"$\delta p / p$")
    main[0].legend(fontsize=9)
    if ratio is not None:
        ratio[0].plot(axis.centers, _ratio(widths[1], widths[0]), "o", color="C0")
        ratio[0].axhline(1, color="grey", lw=1)
        ratio[0].set_ylabel("B / A")
        ratio[0].set_xlabel("p [MeV]")
    else:
        main[0].set_xlabel("p [MeV]")
    _save(plt, fig, out / "momentum_resolution.png")
    lines += ["", "![momentum resolution](momentum_resolution.png)"]


def _distribution(
    plt: Any,
    samples: list[_Sample],
    groups: dict[str, list[NDArray[np.float64]]],
    axis: Any,
    xlabel: str,
    path: Path,
) -> list[str]:
    """Normalised histograms (flow bins drawn) per group and sample, ratio panel B / A; table lines."""
    hist = extras.hist()
    mplhep = extras.mplhep()
    fig, main, ratio = _figure(plt, 1, len(samples) > 1)
    rows = []
    for g, (group, per_sample) in enumerate(groups.items()):
        normalised: list[Any] = []
        for k, values in enumerate(per_sample):
            if not len(values):
                normalised.append(None)
                continue
            h = hist.Hist(axis).fill(values)
            h = h / len(values)
            normalised.append(h)
            label = group + (f" ({samples[k].label})" if len(samples) > 1 else "") + f" [{len(values)}]"
            mplhep.histplot(
                h, ax=main[0], flow="show", color=COLORS[g % 5], ls="-" if k == 0 else "--", label=label
            )
            flow = h.values(flow=True)
            rows.append(
                f"| {group} | {samples[k].label} | {len(values)} | {np.mean(values):.3g} | "
                f"{flow[0]:.4f} | {flow[-1]:.4f} |"
            )
        if ratio is not None and all(h is not None for h in normalised):
            ratio[0].plot(
                axis.centers,
                _ratio(normalised[1].values(), normalised[0].values()),
                "o",
                ms=3,
                color=COLORS[g % 5],
            )
    main[0].set_ylabel("fraction per bin")
    main[0].legend(fontsize=8, ncol=2)
    if ratio is not None:
        ratio[0].axhline(1, color="grey", lw=1)
        ratio[0].set_ylim(0.5, 1.5)
        ratio[0].set_ylabel("B / A")
        ratio[0].set_xlabel(xlabel)
    else:
        main[0].set_xlabel(xlabel)
    _save(plt, fig, path)
    return ["| species | sample | tracks | mean | underflow | overflow |", "|---|---|---|---|---|---|", *rows]


def _ip_plots(plt: Any, samples: list[_Sample], out: Path, lines: list[str]) -> None:
    hist = extras.hist()
    lines += ["", "## Impact parameter to the own PV (long tracks)", ""]
    if not all("IPCHI2_OWNPV" in s.data for s in samples):
        lines.append("Not available: an ntuple has no IP columns (written by an older ufsim).")
        return
    for column, axis, xlabel, transform in (
        ("IP_OWNPV", hist.axis.Regular(60, 0.0, 0.3), "IP [mm]", lambda v: v),
        ("IPCHI2_OWNPV", hist.axis.Regular(60, -2.0, 4.0), r"$\log_{10}$ IP$\chi^2$", np.log10),
    ):
        groups: dict[str, list[NDArray[np.float64]]] = {}
        for sample in samples:
            valid = sample.long & (sample.data[column] != NO_VALUE)
            for pid, name in SPECIES.items():
                groups.setdefault(name, []).append(
                    transform(np.maximum(sample.data[column][valid & sample.of(pid)], 1e-12))
                )
        if not any(len(v) for vs in groups.values() for v in vs):
            lines.append(f"No long track with a PV: {column} not shown.")
            continue
        png = f"{column.lower()}.png"
        lines += ["", f"### {column}", "", f"![{column}]({png})", ""]
        lines += _distribution(plt, samples, groups, axis, xlabel, out / png)


def _pid_plots(plt: Any, samples: list[_Sample], out: Path, lines: list[str]) -> None:
    hist = extras.hist()
    lines += ["", "## PID of long tracks", ""]
    lines.append(
        "Ranges from the 0.5–99.5% quantiles of the values; the outer bins drawn apart are underflow and "
        "overflow, so no value is cut. Sentinels (PID not applicable) are left out."
    )
    for column in PID_VARIABLES:
        if not all(column in s.data for s in samples):
            continue
        floor = -0.5 if column.startswith("ProbNN") else -999.0
        groups: dict[str, list[NDArray[np.float64]]] = {}
        for sample in samples:
            valid = sample.long & (sample.data[column] > floor)
            for pid, name in SPECIES.items():
                groups.setdefault(name, []).append(sample.data[column][valid & sample.of(pid)])
        pooled = np.concatenate([v for vs in groups.values() for v in vs])
        if not len(pooled):
            continue
        lo, hi = (0.0, 1.0) if column.startswith("ProbNN") else np.percentile(pooled, [0.5, 99.5])
        lo, hi = float(np.floor(lo)), float(np.ceil(hi)) if hi > 1 else float(hi)
        if hi <= lo:
            hi = lo + 1.0
        png = f"{column.lower()}.png"
        lines += ["", f"### {column}", "", f"![{column}]({png})", ""]
        lines += _distribution(plt, samples, groups, hist.axis.Regular(50, lo, hi), column, out / png)


def _categories(samples: list[_Sample], lines: list[str]) -> None:
    lines += ["", "## What happened to each particle", ""]
    lines.append(
        "*not simulated*: a species or direction (pz <= 0) the service does not simulate; *out of "
        "acceptance*: simulated, outside the geometrical acceptance. Fractions of the species' particles."
    )
    lines += [
        "",
        "| species | sample | particles | " + " | ".join(CATEGORIES) + " |",
        "|---|---|---|" + "---|" * 6,
    ]
    for pid, name in SPECIES.items():
        for sample in samples:
            sel = sample.of(pid)
            if not sel.any():
                continue
            cells = [f"{np.mean(sample.category[sel] == c):.3f}" for c in range(6)]
            lines.append(f"| {name} | {sample.label} | {int(sel.sum())} | " + " | ".join(cells) + " |")
    for sample in samples:
        others = int((~np.isin(sample.species, list(SPECIES))).sum())
        if others:
            lines.append(f"| other | {sample.label} | {others} | 1 | | | | | |")


def _header(samples: list[_Sample], lines: list[str]) -> None:
    for sample in samples:
        d = sample.data
        n = len(d["TRUEID"])
        events = len(np.unique(d["eventNumber"])) if n else 0
        lines.append(f"- **{sample.label}**: {n} particles in {events} events.")
        record = sample.provenance
        if record:
            server = record.get("server", {})
            repo = server.get("repository", {})
            inputs = ", ".join(i["name"] for i in record.get("inputs", [])) or "generated"
            made = f"ufsim {record.get('ufsim_version')}, seed {record.get('seed')}"
            lines.append(
                f"  {made}, model {server.get('model')} of repository "
                f"{repo.get('repository_version', 'unknown')}, inputs: {inputs}"
            )


def write_report(
    ntuple: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    tree: str = "ufsim",
) -> Path:
    """Write ``report.md`` and its PNG plots into the directory ``output``; returns the markdown path.

    ``ntuple`` is one ntuple, or two (A, B) to overlay with ratio panels B / A.
    """
    paths = [Path(ntuple)] if isinstance(ntuple, str | os.PathLike) else [Path(p) for p in ntuple]
    if not 1 <= len(paths) <= 2:
        raise InputError("ntuple", f"give one ntuple, or two to compare, not {len(paths)}")
    labels = [p.name for p in paths]
    if len(paths) == 2:
        labels = [f"A: {labels[0]}", f"B: {labels[1]}"]
    samples = [
        _Sample(label, read_ntuple(p, tree=tree), read_provenance(p))
        for label, p in zip(labels, paths, strict=True)
    ]
    plt = _style()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    title = " vs ".join(p.name for p in paths)
    lines = [f"# ufsim report: {title}", ""]
    _header(samples, lines)
    _categories(samples, lines)
    _efficiency_plots(plt, samples, out, lines)
    _resolution_plot(plt, samples, out, lines)
    _ip_plots(plt, samples, out, lines)
    _pid_plots(plt, samples, out, lines)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    log.info("wrote %s", report)
    return report
