"""The main job end to end: embedded Triton, real HepMC2 bunch crossings and Pythia 8 events, ntuples, report.

Run through ``make demo``. Uses ../shared/data/lamarr-hepmc2 when present; otherwise (a user's clone)
it simulates Pythia 8 events only, plus a particle gun. Everything lands in runs/demo/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ufsim_serve import LocalTriton

ROOT = Path(__file__).resolve().parents[1]


def _ufsim(*args: str) -> None:
    """Run the user-facing `ufsim` command line, as a simulation job would."""
    cmd = [str(Path(sys.executable).with_name("ufsim")), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    """Start the server, simulate, report, stop the server."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("SHARED", ROOT.parent / "shared")))
    parser.add_argument("--pythia-events", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo")
    args = parser.parse_args()

    missing = [
        p
        for p in args.repository.glob("*/config.pbtxt")
        if p.parent.name != "pipeline" and not (p.parent / "1" / "model.onnx").is_file()
    ]
    if missing:
        raise SystemExit(
            f"model repository incomplete ({[p.parent.name for p in missing]}): run `make train`"
        )
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    hepmc = sorted((args.shared / "data" / "lamarr-hepmc2").glob("evt*.mc2"))
    start = time.perf_counter()
    with LocalTriton(args.repository, log_path=args.out / "triton.log") as server:
        print(f"embedded Triton ready at {server.grpc_url} (log: {args.out / 'triton.log'})", flush=True)
        jobs: list[tuple[str, list[str]]] = []
        if hepmc:
            jobs.append(("hepmc2", ["--input", *map(str, hepmc), "--crossing", "file"]))
        else:
            print(f"no HepMC2 sample under {args.shared}; simulating Pythia 8 and a particle gun", flush=True)
            jobs.append(
                ("gun", ["--gun", "pid=211/321/2212/13/11,p=2000:100000,eta=2:5,n=50", "--events", "200"])
            )
        jobs.append(("pythia", ["--pythia", "--events", str(args.pythia_events)]))
        for seed, (name, source) in enumerate(jobs, start=1):
            ntuple = args.out / f"{name}.root"
            _ufsim(
                "simulate",
                "--server",
                server.grpc_url,
                *source,
                "--seed",
                str(seed),
                "--output",
                str(ntuple),
                "--no-progress",
            )
            _ufsim("report", str(ntuple), "--output", str(args.out / f"report-{name}"))
    print(f"demo finished in {time.perf_counter() - start:.0f} s; ntuples and reports in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
