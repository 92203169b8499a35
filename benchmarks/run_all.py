"""Run every benchmark and write benchmarks/results/ (CSV, PNG plots, markdown reports).

Serving (this file's own work, ``benchmarks/serving``): one local Triton on the model repository,
perf_analyzer on the ensemble (batch × concurrency) and on each composing model, then the same
particles side by side through the Triton ensemble, chained ONNX Runtime in-process and one request
per particle. Also runs ``benchmarks/gbdt_speed.py`` (GBDT conversion speeds) when present.

    .venv/bin/python benchmarks/run_all.py            # full run: serving ~11 min on 2 cores, GBDTs ~7
    .venv/bin/python benchmarks/run_all.py --quick    # smoke run, a few minutes
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import perf, side_by_side
from serving.common import (
    ENSEMBLE,
    RESULTS,
    ROOT,
    choose_repository,
    machine_note,
    particles,
    perf_analyzer_problem,
    take,
)
from serving.inputs import model_inputs, rows_for_batch, tile, write_input_json
from serving.report import Report, write
from tritonclient.utils import InferenceServerException

from ufsim_serve import LocalTriton

GBDT_SPEED = ROOT / "benchmarks" / "gbdt_speed.py"
TRAINED_GBDTS = ROOT / "export" / "models"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small grid and short windows (smoke run)")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)"
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="model repository to serve (default: model_repository/ when complete, else a toy one)",
    )
    parser.add_argument("--keep-work", type=Path, default=None, help="keep inputs, raw CSVs and logs here")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="ensemble batch sizes")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="concurrency levels")
    parser.add_argument("--skip-perf-analyzer", action="store_true", help="only the side-by-side comparison")
    parser.add_argument(
        "--skip-models", action="store_true", help="no per-composing-model perf_analyzer runs"
    )
    parser.add_argument("--skip-side-by-side", action="store_true", help="no side-by-side comparison")
    parser.add_argument("--skip-gbdt", action="store_true", help=f"do not run {GBDT_SPEED.name}")
    return parser.parse_args(argv)


def log(message: str) -> None:
    """Progress on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_gbdt_speed(quick: bool) -> int:
    """benchmarks/gbdt_speed.py on the trained GBDTs (export/models) when present; --quick when asked."""
    cmd = [sys.executable, str(GBDT_SPEED)]
    if any(TRAINED_GBDTS.glob("*.pkl")):
        cmd += ["--models", str(TRAINED_GBDTS)]
    if quick:
        helptext = subprocess.run([*cmd, "--help"], capture_output=True, text=True).stdout
        if "--quick" in helptext:
            cmd.append("--quick")
        elif "--repeats" in helptext:
            cmd += ["--repeats", "1"]
    log(f"running {shlex.join(cmd)}")
    return subprocess.run(cmd, cwd=ROOT).returncode


def serving(args: argparse.Namespace, work: Path) -> Report:
    """The serving benchmarks against one local Triton; returns what the report needs."""
    start = time.perf_counter()
    settings = perf.QUICK if args.quick else perf.FULL
    batches = args.batches or ([1, 64, 1024] if args.quick else [1, 64, 1024, 8192])
    concurrency = args.concurrency or ([1, 2] if args.quick else [1, 2, 4])
    model_batches = [1024] if args.quick else [1024, 8192]
    model_batches = [b for b in model_batches if b in batches] or [max(batches)]
    sbs_config = (
        side_by_side.Config(particles=8192, batch=2048, in_flight=2, per_particle=100, rounds=2, target_s=1.0)
        if args.quick
        else side_by_side.Config(particles=32768, batch=8192, in_flight=2, per_particle=300, rounds=4)
    )

    log("choosing the model repository")
    repository = choose_repository(work, args.repository)
    log(f"repository: {repository.kind} at {repository.path}")
    invocation = shlex.join(["benchmarks/run_all.py", *sys.argv[1:]])
    report = Report(repository.kind, machine_note(), f".venv/bin/python {invocation}", repository.steps)
    batch = particles(max(max(batches), 4096, sbs_config.particles))
    problem = perf_analyzer_problem()
    run_perf = not args.skip_perf_analyzer and problem is None
    if problem is not None and not args.skip_perf_analyzer:
        report.notes.append(f"perf_analyzer not run: {problem}")
        log(f"skipping perf_analyzer: {problem}")
    pool = max(max(batches), 4096)
    tensors = model_inputs(repository, take(batch, 0, pool)) if run_perf else {}
    points = [(ENSEMBLE, b, c) for b in batches for c in concurrency]
    if not args.skip_models:
        points += [(model, b, 1) for b in model_batches for model in repository.steps]

    log("starting the local Triton")
    with LocalTriton(repository.path, log_path=work / "tritonserver.log") as server:
        log(f"Triton ready at {server.grpc_url}")
        latency: dict[tuple[str, int], float] = {}
        for model, b, c in points if run_perf else []:
            rows = rows_for_batch(b, pool)
            data = work / "inputs" / f"{model}_b{b}.json"
            if (model, b) not in latency:
                try:
                    latency[model, b] = perf.probe_latency(server.grpc_url, model, tile(tensors[model], b))
                except InferenceServerException as err:
                    report.notes.append(f"`{model}` batch {b}: probe request failed, not measured: {err}")
                    log(f"  probe request to {model} batch {b} failed: {err}")
                    latency[model, b] = math.nan
                write_input_json(data, tensors[model], rows)
            if math.isnan(latency[model, b]):
                continue
            window = settings.requests_per_window(latency[model, b])
            log(
                f"perf_analyzer {model} batch {b} concurrency {c} ({window} requests per window, {rows} rows)"
            )
            result = perf.run(model, server.grpc_url, b, c, data, work, window, settings)
            _record(report, result, report.ensemble_runs if model == ENSEMBLE else report.model_runs)
        if not args.skip_side_by_side:
            log(f"side by side: {sbs_config}")
            report.side_by_side = side_by_side.run(repository, server.grpc_url, batch, sbs_config, log)
    report.elapsed_s = time.perf_counter() - start
    return report


def _record(report: Report, result: perf.Run, runs: list[perf.Run]) -> None:
    runs.append(result)
    if result.returncode != 0 or not result.measurements:
        tail = " ".join(result.stdout.strip().splitlines()[-3:])
        report.notes.append(
            f"perf_analyzer `{result.model}` batch {result.batch} concurrency {result.concurrency} "
            f"exited {result.returncode} with {len(result.measurements)} measurement(s): {tail[:300]}"
        )
        log(f"  perf_analyzer {result.model} batch {result.batch} failed ({result.returncode}): {tail[:300]}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the exit status."""
    args = parse_args(argv)
    status = 0
    if args.keep_work is not None:
        args.keep_work.mkdir(parents=True, exist_ok=True)
        report = serving(args, args.keep_work.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="ufsim-bench-") as tmp:
            report = serving(args, Path(tmp))
    for path in write(report, args.out):
        log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if report.notes:
        status = 1
    if not args.skip_gbdt and GBDT_SPEED.is_file():
        status = run_gbdt_speed(args.quick) or status
    elif not args.skip_gbdt:
        log(f"{GBDT_SPEED.relative_to(ROOT)} not found; skipped")
    return status


if __name__ == "__main__":
    sys.exit(main())
