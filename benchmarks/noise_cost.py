"""What the generators' noise costs: the table inverse CDF against the Box-Muller it replaced.

Each generator of the pipeline spec is adapted from its learnt model in ``export/models`` twice in one
process, once with today's :func:`ufsim_export.graphs.rng.normals_graph` (table inverse CDF) and once with
the former Box-Muller on exactly rounded log/sqrt/cos/sin (rebuilt here as the baseline), and both are
timed side by side (1 intra-op thread, interleaved repeats, median), together with the noise graphs alone.
Writes ``noise_cost.csv`` and ``noise_cost.md`` under ``--out``.

    .venv/bin/python benchmarks/noise_cost.py [--rows 8192] [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
from timing import rows_per_second

from ufsim_export.graphs import elementary as el
from ufsim_export.graphs import rng
from ufsim_export.graphs.builder import GraphBuilder
from ufsim_export.graphs.steps import adapt_learnt
from ufsim_export.spec import PipelineSpec, StepSpec, default_spec_path, load_spec

ROOT = Path(__file__).resolve().parents[1]

Noise = Callable[[GraphBuilder, str, int, int], str]


def box_muller_graph(b: GraphBuilder, key: str, stream: int, dim: int) -> str:
    """The former noise (until issue 9): Box-Muller on 24-bit uniforms with exactly rounded functions."""
    o = el.GraphOps(b)
    u = rng.uniforms_graph(b, key, stream, dim + dim % 2)
    u1, u2 = b.cols(u, range(0, dim + dim % 2, 2)), b.cols(u, range(1, dim + dim % 2, 2))
    r = el.sqrt(o, o.mul(el.log(o, u1, min_exp=-25, max_exp=1), o.const(-2.0)), min_exp=-24, max_exp=6)
    cos, sin = el.cos_sin_turns(o, u2)
    return b.cols(b.concat(o.mul(r, cos), o.mul(r, sin)), range(dim))


WAYS: dict[str, Noise] = {"box_muller": box_muller_graph, "table": rng.normals_graph}


def generator(spec: PipelineSpec, step: StepSpec, models: Path, noise: Noise) -> onnx.ModelProto:
    """The served model of a generator step with the given noise graph."""
    with mock.patch.object(rng, "normals_graph", noise):
        return adapt_learnt(spec, step, onnx.load(models / f"{step.name}.onnx"))


def noise_only(step: StepSpec, noise: Noise) -> onnx.ModelProto:
    """The noise of a generator step alone: rng_key -> [N, noise_dim]."""
    assert step.stream is not None and step.noise_dim is not None
    b = GraphBuilder(f"noise_{step.name}")
    key = b.input("rng_key", "UINT64", 1)
    b.output(noise(b, key, step.stream, step.noise_dim), "z", "FP32", step.noise_dim)
    return b.build()


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def feeds(s: ort.InferenceSession, rows: int, seed: int, step: StepSpec) -> dict[str, np.ndarray]:
    """Random keys and N(0, 1) conditions for every input of a session.

    The ``applies_to`` tensor gets a value the step applies to, so every row is computed.
    """
    r = np.random.default_rng(seed)
    out = {}
    for arg in s.get_inputs():
        width = arg.shape[1]
        if arg.type == "tensor(uint64)":
            out[arg.name] = r.integers(0, 2**64, (rows, width), dtype=np.uint64, endpoint=False)
        elif step.applies_to is not None and arg.name == step.applies_to.tensor:
            out[arg.name] = np.full((rows, width), step.applies_to.values[0], np.int32)
        else:
            out[arg.name] = r.normal(size=(rows, width)).astype(np.float32)
    return out


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", newline="") as f:
        f.write(text)
    os.replace(f.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=8192, help="batch size")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--models", type=Path, default=ROOT / "export" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/noise_cost.py", *(argv or sys.argv[1:])])

    spec = load_spec(default_spec_path())
    steps = [s for s in spec.steps if s.kind == "generator"]
    if not steps:
        raise SystemExit(f"{default_spec_path()}: the spec has no generator step to time")
    sessions: dict[tuple[str, str, str], ort.InferenceSession] = {}
    for step in steps:
        for way, noise in WAYS.items():
            sessions[(step.name, "generator", way)] = session(generator(spec, step, args.models, noise))
            sessions[(step.name, "noise", way)] = session(noise_only(step, noise))
    by_name = {step.name: step for step in steps}
    inputs = {key: feeds(s, args.rows, seed=0, step=by_name[key[0]]) for key, s in sessions.items()}
    samples: dict[tuple[str, str, str], list[float]] = {key: [] for key in sessions}
    for _ in range(args.repeats):
        for key, s in sessions.items():
            samples[key].append(rows_per_second(s, inputs[key], args.min_time))

    def us(step: str, part: str, way: str) -> float:
        return 1e6 / statistics.median(samples[(step, part, way)])

    rows = [
        {
            "step": step.name,
            "noise_dim": step.noise_dim,
            "generator_us_box_muller": round(us(step.name, "generator", "box_muller"), 2),
            "generator_us_table": round(us(step.name, "generator", "table"), 2),
            "generator_speedup": round(
                us(step.name, "generator", "box_muller") / us(step.name, "generator", "table"), 2
            ),
            "noise_us_box_muller": round(us(step.name, "noise", "box_muller"), 2),
            "noise_us_table": round(us(step.name, "noise", "table"), 2),
            "noise_speedup": round(us(step.name, "noise", "box_muller") / us(step.name, "noise", "table"), 2),
        }
        for step in steps
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(args.out / "noise_cost.csv", buffer.getvalue())

    total = {way: sum(us(s.name, "generator", way) for s in steps) for way in WAYS}
    lines = [
        "# Cost of the generators' noise: table inverse CDF against Box-Muller",
        "",
        f"Made by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, 2 shared cores (noisy: ratios only), "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}, 1 intra-op thread.",
        f"- Method: batch {args.rows:,}, {args.repeats} interleaved repeats of at least {args.min_time} s of "
        "back-to-back `session.run` per model; median. Each generator is the served model adapted from "
        "`export/models` with either noise graph; 'noise' is the noise graph alone. CPU µs per particle.",
        "",
        "| generator | noise_dim | Box-Muller µs | table µs | speed-up | noise alone: Box-Muller µs | "
        "table µs | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['step']} | {r['noise_dim']} | {r['generator_us_box_muller']:.2f} | "
        f"{r['generator_us_table']:.2f} | {r['generator_speedup']:.2f} | {r['noise_us_box_muller']:.2f} | "
        f"{r['noise_us_table']:.2f} | {r['noise_speedup']:.2f} |"
        for r in rows
    ]
    lines += [
        f"| all generators | | {total['box_muller']:.2f} | {total['table']:.2f} | "
        f"{total['box_muller'] / total['table']:.2f} | | | |",
        "",
    ]
    write_atomically(args.out / "noise_cost.md", "\n".join(lines))
    print(f"wrote {args.out / 'noise_cost.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
