"""Pythia 8 in-process (pythia8mc), default card: 13 TeV pp, SoftQCD:nonDiffractive.

The card is a Pythia settings file (one ``Key = value`` per line, ``!`` or ``#`` start comments).
``Print:quiet = on`` is applied first and the seed last (``Random:setSeed = on``, ``Random:seed``
derived from the job seed by SplitMix64 into Pythia's range 1..900000000), so a card cannot make a run
irreproducible. The default card also spreads primary vertices as in LHCb 2016 (x ~ N(0.85, 0.035),
y ~ N(-0.17, 0.035), z ~ N(0, 45) mm). Pythia works in GeV and mm; events are converted to MeV.

ReDecay (``redecay=PDG``, ``redecay_times=N``; LHCb's fast-simulation ReDecay): the signal particle
(both charges) is kept undecayed while the underlying event is generated; events without one are
generated anew. The record is then copied N times and in each copy Pythia decays the signal particles
again (``Pythia::moreDecays``), so the N events share the underlying event (same ``GenEventNumber``,
Pythia's counter of generated events) and differ in the signal decays. Each copy is an event of its
own, with its own number and so its own rng keys. The signal particle's decay time, hence its decay
vertex, is the one Pythia gave it at production and is shared by the copies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ufsim_client import extras
from ufsim_client.errors import InputError
from ufsim_client.events import SIMULATED_PIDS, Event
from ufsim_client.keys import splitmix64
from ufsim_client.readers._record import event_from_record

__all__ = ["DEFAULT_CARD", "generate_pythia", "pythia_records"]

DEFAULT_CARD: tuple[str, ...] = (
    "Beams:eCM = 13000.",
    "SoftQCD:nonDiffractive = on",
    "Beams:allowVertexSpread = on",
    "Beams:offsetVertexX = 0.85",
    "Beams:offsetVertexY = -0.17",
    "Beams:sigmaVertexX = 0.035",
    "Beams:sigmaVertexY = 0.035",
    "Beams:sigmaVertexZ = 45.",
)
"""Settings used when no card is given."""

_SIMULATED = frozenset(SIMULATED_PIDS)


def _card_lines(card: str | os.PathLike[str] | None) -> list[str]:
    if card is None or str(card) == "default":
        return list(DEFAULT_CARD)
    path = Path(card)
    if not path.is_file():
        raise InputError("pythia", f"card file {str(card)!r} does not exist (or pass 'default')")
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split("!")[0].split("#")[0].strip()
        if line:
            lines.append(line)
    return lines


def _pythia(card: str | os.PathLike[str] | None, seed: int, extra: tuple[str, ...] = ()) -> Any:
    pythia8 = extras.pythia8mc()
    pythia = pythia8.Pythia("", False)
    pythia_seed = int(splitmix64([seed])[0] % np.uint64(900_000_000)) + 1
    settings = [
        "Print:quiet = on",
        *_card_lines(card),
        *extra,
        "Random:setSeed = on",
        f"Random:seed = {pythia_seed}",
    ]
    for line in settings:
        if not pythia.readString(line):
            raise InputError("pythia", f"Pythia rejected the setting {line!r} of card {str(card)!r}")
    if not pythia.init():
        raise InputError("pythia", f"Pythia failed to initialise with card {str(card)!r}")
    return pythia


_Record = tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], dict[str, NDArray[Any]]]
_EventRecord = tuple[
    NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], dict[str, NDArray[Any]], NDArray[np.float64]
]
"""A :data:`_Record` followed by the event's true primary vertex (x, y, z)."""


def _record(event: Any, counter: int, start: int = 0) -> _Record:
    """Final-state (pid, momentum [MeV], origin [mm], links to the record) of a Pythia event record.

    Only entries from ``start`` on are read (the decay products a ReDecay copy adds).
    """
    pid, momentum, origin, key, mother_id, mother_key = [], [], [], [], [], []
    for index in range(start, event.size()):
        particle = event[index]
        if particle.isFinal():
            pid.append(particle.id())
            momentum.append((particle.px(), particle.py(), particle.pz()))
            origin.append((particle.xProd(), particle.yProd(), particle.zProd()))
            key.append(index)
            mother = particle.mother1()
            mother_key.append(mother if mother > 0 else -1)
            mother_id.append(event[mother].id() if mother > 0 else 0)
    n = len(pid)
    links: dict[str, NDArray[Any]] = {
        "SourceFile": np.full(n, -1, dtype=np.int32),
        "GenEventNumber": np.full(n, counter, dtype=np.int64),
        "MCKey": np.asarray(key, dtype=np.int64),
        "MC_MOTHER_ID": np.asarray(mother_id, dtype=np.int32),
        "MC_MOTHER_KEY": np.asarray(mother_key, dtype=np.int64),
    }
    return (
        np.asarray(pid, dtype=np.int64),
        np.asarray(momentum, dtype=np.float64).reshape(-1, 3) * 1000.0,
        np.asarray(origin, dtype=np.float64).reshape(-1, 3),
        links,
    )


def _primary_vertex(event: Any) -> NDArray[np.float64]:
    """The collision vertex: production vertex of the incoming beam (vertex spread included), mm."""
    beam = event[1]
    return np.asarray([[beam.xProd(), beam.yProd(), beam.zProd()]], dtype=np.float64)


def pythia_records(
    card: str | os.PathLike[str] | None, *, seed: int, n_events: int
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]]:
    """Final-state (pid, momentum [MeV], origin [mm]) arrays of ``n_events`` Pythia events."""
    for pid, momentum, origin, _, _ in _pythia_events(card, seed=seed, n_events=n_events):
        yield pid, momentum, origin


def _pythia_events(
    card: str | os.PathLike[str] | None, *, seed: int, n_events: int
) -> Iterator[_EventRecord]:
    pythia = _pythia(card, seed)
    produced = 0
    while produced < n_events:
        if not pythia.next():
            continue
        yield (*_record(pythia.event, produced), _primary_vertex(pythia.event))
        produced += 1


def _concat(parts: list[_Record]) -> _Record:
    links = {name: np.concatenate([p[3][name] for p in parts]) for name in parts[0][3]}
    pid, momentum, origin = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return pid, momentum, origin, links


def _without(record: _Record, keys: list[int]) -> _Record:
    keep = ~np.isin(record[3]["MCKey"], keys)
    return (record[0][keep], record[1][keep], record[2][keep], {k: v[keep] for k, v in record[3].items()})


def _redecayed_events(
    card: str | os.PathLike[str] | None, *, seed: int, n_events: int, signal: int, times: int
) -> Iterator[_EventRecord]:
    """ReDecay copies; the underlying event is converted once and each copy adds its decay products."""
    pythia8 = extras.pythia8mc()
    pythia = _pythia(card, seed, (f"{abs(signal)}:mayDecay = off",))
    if not pythia.particleData.isParticle(abs(signal)) or not pythia.particleData.canDecay(abs(signal)):
        raise InputError("redecay", f"PDG id {signal} is not a particle Pythia can decay")
    produced = counter = 0
    while produced < n_events:
        if not pythia.next():
            continue
        counter += 1
        underlying = pythia8.Event(pythia.event)
        size = underlying.size()
        signals = [i for i in range(size) if abs(underlying[i].id()) == abs(signal)]
        if not signals:
            continue
        shared = _without(_record(underlying, counter - 1), signals)  # the signal decays in each copy
        pv = _primary_vertex(underlying)
        pythia.particleData.mayDecay(abs(signal), True)
        try:
            for _ in range(min(times, n_events - produced)):
                pythia.event = pythia8.Event(underlying)
                if not pythia.moreDecays():
                    raise RuntimeError(f"Pythia failed to re-decay PDG {signal} in event {counter - 1}")
                yield (*_concat([shared, _record(pythia.event, counter - 1, start=size)]), pv)
                produced += 1
        finally:
            pythia.particleData.mayDecay(abs(signal), False)


def generate_pythia(
    card: str | os.PathLike[str] | None = None,
    *,
    seed: int,
    n_events: int,
    redecay: int | None = None,
    redecay_times: int = 1,
) -> Iterator[Event]:
    """``n_events`` Pythia events numbered 0..n_events-1 (events with nothing to simulate are skipped).

    ``GenEventNumber`` is Pythia's event counter (from 0), ``MCKey`` the index in ``pythia.event``.
    ``redecay``/``redecay_times``: ReDecay of that PDG id (see the module docstring).
    """
    if redecay is None:
        source = _pythia_events(card, seed=seed, n_events=n_events)
    else:
        if redecay_times < 1:
            raise InputError("redecay_times", f"expected a number of copies >= 1, not {redecay_times}")
        source = _redecayed_events(card, seed=seed, n_events=n_events, signal=redecay, times=redecay_times)
    for number, (pid, momentum, origin, links, pv) in enumerate(source):
        event = event_from_record(
            number, pid, momentum, origin, mc=links, primary_vertices=pv, own_pv=np.zeros(len(pid), np.int32)
        )
        if event is not None:
            yield event
