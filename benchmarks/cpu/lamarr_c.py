"""The Lamarr tracking library timed in C: ``lamarr_harness.c`` compiled now with the system compiler.

The harness ``dlopen``s the library and calls each function once per particle, as SQLamarr's plugins do,
and reports process CPU time per call; no Python runs while it is timing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HARNESS = Path(__file__).with_name("lamarr_harness.c")
FUNCTIONS = ("acceptance", "efficiency", "resolution", "covariance")


@dataclass(frozen=True)
class LibraryCost:
    """CPU microseconds per call of each library function, and the fraction of particles reconstructed."""

    us_per_call: dict[str, float]
    reconstructed_fraction: float
    particles: int
    tracks: int
    compiler: str

    @property
    def us_per_particle(self) -> float:
        """Tracking per particle as Lamarr runs it: acceptance and efficiency for every particle, resolution
        and covariance for the expected fraction reconstructed (P(in acceptance) x P(reconstructed))."""
        c = self.us_per_call
        return (
            c["acceptance"]
            + c["efficiency"]
            + self.reconstructed_fraction * (c["resolution"] + c["covariance"])
        )


def compiler() -> str | None:
    """The system C compiler (``$CC``, else cc or gcc), or None."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def compile_harness(work: Path) -> tuple[Path, str]:
    """Compile the harness into ``work``; returns the binary and the compiler's version line."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC, or install gcc)")
    binary = work / "lamarr_harness"
    subprocess.run([cc, "-O2", "-o", str(binary), str(HARNESS), "-ldl"], check=True, capture_output=True)
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return binary, version


def time_library(
    library: Path, acc_in: np.ndarray, res_cond: np.ndarray, cov_cond: np.ndarray, work: Path, min_s: float
) -> LibraryCost:
    """Time the four functions (each for at least ``min_s`` CPU seconds) on these inputs, with N(0, 1)
    noise."""
    work.mkdir(parents=True, exist_ok=True)
    binary, version = compile_harness(work)
    rng = np.random.default_rng(11)
    files = {
        "acc_in.f32": acc_in,
        "res_cond.f32": res_cond,
        "cov_cond.f32": cov_cond,
        "res_noise.f32": rng.standard_normal((len(res_cond), 128)),
        "cov_noise.f32": rng.standard_normal((len(cov_cond), 128)),
    }
    for name, array in files.items():
        np.ascontiguousarray(array, dtype=np.float32).tofile(work / name)
    done = subprocess.run([str(binary), str(library), str(work), f"{min_s}"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"lamarr_harness exited {done.returncode}: {done.stderr.strip()}")
    cost = {}
    for line in done.stdout.split():
        name, calls, seconds = line.split(",")
        cost[name] = 1e6 * float(seconds) / int(calls)
    acc = np.fromfile(work / "acc_out.f32", np.float32)
    eff = np.fromfile(work / "eff_out.f32", np.float32).reshape(-1, 4)
    fraction = float(np.mean(acc * (1.0 - eff[:, 0] / eff.sum(axis=1))))
    return LibraryCost(cost, fraction, len(acc_in), len(res_cond), version)
