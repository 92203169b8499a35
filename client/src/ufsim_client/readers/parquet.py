"""Tables of particles in parquet files.

Columns (one row per particle; rows of an event are kept in file order; events are ordered by number):

| column | type | meaning |
|---|---|---|
| ``event`` | integer >= 0 | event number (also used for the rng keys) |
| ``pid`` | integer | PDG id, |pid| in 11, 13, 211, 321, 2212 |
| ``x``, ``y``, ``z`` | float | origin vertex, mm |
| ``px``, ``py``, ``pz`` | float | true momentum, MeV |
| ``n_tracks`` (optional) | float | event occupancy; by default the event's rows with 2 < eta < 5 |

Every row is simulated: ``MCKey`` is the row's index in the table, ``GenEventNumber`` its ``event``
and ``SourceFile`` 0 (the table). An unknown pid, a NaN or a wrong type is an error naming the column.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ufsim_client import extras
from ufsim_client.errors import InputError
from ufsim_client.events import Event, count_n_tracks

__all__ = ["PARQUET_COLUMNS", "read_parquet"]

PARQUET_COLUMNS = ("event", "pid", "x", "y", "z", "px", "py", "pz")
"""Required columns of a particle table."""


def read_parquet(path: str | os.PathLike[str], *, max_events: int | None = None) -> Iterator[Event]:
    """Events of a parquet particle table, in event-number order (at most ``max_events`` of them)."""
    pq = extras.pyarrow_parquet()
    table = pq.read_table(str(path))
    names = set(table.column_names)
    missing = [c for c in PARQUET_COLUMNS if c not in names]
    if missing:
        raise InputError(missing[0], f"column(s) {missing} missing from {str(path)!r}; found {sorted(names)}")
    data = {}
    for name in (*PARQUET_COLUMNS, "n_tracks"):
        if name not in names:
            continue
        column = table.column(name).to_numpy(zero_copy_only=False)
        integral = name in ("event", "pid")
        if column.dtype.kind not in ("iu" if integral else "fiu"):
            kind = "integer" if integral else "numeric"
            raise InputError(name, f"column must be {kind}, not {column.dtype} (in {str(path)!r})")
        if column.dtype.kind == "f" and not np.isfinite(column).all():
            row = int(np.flatnonzero(~np.isfinite(column))[0])
            raise InputError(name, f"NaN or infinite value in row {row} of {str(path)!r}")
        data[name] = column
    if len(data["event"]) == 0:
        raise InputError("event", f"{str(path)!r} holds no particle")
    if (data["event"] < 0).any():
        raise InputError("event", "event numbers must be >= 0")
    order = np.argsort(data["event"], kind="stable")
    bounds = np.flatnonzero(np.diff(data["event"][order])) + 1
    for count, rows in enumerate(np.split(order, bounds)):
        if max_events is not None and count >= max_events:
            return
        momentum = np.stack([data["px"][rows], data["py"][rows], data["pz"][rows]], axis=1)
        pid = data["pid"][rows]
        if "n_tracks" in data:
            n_tracks = data["n_tracks"][rows]
            if (n_tracks != n_tracks[0]).any():
                raise InputError(
                    "n_tracks", f"event {int(data['event'][rows[0]])} has several n_tracks values"
                )
            n_tracks_value = float(n_tracks[0])
        else:
            n_tracks_value = float(count_n_tracks(pid, momentum))
        yield Event(
            pid=pid,
            origin=np.stack([data["x"][rows], data["y"][rows], data["z"][rows]], axis=1),
            momentum=momentum,
            n_tracks=n_tracks_value,
            number=int(data["event"][rows[0]]),
            mc={
                "SourceFile": np.zeros(len(rows), dtype=np.int32),
                "GenEventNumber": data["event"][rows].astype(np.int64),
                "MCKey": rows.astype(np.int64),
            },
        )
