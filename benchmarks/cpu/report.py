"""CSV files, plots and the markdown report of the CPU and memory benchmark."""

from __future__ import annotations

import csv
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GB = 1e9


@dataclass
class Results:
    """Everything one run measured (CPU in microseconds per particle, memory in bytes)."""

    machine: str
    command: str
    repository: str
    sample: str
    paths: list[dict[str, Any]] = field(default_factory=list)
    library_calls: dict[str, float] = field(default_factory=dict)
    reconstructed_fraction: float = float("nan")
    steps: dict[str, float] = field(default_factory=dict)
    hepmc: list[dict[str, Any]] = field(default_factory=list)
    memory: list[tuple[float, int, str]] = field(default_factory=list)
    client: dict[str, float] = field(default_factory=dict)
    fresh_pss: int = 0
    notes: list[str] = field(default_factory=list)

    def path_cost(self, name: str) -> float | None:
        """CPU µs per particle of the path called ``name`` (None when it was not measured)."""
        return next((p["cpu_us_per_particle"] for p in self.paths if p["path"] == name), None)


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", newline="") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    from io import StringIO

    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _phase_pss(results: Results) -> dict[str, tuple[float, float]]:
    """Per memory phase: (peak PSS, last PSS) in bytes."""
    phases: dict[str, list[int]] = {}
    for _, pss, phase in results.memory:
        phases.setdefault(phase, []).append(pss)
    return {phase: (max(v), v[-1]) for phase, v in phases.items()}


def markdown(results: Results) -> str:
    """The report: ratios first, then every table the CSV files hold."""
    lines = [
        "# CPU per particle and server memory: Lamarr's C, SQLamarr, in-process ONNX Runtime, ufsim served",
        "",
        f"- Machine: {results.machine}",
        f"- Command: `{results.command}`",
        f"- Model repository: {results.repository}",
        f"- Particles: {results.sample}",
        "- CPU is process CPU time (user + system), never wall time: for the served pipeline the server's "
        "whole "
        "process group (tritonserver and its Python-backend stubs) plus `ufsim-serve` plus the `ufsim` "
        "client "
        "process. Shared noisy 2-core machine: compare **ratios** within this run.",
        "",
    ]
    library = results.path_cost("Lamarr library, C, one particle per call (tracking only)")
    if library is not None:
        lines += ["## Ratios", "", "| path | CPU µs / particle | Lamarr C ÷ path |", "|---|---|---|"]
        for p in results.paths:
            lines.append(
                f"| {p['path']} | {p['cpu_us_per_particle']:.1f} | "
                f"{library / p['cpu_us_per_particle']:.1f}× |"
            )
        lines.append("")
    else:
        lines += ["## CPU per particle", "", "| path | CPU µs / particle |", "|---|---|"]
        lines += [f"| {p['path']} | {p['cpu_us_per_particle']:.1f} |" for p in results.paths]
        lines.append("")
    served = [p for p in results.paths if p.get("server_us_per_particle") not in (None, "")]
    if served:
        lines += [
            "Served runs: `ufsim simulate --input particles.parquet` with the client's defaults (8192 "
            "particles per "
            "request, 4 in flight); 'marginal' is the difference between the full run and one on a tenth "
            "of the "
            "events, divided by the difference in particles (it removes start-up and import costs).",
            "",
            "| served run | particles | server µs | client µs | total µs | wall s |",
            "|---|---|---|---|---|---|",
        ]
        for p in served:
            lines.append(
                f"| {p['path']} | {p['particles']:,} | {p['server_us_per_particle']:.1f} | "
                f"{p['client_us_per_particle']:.1f} | {p['cpu_us_per_particle']:.1f} | {p['wall_s']:.1f} |"
            )
        lines.append("")
    if results.client:
        c = results.client
        lines += [
            "## Client",
            "",
            f"The client's own summary (`ufsim simulate`, CPU inside `simulate()`): {c['cpu_us']:.1f} µs "
            "per particle, "
            f"of which reading the parquet table {c['cpu_us'] - c['beyond_reading_us']:.1f} µs; "
            f"**{c['beyond_reading_us']:.1f} µs per particle beyond reading the events**.",
            "",
        ]
        if "beyond_reading_marginal_us" in c:
            lines += [
                f"Marginal, as for the served rows (the full run less the run on a tenth of the events): "
                f"**{c['beyond_reading_marginal_us']:.1f} µs per particle beyond reading**, plus "
                f"{c['per_command_s']:.3f} s per command (imports on first use, connecting and checking the "
                "server, closing the output).",
                "",
            ]
    if results.library_calls:
        lines += [
            "## Lamarr library in C",
            "",
            "`benchmarks/cpu/lamarr_harness.c`, compiled at benchmark time, `dlopen`s the library and "
            "calls each "
            "function once per particle (as SQLamarr's plugins do). Tracking per particle = acceptance + "
            f"efficiency + {results.reconstructed_fraction:.3f} × (resolution + covariance), the fraction "
            "being the "
            "library's own expected P(in acceptance) × P(reconstructed) on these particles.",
            "",
            "| function | CPU µs / call |",
            "|---|---|",
        ]
        lines += [f"| `{k}` | {v:.1f} |" for k, v in results.library_calls.items()]
        lines.append("")
    if results.steps:
        total = sum(results.steps.values())
        lines += [
            "## Where the in-process CPU goes (ONNX Runtime, 1 thread, batch 8192)",
            "",
            "| step | CPU µs / particle | share |",
            "|---|---|---|",
        ]
        for name, us in sorted(results.steps.items(), key=lambda kv: -kv[1]):
            lines.append(f"| `{name}` | {us:.2f} | {100 * us / total:.1f} % |")
        lines += [f"| total | {total:.1f} | |", "", "![steps](steps.png)", ""]
    if results.hepmc:
        lines += [
            "## Ten real HepMC2 crossings",
            "",
            "Both timed the same way, after imports: CPU of this process (loading the files included) "
            "plus, for "
            "ufsim, the server's CPU during the run; best of the repeats.",
            "",
            "| way | particles simulated | CPU s (best) | wall s (best) |",
            "|---|---|---|---|",
        ]
        ways: dict[str, list[dict[str, Any]]] = {}
        for row in results.hepmc:
            ways.setdefault(row["way"], []).append(row)
        best = {}
        for way, rows in ways.items():
            best[way] = min(r["cpu_s"] for r in rows)
            lines.append(
                f"| {way} | {rows[0]['particles']:,} | {best[way]:.3f} | "
                f"{min(r['wall_s'] for r in rows):.3f} |"
            )
        if len(best) == 2:
            (a, ca), (b, cb) = best.items()
            lines += ["", f"{b} takes {ca / cb:.1f}× less CPU than {a}."]
        lines.append("")
    if results.memory:
        fresh = results.fresh_pss or _phase_pss(results).get("fresh", (0, 0))[1]
        lines += [
            "## Server memory (PSS of tritonserver, its stubs and ufsim-serve)",
            "",
            "Requests of 65,536 particles (the contract's maximum), one alone then four at once, each "
            "followed by a "
            "rest; PSS sampled every 0.2 s.",
            "",
            f"Fresh (just after start, before any request): {fresh / GB:.2f} GB. The profile starts after "
            "the CPU runs and 20 s of quiet ('idle').",
            "",
            "| phase | peak PSS GB | above fresh GB | last PSS GB |",
            "|---|---|---|---|",
        ]
        for phase, (peak, last) in _phase_pss(results).items():
            lines.append(f"| {phase} | {peak / GB:.2f} | {(peak - fresh) / GB:+.2f} | {last / GB:.2f} |")
        lines += ["", "![memory](memory.png)", ""]
    if results.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in results.notes], ""]
    return "\n".join(lines)


def _save(fig: Any, path: Path) -> Path:
    """Save a figure atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plots(results: Results, out: Path) -> list[Path]:
    """paths.png (CPU per particle per path), steps.png (per-step breakdown), memory.png (PSS over time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if results.paths:
        fig, ax = plt.subplots(figsize=(9, 0.5 + 0.5 * len(results.paths)))
        names = [p["path"] for p in results.paths]
        ax.barh(names, [p["cpu_us_per_particle"] for p in results.paths], color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("CPU µs per particle (log scale)")
        ax.invert_yaxis()
        fig.tight_layout()
        written.append(_save(fig, out / "paths.png"))
    if results.steps:
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.bar(list(results.steps), list(results.steps.values()), color="tab:orange")
        ax.set_ylabel("CPU µs per particle")
        ax.tick_params(axis="x", rotation=45)
        fig.tight_layout()
        written.append(_save(fig, out / "steps.png"))
    if results.memory:
        fig, ax = plt.subplots(figsize=(9, 4))
        ax.plot([t for t, _, _ in results.memory], [b / GB for _, b, _ in results.memory], lw=1)
        ax.set_xlabel("seconds")
        ax.set_ylabel("PSS GB (server + stubs)")
        last = None
        for t, _, phase in results.memory:
            if phase != last:
                ax.axvline(t, color="grey", lw=0.5)
                ax.text(t, ax.get_ylim()[1] * 0.95, phase, fontsize=7, rotation=90, va="top")
                last = phase
        fig.tight_layout()
        written.append(_save(fig, out / "memory.png"))
    return written


def write(results: Results, out: Path) -> list[Path]:
    """Write every CSV, plot and report.md into ``out`` (each file atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "paths.csv": results.paths,
        "library.csv": [{"function": k, "cpu_us_per_call": v} for k, v in results.library_calls.items()],
        "steps.csv": [{"step": k, "cpu_us_per_particle": v} for k, v in results.steps.items()],
        "hepmc.csv": results.hepmc,
        "memory.csv": [{"t_s": t, "pss_bytes": b, "phase": p} for t, b, p in results.memory],
    }
    written = []
    for name, rows in tables.items():
        if rows:
            _atomic_write(out / name, _csv(rows))
            written.append(out / name)
    written += plots(results, out)
    _atomic_write(out / "report.md", markdown(results))
    written.append(out / "report.md")
    return written
