"""The particles every path of the CPU benchmark simulates: real Pythia and gun particles from ../shared.

All paths see the same particles: the C harness gets the library's 12 inputs per particle, the served
pipeline gets them as a parquet particle table through the ``ufsim`` client, in-process ONNX Runtime gets
the ensemble's five input tensors. Without ``../shared`` a particle gun stands in (and the library is not
timed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ufsim_client.events import count_n_tracks
from ufsim_client.keys import rng_keys

SHARED = Path(__file__).resolve().parents[3] / "shared"
TRACKING_DATA = SHARED / "data" / "lamarr-trk-2016MU"
LIBRARY_DIR = TRACKING_DATA / "library"
HEPMC_DIR = SHARED / "data" / "lamarr-hepmc2"
ACCEPTANCE_COLUMNS = (
    "mc_x", "mc_y", "mc_z", "mc_log10_p", "mc_tx", "mc_ty", "mc_eta", "mc_phi",
    "mc_is_e", "mc_is_mu", "mc_is_h", "mc_charge",
)  # fmt: skip
RESOLUTION_COLUMNS = (
    "ctb_x", "ctb_y", "ctb_z", "mc_tx", "mc_ty", "mc_log10_p", "mc_is_e", "mc_is_mu", "mc_is_h",
    "is_long", "is_upstream", "is_downstream",
)  # fmt: skip
QUALITY_COLUMNS = ("chi2PerDoF", "nDoF_f", "ghostProb")
TRACK_FLAGS = ("is_long", "is_upstream", "is_downstream")


@dataclass
class Sample:
    """Particles as a parquet-style table (event, pid, x, y, z, px, py, pz) and where they came from."""

    table: pd.DataFrame
    source: str

    def __len__(self) -> int:
        return len(self.table)

    def ensemble_inputs(self, seed: int = 1) -> dict[str, np.ndarray]:
        """The ensemble's five inputs for every particle, n_tracks and rng_key as the client derives them."""
        t = self.table
        n = len(t)
        n_tracks = np.empty(n, np.float32)
        keys = np.empty(n, np.uint64)
        for event, rows in t.groupby("event", sort=False).indices.items():
            momentum = t[["px", "py", "pz"]].to_numpy()[rows]
            n_tracks[rows] = count_n_tracks(t["pid"].to_numpy()[rows], momentum)
            keys[rows] = rng_keys(seed, int(event), np.arange(len(rows)))
        return {
            "pid": t["pid"].to_numpy(np.int32).reshape(n, 1),
            "origin": t[["x", "y", "z"]].to_numpy(np.float32),
            "momentum": t[["px", "py", "pz"]].to_numpy(np.float32),
            "n_tracks": n_tracks.reshape(n, 1),
            "rng_key": keys.reshape(n, 1),
        }

    def write_parquet(self, path: Path) -> Path:
        """The table as a ``ufsim simulate --input`` particle table."""
        self.table.to_parquet(path, index=False)
        return path


def shared_available() -> str | None:
    """Why the library parts cannot run here (None when ../shared and its files are present)."""
    needed = [TRACKING_DATA / "train_acceptance_efficiency.parquet", HEPMC_DIR / "evt0.mc2"]
    if not any(LIBRARY_DIR.glob("*.so")):
        return f"no Lamarr library in {LIBRARY_DIR} (../shared absent)"
    missing = [str(p) for p in needed if not p.is_file()]
    return f"missing {missing} (../shared absent)" if missing else None


def library_path() -> Path:
    """The Lamarr tracking library (the first .so in ../shared/data/lamarr-trk-2016MU/library)."""
    return sorted(LIBRARY_DIR.glob("*.so"))[0]


def shared_particles(n: int, seed: int = 7) -> tuple[Sample, pd.DataFrame]:
    """``n`` particles of whole events drawn from the tracking data (Pythia min-bias, b-bbar and gun) and
    their 12 library inputs."""
    frame = pd.read_parquet(TRACKING_DATA / "train_acceptance_efficiency.parquet")
    events = frame[["source", "event"]].drop_duplicates()
    rng = np.random.default_rng(seed)
    order = events.iloc[rng.permutation(len(events))]
    chosen = frame.merge(order.assign(rank=np.arange(len(order))), on=["source", "event"])
    chosen = chosen.sort_values(["rank"], kind="stable")
    chosen = chosen.iloc[:n].reset_index(drop=True)
    table = pd.DataFrame(
        {
            "event": chosen["rank"].rank(method="dense").astype(np.int64) - 1,
            "pid": chosen["pid"].astype(np.int64),
            "x": chosen["mc_x"],
            "y": chosen["mc_y"],
            "z": chosen["mc_z"],
            "px": chosen["px"],
            "py": chosen["py"],
            "pz": chosen["pz"],
        }  # fmt: skip
    )
    sources = ", ".join(f"{k} {v}" for k, v in chosen["source"].value_counts().items())
    return Sample(
        table, f"{len(table):,} particles of whole events from {TRACKING_DATA.name} ({sources})"
    ), chosen


def gun_particles(n: int, seed: int = 7) -> Sample:
    """``n`` gun particles (ufsim_export.repository.gun) in events of 100, when ../shared is absent."""
    from ufsim_export.repository.gun import synthetic_particles

    batch = synthetic_particles(n, seed)
    table = pd.DataFrame(
        {
            "event": np.arange(n) // 100,
            "pid": batch["pid"][:, 0].astype(np.int64),
            "x": batch["origin"][:, 0],
            "y": batch["origin"][:, 1],
            "z": batch["origin"][:, 2],
            "px": batch["momentum"][:, 0],
            "py": batch["momentum"][:, 1],
            "pz": batch["momentum"][:, 2],
        }  # fmt: skip
    )
    keep = (np.abs(table["pid"]).isin([11, 13, 211, 321, 2212])) & (table["pz"] > 0)
    table = table[keep].reset_index(drop=True)
    return Sample(
        table, f"{len(table):,} gun particles (ufsim_export.repository.gun.synthetic_particles, seed {seed})"
    )


def track_conditions(m: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``m`` reconstructed tracks' resolution (12) and covariance (15) conditions from the tracking data."""
    frame = pd.read_parquet(TRACKING_DATA / "train_resolution_covariance.parquet")
    rows = np.random.default_rng(seed).choice(len(frame), size=min(m, len(frame)), replace=False)
    frame = frame.iloc[np.sort(rows)]
    res = frame[list(RESOLUTION_COLUMNS)].to_numpy(np.float32)
    cov_columns = list(RESOLUTION_COLUMNS[:6]) + list(QUALITY_COLUMNS) + list(RESOLUTION_COLUMNS[6:])
    return res, frame[cov_columns].to_numpy(np.float32)
