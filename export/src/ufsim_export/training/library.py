"""Labels from the Lamarr 2016 MagUp tracking library itself, for training and validation only.

The library (``lamarr-trk-2016MU/library/*.so``, C interface in that folder's README) is loaded with
``ctypes`` in worker processes (never by the served pipeline, the client or the model repository).
A labelled set is: reconstructed-track conditions drawn from the shared particles (each particle picked
with its library probability of being reconstructed, its track type with the library's class
probabilities), N(0, 1) noise drawn here from counter-based Philox streams (regenerated from
``(seed, stream, chunk)``, never stored), and the library's resolution outputs, then its covariance
outputs conditioned on those (Lamarr's chain). Sets are cached under ``export/.cache/library`` (git-ignored)
so ``make train`` labels once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from tqdm.auto import tqdm

from ..files import replacing
from .fitting import phase_space_weights

LIBRARY_GLOB = "library/*.so"
NOISE_DIM = 128
CHUNK_ROWS = 8192
RESOLUTION_STREAM = 1
COVARIANCE_STREAM = 2
N_WORKERS = 2
WORKER_NICE = 10
"""Workers run at least this nice (the machine is shared), not nicer again when the parent already is."""
DEFAULT_CACHE = Path(__file__).resolve().parents[3] / ".cache" / "library"
"""``export/.cache/library`` of this checkout (git-ignored)."""
FLAGS = ("mc_is_e", "mc_is_mu", "mc_is_h")
TRACK_TYPES = (3, 4, 5)
EFFICIENCY_COLUMNS = ("eff_long", "eff_upstream", "eff_downstream")
N_OUTPUTS = {"resolution": 9, "covariance": 15}
PROBABILITY_OUTPUTS = {"acceptance": 1, "efficiency": 4}
"""The library's particle-level functions (12 features in, probabilities out, no noise)."""
N_FEATURES = 12
BALANCE_OVERSAMPLE = 4
"""A (p, η)-balanced draw resamples its tracks from this many times as many naturally drawn ones."""


class LibraryError(RuntimeError):
    """The reference library is missing or does not have the documented interface."""


def library_path(data_dir: Path) -> Path:
    """The tracking library's shared object inside ``data_dir`` (exactly one ``library/*.so``)."""
    found = sorted(Path(data_dir).glob(LIBRARY_GLOB))
    if len(found) != 1:
        raise LibraryError(
            f"{data_dir}/{LIBRARY_GLOB}: expected exactly one shared object, found {len(found)}"
        )
    return found[0]


def noise_chunk(seed: int, stream: int, chunk: int, rows: int) -> NDArray[Any]:
    """N(0, 1) noise of one chunk, float32 [rows, 128].

    Philox keyed by (seed, stream, chunk), so any chunk is regenerated alone, in any process, bit for bit.
    """
    key = (int(seed) & 0xFFFFFFFF) << 32 | (int(stream) & 0xFFFF) << 16 | (int(chunk) & 0xFFFF)
    generator = np.random.Generator(np.random.Philox(key=key))
    return generator.standard_normal((rows, NOISE_DIM), dtype=np.float32)


def noise_rows(seed: int, stream: int, n: int) -> NDArray[Any]:
    """The noise of rows [0, n) of a labelled set, float32 [n, 128] (concatenated chunks)."""
    if n >= CHUNK_ROWS * 0xFFFF:
        raise ValueError(f"n={n}: at most {CHUNK_ROWS * 0xFFFF - 1} rows per labelled set")
    chunks = [
        noise_chunk(seed, stream, c, min(CHUNK_ROWS, n - c * CHUNK_ROWS))
        for c in range((n + CHUNK_ROWS - 1) // CHUNK_ROWS)
    ]
    return np.concatenate(chunks) if chunks else np.zeros((0, NOISE_DIM), np.float32)


# ------------------------------------------------------------------------------------------- library calls
_LIB: ctypes.CDLL | None = None


def _load(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    arguments = {**dict.fromkeys(N_OUTPUTS, 3), **dict.fromkeys(PROBABILITY_OUTPUTS, 2)}
    for name, n_args in arguments.items():
        fn = getattr(lib, name, None)
        if fn is None:
            raise LibraryError(f"{path}: no symbol {name!r} (see the library README)")
        fn.restype = ctypes.c_void_p
        fn.argtypes = [ctypes.c_void_p] * n_args
    return lib


def _init_worker(path: str) -> None:
    global _LIB
    os.nice(max(0, WORKER_NICE - os.nice(0)))
    _LIB = _load(path)


def call_library(lib: ctypes.CDLL, kind: str, conditions: NDArray[Any], noise: NDArray[Any]) -> NDArray[Any]:
    """The library's ``kind`` (resolution or covariance) for each row, one call per row, float32."""
    if kind not in N_OUTPUTS:
        raise ValueError(f"kind {kind!r}: expected one of {sorted(N_OUTPUTS)}")
    expected = 12 if kind == "resolution" else 15
    cond = np.ascontiguousarray(conditions, np.float32)
    z = np.ascontiguousarray(noise, np.float32)
    if cond.ndim != 2 or cond.shape[1] != expected:
        raise ValueError(f"conditions: shape {cond.shape}, expected [N, {expected}] for {kind}")
    if z.shape != (len(cond), NOISE_DIM):
        raise ValueError(f"noise: shape {z.shape}, expected [{len(cond)}, {NOISE_DIM}]")
    n_out = N_OUTPUTS[kind]
    out = np.zeros((len(cond), n_out), np.float32)
    fn = getattr(lib, kind)
    c0, z0, o0 = cond.ctypes.data, z.ctypes.data, out.ctypes.data
    c_step, z_step, o_step = 4 * cond.shape[1], 4 * NOISE_DIM, 4 * n_out
    for i in range(len(cond)):
        fn(o0 + i * o_step, c0 + i * c_step, z0 + i * z_step)
    return out


def call_probability(lib: ctypes.CDLL, kind: str, features: NDArray[Any]) -> NDArray[Any]:
    """The library's ``kind`` (acceptance or efficiency) probabilities for each particle, float32."""
    if kind not in PROBABILITY_OUTPUTS:
        raise ValueError(f"kind {kind!r}: expected one of {sorted(PROBABILITY_OUTPUTS)}")
    x = np.ascontiguousarray(features, np.float32)
    if x.ndim != 2 or x.shape[1] != N_FEATURES:
        raise ValueError(f"features: shape {x.shape}, expected [N, {N_FEATURES}] for {kind}")
    n_out = PROBABILITY_OUTPUTS[kind]
    out = np.zeros((len(x), n_out), np.float32)
    fn = getattr(lib, kind)
    for i in range(len(x)):
        fn(out.ctypes.data + i * 4 * n_out, x.ctypes.data + i * 4 * N_FEATURES)
    return out


def _probability_chunk(args: tuple[str, NDArray[Any]]) -> NDArray[Any]:
    assert _LIB is not None
    return call_probability(_LIB, *args)


def probabilities(
    data_dir: Path, features: NDArray[Any], *, workers: int = N_WORKERS
) -> tuple[NDArray[Any], NDArray[Any]]:
    """P(acceptance) [N] and the four track-class probabilities [N, 4] of particles (12 library features).

    Computed in ``workers`` niced processes, ``CHUNK_ROWS`` particles a task.
    """
    chunks = [features[i : i + CHUNK_ROWS] for i in range(0, len(features), CHUNK_ROWS)]
    tasks = [(kind, chunk) for kind in PROBABILITY_OUTPUTS for chunk in chunks]
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(str(library_path(data_dir)),)
    ) as pool:
        parts = list(tqdm(pool.map(_probability_chunk, tasks), total=len(tasks), desc="library", leave=False))
    empty = {kind: np.zeros((0, n), np.float32) for kind, n in PROBABILITY_OUTPUTS.items()}
    acceptance = np.concatenate(parts[: len(chunks)]) if chunks else empty["acceptance"]
    efficiency = np.concatenate(parts[len(chunks) :]) if chunks else empty["efficiency"]
    return acceptance[:, 0].astype(np.float64), efficiency.astype(np.float64)


def _label_chunk(args: tuple[str, NDArray[Any], int, int, int]) -> NDArray[Any]:
    kind, conditions, seed, stream, chunk = args
    assert _LIB is not None
    return call_library(_LIB, kind, conditions, noise_chunk(seed, stream, chunk, len(conditions)))


def label(
    data_dir: Path, kind: str, conditions: NDArray[Any], *, seed: int, stream: int, workers: int = N_WORKERS
) -> NDArray[Any]:
    """Library outputs for ``conditions`` (library order) with the noise of :func:`noise_rows`.

    Computed in ``workers`` niced processes.
    """
    path = str(library_path(data_dir))
    tasks = [
        (kind, conditions[c * CHUNK_ROWS : (c + 1) * CHUNK_ROWS], seed, stream, c)
        for c in range((len(conditions) + CHUNK_ROWS - 1) // CHUNK_ROWS)
    ]
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(path,)) as pool:
        parts = list(
            tqdm(pool.map(_label_chunk, tasks), total=len(tasks), desc=f"library {kind}", leave=False)
        )
    return np.concatenate(parts) if parts else np.zeros((0, N_OUTPUTS[kind]), np.float32)


# ------------------------------------------------------------------------------------------- conditions
def closest_to_beam(origin: NDArray[Any], tx: NDArray[Any], ty: NDArray[Any]) -> NDArray[Any]:
    """Origin propagated on a straight line to the point closest to the beam axis (x, y, z), float64."""
    x0, y0, z0 = (np.asarray(origin[:, i], np.float64) for i in range(3))
    tx, ty = np.asarray(tx, np.float64), np.asarray(ty, np.float64)
    t2 = tx * tx + ty * ty
    z = np.where(t2 > 0, (t2 * z0 - tx * x0 - ty * y0) / np.where(t2 > 0, t2, 1.0), z0)
    return np.stack([x0 + tx * (z - z0), y0 + ty * (z - z0), z], axis=1)


def log10p_eta(conditions: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """log10(p/MeV) and η of library-order track conditions (columns 5, and 3-4: the slopes tx, ty)."""
    tx, ty = np.asarray(conditions[:, 3], np.float64), np.asarray(conditions[:, 4], np.float64)
    theta = np.maximum(np.arctan(np.hypot(tx, ty)), 1e-9)
    return np.asarray(conditions[:, 5], np.float64), -np.log(np.tan(theta / 2))


def sample_track_conditions(
    particles: pd.DataFrame, n: int, rng: np.random.Generator, *, balance: float = 0.0
) -> NDArray[Any]:
    """``n`` reconstructed-track resolution conditions, in the library's order.

    Particles are drawn with probability P(acc) x P(reconstructed), the track type from the library's
    class probabilities. ``balance`` > 0 draws the tracks (p, η)-balanced instead: ``BALANCE_OVERSAMPLE``
    x n natural tracks resampled with :func:`~.fitting.phase_space_weights` of that exponent, so sparse
    corners get more distinct tracks than unit-weight rows could give them.
    """
    if balance:
        pool = sample_track_conditions(particles, BALANCE_OVERSAMPLE * n, rng)
        weights = phase_space_weights(*log10p_eta(pool), exponent=balance)
        picked: NDArray[Any] = pool[rng.choice(len(pool), size=n, p=weights / weights.sum())]
        return picked
    eff = particles[list(EFFICIENCY_COLUMNS)].to_numpy(np.float64)
    weight = particles["acceptance"].to_numpy(np.float64) * eff.sum(axis=1)
    if not np.any(weight > 0):
        raise ValueError("particles: no particle has a non-zero probability of being reconstructed")
    picked = rng.choice(len(particles), size=n, p=weight / weight.sum())
    cls = eff[picked] / eff[picked].sum(axis=1, keepdims=True)
    kind = (rng.random(n)[:, None] > np.cumsum(cls, axis=1)).sum(axis=1).clip(0, 2)
    rows = particles.iloc[picked]
    tx, ty = rows["mc_tx"].to_numpy(), rows["mc_ty"].to_numpy()
    ctb = closest_to_beam(rows[["mc_x", "mc_y", "mc_z"]].to_numpy(), tx, ty)
    flags = rows[list(FLAGS)].to_numpy(np.float64)
    types = np.eye(3)[kind]
    cont = np.column_stack([ctb, tx, ty, rows["mc_log10_p"].to_numpy()])
    return np.column_stack([cont, flags, types]).astype(np.float32)


def covariance_conditions(
    resolution_conditions: NDArray[Any], resolution_outputs: NDArray[Any]
) -> NDArray[Any]:
    """The library's 15 covariance conditions: 6 continuous, chi2PerDoF, nDoF_f, ghostProb, 6 flags."""
    return np.column_stack(
        [resolution_conditions[:, :6], resolution_outputs[:, 6:9], resolution_conditions[:, 6:]]
    ).astype(np.float32)


# ------------------------------------------------------------------------------------------- labelled sets
@dataclass(frozen=True)
class LabelledSet:
    """Reconstructed tracks with library labels; the noise is regenerated with :meth:`noise`."""

    conditions: NDArray[Any]
    resolution: NDArray[Any]
    covariance: NDArray[Any]
    seed: int

    def __len__(self) -> int:
        return len(self.conditions)

    def noise(self, kind: str) -> NDArray[Any]:
        """The N(0, 1) noise the library got for ``kind`` (resolution or covariance), float32 [N, 128]."""
        stream = {"resolution": RESOLUTION_STREAM, "covariance": COVARIANCE_STREAM}[kind]
        return noise_rows(self.seed, stream, len(self))

    def covariance_conditions(self) -> NDArray[Any]:
        """The library-order covariance conditions of these tracks."""
        return covariance_conditions(self.conditions, self.resolution)


def _cache_key(data_dir: Path, particles: pd.DataFrame, n: int, seed: int, balance: float) -> str:
    digest = hashlib.sha256()
    digest.update(library_path(data_dir).read_bytes())
    digest.update(pd.util.hash_pandas_object(particles, index=False).to_numpy().tobytes())
    digest.update(f"{n}:{seed}:{CHUNK_ROWS}:v1".encode())
    if balance:  # natural draws keep the keys their caches were written under
        digest.update(f":balance={balance!r}x{BALANCE_OVERSAMPLE}".encode())
    return digest.hexdigest()[:16]


def labelled_set(
    data_dir: Path,
    particles: pd.DataFrame,
    n: int,
    *,
    seed: int,
    cache_dir: Path | None = DEFAULT_CACHE,
    workers: int = N_WORKERS,
    balance: float = 0.0,
) -> LabelledSet:
    """``n`` tracks from ``particles`` labelled by the library (cached by library, particles, n, seed).

    ``balance``: the (p, η) balancing exponent of the draw (:func:`sample_track_conditions`), part of the key.
    """
    if n < 1:
        raise ValueError(f"n={n}: need at least one track")
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"tracks-{n}-{seed}-{_cache_key(data_dir, particles, n, seed, balance)}.npz"
        if path.is_file():
            with np.load(path) as saved:
                return LabelledSet(saved["conditions"], saved["resolution"], saved["covariance"], seed)
    conditions = sample_track_conditions(particles, n, np.random.default_rng([seed, 0xC0DE]), balance=balance)
    resolution = label(
        data_dir, "resolution", conditions, seed=seed, stream=RESOLUTION_STREAM, workers=workers
    )
    covariance = label(
        data_dir, "covariance", covariance_conditions(conditions, resolution),
        seed=seed, stream=COVARIANCE_STREAM, workers=workers,
    )  # fmt: skip
    if path is not None:
        with replacing(path) as tmp:
            np.savez(tmp, conditions=conditions, resolution=resolution, covariance=covariance)
    return LabelledSet(conditions, resolution, covariance, seed)


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``size`` rows covering [0, n)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
