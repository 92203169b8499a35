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
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ufsim_client import extras
from ufsim_client.errors import InputError
from ufsim_client.events import Event, in_n_tracks

__all__ = ["PARQUET_COLUMNS", "read_parquet"]

PARQUET_COLUMNS = ("event", "pid", "x", "y", "z", "px", "py", "pz")
"""Required columns of a particle table."""


def read_parquet(path: str | os.PathLike[str], *, max_events: int | None = None) -> Iterator[Event]:
    """Events of a parquet particle table, in event-number order (at most ``max_events`` of them)."""
    pq = extras.pyarrow_parquet()
    source = pq.ParquetFile(str(path))
    names = set(source.schema_arrow.names)
    missing = [c for c in PARQUET_COLUMNS if c not in names]
    if missing:
        raise InputError(missing[0], f"column(s) {missing} missing from {str(path)!r}; found {sorted(names)}")
    wanted = [c for c in (*PARQUET_COLUMNS, "n_tracks") if c in names]
    table = source.read(columns=wanted, use_threads=False)  # in this thread: its CPU counts as reading
    data = {}
    for name in (*PARQUET_COLUMNS, "n_tracks"):
        if name not in names:
            continue
        column = _numpy(table.column(name))
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
    event = data["event"][order]
    starts = np.flatnonzero(np.concatenate([[True], event[1:] != event[:-1]]))
    stops = np.append(starts[1:], len(event))
    pid = data["pid"][order]
    momentum = np.stack([data["px"][order], data["py"][order], data["pz"][order]], axis=1)
    origin = np.stack([data["x"][order], data["y"][order], data["z"][order]], axis=1)
    if "n_tracks" in data:
        given = data["n_tracks"][order]
        n_tracks = given[starts].astype(np.float64)
        several = np.logical_or.reduceat(given != np.repeat(given[starts], stops - starts), starts)
    else:
        n_tracks = np.add.reduceat(in_n_tracks(pid, momentum).astype(np.int64), starts).astype(np.float64)
        several = np.zeros(len(starts), dtype=bool)
    links, keys = event.astype(np.int64), order.astype(np.int64)
    for count, (start, stop) in enumerate(zip(starts.tolist(), stops.tolist(), strict=True)):
        if max_events is not None and count >= max_events:
            return
        if several[count]:
            raise InputError("n_tracks", f"event {int(event[start])} has several n_tracks values")
        yield Event(
            pid=pid[start:stop],
            origin=origin[start:stop],
            momentum=momentum[start:stop],
            n_tracks=float(n_tracks[count]),
            number=int(event[start]),
            mc={
                "SourceFile": np.zeros(stop - start, dtype=np.int32),
                "GenEventNumber": links[start:stop],
                "MCKey": keys[start:stop],
            },
        )


def _numpy(column: Any) -> NDArray[Any]:
    """A pyarrow column as numpy: numbers without nulls through DLPack, others by ``to_numpy``.

    ``to_numpy`` imports pandas the first time: about 1 s of CPU, as much as a 100,000-particle run.
    """
    pa = extras.pyarrow()
    array = column.combine_chunks()
    kind = array.type
    if array.null_count == 0 and (
        pa.types.is_integer(kind) or pa.types.is_float32(kind) or pa.types.is_float64(kind)
    ):
        found: NDArray[Any] = np.from_dlpack(array)
        return found
    converted: NDArray[Any] = array.to_numpy(zero_copy_only=False)
    return converted
