"""Cutting a stream of events into requests of a fixed number of particles, and putting results back in order.

:class:`Batcher` packs particles of consecutive events into requests of ``batch_size`` particles (an
event may span several requests; the last request may be shorter). Every particle carries its event
number and index within the event, and its ``rng_key`` is derived from those (:mod:`ufsim_client.keys`),
so outputs do not depend on how particles were batched. :class:`Reorderer` releases results in request
order, whatever order they arrive in, so the output keeps event and particle order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from ufsim_client.events import MC_COLUMNS, Event
from ufsim_client.keys import pv_keys, rng_keys

__all__ = ["Batcher", "Reorderer", "Request"]

T = TypeVar("T")


@dataclass
class Request:
    """One inference request: ``inputs`` are the tensors to send, keyed by input name.

    ``truth`` holds the particles' generator links (:data:`~ufsim_client.events.MC_COLUMNS`) and
    ``n_pvs``; ``pv_true``/``pv_keys`` the distinct primary vertices the particles come from (input of
    the PV model; a PV met in two requests is sent twice and, having one key, reconstructed the same
    way) and ``pv_row`` each particle's row among them (-1: no PV).
    """

    id: int
    event: NDArray[np.int64]
    index: NDArray[np.int32]
    inputs: dict[str, NDArray[Any]]
    last_event: int = -1
    truth: dict[str, NDArray[Any]] = field(default_factory=dict)
    pv_true: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)))
    pv_keys: NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))
    pv_row: NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))

    def __len__(self) -> int:
        return len(self.event)


@dataclass
class _Chunk:
    event: Event
    number: int
    start: int
    stop: int


@dataclass
class Batcher:
    """Packs events into :class:`Request` objects of at most ``batch_size`` particles."""

    seed: int
    batch_size: int
    _pending: list[_Chunk] = field(default_factory=list)
    _count: int = 0
    _next_id: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")

    def add(self, event: Event, number: int) -> Iterator[Request]:
        """Queue the particles of ``event`` (numbered ``number``); yield each request that fills up."""
        start = 0
        while start < len(event):
            stop = min(len(event), start + self.batch_size - self._count)
            self._pending.append(_Chunk(event, number, start, stop))
            self._count += stop - start
            start = stop
            if self._count == self.batch_size:
                yield self._emit()

    def flush(self) -> Iterator[Request]:
        """Yield the last, partly filled request, if any."""
        if self._pending:
            yield self._emit()

    def _emit(self) -> Request:
        chunks, self._pending, self._count = self._pending, [], 0
        lengths = np.fromiter((c.stop - c.start for c in chunks), np.int64, len(chunks))
        offsets = np.cumsum(lengths) - lengths
        starts = np.fromiter((c.start for c in chunks), np.int64, len(chunks))
        event = np.repeat(np.fromiter((c.number for c in chunks), np.int64, len(chunks)), lengths)
        index = (np.arange(len(event)) - np.repeat(offsets - starts, lengths)).astype(np.int32)
        n_tracks = np.fromiter((c.event.n_tracks for c in chunks), np.float32, len(chunks))
        inputs: dict[str, NDArray[Any]] = {
            "pid": np.concatenate([c.event.pid[c.start : c.stop] for c in chunks]),
            "origin": np.concatenate([c.event.origin[c.start : c.stop] for c in chunks]),
            "momentum": np.concatenate([c.event.momentum[c.start : c.stop] for c in chunks]),
            "n_tracks": np.repeat(n_tracks, lengths),
            "rng_key": rng_keys(self.seed, event, index),
        }
        last = chunks[-1]
        finished = last.number if last.stop == len(last.event) else last.number - 1
        request = Request(
            self._next_id, event, index, inputs, last_event=finished, truth=_truth(chunks, lengths)
        )
        request.pv_true, request.pv_keys, request.pv_row = self._vertices(chunks)
        self._next_id += 1
        return request

    def _vertices(
        self, chunks: list[_Chunk]
    ) -> tuple[NDArray[np.float64], NDArray[np.uint64], NDArray[np.int32]]:
        rows: dict[tuple[int, int], int] = {}
        positions: list[NDArray[np.float64]] = []
        numbers: list[int] = []
        indices: list[int] = []
        pv_row = []
        for c in chunks:
            pvs = c.event.primary_vertices
            if pvs is None or c.event.own_pv is None:
                pv_row.append(np.full(c.stop - c.start, -1, dtype=np.int32))
                continue
            own = c.event.own_pv[c.start : c.stop]
            row_of = np.full(len(pvs) + 1, -1, dtype=np.int32)  # own PV -1 reads the last entry
            for k in np.unique(own[own >= 0]).tolist():
                if (c.number, k) not in rows:
                    rows[(c.number, k)] = len(positions)
                    positions.append(pvs[k])
                    numbers.append(c.number)
                    indices.append(k)
                row_of[k] = rows[(c.number, k)]
            pv_row.append(row_of[own])
        keys = pv_keys(self.seed, np.asarray(numbers, np.int64), np.asarray(indices, np.int64))
        true = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        return true, keys.astype(np.uint64), np.concatenate(pv_row)


def _truth(chunks: list[_Chunk], lengths: NDArray[np.int64]) -> dict[str, NDArray[Any]]:
    """Generator links of the chunks' particles (each column's default where a reader gave none)."""
    columns: dict[str, NDArray[Any]] = {}
    for name, (dtype, default) in MC_COLUMNS.items():
        given = [c.event.mc is not None and name in c.event.mc for c in chunks]
        if not any(given):
            columns[name] = np.full(int(lengths.sum()), default, dtype=dtype)
            continue
        parts = [
            c.event.mc[name][c.start : c.stop]
            if has and c.event.mc is not None
            else np.full(c.stop - c.start, default, dtype=dtype)
            for c, has in zip(chunks, given, strict=True)
        ]
        columns[name] = np.concatenate(parts).astype(dtype, copy=False)
    n_pvs = (0 if c.event.primary_vertices is None else len(c.event.primary_vertices) for c in chunks)
    columns["nPVs"] = np.repeat(np.fromiter(n_pvs, np.int32, len(chunks)), lengths)
    return columns


class Reorderer(Generic[T]):
    """Holds results that arrive out of order and releases them in request-id order (0, 1, 2, ...)."""

    def __init__(self) -> None:
        self._waiting: dict[int, T] = {}
        self._next = 0

    def put(self, request_id: int, result: T) -> list[T]:
        """Store one result; return the results now ready, in order. A repeated id is an error."""
        if request_id < self._next or request_id in self._waiting:
            raise ValueError(f"result for request {request_id} received twice")
        self._waiting[request_id] = result
        ready = []
        while self._next in self._waiting:
            ready.append(self._waiting.pop(self._next))
            self._next += 1
        return ready

    @property
    def pending(self) -> int:
        """Results held back, waiting for an earlier request."""
        return len(self._waiting)
