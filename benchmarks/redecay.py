"""Events per second of in-process Pythia 8 event generation with and without ReDecay (ratio only).

What is timed is what a ``ufsim simulate --pythia`` job spends making its events: generation and the
conversion to ufsim events (:func:`ufsim_client.generate_pythia`), after Pythia's initialisation; the
served simulation costs the same per event either way. Runs alternate (plain, ReDecay, plain, ...) so
the noisy shared machine affects both alike; the report gives the median events/s of each and their
ratio. In min bias most underlying events hold no D0 and are generated anew, which bounds the gain.

    .venv/bin/python benchmarks/redecay.py [--events 300] [--signal 421] [--times 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from ufsim_client import generate_pythia

RESULTS = Path(__file__).resolve().parent / "results"


def events_per_second(n_events: int, seed: int, signal: int | None, times: int) -> float:
    """Events/s of one generation run (the Pythia initialisation included, as in a job)."""
    start = time.perf_counter()
    produced = sum(
        1 for _ in generate_pythia(seed=seed, n_events=n_events, redecay=signal, redecay_times=times)
    )
    elapsed = time.perf_counter() - start
    return produced / elapsed


def main() -> None:
    """Run the comparison and write results/redecay.csv and results/redecay.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--signal", type=int, default=421, help="PDG id re-decayed (default D0)")
    parser.add_argument("--times", type=int, default=10, help="events per underlying event")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for repeat in range(args.repeats):
        for mode, signal in (("plain", None), ("redecay", args.signal)):
            rate = events_per_second(args.events, seed=100 + repeat, signal=signal, times=args.times)
            rows.append(
                {"repeat": repeat, "mode": mode, "events": args.events, "events_per_s": f"{rate:.2f}"}
            )
            print(f"{mode:8s} repeat {repeat}: {rate:.1f} events/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "redecay.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    median = {
        m: statistics.median(float(r["events_per_s"]) for r in rows if r["mode"] == m)
        for m in ("plain", "redecay")
    }
    ratio = median["redecay"] / median["plain"]
    (args.out / "redecay.md").write_text(
        "# ReDecay: event generation rate\n\n"
        "In-process Pythia 8 (default card: 13 TeV min bias, LHCb vertex spread), "
        f"{args.events} events per run, {args.repeats} alternating runs each. ReDecay of PDG {args.signal} "
        f"(both charges), {args.times} events per underlying event; underlying events without the signal "
        "are generated anew.\n\n"
        f"**ReDecay / plain events per second: {ratio:.1f}x** (medians of the steady-state rate, Pythia's "
        "initialisation left out; absolute rates on a shared 2-core machine are not quoted).\n\n"
        "Re-run: `.venv/bin/python benchmarks/redecay.py "
        f"--events {args.events} --signal {args.signal} --times {args.times} --repeats {args.repeats}`; "
        "per-run numbers in `redecay.csv`.\n"
    )
    print(f"ReDecay / plain: {ratio:.2f}x")


if __name__ == "__main__":
    main()
