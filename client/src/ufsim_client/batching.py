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

from ufsim_client.events import Event
from ufsim_client.keys import rng_keys

__all__ = ["Batcher", "Reorderer", "Request"]

T = TypeVar("T")


@dataclass
class Request:
    """One inference request: ``inputs`` are the tensors to send, keyed by input name."""

    id: int
    event: NDArray[np.int64]
    index: NDArray[np.int32]
    inputs: dict[str, NDArray[Any]]
    last_event: int = -1

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
        event = np.concatenate([np.full(c.stop - c.start, c.number, dtype=np.int64) for c in chunks])
        index = np.concatenate([np.arange(c.start, c.stop, dtype=np.int32) for c in chunks])
        inputs: dict[str, NDArray[Any]] = {
            "pid": np.concatenate([c.event.pid[c.start : c.stop] for c in chunks]),
            "origin": np.concatenate([c.event.origin[c.start : c.stop] for c in chunks]),
            "momentum": np.concatenate([c.event.momentum[c.start : c.stop] for c in chunks]),
            "n_tracks": np.concatenate(
                [np.full(c.stop - c.start, c.event.n_tracks, dtype=np.float32) for c in chunks]
            ),
            "rng_key": rng_keys(self.seed, event, index),
        }
        last = chunks[-1]
        finished = last.number if last.stop == len(last.event) else last.number - 1
        request = Request(self._next_id, event, index, inputs, last_event=finished)
        self._next_id += 1
        return request


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
