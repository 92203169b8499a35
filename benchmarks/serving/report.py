"""CSV files, plots and the markdown report of the serving benchmarks (relative numbers only)."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .perf import Measurement, Run, display
from .side_by_side import MODES, Result

MODE_LABELS = {
    "triton_ensemble": "Triton ensemble (batched gRPC)",
    "ufsim_client": "same via ufsim_client.simulate",
    "inprocess_ort": "chained ONNX Runtime in-process",
    "inprocess_ort_2threads": "same, 2 intra-op threads",
    "triton_per_particle": "Triton, one request per particle",
    "inprocess_per_particle": "in-process ORT, one particle per call",
}


@dataclass
class Report:
    """Everything one benchmark run produced, for writing out."""

    repository_kind: str
    machine: str
    invocation: str
    steps: list[str] = field(default_factory=list)
    ensemble_runs: list[Run] = field(default_factory=list)
    model_runs: list[Run] = field(default_factory=list)
    side_by_side: Result | None = None
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    return path


def _measurements(runs: list[Run]) -> list[Measurement]:
    return [m for r in runs for m in r.measurements]


def _fmt(x: float, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}" if x >= 0.1 else f"{x:.2g}"


def ensemble_baseline(ms: list[Measurement]) -> float:
    """Throughput of the smallest batch at the lowest concurrency (the 1.0 of the ensemble grid)."""
    if not ms:
        return float("nan")
    first = min(ms, key=lambda m: (m.batch, m.concurrency))
    return first.throughput


def write_csvs(report: Report, out: Path) -> list[Path]:
    """The CSV files; raw perf_analyzer columns are kept beside the relative ones for re-analysis."""
    written = []
    ens = _measurements(report.ensemble_runs)
    base = ensemble_baseline(ens)
    header = [
        "model", "batch", "concurrency", "stable", "relative_throughput", "throughput_particles_per_s",
        "avg_latency_us", "p50_latency_us", "p99_latency_us", "client_send_us", "client_recv_us",
        "server_queue_us", "server_compute_us",
    ]  # fmt: skip

    def rows(ms: list[Measurement], ref: dict[tuple[int, int], float] | None) -> list[list[object]]:
        out_rows = []
        for m in ms:
            denominator = ref.get((m.batch, m.concurrency), float("nan")) if ref is not None else base
            out_rows.append([
                m.model, m.batch, m.concurrency, m.stable, m.throughput / denominator, m.throughput,
                m.avg_latency_us, m.p50_us, m.p99_us, m.client_send_us, m.client_recv_us,
                m.server_queue_us, m.server_compute_us,
            ])  # fmt: skip
        return out_rows

    if ens:
        written.append(_write_csv(out / "perf_analyzer_ensemble.csv", header, rows(ens, None)))
    by_point = {(m.batch, m.concurrency): m.throughput for m in ens}
    models = _measurements(report.model_runs)
    if models:
        header_models = [*header[:4], "throughput_relative_to_ensemble", *header[5:]]
        written.append(_write_csv(out / "perf_analyzer_models.csv", header_models, rows(models, by_point)))
    comp_rows = []
    for m in ens:
        total = sum(c.queue_us + c.compute_us for c in m.composing) or float("nan")
        for c in m.composing:
            comp_rows.append([
                m.batch, m.concurrency, c.model, c.inference_count, c.execution_count,
                (c.queue_us + c.compute_us) / total, c.request_us, c.queue_us, c.compute_input_us,
                c.compute_infer_us, c.compute_output_us,
            ])  # fmt: skip
    if comp_rows:
        written.append(
            _write_csv(
                out / "perf_analyzer_composing.csv",
                ["ensemble_batch", "concurrency", "model", "inference_count", "execution_count",
                 "share_of_server_time", "request_us", "queue_us", "compute_input_us", "compute_infer_us",
                 "compute_output_us"],
                comp_rows,
            )
        )  # fmt: skip
    if report.side_by_side is not None:
        sbs = report.side_by_side
        ref = sbs.median_rate("inprocess_ort")
        written.append(
            _write_csv(
                out / "serving_side_by_side.csv",
                ["mode", "round", "particles", "batch", "in_flight", "relative_rate", "wall_s", "cpu_s",
                 "particles_per_s", "client_cpu_us_per_particle"],
                [
                    [s.mode, s.round, s.particles,
                     1 if s.mode.endswith("per_particle") else sbs.config.batch,
                     sbs.config.in_flight if s.mode in ("triton_ensemble", "ufsim_client") else 1,
                     s.rate / ref, s.wall_s, s.cpu_s, s.rate, s.cpu_us_per_particle]
                    for s in sbs.samples
                ],
            )
        )  # fmt: skip
        written.append(
            _write_csv(
                out / "serving_agreement.csv",
                ["output", "triton_vs_inprocess"],
                sorted(sbs.agreement.items()),
            )
        )
    return written


def plot_ensemble(report: Report, path: Path) -> Path | None:
    """Relative ensemble throughput against batch size, one line per concurrency."""
    ms = _measurements(report.ensemble_runs)
    if not ms:
        return None
    base = ensemble_baseline(ms)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for conc in sorted({m.concurrency for m in ms}):
        pts = sorted((m.batch, m.throughput / base, m.stable) for m in ms if m.concurrency == conc)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"concurrency {conc}")
        for b, y, stable in pts:
            if not stable:
                ax.annotate("unstable", (b, y), fontsize=7, textcoords="offset points", xytext=(3, -10))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("particles per request (batch)")
    ax.set_ylabel("particles/s relative to batch 1, concurrency 1")
    ax.set_title(f"ensemble '{report.ensemble_runs[0].model}' through local Triton (perf_analyzer)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def breakdown_point(ms: list[Measurement]) -> Measurement | None:
    """The measurement whose composing breakdown the report discusses: largest batch, concurrency 1."""
    with_comp = [m for m in ms if m.composing]
    if not with_comp:
        return None
    return max(with_comp, key=lambda m: (m.batch, -m.concurrency))


def plot_breakdown(report: Report, path: Path) -> Path | None:
    """Share of server time (queue + compute) per composing model, per ensemble batch size."""
    ms = [m for m in _measurements(report.ensemble_runs) if m.composing]
    if not ms:
        return None
    conc = min(m.concurrency for m in ms)
    ms = sorted((m for m in ms if m.concurrency == conc), key=lambda m: m.batch)
    present = {c.model for c in ms[-1].composing}
    models = [s for s in report.steps if s in present] + sorted(present - set(report.steps))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    cmap = plt.get_cmap("tab20")
    left = [0.0] * len(ms)
    for i, name in enumerate(models):
        shares = []
        for m in ms:
            total = sum(c.queue_us + c.compute_us for c in m.composing) or float("nan")
            c = next((c for c in m.composing if c.model == name), None)
            shares.append((c.queue_us + c.compute_us) / total if c is not None else 0.0)
        ax.barh([str(m.batch) for m in ms], shares, left=left, color=cmap(i % 20), label=name)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlabel(f"share of server time in composing models (queue + compute), concurrency {conc}")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="pipeline order")
    ax.set_ylabel("particles per request")
    ax.set_xlim(0, 1)
    ax.set_title("where the ensemble spends its server time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_models(report: Report, path: Path) -> Path | None:
    """Each composing model alone: throughput relative to the whole ensemble at the same point."""
    ens = {(m.batch, m.concurrency): m.throughput for m in _measurements(report.ensemble_runs)}
    ms = [m for m in _measurements(report.model_runs) if (m.batch, m.concurrency) in ens]
    if not ms:
        return None
    batches = sorted({m.batch for m in ms})
    models = list(dict.fromkeys(m.model for m in ms))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    height = 0.8 / len(batches)
    for j, batch in enumerate(batches):
        ys, xs = [], []
        for i, name in enumerate(models):
            m = next((m for m in ms if m.model == name and m.batch == batch and m.concurrency == 1), None)
            if m is not None:
                ys.append(i + j * height)
                xs.append(m.throughput / ens[(m.batch, m.concurrency)])
        ax.barh(ys, xs, height=height, label=f"batch {batch}")
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(models))], models)
    ax.set_xscale("log")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_xlabel("particles/s of the model alone / particles/s of the ensemble (concurrency 1)")
    ax.set_title("composing models measured one by one (perf_analyzer)")
    ax.legend()
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_side_by_side(report: Report, path: Path) -> Path | None:
    """Relative particles/s of the three ways, every round as a dot, the median as the bar."""
    sbs = report.side_by_side
    if sbs is None:
        return None
    ref = sbs.median_rate("inprocess_ort")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, mode in enumerate(MODES):
        rates = [s.rate / ref for s in sbs.samples if s.mode == mode]
        ax.barh(i, sbs.median_rate(mode) / ref, color=plt.get_cmap("tab10")(i), alpha=0.7)
        ax.plot(rates, [i] * len(rates), "k.", ms=5)
        ax.annotate(
            f"{sbs.median_rate(mode) / ref:.3g}×", (sbs.median_rate(mode) / ref, i),
            textcoords="offset points", xytext=(6, -14), fontsize=8,
        )  # fmt: skip
    ax.set_yticks(range(len(MODES)), [MODE_LABELS[m] for m in MODES])
    ax.set_xscale("log")
    ax.set_xlabel("particles/s relative to in-process ONNX Runtime, 1 thread (= 1)")
    ax.set_title(f"same particles, side by side (batch {sbs.config.batch})")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(report: Report, plots: dict[str, Path | None]) -> str:
    """``serving.md``: what ran, on what, the ratios, the breakdown and the caveats."""
    lines = [
        "# Serving baseline: Triton ensemble vs in-process ONNX Runtime vs one request per particle",
        "",
        "Produced by `" + report.invocation + "` (see `benchmarks/README.md`); "
        f"the whole run took {report.elapsed_s / 60:.1f} min.",
        "",
        f"- **Machine:** {report.machine}.",
        f"- **Model repository:** {report.repository_kind}.",
        "- **Server:** the local embedded Triton 2.51 of `deploy/local` (`ufsim_serve.LocalTriton`): models "
        'declared `backend: "onnxruntime"` run in ufsim\'s *Python-based* ONNX Runtime backend, so every '
        "composing-model call crosses Triton's Python-backend IPC (shared memory + stub process). Local "
        "numbers include that overhead, which the native onnxruntime backend of the NGC container does "
        "not have; the ensemble runs 12 such steps per request.",
        "- **Only ratios are reported here.** The machine has 2 cores shared with other users and no GPU: "
        "absolute particles/s from it say nothing about production. The CSV files keep perf_analyzer's "
        "raw columns for re-analysis only.",
        "",
    ]
    sbs = report.side_by_side
    if sbs is not None:
        ref = sbs.median_rate("inprocess_ort")
        cpu_ref = sbs.median_cpu("inprocess_ort")
        c = sbs.config
        lines += [
            "## Side by side on the same particles",
            "",
            f"{c.particles} gun particles (`ufsim_export.repository.gun.synthetic_particles`, keys from "
            f"`ufsim_client.keys.rng_keys`), {c.rounds} interleaved rounds, median per mode. Batched modes "
            f"use {c.batch} particles per call; the Triton ensemble keeps {c.in_flight} asynchronous gRPC "
            f"requests in flight; the per-particle ways (synchronous batch-1 gRPC requests, or batch-1 "
            f"in-process calls) run on the first {c.per_particle} particles only.",
            "",
        ]
        lines += _table(
            ["way", "particles/s relative to in-process ORT", "client-process CPU per particle, relative"],
            [
                [MODE_LABELS[m], _fmt(sbs.median_rate(m) / ref, 2), _fmt(sbs.median_cpu(m) / cpu_ref, 2)]
                for m in MODES
            ],
        )
        ens, per = sbs.median_rate("triton_ensemble"), sbs.median_rate("triton_per_particle")
        lines += [
            "",
            "Ratios:",
            f"- Triton ensemble / in-process chained ORT: **{_fmt(ens / ref, 2)}** "
            f"(/ the same with 2 threads: {_fmt(ens / sbs.median_rate('inprocess_ort_2threads'), 2)})",
            f"- Triton ensemble / one request per particle: **{_fmt(ens / per, 2)}**",
            f"- in-process chained ORT / one request per particle: **{_fmt(ref / per, 2)}**",
            f"- in-process, one particle per call / one request per particle: "
            f"**{_fmt(sbs.median_rate('inprocess_per_particle') / per, 2)}** (what the gRPC round trip "
            "and the 12 Python-backend steps cost per request)",
            f"- ufsim_client.simulate / Triton ensemble with bare tritonclient: "
            f"**{_fmt(sbs.median_rate('ufsim_client') / ens, 2)}** (any difference is the client's own "
            "work: events, batching across events, ordering, ntuple columns)",
            "",
            "Client-process CPU counts every thread of the benchmark process (gRPC marshalling for the "
            "Triton modes and the client's batching, the ONNX Runtime work itself for the in-process "
            "mode); the server's CPU is not in it. On this 2-core machine client and server share the "
            "cores, so the Triton modes also pay for the server's CPU in wall time. ONNX Runtime's "
            "intra-op thread pool spins while waiting; with 2 threads on 2 shared cores it fights the "
            "other processes, which is why the 2-thread in-process mode can be slower than the 1-thread "
            "one here.",
            "",
            "Outputs agree: the Triton ensemble and the in-process chain give "
            + ", ".join(f"`{k}` {_fmt_agreement(v)}" for k, v in sorted(sbs.agreement.items()))
            + " (max |difference| for floats, fraction of differing entries for integers).",
            "",
        ]
        if plots.get("side_by_side"):
            lines += [f"![side by side]({plots['side_by_side'].name})", ""]  # type: ignore[union-attr]
    ens_ms = _measurements(report.ensemble_runs)
    if ens_ms:
        base = ensemble_baseline(ens_ms)
        batches = sorted({m.batch for m in ens_ms})
        concs = sorted({m.concurrency for m in ens_ms})
        lines += [
            "## Ensemble through perf_analyzer (batch × concurrency)",
            "",
            "Particles/s relative to batch 1 at concurrency 1 (perf_analyzer's `infer/sec` counts "
            "particles, i.e. batch × requests/s). `*` marks a point perf_analyzer could not stabilise "
            "within its trials (reported anyway). Requests of `b` particles are built from "
            "min(largest batch, max(32, 2^18 / b)) distinct particles (perf_analyzer prepares "
            "entries × batch rows before measuring), so at batch 8192 each request repeats 32 "
            "particles 256 times.",
            "",
        ]
        grid = {(m.batch, m.concurrency): m for m in ens_ms}
        lines += _table(
            ["batch \\ concurrency", *[str(c) for c in concs]],
            [
                [str(b)]
                + [
                    (_fmt(grid[(b, c)].throughput / base) + ("" if grid[(b, c)].stable else "*"))
                    if (b, c) in grid
                    else "–"
                    for c in concs
                ]
                for b in batches
            ],
        )
        lat = [
            [str(b)]
            + [_fmt(grid[(b, c)].p99_us / grid[(b, c)].p50_us) if (b, c) in grid else "–" for c in concs]
            for b in batches
        ]
        lines += ["", "p99 / p50 latency ratio (tail spread):", ""]
        lines += _table(["batch \\ concurrency", *[str(c) for c in concs]], lat)
        if plots.get("ensemble"):
            lines += ["", f"![ensemble grid]({plots['ensemble'].name})"]  # type: ignore[union-attr]
        lines += [""]
        point = breakdown_point(ens_ms)
        if point is not None:
            total = sum(c.queue_us + c.compute_us for c in point.composing)
            ranked = sorted(point.composing, key=lambda c: -(c.queue_us + c.compute_us))
            top = ranked[0]
            lines += [
                "## Which component dominates",
                "",
                f"perf_analyzer's per-composing-model server breakdown for the ensemble at batch "
                f"{point.batch}, concurrency {point.concurrency}: **`{top.model}` takes "
                f"{100 * (top.queue_us + top.compute_us) / total:.0f}%** of the time requests spend in "
                "composing models (queue + compute input/infer/output). Shares:",
                "",
            ]
            lines += _table(
                [
                    "composing model",
                    "share of server time",
                    "of which queue",
                    "compute infer share of its compute",
                ],
                [
                    [
                        f"`{c.model}`",
                        f"{100 * (c.queue_us + c.compute_us) / total:.1f}%",
                        f"{100 * c.queue_us / total:.1f}%",
                        f"{100 * c.compute_infer_us / c.compute_us:.0f}%" if c.compute_us else "n/a",
                    ]
                    for c in ranked
                ],
            )
            lines += [
                "",
                '"compute infer" is the Python backend\'s `execute` (ONNX Runtime run plus tensor '
                "conversion); compute input/output include copying tensors through the Python backend's "
                "shared memory. Server time is summed over steps; steps that do not depend on each "
                "other (e.g. `rich` and `muon`) run concurrently, so the sum exceeds the request latency.",
                "",
            ]
            small = min((m for m in ens_ms if m.composing), key=lambda m: (m.batch, m.concurrency))
            if small.batch < point.batch:
                small_total = sum(c.queue_us + c.compute_us for c in small.composing)
                small_top = max(small.composing, key=lambda c: c.queue_us + c.compute_us)
                lines += [
                    f"At batch {small.batch} the shares are flat (largest: `{small_top.model}`, "
                    f"{100 * (small_top.queue_us + small_top.compute_us) / small_total:.0f}% of "
                    f"{len(small.composing)} steps): there, the fixed cost of each step's request through "
                    "the Python backend dominates, not any model's arithmetic.",
                    "",
                ]
            if plots.get("breakdown"):
                lines += [f"![breakdown]({plots['breakdown'].name})", ""]  # type: ignore[union-attr]
    model_ms = _measurements(report.model_runs)
    if model_ms:
        ens_pt = {(m.batch, m.concurrency): m.throughput for m in ens_ms}
        lines += [
            "## Composing models one by one",
            "",
            "Each composing model measured alone by perf_analyzer with its own realistic inputs (the "
            "tensors it receives inside the ensemble for the same particles), particles/s relative to the "
            "whole ensemble at the same batch and concurrency:",
            "",
        ]
        lines += _table(
            ["model", "batch", "concurrency", "alone / ensemble"],
            [
                [
                    f"`{m.model}`",
                    str(m.batch),
                    str(m.concurrency),
                    _fmt(m.throughput / ens_pt.get((m.batch, m.concurrency), float("nan")))
                    + ("" if m.stable else "*"),
                ]
                for m in model_ms
            ],
        )
        if plots.get("models"):
            lines += ["", f"![models]({plots['models'].name})"]  # type: ignore[union-attr]
        lines += [""]
    runs = report.ensemble_runs + report.model_runs
    if runs:
        lines += [
            "## Commands",
            "",
            "Everything above: `make bench` (= `.venv/bin/python benchmarks/run_all.py`; `--quick` for a "
            "smoke run). It starts one local Triton (`ufsim_serve.LocalTriton`) on free ports, writes the "
            "perf_analyzer input files (`--input-data` JSON, one base64 row per particle) to a work "
            "folder (`--keep-work DIR` keeps them), and runs, with `LD_LIBRARY_PATH` holding "
            "`libcudart.so.12` from `nvidia-cuda-runtime-cu12`:",
            "",
            "```",
        ]
        lines += [display(r.command).replace(r.command[4], "127.0.0.1:<grpc-port>") for r in runs]
        lines += ["```", ""]
    if report.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in report.notes], ""]
    lines += [
        "## Caveats",
        "",
        "- 2 shared cores: the server (12 Python-backend stub processes plus Triton), perf_analyzer or the "
        "Python client, and other users' jobs all compete; concurrency above 2 mostly measures queueing.",
        "- The Python-based backend is a local stand-in for Triton's native onnxruntime backend: the "
        "Triton/in-process ratio here is a lower bound on what the NGC container gives on the same CPU.",
        "- No GPU run yet: absolute throughput and GPU ratios belong to a run on the GPU machine.",
        "",
    ]
    return "\n".join(lines)


def _fmt_agreement(v: float) -> str:
    return "0" if v == 0 else f"{v:.2g}"


def write(report: Report, out: Path) -> list[Path]:
    """CSV files, PNG plots and ``serving.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = write_csvs(report, out)
    plots = {
        "ensemble": plot_ensemble(report, out / "perf_analyzer_ensemble.png"),
        "breakdown": plot_breakdown(report, out / "perf_analyzer_breakdown.png"),
        "models": plot_models(report, out / "perf_analyzer_models.png"),
        "side_by_side": plot_side_by_side(report, out / "serving_side_by_side.png"),
    }
    written += [p for p in plots.values() if p is not None]
    runs = report.ensemble_runs + report.model_runs
    if runs:
        log = out / "perf_analyzer_stdout.txt"
        log.write_text("".join(f"$ {display(r.command)}\n{r.stdout}\n" for r in runs))
        written.append(log)
    md = out / "serving.md"
    md.write_text(markdown(report, plots))
    written.append(md)
    return written
