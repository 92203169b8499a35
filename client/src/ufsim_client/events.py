"""Events as the client sees them: the particles to simulate, their occupancy, and their validation.

An :class:`Event` holds only the particles that are sent to the server: charged final-state electrons,
muons, pions, kaons and protons (|pid| in :data:`SIMULATED_PIDS`). Readers select them from generator
records with :func:`select_simulated`; :func:`count_n_tracks` gives the occupancy ``n_tracks``.

``n_tracks`` (the event occupancy the PID and tracking models are conditioned on) is the number of
charged final-state e, mu, pi, K, p in the *whole generator record* of the event with 2 < eta < 5,
whatever their pz sign or whether they are sent (eta > 2 implies pz > 0 anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ufsim_client.errors import InputError

__all__ = [
    "ETA_RANGE",
    "MC_COLUMNS",
    "SIMULATED_PIDS",
    "Event",
    "count_n_tracks",
    "in_n_tracks",
    "is_simulated",
    "pseudorapidity",
    "select_simulated",
]

SIMULATED_PIDS: tuple[int, ...] = (11, 13, 211, 321, 2212)
"""Absolute PDG ids the service simulates (e, mu, pi, K, p); both charges are accepted."""

ETA_RANGE: tuple[float, float] = (2.0, 5.0)
"""Pseudorapidity range of the particles counted in ``n_tracks`` (LHCb acceptance)."""

MC_COLUMNS: dict[str, tuple[type[np.generic], int]] = {
    "SourceFile": (np.int32, -1),
    "GenEventNumber": (np.int64, -1),
    "MCKey": (np.int64, -1),
    "MC_MOTHER_ID": (np.int32, 0),
    "MC_MOTHER_KEY": (np.int64, -1),
}
"""Per-particle links back to the generator record: column -> (dtype, value when the reader has none).

``SourceFile`` indexes the input file list (kept in the output's provenance), ``GenEventNumber`` is the
generator's event number (HepMC) or counter (Pythia), ``MCKey`` the particle's id in the generator
record (HepMC particle id, Pythia record index, row of a parquet table), ``MC_MOTHER_ID`` the PDG id of
its first mother (0: none) and ``MC_MOTHER_KEY`` that mother's ``MCKey`` (-1: none).
"""

_ACCEPTED = ", ".join(f"±{p}" for p in SIMULATED_PIDS)
_SIMULATED_TABLE = np.zeros(max(SIMULATED_PIDS) + 1, dtype=bool)
_SIMULATED_TABLE[list(SIMULATED_PIDS)] = True


def is_simulated(pid: ArrayLike) -> NDArray[np.bool_]:
    """Whether each |pid| is in :data:`SIMULATED_PIDS` (a table look-up: ``np.isin`` costs ~0.1 ms a call)."""
    values = np.asarray(pid)
    if values.dtype.kind not in "iu":
        return np.isin(np.abs(values), SIMULATED_PIDS)
    magnitude = np.abs(values.astype(np.int64))
    inside = (magnitude >= 0) & (magnitude < len(_SIMULATED_TABLE))
    found: NDArray[np.bool_] = inside & _SIMULATED_TABLE[np.where(inside, magnitude, 0)]
    return found


def pseudorapidity(momentum: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Pseudorapidity of momenta ``(n, 3)``; +inf/-inf along the beam axis."""
    mom = np.asarray(momentum, dtype=np.float64)
    pt = np.hypot(mom[:, 0], mom[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        eta: NDArray[np.float64] = np.arcsinh(mom[:, 2] / pt)
    return eta


def select_simulated(pid: ArrayLike, momentum: ArrayLike) -> NDArray[np.bool_]:
    """Mask of particles to send: |pid| in :data:`SIMULATED_PIDS` and pz > 0 (final state is the caller's)."""
    pid_arr = np.asarray(pid)
    mom = np.asarray(momentum, dtype=np.float64).reshape(-1, 3)
    return is_simulated(pid_arr) & (mom[:, 2] > 0)


def count_n_tracks(pid: ArrayLike, momentum: ArrayLike) -> int:
    """Occupancy of an event from its final-state particles: simulated species with 2 < eta < 5."""
    return int(np.count_nonzero(in_n_tracks(pid, momentum)))


def in_n_tracks(pid: ArrayLike, momentum: ArrayLike) -> NDArray[np.bool_]:
    """Which particles :func:`count_n_tracks` counts (for many events at once, summed per event)."""
    pid_arr = np.asarray(pid)
    mom = np.asarray(momentum, dtype=np.float64).reshape(-1, 3)
    if len(pid_arr) == 0:
        return np.zeros(0, dtype=bool)
    eta = pseudorapidity(mom)
    lo, hi = ETA_RANGE
    return is_simulated(pid_arr) & (eta > lo) & (eta < hi)


@dataclass
class Event:
    """Particles of one event to simulate, validated and converted on construction.

    Args:
        pid: PDG ids, shape ``(n,)``, integers with |pid| in :data:`SIMULATED_PIDS`.
        origin: origin vertices in mm, shape ``(n, 3)``.
        momentum: true momenta (px, py, pz) in MeV, shape ``(n, 3)``.
        n_tracks: event occupancy (see the module docstring), finite and >= 0.
        number: event number used for the particles' rng keys; ``None`` lets
            :func:`ufsim_client.simulate` number events in the order it receives them.
        mc: optional per-particle generator links, keyed by :data:`MC_COLUMNS` names, shape ``(n,)``.
        primary_vertices: optional true primary vertices of the event (one per collision), mm, ``(k, 3)``.
        own_pv: optional index into ``primary_vertices`` of each particle's own PV, ``(n,)``; -1: none.

    Raises:
        InputError: naming the field that has the wrong dtype or shape, a NaN or infinite value,
            an unknown pid, or no particles at all.
    """

    # Readers pass int64/float64 arrays; __post_init__ converts them to int32/float32.
    pid: NDArray[np.integer[Any]]
    origin: NDArray[np.floating[Any]]
    momentum: NDArray[np.floating[Any]]
    n_tracks: float
    number: int | None = None
    mc: dict[str, NDArray[Any]] | None = None
    primary_vertices: NDArray[np.float64] | None = None
    own_pv: NDArray[np.int32] | None = None

    def __post_init__(self) -> None:
        where = "" if self.number is None else f" (event {self.number})"
        self.pid = _as_pid(self.pid, where)
        n = len(self.pid)
        if n == 0:
            raise InputError("pid", f"the event has no particles{where}; an event must hold at least one")
        self.origin = _as_vectors("origin", self.origin, n, where)
        self.momentum = _as_vectors("momentum", self.momentum, n, where)
        try:
            n_tracks = float(self.n_tracks)
        except (TypeError, ValueError):
            raise InputError("n_tracks", f"expected a number, not {self.n_tracks!r}{where}") from None
        if not np.isfinite(n_tracks) or n_tracks < 0:
            raise InputError("n_tracks", f"expected a finite number >= 0, not {n_tracks!r}{where}")
        self.n_tracks = n_tracks
        if self.number is not None and (not isinstance(self.number, int | np.integer) or self.number < 0):
            raise InputError("number", f"event numbers are integers >= 0, not {self.number!r}")
        if self.mc is not None:
            self.mc = _as_mc(self.mc, n, where)
        self._check_vertices(n, where)

    def _check_vertices(self, n: int, where: str) -> None:
        if self.primary_vertices is None:
            if self.own_pv is not None:
                raise InputError("own_pv", f"given without primary_vertices{where}")
            return
        pvs = np.asarray(self.primary_vertices, dtype=np.float64)
        if pvs.ndim != 2 or pvs.shape[1] != 3 or not np.isfinite(pvs).all():
            raise InputError(
                "primary_vertices", f"expected finite (k, 3) positions in mm, not shape {pvs.shape}{where}"
            )
        self.primary_vertices = pvs
        own = np.zeros(n, dtype=np.int32) if self.own_pv is None else np.asarray(self.own_pv)
        if own.shape != (n,) or own.dtype.kind not in "iu" or (own < -1).any() or (own >= len(pvs)).any():
            raise InputError(
                "own_pv", f"expected {n} integers in -1..{len(pvs) - 1} (indices of primary_vertices){where}"
            )
        self.own_pv = own.astype(np.int32)

    def __len__(self) -> int:
        return len(self.pid)


def _as_pid(values: object, where: str) -> NDArray[np.int32]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise InputError("pid", f"expected integer PDG ids, not dtype {arr.dtype}{where}")
    if arr.ndim != 1:
        raise InputError("pid", f"expected shape (n,), not {arr.shape}{where}")
    bad = ~is_simulated(arr)
    if bad.any():
        unknown = sorted({int(v) for v in arr[bad]})[:10]
        raise InputError(
            "pid",
            f"unknown or not simulated PDG id(s) {unknown}{where}; accepted values are {_ACCEPTED}",
        )
    return arr.astype(np.int32)


def _as_mc(values: dict[str, Any], n: int, where: str) -> dict[str, NDArray[Any]]:
    unknown = sorted(set(values) - set(MC_COLUMNS))
    if unknown:
        raise InputError(
            "mc", f"unknown generator-link column(s) {unknown}{where}; accepted: {list(MC_COLUMNS)}"
        )
    out = {}
    for name, array in values.items():
        arr = np.asarray(array)
        if arr.shape != (n,) or arr.dtype.kind not in "iu":
            raise InputError(
                name, f"expected {n} integers (one per particle), not {arr.dtype}{arr.shape}{where}"
            )
        out[name] = arr.astype(MC_COLUMNS[name][0])
    return out


def _as_vectors(name: str, values: object, n: int, where: str) -> NDArray[np.float32]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "fiu":
        raise InputError(name, f"expected real numbers, not dtype {arr.dtype}{where}")
    if arr.shape != (n, 3):
        raise InputError(name, f"expected shape ({n}, 3) to match {n} pid values, not {arr.shape}{where}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise InputError(name, f"NaN or infinite value in particle {row}: {arr[row].tolist()}{where}")
    return arr.astype(np.float32)
