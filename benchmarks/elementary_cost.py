"""What batch independence costs: ufsim's elementary functions against ONNX Runtime's own operators.

The graphs compute log, sqrt, asinh, atan2 and cos/sin from exactly rounded arithmetic
(``ufsim_export.graphs.elementary``) because ONNX Runtime's vectorised operators make a row's bits depend on
its position in the batch. This times both versions of each function side by side in one process
(interleaved repeats, median rows/s), checks that the operator version really is position-dependent
and the elementary one is not, and writes ``elementary_cost.csv``, ``elementary_cost.png`` and
``elementary_cost.md`` under ``--out``.

    .venv/bin/python benchmarks/elementary_cost.py [--rows 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import platform
import shlex
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import numpy as np
import onnx
import onnxruntime as ort
from timing import rows_per_second

from ufsim_export.graphs import elementary as el
from ufsim_export.graphs.builder import GraphBuilder

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]

Builder = Callable[[GraphBuilder, dict[str, str]], str]

# name -> (elementary version, ONNX Runtime operator version), on inputs x > 0, y, u in [0, 1);
# "atan2" is timed against ONNX's Atan(y / x), which has no quadrant logic (ONNX has no Atan2).
FUNCTIONS: dict[str, tuple[Builder, Builder]] = {
    "log": (
        lambda b, v: el.log(el.GraphOps(b), v["x"], min_exp=-30, max_exp=60),
        lambda b, v: b.op("Log", v["x"]),
    ),
    "sqrt": (
        lambda b, v: el.sqrt(el.GraphOps(b), v["x"], min_exp=-30, max_exp=60),
        lambda b, v: b.op("Sqrt", v["x"]),
    ),
    "asinh": (lambda b, v: el.asinh(el.GraphOps(b), v["y"]), lambda b, v: b.op("Asinh", v["y"])),
    "atan2": (
        lambda b, v: el.atan2(el.GraphOps(b), v["y"], v["x"]),
        lambda b, v: b.op("Atan", b.op("Div", v["y"], v["x"])),
    ),
    "cos_sin": (
        lambda b, v: b.concat(*el.cos_sin_turns(el.GraphOps(b), v["u"])),
        lambda b, v: (lambda a: b.concat(b.op("Cos", a), b.op("Sin", a)))(
            b.op("Mul", v["u"], b.const(2 * np.pi))
        ),
    ),
}


def model(build: Builder, width: int) -> onnx.ModelProto:
    """A graph of one function over [N, 1] inputs x, y, u, with an [N, width] output."""
    b = GraphBuilder("cost")
    values = {name: b.input(name, "FP32", 1) for name in ("x", "y", "u")}
    b.output(build(b, values), "out", "FP32", width)
    return b.build()


def inputs(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": np.exp(rng.uniform(-10, 20, (rows, 1))).astype(np.float32),
        "y": rng.normal(0, 100, (rows, 1)).astype(np.float32),
        "u": rng.uniform(0, 1, (rows, 1)).astype(np.float32),
    }


def session(m: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])


def feeds_for(s: ort.InferenceSession, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    used = {i.name for i in s.get_inputs()}
    return {k: v for k, v in data.items() if k in used}


def position_dependent(s: ort.InferenceSession, feeds: dict[str, np.ndarray], rows: int = 4099) -> bool:
    """Whether some row's result differs between the whole batch and one row at a time."""
    small = {k: v[:rows] for k, v in feeds.items()}
    whole = s.run(None, small)[0]
    alone = np.concatenate([s.run(None, {k: v[i : i + 1] for k, v in small.items()})[0] for i in range(rows)])
    return not np.array_equal(whole, alone)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "benchmarks/elementary_cost.py", *(argv or sys.argv[1:])])

    data = inputs(args.rows, seed=0)
    sessions = {
        (name, way): session(model(build, 2 if name == "cos_sin" else 1))
        for name, pair in FUNCTIONS.items()
        for way, build in zip(("elementary", "operator"), pair, strict=True)
    }
    feeds = {key: feeds_for(s, data) for key, s in sessions.items()}
    samples: dict[tuple[str, str], list[float]] = {key: [] for key in sessions}
    for _ in range(args.repeats):
        for key, s in sessions.items():
            samples[key].append(rows_per_second(s, feeds[key], args.min_time))
    rows = []
    for name in FUNCTIONS:
        elementary = statistics.median(samples[(name, "elementary")])
        operator = statistics.median(samples[(name, "operator")])
        rows.append(
            {
                "function": name,
                "elementary_rows_per_s": round(elementary),
                "operator_rows_per_s": round(operator),
                "operator_over_elementary": round(operator / elementary, 2),
                "operator_position_dependent": position_dependent(
                    sessions[(name, "operator")], feeds[(name, "operator")]
                ),
                "elementary_position_dependent": position_dependent(
                    sessions[(name, "elementary")], feeds[(name, "elementary")]
                ),
            }
        )

    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "elementary_cost.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([r["function"] for r in rows], [r["operator_over_elementary"] for r in rows])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("ORT operator speed / elementary speed")
    ax.set_title("cost of batch-independent elementary functions (1 thread)")
    fig.tight_layout()
    fig.savefig(args.out / "elementary_cost.png", dpi=100)

    lines = [
        "# Cost of batch-independent elementary functions",
        "",
        f"Made by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, 2 shared cores (noisy: ratios only), "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__}, 1 intra-op thread.",
        f"- Method: {args.rows:,} rows, {args.repeats} interleaved repeats of at least {args.min_time} s "
        "of back-to-back `session.run` per version; median rows/s. 'position-dependent': some row of "
        "4,099 gets other bits alone than inside the batch.",
        "",
        "| function | ORT operator / elementary speed | ORT operator position-dependent | "
        "elementary position-dependent |",
        "|---|---:|---|---|",
    ]
    lines += [
        f"| {r['function']} | {r['operator_over_elementary']:.2f} | {r['operator_position_dependent']} | "
        f"{r['elementary_position_dependent']} |"
        for r in rows
    ]
    lines += [
        "",
        "![cost](elementary_cost.png)",
        "",
        "These functions run only in the `features` step (the generators' normal noise comes from a "
        "quantile table, `graphs/rng.py`); `cpu_memory/report.md` gives each step's share of the CPU.",
        "",
    ]
    (args.out / "elementary_cost.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'elementary_cost.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
