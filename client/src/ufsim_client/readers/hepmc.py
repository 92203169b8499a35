"""HepMC2 and HepMC3 ASCII input through pyhepmc.

Final-state particles are those with a status in ``final_status`` (default 1 and 999: in the LHCb
files, 999 marks particles stable at generator level and handed to the detector simulation). Of these,
charged e, mu, pi, K, p with pz > 0 are simulated; ``n_tracks`` counts all final-state ones with
2 < eta < 5. The origin is the particle's production vertex (the event's position when it has none).
Momenta and lengths are converted to MeV and mm from the event's units.

With ``crossing="event"`` every GenEvent is one event. With ``crossing="file"`` all GenEvents of a file
are one event: in the LHCb files each file is one bunch crossing of several pp collisions, and the
occupancy of the crossing is what the detector sees.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np

from ufsim_client import extras
from ufsim_client.errors import InputError
from ufsim_client.events import SIMULATED_PIDS, Event
from ufsim_client.readers._record import event_from_record
from ufsim_client.readers.hepmc_check import check_hepmc_file

__all__ = ["read_hepmc"]

log = logging.getLogger(__name__)


def _gen_event_arrays(ev: Any, final_status: frozenset[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hepmc = extras.pyhepmc()
    mom_scale = 1000.0 if ev.momentum_unit == hepmc.Units.GEV else 1.0
    len_scale = 10.0 if ev.length_unit == hepmc.Units.CM else 1.0
    arrays = ev.numpy.particles
    status = np.asarray(arrays.status)
    pid = np.asarray(arrays.pid, dtype=np.int64)
    final = np.isin(status, list(final_status))
    momentum = np.stack([arrays.px, arrays.py, arrays.pz], axis=1) * mom_scale
    origin = np.zeros((len(pid), 3))
    wanted = final & np.isin(np.abs(pid), SIMULATED_PIDS)
    particles = ev.particles
    for i in np.flatnonzero(wanted):
        vertex = particles[i].production_vertex
        if vertex is not None:
            pos = vertex.position
            origin[i] = (pos.x * len_scale, pos.y * len_scale, pos.z * len_scale)
        else:
            pos = ev.event_pos()
            origin[i] = (pos.x * len_scale, pos.y * len_scale, pos.z * len_scale)
    return pid[final], momentum[final], origin[final]


def read_hepmc(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    max_events: int | None = None,
    crossing: Literal["event", "file"] = "event",
    final_status: Iterable[int] = (1, 999),
) -> Iterator[Event]:
    """Events from HepMC2/HepMC3 ASCII files, numbered from 0 in reading order.

    Events without a particle to simulate are skipped but keep their number. ``max_events`` counts
    every event read, skipped or not. Each file is checked line by line first
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
    for path in files:
        if max_events is not None and number >= max_events:
            return
        if not os.path.exists(path):
            raise FileNotFoundError(f"HepMC input {str(path)!r} does not exist")
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for checked, gen_event in _parsed_events(hepmc, path):
            if len(gen_event.particles) != checked.particles:
                raise InputError(
                    "input",
                    f"{os.fspath(path)}: event {checked.number} (line {checked.line}): pyhepmc read "
                    f"{len(gen_event.particles)} particles, the file declares {checked.particles}",
                )
            arrays = _gen_event_arrays(gen_event, status)
            if crossing == "file":
                parts.append(arrays)
                continue
            event = event_from_record(number, *arrays)
            if event is None:
                log.debug("event %d of %s has no particle to simulate", number, path)
            else:
                yield event
            number += 1
            if max_events is not None and number >= max_events:
                return
        if crossing == "file":
            if not parts:
                raise ValueError(f"HepMC input {str(path)!r} holds no event")
            pid, mom, org = (np.concatenate(column) for column in zip(*parts, strict=True))
            event = event_from_record(number, pid, mom, org)
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
