"""The simulation loop: events in, batched requests in flight, ordered rows out, and a summary."""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray
from tqdm import tqdm

from ufsim_client.batching import Batcher, Reorderer, Request
from ufsim_client.errors import InputError
from ufsim_client.events import Event
from ufsim_client.ntuple import make_columns
from ufsim_client.provenance import provenance as make_provenance
from ufsim_client.provenance import served_identity
from ufsim_client.transport import RetryPolicy, ServerPool
from ufsim_client.vertices import PV_MODEL, PvReconstruction
from ufsim_client.writers import Writer

__all__ = ["Summary", "simulate"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Summary:
    """What a run did and how fast. CPU is the whole client process (reading/generating included)."""

    events: int
    particles: int
    requests: int
    retries: int
    failovers: int
    wall_s: float
    cpu_s: float
    source_cpu_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def particles_per_s(self) -> float:
        return self.particles / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_us_per_particle(self) -> float:
        """Client process CPU per particle, reading or generating events included."""
        return 1e6 * self.cpu_s / self.particles if self.particles else 0.0

    @property
    def transport_cpu_us_per_particle(self) -> float:
        """Client CPU per particle without the time spent reading or generating events."""
        return 1e6 * max(0.0, self.cpu_s - self.source_cpu_s) / self.particles if self.particles else 0.0

    def __str__(self) -> str:
        return (
            f"{self.events} events, {self.particles} particles in {self.requests} requests, "
            f"{self.wall_s:.2f} s: {self.events_per_s:.1f} events/s, {self.particles_per_s:.0f} particles/s, "
            f"client CPU {self.cpu_us_per_particle:.1f} us/particle "
            f"({self.transport_cpu_us_per_particle:.1f} without reading/generating events) "
            f"({self.retries} retries, {self.failovers} fail-overs)"
        )


def simulate(
    events: Iterable[Event],
    servers: Sequence[str] | ServerPool,
    writer: Writer,
    *,
    seed: int,
    batch_size: int = 8192,
    max_in_flight: int = 4,
    total_events: int | None = None,
    progress: bool = False,
    model: str = "pipeline",
    retry: RetryPolicy | None = None,
    pv_model: str | None = PV_MODEL,
    provenance: dict[str, Any] | None = None,
) -> Summary:
    """Simulate ``events`` on the servers and write one row per particle to ``writer``, in order.

    Args:
        events: the events; an event without a ``number`` gets the next number after the previous one.
            Numbers must increase. Rows keep event order and particle order within events.
        servers: ``host:port`` URLs tried in order (fail-over), or an open :class:`ServerPool`.
        writer: where rows go (see :mod:`ufsim_client.writers`); closed on success, aborted on failure.
        seed: job seed; with the event number and particle index it gives each particle's ``rng_key``.
        batch_size: particles per request (capped at the model's max_batch_size).
        max_in_flight: requests sent concurrently.
        total_events: expected number of events, for the progress bar.
        progress: show a tqdm progress bar on stderr.
        pv_model: the served PV reconstruction model for the events' primary vertices (OWNPV_*, IP);
            None, or a server without it (a warning), leaves those columns at their sentinel.
        provenance: the run's provenance record (:func:`ufsim_client.provenance.provenance`; a minimal
            one from ``seed`` by default); the servers' identity is added and the record handed to
            the writer's ``set_provenance`` before the first row.

    Raises:
        InputError: an invalid event (the field is named); nothing is left at the writer's target.
        ServerError, ContractError: the servers failed or do not serve the expected model.
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")
        pool = servers if isinstance(servers, ServerPool) else ServerPool(servers, model=model, retry=retry)
    except BaseException:
        writer.abort()
        raise
    bar = tqdm(total=total_events, unit="evt", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="ufsim-infer")
    in_flight: dict[Future[dict[str, NDArray[Any]]], Request] = {}
    reorder: Reorderer[tuple[Request, dict[str, NDArray[Any]]]] = Reorderer()
    counts = {"events": 0, "particles": 0, "requests": 0}
    source_cpu = [0.0]

    def collect(block_until: int) -> None:
        while len(in_flight) > block_until:
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                request = in_flight.pop(future)
                for sent, outputs in reorder.put(request.id, (request, future.result())):
                    writer.write(make_columns(sent, outputs))
                    counts["particles"] += len(sent)
                    bar.update(max(0, sent.last_event + 1 - bar.n))
                    bar.set_postfix(particles=counts["particles"], refresh=False)

    try:
        stream = _timed(events, source_cpu)
        first = next(stream, None)  # input errors surface before any server is contacted
        contract = pool.contract()
        record_identity(writer, pool.identity)
        if batch_size > contract.max_batch_size:
            log.warning(
                "batch size %d exceeds the model's max_batch_size; using %d",
                batch_size,
                contract.max_batch_size,
            )
            batch_size = contract.max_batch_size
        record = dict(provenance) if provenance is not None else make_provenance(seed=seed)
        record["server"] = served_identity(pool, pool.model)
        record["pv_model"] = pv_model
        vertices = PvReconstruction(pool, pv_model) if pv_model else None
        if vertices is not None and not vertices.available():
            log.warning("the servers do not serve %r: OWNPV_* and IP columns are left at -9999", pv_model)
            vertices = None
            record["pv_model"] = None
        set_provenance = getattr(writer, "set_provenance", None)
        if set_provenance is not None:
            set_provenance(record)
        batcher = Batcher(seed=seed, batch_size=batch_size)
        last = -1
        for event in itertools.chain([] if first is None else [first], stream):
            number = last + 1 if event.number is None else int(event.number)
            if number <= last:
                raise InputError("number", f"event numbers must increase: {number} after {last}")
            last = number
            counts["events"] += 1
            for request in batcher.add(event, number):
                collect(max_in_flight - 1)
                in_flight[executor.submit(_infer, pool, vertices, request)] = request
                counts["requests"] += 1
        for request in batcher.flush():
            collect(max_in_flight - 1)
            in_flight[executor.submit(_infer, pool, vertices, request)] = request
            counts["requests"] += 1
        collect(0)
        if reorder.pending:
            raise RuntimeError(f"{reorder.pending} results were never released in order")
        bar.update(max(0, last + 1 - bar.n))
        writer.close()
    except BaseException:
        executor.shutdown(wait=False, cancel_futures=True)
        writer.abort()
        raise
    finally:
        executor.shutdown(wait=True)
        bar.close()
        if pool is not servers:
            pool.close()
    summary = Summary(
        events=counts["events"],
        particles=counts["particles"],
        requests=counts["requests"],
        retries=pool.retries,
        failovers=pool.failovers,
        wall_s=time.perf_counter() - wall0,
        cpu_s=time.process_time() - cpu0,
        source_cpu_s=source_cpu[0],
    )
    log.info("%s", summary)
    return summary


def _infer(pool: ServerPool, vertices: PvReconstruction | None, request: Request) -> dict[str, NDArray[Any]]:
    """The pipeline's outputs for ``request``, with the PV model's for its primary vertices."""
    outputs = pool.infer(request.id, request.inputs)
    if vertices is not None and len(request.pv_keys):
        outputs.update(vertices.infer(request.id, request.pv_true, request.pv_keys))
    return outputs


IDENTITY_KEY = "ufsim_repository"
"""Output metadata key of the served repository's identity (JSON; see :attr:`ServerPool.identity`)."""


def record_identity(writer: Writer, identity: dict[str, Any] | None) -> None:
    """Put the served repository's identity into the writer's ``metadata`` hook, when it has one."""
    metadata = getattr(writer, "metadata", None)
    if isinstance(metadata, dict) and identity is not None:
        metadata[IDENTITY_KEY] = json.dumps(identity, sort_keys=True)


def _timed(events: Iterable[Event], spent: list[float]) -> Iterator[Event]:
    """Iterate ``events``, adding the CPU time this thread spends producing them to ``spent[0]``."""
    iterator = iter(events)
    while True:
        start = time.thread_time()
        try:
            event = next(iterator)
        except StopIteration:
            return
        finally:
            spent[0] += time.thread_time() - start
        yield event
