"""Particle gun: flat spectra from a spec string, or production spectra from a histogram file.

Spec: comma-separated ``key=value``, e.g. ``pid=211/-211/321,p=2000:100000,eta=2:5,n=50``:

| key | default | meaning |
|---|---|---|
| ``pid`` | ``211`` | PDG id(s), ``/``-separated, drawn with equal probability |
| ``p`` | ``2000:100000`` | momentum range in MeV, log-uniform |
| ``eta`` | ``2:5`` | pseudorapidity range, uniform |
| ``n`` | ``50`` | particles per event |
| ``spectra`` | none | ``.npz`` from ``ufsim gun-spectra``: species, log10(p), eta from its histograms |
| ``ntracks`` | counted | fixed ``n_tracks``; by default the number of gun particles with 2 < eta < 5 |
| ``origin`` | LHCb 2016 | ``x:y:z`` mm; by default x ~ N(0.85, 0.035), y ~ N(-0.17, 0.035), z ~ N(0, 45) |

With ``spectra``, ``pid``, ``p`` and ``eta`` are ignored. Azimuths are uniform. Event ``k`` draws from
``numpy.random.default_rng([seed, k])``, so an event does not depend on the ones before it.
Spectra files hold ``pids`` (k), ``log10p_edges``, ``eta_edges`` and ``counts`` (k, n_log10p, n_eta);
:func:`spectra_from_pythia` makes one by sampling Pythia once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ufsim_client.errors import InputError
from ufsim_client.events import SIMULATED_PIDS, Event, count_n_tracks

__all__ = ["GunSpec", "Spectra", "parse_gun_spec", "particle_gun", "spectra_from_pythia"]

_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class Spectra:
    """Production spectra: per-species 2-D histograms of counts in (log10(p/MeV), eta)."""

    pids: NDArray[np.int64]
    log10p_edges: NDArray[np.float64]
    eta_edges: NDArray[np.float64]
    counts: NDArray[np.float64]

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the histograms to an ``.npz`` file."""
        np.savez(
            path, pids=self.pids, log10p_edges=self.log10p_edges, eta_edges=self.eta_edges, counts=self.counts
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Spectra:
        """Read histograms written by :meth:`save`; raises InputError naming a missing or bad array."""
        if not Path(path).is_file():
            raise InputError("spectra", f"spectra file {str(path)!r} does not exist")
        with np.load(path) as data:
            for key in ("pids", "log10p_edges", "eta_edges", "counts"):
                if key not in data:
                    raise InputError("spectra", f"{str(path)!r} lacks the array {key!r}")
            spectra = cls(
                data["pids"].astype(np.int64),
                data["log10p_edges"].astype(np.float64),
                data["eta_edges"].astype(np.float64),
                data["counts"].astype(np.float64),
            )
        shape = (len(spectra.pids), len(spectra.log10p_edges) - 1, len(spectra.eta_edges) - 1)
        if spectra.counts.shape != shape or spectra.counts.sum() <= 0:
            raise InputError("spectra", f"counts in {str(path)!r} must have shape {shape} and be non-empty")
        return spectra


@dataclass(frozen=True)
class GunSpec:
    """A parsed ``--gun`` spec (see the module docstring)."""

    pids: tuple[int, ...] = (211,)
    p_range: tuple[float, float] = (2000.0, 100000.0)
    eta_range: tuple[float, float] = (2.0, 5.0)
    n: int = 50
    spectra: Spectra | None = None
    n_tracks: float | None = None
    origin: tuple[float, float, float] | None = None


def _range(key: str, value: str, positive: bool = False) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value.split(":"))
    except ValueError:
        raise InputError(key, f"expected LOW:HIGH, not {value!r}") from None
    if not lo < hi or (positive and lo <= 0):
        raise InputError(key, f"expected LOW < HIGH{' with LOW > 0' if positive else ''}, not {value!r}")
    return lo, hi


def parse_gun_spec(spec: str) -> GunSpec:
    """Parse ``key=value,...`` (or the path of a spectra ``.npz``) into a :class:`GunSpec`."""
    if spec.endswith(".npz") and "=" not in spec:
        return GunSpec(spectra=Spectra.load(spec))
    options: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError("gun", f"expected key=value in {spec!r}, not {item!r}")
        if key == "pid":
            try:
                pids = tuple(int(v) for v in value.split("/"))
            except ValueError:
                raise InputError("pid", f"expected integers separated by '/', not {value!r}") from None
            unknown = [p for p in pids if abs(p) not in SIMULATED_PIDS]
            if unknown:
                raise InputError("pid", f"unknown PDG id(s) {unknown}; accepted: ±11, ±13, ±211, ±321, ±2212")
            options["pids"] = pids
        elif key == "p":
            options["p_range"] = _range("p", value, positive=True)
        elif key == "eta":
            options["eta_range"] = _range("eta", value)
        elif key == "n":
            if not value.isdigit() or int(value) < 1:
                raise InputError("n", f"expected a positive integer, not {value!r}")
            options["n"] = int(value)
        elif key == "spectra":
            options["spectra"] = Spectra.load(value)
        elif key == "ntracks":
            try:
                options["n_tracks"] = float(value)
            except ValueError:
                raise InputError("ntracks", f"expected a number, not {value!r}") from None
        elif key == "origin":
            try:
                x, y, z = (float(v) for v in value.split(":"))
            except ValueError:
                raise InputError("origin", f"expected x:y:z in mm, not {value!r}") from None
            options["origin"] = (x, y, z)
        else:
            raise InputError(
                key, f"unknown gun option in {spec!r}; known: pid, p, eta, n, spectra, ntracks, origin"
            )
    return GunSpec(**options)  # type: ignore[arg-type]


def _draw(
    spec: GunSpec, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    n = spec.n
    if spec.spectra is None:
        pid = rng.choice(np.asarray(spec.pids, dtype=np.int64), size=n)
        log_lo, log_hi = np.log10(spec.p_range)
        log_p = rng.uniform(log_lo, log_hi, n)
        eta = rng.uniform(*spec.eta_range, n)
        return pid, log_p, eta
    s = spec.spectra
    flat = s.counts.reshape(-1) / s.counts.sum()
    cells = rng.choice(len(flat), size=n, p=flat)
    species, ip, ie = np.unravel_index(cells, s.counts.shape)
    log_p = rng.uniform(s.log10p_edges[ip], s.log10p_edges[ip + 1])
    eta = rng.uniform(s.eta_edges[ie], s.eta_edges[ie + 1])
    return s.pids[species], log_p, eta


def particle_gun(spec: GunSpec | str, *, seed: int, n_events: int) -> Iterator[Event]:
    """``n_events`` gun events numbered 0..n_events-1; the common origin is the event's PV.

    ``MCKey`` is the particle's index in the gun event, ``GenEventNumber`` the event number.
    """
    gun = parse_gun_spec(spec) if isinstance(spec, str) else spec
    for number in range(n_events):
        rng = np.random.default_rng([int(seed) & _MASK, number])
        pid, log_p, eta = _draw(gun, rng)
        phi = rng.uniform(-np.pi, np.pi, gun.n)
        p = 10.0**log_p
        pt = p / np.cosh(eta)
        momentum = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=1)
        if gun.origin is None:
            origin = np.stack(
                [
                    np.full(gun.n, rng.normal(0.85, 0.035)),
                    np.full(gun.n, rng.normal(-0.17, 0.035)),
                    np.full(gun.n, rng.normal(0.0, 45.0)),
                ],
                axis=1,
            )
        else:
            origin = np.tile(np.asarray(gun.origin, dtype=np.float64), (gun.n, 1))
        n_tracks = gun.n_tracks if gun.n_tracks is not None else count_n_tracks(pid, momentum)
        links = {
            "GenEventNumber": np.full(gun.n, number, dtype=np.int64),
            "MCKey": np.arange(gun.n, dtype=np.int64),
        }
        yield Event(
            pid=pid,
            origin=origin,
            momentum=momentum,
            n_tracks=n_tracks,
            number=number,
            mc=links,
            primary_vertices=origin[:1],
        )


def spectra_from_pythia(
    card: str | os.PathLike[str] | None = None,
    *,
    seed: int,
    n_events: int,
    log10p_edges: NDArray[np.float64] | None = None,
    eta_edges: NDArray[np.float64] | None = None,
) -> Spectra:
    """Histogram the simulated species (pz > 0) of ``n_events`` Pythia events into :class:`Spectra`."""
    from ufsim_client.events import pseudorapidity, select_simulated
    from ufsim_client.readers.pythia import pythia_records

    p_edges: NDArray[np.float64] = (
        np.linspace(2.0, 6.0, 41) if log10p_edges is None else np.asarray(log10p_edges, dtype=np.float64)
    )
    e_edges: NDArray[np.float64] = (
        np.linspace(1.0, 6.0, 51) if eta_edges is None else np.asarray(eta_edges, dtype=np.float64)
    )
    pids = np.array(sorted({s * p for p in SIMULATED_PIDS for s in (1, -1)}), dtype=np.int64)
    counts = np.zeros((len(pids), len(p_edges) - 1, len(e_edges) - 1))
    for pid, momentum, _ in pythia_records(card, seed=seed, n_events=n_events):
        keep = select_simulated(pid, momentum)
        if not keep.any():
            continue
        mom = momentum[keep]
        log_p = np.log10(np.linalg.norm(mom, axis=1))
        eta = pseudorapidity(mom)
        species = np.searchsorted(pids, pid[keep])
        for k in np.unique(species):
            sel = species == k
            # numpy 1.26's stubs type histogram2d's bins as ints only (their own TODO); edge arrays are valid
            counts[k] += np.histogram2d(log_p[sel], eta[sel], bins=(p_edges, e_edges))[0]  # type: ignore[arg-type]
    present = counts.reshape(len(pids), -1).sum(axis=1) > 0
    if not present.any():
        raise InputError("pythia", f"no simulated particle in {n_events} Pythia events")
    return Spectra(pids[present], p_edges, e_edges, counts[present])
