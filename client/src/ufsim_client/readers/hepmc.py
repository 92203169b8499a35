"""HepMC2 and HepMC3 ASCII input through pyhepmc.

Final-state particles are those with a status in ``final_status`` (default 1 and 999: in the LHCb
files, 999 marks particles stable at generator level and handed to the detector simulation). Of these,
charged e, mu, pi, K, p with pz > 0 are simulated; ``n_tracks`` counts all final-state ones with
2 < eta < 5. The origin is the particle's production vertex (the event's position when it has none).
Momenta and lengths are converted to MeV and mm from the event's units.

With ``crossing="file"`` (the default) all GenEvents of a file are one event: LHCb's simulation writes
one file per bunch crossing, each GenEvent one pp collision (SQLamarr's HepMC2 loader reads them the
same way), and the occupancy of the whole crossing is what the detector sees. With
``crossing="event"`` every GenEvent is one event (files written one collision per GenEvent, e.g. by a
standalone generator); a file of more than :data:`MAX_COLLISIONS` GenEvents read as one crossing is
logged as a warning.

Each GenEvent's primary vertex is the end vertex of its first beam particle (as in SQLamarr), else the
production vertex of its first particle; a particle's own PV is that of its GenEvent. Links back to the
record (:data:`ufsim_client.events.MC_COLUMNS`): ``SourceFile`` (index in the list of files),
``GenEventNumber`` (the GenEvent's event number), ``MCKey`` (the HepMC particle id), ``MC_MOTHER_ID``
and ``MC_MOTHER_KEY`` (first incoming particle of the production vertex).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ufsim_client import extras
from ufsim_client.errors import InputError
from ufsim_client.events import Event, is_simulated
from ufsim_client.readers._record import event_from_record
from ufsim_client.readers.hepmc_check import check_hepmc_file

__all__ = ["MAX_COLLISIONS", "read_hepmc"]

log = logging.getLogger(__name__)

MAX_COLLISIONS = 30
"""More GenEvents than this in one file read as one crossing suggests a file of separate events."""


@dataclass
class _Collision:
    """Final-state particles of one GenEvent, their links to the record and the collision's PV."""

    pid: NDArray[np.int64]
    momentum: NDArray[np.float64]
    origin: NDArray[np.float64]
    mc: dict[str, NDArray[Any]]
    pv: tuple[float, float, float]


def _position(vertex: Any, scale: float) -> tuple[float, float, float]:
    pos = getattr(vertex, "position", vertex)
    return (pos.x * scale, pos.y * scale, pos.z * scale)


def _collision(ev: Any, final_status: frozenset[int], source: int) -> _Collision:
    hepmc = extras.pyhepmc()
    mom_scale = 1000.0 if ev.momentum_unit == hepmc.Units.GEV else 1.0
    len_scale = 10.0 if ev.length_unit == hepmc.Units.CM else 1.0
    arrays = ev.numpy.particles
    status = np.asarray(arrays.status)
    pid = np.asarray(arrays.pid, dtype=np.int64)
    final = np.zeros(len(status), dtype=bool)
    for code in final_status:
        final |= status == code
    momentum = np.stack([arrays.px, arrays.py, arrays.pz], axis=1) * mom_scale
    n = len(pid)
    origin = np.zeros((n, 3))
    mother_id = np.zeros(n, dtype=np.int32)
    mother_key = np.full(n, -1, dtype=np.int64)
    particles = ev.particles
    event_pos = _position(ev.event_pos(), len_scale)
    for i in np.flatnonzero(final & is_simulated(pid)).tolist():
        vertex = particles[i].production_vertex
        if vertex is None:
            origin[i] = event_pos
            continue
        origin[i] = _position(vertex, len_scale)
        mothers = vertex.particles_in
        if mothers:
            mother_id[i], mother_key[i] = mothers[0].pid, mothers[0].id
    beams = [b for b in ev.beams if b.end_vertex is not None]
    if beams:
        pv = _position(beams[0].end_vertex, len_scale)
    elif n and particles[0].production_vertex is not None:
        pv = _position(particles[0].production_vertex, len_scale)
    else:
        pv = event_pos
    mc: dict[str, NDArray[Any]] = {
        "SourceFile": np.full(n, source, dtype=np.int32),
        "GenEventNumber": np.full(n, ev.event_number, dtype=np.int64),
        "MCKey": np.asarray(arrays.id, dtype=np.int64),
        "MC_MOTHER_ID": mother_id,
        "MC_MOTHER_KEY": mother_key,
    }
    return _Collision(pid[final], momentum[final], origin[final], {k: v[final] for k, v in mc.items()}, pv)


def _crossing_event(number: int, collisions: list[_Collision]) -> Event | None:
    """One event of several collisions: particles concatenated, own PV = index of their collision."""
    return event_from_record(
        number,
        np.concatenate([c.pid for c in collisions]),
        np.concatenate([c.momentum for c in collisions]),
        np.concatenate([c.origin for c in collisions]),
        mc={k: np.concatenate([c.mc[k] for c in collisions]) for k in collisions[0].mc},
        primary_vertices=np.asarray([c.pv for c in collisions]),
        own_pv=np.concatenate([np.full(len(c.pid), i, dtype=np.int32) for i, c in enumerate(collisions)]),
    )


def read_hepmc(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    max_events: int | None = None,
    crossing: Literal["event", "file"] = "file",
    final_status: Iterable[int] = (1, 999),
) -> Iterator[Event]:
    """Events from HepMC2/HepMC3 ASCII files, numbered from 0 in reading order.

    Events without a particle to simulate are skipped but keep their number. ``max_events`` counts
    every event read, skipped or not. Each file is checked first
    (:func:`~ufsim_client.readers.hepmc_check.check_hepmc_file`), and every event pyhepmc builds must
    hold the particles its lines declare.

    Raises:
        InputError: field ``input``, naming the file and the event, for a truncated, empty, garbled or
            non-HepMC file.
    """
    hepmc = extras.pyhepmc()
    files = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    status = frozenset(int(s) for s in final_status)
    if crossing not in ("event", "file"):
        raise ValueError(f"crossing must be 'event' or 'file', not {crossing!r}")
    number = 0
    for source, path in enumerate(files):
        if max_events is not None and number >= max_events:
            return
        if not os.path.exists(path):
            raise FileNotFoundError(f"HepMC input {str(path)!r} does not exist")
        collisions: list[_Collision] = []
        for checked, gen_event in _parsed_events(hepmc, path):
            built = len(gen_event.numpy.particles.id)  # gen_event.particles would wrap each particle
            if built != checked.particles:
                raise InputError(
                    "input",
                    f"{os.fspath(path)}: event {checked.number} (line {checked.line}): pyhepmc read "
                    f"{built} particles, the file declares {checked.particles}",
                )
            collision = _collision(gen_event, status, source)
            if crossing == "file":
                collisions.append(collision)
                continue
            event = _crossing_event(number, [collision])
            if event is None:
                log.debug("event %d of %s has no particle to simulate", number, path)
            else:
                yield event
            number += 1
            if max_events is not None and number >= max_events:
                return
        if crossing == "file":
            if not collisions:
                raise ValueError(f"HepMC input {str(path)!r} holds no event")
            if len(collisions) > MAX_COLLISIONS:
                log.warning(
                    "%s: %d GenEvents read as one bunch crossing (--crossing file); "
                    "use --crossing event if they are separate events",
                    path,
                    len(collisions),
                )
            event = _crossing_event(number, collisions)
            if event is not None:
                yield event
            number += 1


def _parsed_events(hepmc: Any, path: str | os.PathLike[str]) -> Iterator[tuple[Any, Any]]:
    """Pairs (checked event, pyhepmc GenEvent) of one file; a parse failure names the file and event."""
    checked = check_hepmc_file(path)
    read = 0
    with hepmc.open(path) as opened:
        source = iter(opened)
        while read < len(checked):
            try:
                gen_event = next(source, None)
            except RuntimeError as err:
                raise InputError(
                    "input", f"{os.fspath(path)}: event {checked[read].number}: pyhepmc failed: {err}"
                ) from None
            if gen_event is None:
                break
            yield checked[read], gen_event
            read += 1
    if read < len(checked):
        raise InputError(
            "input",
            f"{os.fspath(path)}: event {checked[read].number} (line {checked[read].line}): pyhepmc read "
            f"only {read} of the {len(checked)} events the file holds",
        )
