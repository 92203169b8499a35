"""CPU per particle and server memory, side by side in one run (issue 9's benchmark).

- the Lamarr tracking library in C (``benchmarks/cpu/lamarr_harness.c``, compiled now, ``dlopen``, one
  particle per call) on real Pythia/gun particles from ``../shared/data/lamarr-trk-2016MU``;
- the same ONNX graphs the ensemble runs, chained in-process with ONNX Runtime (1 thread), per step;
- the served pipeline: ``ufsim-serve`` (embedded default) and the ``ufsim simulate`` command on the same
  particles as a parquet table, CPU of the server's process group plus the client;
- SQLamarr's tracking chain vs the ufsim client on the ten HepMC2 crossings;
- the server's PSS fresh, under 65,536-particle requests (one, then four at once) and 30 s after each.

    .venv/bin/python benchmarks/cpu_memory.py                 # ~6 min on 2 shared cores
    .venv/bin/python benchmarks/cpu_memory.py --quick         # smoke run, ~1.5 min
    .venv/bin/python benchmarks/cpu_memory.py --only hepmc,served --out /tmp/bench   # some parts only

The library and SQLamarr parts are skipped, with the reason printed, when ../shared is absent.
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

from cpu import inprocess, lamarr_c, sample, served, sqlamarr_chain
from cpu.report import Results, write
from serving.common import machine_note

ROOT = Path(__file__).resolve().parents[1]
IDLE_WAIT_S = 20
"""Seconds of quiet before the memory profile, longer than the repository's idle_release_seconds."""
_SUMMARY = re.compile(r"client CPU ([\d.]+) us/particle \(([\d.]+) without reading")
PARTS = ("library", "inprocess", "served", "hepmc", "memory")
"""The benchmark's parts, in the order they run (``--only`` picks some)."""


def _parts(text: str) -> tuple[str, ...]:
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in chosen if part not in PARTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown}; choose among {','.join(PARTS)}")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="cpu_memory", help="results go to benchmarks/results/NAME")
    parser.add_argument("--out", type=Path, default=None, help="results folder (overrides --name)")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository", help="model repository")
    parser.add_argument("--particles", type=int, default=100_000, help="particles for the served run")
    parser.add_argument("--quick", action="store_true", help="fewer particles, short timings, 5 s rests")
    parser.add_argument("--skip-memory", action="store_true", help="no memory profile")
    parser.add_argument("--skip-hepmc", action="store_true", help="no HepMC2 comparison with SQLamarr")
    parser.add_argument(
        "--only",
        type=_parts,
        default=PARTS,
        help=f"comma-separated parts to run (default all: {','.join(PARTS)})",
    )
    return parser.parse_args(argv)


def log(message: str) -> None:
    """Progress on stderr, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run every part; returns 0, or 1 when a part failed (the report's notes say which)."""
    args = parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / args.name
    n = 20_000 if args.quick else args.particles
    repository = args.repository.resolve()
    results = Results(
        machine_note(),
        shlex.join(
            [".venv/bin/python", "benchmarks/cpu_memory.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        str(repository.relative_to(ROOT) if repository.is_relative_to(ROOT) else repository),
        "",
    )
    parts = set(args.only) - {
        part for part, skip in (("memory", args.skip_memory), ("hepmc", args.skip_hepmc)) if skip
    }
    missing = sample.shared_available()
    if missing:
        log(f"skipping the Lamarr library and SQLamarr parts: {missing}")
        results.notes.append(f"Lamarr library and SQLamarr not timed: {missing}")
        particles = sample.gun_particles(n)
    else:
        particles, chosen = sample.shared_particles(n)
    results.sample = particles.source
    status = 0
    with tempfile.TemporaryDirectory(prefix="ufsim-cpu-bench-") as tmp:
        work = Path(tmp)
        if not missing and "library" in parts:
            status |= _library(results, chosen, work, args.quick)
        inputs = particles.ensemble_inputs()
        if "inprocess" in parts:
            log("in-process ONNX Runtime, per step")
            results.steps = inprocess.step_costs(repository, inputs, 8192, 1 if args.quick else 3)
            results.paths.append(
                {
                    "path": "ufsim graphs chained in-process, ONNX Runtime 1 thread",
                    "particles": len(particles),
                    "cpu_us_per_particle": sum(results.steps.values()),
                    "server_us_per_particle": "",
                    "client_us_per_particle": "",
                    "wall_s": "",
                }
            )
        if not parts & {"served", "hepmc", "memory"}:
            return _finish(results, out, status)
        log("starting ufsim-serve")
        server = served.start_served(repository, work)
        time.sleep(3)
        results.fresh_pss = server.pss()
        log(f"fresh server PSS {results.fresh_pss / 1e9:.2f} GB")
        try:
            if "served" in parts:
                status |= _served(results, server, particles, work, args)
            if "hepmc" in parts and not missing:
                status |= _hepmc(results, server, work, 2 if args.quick else 5)
            if "memory" in parts:
                log(f"memory profile: {IDLE_WAIT_S} s idle first, then 65,536-particle requests")
                time.sleep(IDLE_WAIT_S)
                big = {k: v[:65536] for k, v in inputs.items()}
                if len(big["pid"]) < 65536:
                    reps = -(-65536 // len(big["pid"]))
                    big = {k: __import__("numpy").concatenate([v] * reps)[:65536] for k, v in big.items()}
                profile, notes = served.memory_profile(
                    server, served.max_request(server, big), rest_s=5 if args.quick else 30
                )
                results.memory = profile.samples
                results.notes += notes
                status |= int(any("failed" in note for note in notes))
        finally:
            server.stop()
    return _finish(results, out, status)


def _finish(results: Results, out: Path, status: int) -> int:
    """Write the results; returns ``status``."""
    for path in write(results, out):
        log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return status


def _library(results: Results, chosen: object, work: Path, quick: bool) -> int:
    """Time the library's four functions in C."""
    import pandas as pd

    assert isinstance(chosen, pd.DataFrame)
    count = 2000 if quick else 5000
    acc_in = chosen[list(sample.ACCEPTANCE_COLUMNS)].to_numpy()[:count]
    res, cov = sample.track_conditions(count)
    log(f"Lamarr library in C: {len(acc_in)} particles, {len(res)} tracks")
    try:
        cost = lamarr_c.time_library(
            sample.library_path(), acc_in, res, cov, work / "harness", 0.3 if quick else 2.0
        )
    except (RuntimeError, OSError) as error:
        results.notes.append(f"Lamarr library not timed: {error}")
        log(f"  failed: {error}")
        return 1
    results.library_calls = cost.us_per_call
    results.reconstructed_fraction = cost.reconstructed_fraction
    results.paths.append(
        {
            "path": "Lamarr library, C, one particle per call (tracking only)",
            "particles": cost.particles,
            "cpu_us_per_particle": cost.us_per_particle,
            "server_us_per_particle": "",
            "client_us_per_particle": "",
            "wall_s": "",
        }
    )
    results.notes.append(f"C harness built with {cost.compiler}, -O2")
    return 0


def _served(
    results: Results, server: served.Served, particles: sample.Sample, work: Path, args: argparse.Namespace
) -> int:
    """``ufsim simulate`` on the whole table and on a tenth of its events; per particle and marginal."""
    full = particles.write_parquet(work / "particles.parquet")
    events = int(particles.table["event"].max()) + 1
    tenth = max(1, events // 10)
    small_particles = int((particles.table["event"] < tenth).sum())
    runs: dict[str, served.ClientRun] = {}
    summaries: dict[str, tuple[float, float]] = {}
    repeats = 1 if args.quick else 2
    log("served: warm-up run")
    served.run_client(
        server,
        ["--input", str(full), "--events", str(tenth), "--seed", "1", "--output", str(work / "w.parquet")],
        small_particles,
    )
    for label, count, extra in (
        ("tenth", small_particles, ["--events", str(tenth)]),
        ("full", len(particles), []),
    ):
        for _ in range(repeats):
            log(f"served: ufsim simulate on {count:,} particles")
            command = ["--input", str(full), *extra, "--seed", "1", "--output", str(work / "out.parquet")]
            run, summary = _client_with_summary(server, command, count)
            total = run.client_cpu_s + run.server_cpu_s
            if label not in runs or total < runs[label].client_cpu_s + runs[label].server_cpu_s:
                runs[label], summaries[label] = run, summary
    full_run, small_run = runs["full"], runs["tenth"]
    results.paths.append(_served_row("ufsim served (ufsim-serve + ufsim client), whole command", full_run))
    delta = full_run.particles - small_run.particles
    marginal = served.ClientRun(
        delta,
        full_run.client_cpu_s - small_run.client_cpu_s,
        full_run.server_cpu_s - small_run.server_cpu_s,
        full_run.wall_s - small_run.wall_s,
    )
    results.paths.append(_served_row("ufsim served (ufsim-serve + ufsim client), marginal", marginal))
    cpu_us, beyond = summaries["full"]
    # the same difference for the client's own CPU beyond reading: per particle, without per-command costs
    beyond_s = {label: summaries[label][1] * runs[label].particles * 1e-6 for label in runs}
    marginal_beyond = (beyond_s["full"] - beyond_s["tenth"]) / delta * 1e6
    results.client = {
        "cpu_us": cpu_us,
        "beyond_reading_us": beyond,
        "beyond_reading_marginal_us": marginal_beyond,
        "per_command_s": beyond_s["full"] - marginal_beyond * 1e-6 * full_run.particles,
    }
    return 0


def _client_with_summary(
    server: served.Served, command: list[str], count: int
) -> tuple[served.ClientRun, tuple[float, float]]:
    """One client run, and the (CPU, CPU beyond reading) per particle its summary line reports."""
    captured: list[str] = []
    run = served.run_client(server, command, count, stdout=captured)
    match = _SUMMARY.search(captured[0])
    if match is None:
        raise RuntimeError(f"no CPU summary in the client's output: {captured[0][-300:]}")
    return run, (float(match.group(1)), float(match.group(2)))


def _served_row(path: str, run: served.ClientRun) -> dict[str, object]:
    return {
        "path": path,
        "particles": run.particles,
        "cpu_us_per_particle": 1e6 * (run.client_cpu_s + run.server_cpu_s) / run.particles,
        "server_us_per_particle": 1e6 * run.server_cpu_s / run.particles,
        "client_us_per_particle": 1e6 * run.client_cpu_s / run.particles,
        "wall_s": run.wall_s,
    }


def _hepmc(results: Results, server: served.Served, work: Path, repeats: int) -> int:
    """SQLamarr's tracking chain and the ufsim client (tracking + PID) on the ten HepMC2 crossings."""
    from ufsim_client import open_writer, read_hepmc, simulate

    files = sorted(sample.HEPMC_DIR.glob("evt*.mc2"))
    status = 0
    for repeat in range(repeats):
        if not status:
            log(f"HepMC2 crossings, repeat {repeat + 1}/{repeats}: SQLamarr")
            status = _sqlamarr(results, files, work, repeat)
        log(f"HepMC2 crossings, repeat {repeat + 1}/{repeats}: ufsim client")
        server_before = server.cpu()
        summary = simulate(
            read_hepmc(files, crossing="file"),
            [server.grpc_url],
            open_writer(work / "hepmc.parquet"),
            seed=repeat + 1,
        )
        server_cpu = server.cpu() - server_before
        results.hepmc.append(
            {
                "way": "ufsim served, tracking + PID (client + server)",
                "repeat": repeat,
                "particles": summary.particles,
                "cpu_s": summary.cpu_s + server_cpu,
                "wall_s": summary.wall_s,
                "client_cpu_s": summary.cpu_s,
                "reading_cpu_s": summary.source_cpu_s,
                "server_cpu_s": server_cpu,
            }
        )
    ufsim = [row for row in results.hepmc if row["server_cpu_s"] != ""]
    if ufsim:
        best = min(ufsim, key=lambda row: row["cpu_s"])
        results.notes.append(
            f"HepMC2 crossings, ufsim's best run: client {best['client_cpu_s']:.3f} s CPU (reading and "
            f"checking the files {best['reading_cpu_s']:.3f} s), server {best['server_cpu_s']:.3f} s"
        )
    return status


def _sqlamarr(results: Results, files: list[Path], work: Path, repeat: int) -> int:
    """One run of SQLamarr's tracking chain; 1 (and a note) when SQLamarr cannot run."""
    try:
        chain = sqlamarr_chain.run_chain(
            files,
            sample.library_path(),
            sample.HEPMC_DIR / "PrimaryVertexSmearing.db",
            Path("/dev/shm") if Path("/dev/shm").is_dir() else work,
            seed=repeat + 1,
        )
    except (ImportError, OSError) as error:
        results.notes.append(f"SQLamarr not run: {error} (pip install -r requirements/bench.txt)")
        return 1
    results.hepmc.append(
        {
            "way": "SQLamarr 0.0rc7 tracking chain (library in C)",
            "repeat": repeat,
            "particles": chain.charged,
            "cpu_s": chain.cpu_s,
            "wall_s": chain.wall_s,
            "client_cpu_s": chain.cpu_s,
            "reading_cpu_s": "",
            "server_cpu_s": "",
        }
    )
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as KeyboardInterrupt, so that the server is stopped on the way out."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
