"""The same particles three ways, interleaved in one run: Triton ensemble, chained ONNX Runtime, per particle.

- ``triton_ensemble``: the ``pipeline`` ensemble over gRPC, ``batch`` particles per request, ``in_flight``
  asynchronous requests outstanding (tritonclient.grpc ``async_infer``, as the ufsim client does).
- ``inprocess_ort``: the same ONNX graphs chained in this process by ONNX Runtime
  (:class:`ufsim_export.inprocess.InProcessPipeline`), same batch size, one intra-op thread per session
  (Triton's composing models are configured with one thread each too); ``inprocess_ort_2threads`` is
  the same with two intra-op threads per session (this machine's cores: the server may use both).
- ``ufsim_client``: the project's client, :func:`ufsim_client.simulate`, on the same particles cut into
  events of ``EVENT_SIZE`` (batching across events, ordered rows, ntuple columns, in-memory writer),
  same batch size and requests in flight; its keys come from event numbers, so its outputs differ.
- ``triton_per_particle``: one synchronous gRPC request per particle, the shape of the
  call-per-particle production approach, on the first ``per_particle`` particles only (it is slow);
  ``inprocess_per_particle`` chains the graphs in-process one particle at a time on the same particles
  (the in-job, call-per-particle way, with ONNX Runtime instead of transpiled C).

Modes run in rotating order for several rounds so that load from other users hits all of them alike;
ratios use the median rate of each mode.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import tritonclient.grpc as grpcclient

from ufsim_client import Event, MemoryWriter, simulate
from ufsim_export.repository.inprocess import InProcessPipeline

from .common import ENSEMBLE, Repository, infer_inputs, take

MODES = (
    "triton_ensemble",
    "ufsim_client",
    "inprocess_ort",
    "inprocess_ort_2threads",
    "triton_per_particle",
    "inprocess_per_particle",
)
EVENT_SIZE = 128
"""Particles per event for the ``ufsim_client`` mode (about a minimum-bias event in the acceptance)."""


@dataclass(frozen=True)
class Config:
    """What the side-by-side run does."""

    particles: int
    batch: int
    in_flight: int
    per_particle: int
    rounds: int
    target_s: float = 3.0
    """``particles`` and ``per_particle`` are upper bounds: both shrink so a pass takes about this long."""


@dataclass(frozen=True)
class Sample:
    """One timed pass of one mode."""

    mode: str
    round: int
    particles: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        """Particles per second (wall)."""
        return self.particles / self.wall_s

    @property
    def cpu_us_per_particle(self) -> float:
        """This process's CPU (all threads) per particle, microseconds."""
        return 1e6 * self.cpu_s / self.particles


class TritonRunner:
    """Sends particles to the ensemble in batches with a bounded number of requests in flight."""

    def __init__(self, url: str, output_names: list[str]) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.outputs = [grpcclient.InferRequestedOutput(name) for name in output_names]
        self.output_names = output_names

    def batched(self, batch: dict[str, np.ndarray], size: int, in_flight: int) -> dict[str, np.ndarray]:
        """All particles in requests of ``size``, ``in_flight`` outstanding; outputs in input order."""
        n = len(batch["pid"])
        starts = list(range(0, n, size))
        results: list[dict[str, np.ndarray] | None] = [None] * len(starts)
        errors: list[Exception] = []
        slots = threading.Semaphore(in_flight)

        def done(index: int) -> Callable[[grpcclient.InferResult, Exception | None], None]:
            def callback(result: grpcclient.InferResult, error: Exception | None) -> None:
                if error is not None:
                    errors.append(error)
                else:
                    results[index] = {name: result.as_numpy(name) for name in self.output_names}
                slots.release()

            return callback

        for index, start in enumerate(starts):
            slots.acquire()
            if errors:
                slots.release()
                break
            inputs = infer_inputs(take(batch, start, start + size))
            self.client.async_infer(ENSEMBLE, inputs, callback=done(index), outputs=self.outputs)
        for _ in range(in_flight):
            slots.acquire()
        if errors:
            raise RuntimeError(f"ensemble request failed: {errors[0]}")
        return {
            name: np.concatenate([r[name] for r in results if r is not None]) for name in self.output_names
        }

    def per_particle(self, batch: dict[str, np.ndarray]) -> None:
        """One synchronous request per particle."""
        for i in range(len(batch["pid"])):
            self.client.infer(ENSEMBLE, infer_inputs(take(batch, i, i + 1)), outputs=self.outputs)

    def close(self) -> None:
        """Close the gRPC channel."""
        self.client.close()


def inprocess(pipeline: InProcessPipeline, batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """All particles through the chained sessions in chunks of ``size``; outputs in input order."""
    n = len(batch["pid"])
    parts = [pipeline(take(batch, start, start + size)) for start in range(0, n, size)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def events(batch: dict[str, np.ndarray], size: int = EVENT_SIZE) -> list[Event]:
    """The particles as consecutive events of ``size`` (occupancy: the first particle's ``n_tracks``)."""
    out = []
    for number, start in enumerate(range(0, len(batch["pid"]), size)):
        part = take(batch, start, start + size)
        out.append(
            Event(
                pid=part["pid"].reshape(-1),
                origin=part["origin"],
                momentum=part["momentum"],
                n_tracks=float(part["n_tracks"][0, 0]),
                number=number,
            )
        )
    return out


def client_simulate(url: str, evts: list[Event], size: int, in_flight: int, seed: int) -> None:
    """All events through :func:`ufsim_client.simulate` into memory."""
    simulate(evts, [url], MemoryWriter(), seed=seed, batch_size=size, max_in_flight=in_flight)


def _timed(mode: str, round_: int, particles: int, fn: Callable[[], object]) -> tuple[Sample, object]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Sample(mode, round_, particles, wall, cpu), result


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: max |a - b| (floats) or the fraction of differing entries (integers)."""
    out = {}
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        if x.dtype.kind == "f":
            both_nan = np.isnan(x) & np.isnan(y)
            diff = np.where(both_nan, 0.0, np.abs(x.astype(np.float64) - y.astype(np.float64)))
            out[name] = float(np.nanmax(diff)) if diff.size else 0.0
        else:
            out[name] = float(np.mean(x != y)) if x.size else 0.0
    return out


@dataclass
class Result:
    """All samples of a side-by-side run and the Triton-vs-in-process output agreement."""

    config: Config
    samples: list[Sample]
    agreement: dict[str, float]

    def median_rate(self, mode: str) -> float:
        """Median particles/s of ``mode`` over rounds."""
        return statistics.median(s.rate for s in self.samples if s.mode == mode)

    def median_cpu(self, mode: str) -> float:
        """Median client CPU microseconds per particle of ``mode``."""
        return statistics.median(s.cpu_us_per_particle for s in self.samples if s.mode == mode)


def _sized(
    config: Config,
    pipeline: InProcessPipeline,
    triton: TritonRunner,
    warm: dict[str, np.ndarray],
    available: int,
) -> Config:
    """``config`` with particle counts cut so that one in-process pass and the per-particle pass take
    about ``target_s`` (big reference models are much slower than the toy ones)."""
    n = len(warm["pid"])
    start = time.perf_counter()
    inprocess(pipeline, warm, config.batch)
    rate = n / (time.perf_counter() - start)
    start = time.perf_counter()
    triton.per_particle(take(warm, 0, 5))
    per_rate = 5 / (time.perf_counter() - start)
    particles = max(config.batch, int(rate * config.target_s) // config.batch * config.batch)
    particles = min(config.particles, available, particles)
    per_particle = min(config.per_particle, max(30, int(per_rate * config.target_s)))
    return replace(config, particles=particles, per_particle=per_particle)


def run(
    repository: Repository,
    url: str,
    batch: dict[str, np.ndarray],
    config: Config,
    progress: Callable[[str], None] = print,
) -> Result:
    """Interleaved rounds of every mode on the same particles."""
    output_names = [t.name for t in repository.spec.outputs]
    pipeline = InProcessPipeline(repository.path, repository.spec, threads=1)
    pipeline2 = InProcessPipeline(repository.path, repository.spec, threads=2)
    triton = TritonRunner(url, output_names)
    warm = take(batch, 0, min(config.batch, len(batch["pid"])))
    inprocess(pipeline, warm, config.batch)
    inprocess(pipeline2, warm, config.batch)
    triton.batched(warm, config.batch, config.in_flight)
    triton.per_particle(take(batch, 0, 3))
    config = _sized(config, pipeline, triton, warm, len(batch["pid"]))
    progress(f"  side by side on {config.particles} particles, {config.per_particle} one by one")
    batch = take(batch, 0, config.particles)
    head = take(batch, 0, config.per_particle)
    evts = events(batch)
    client_simulate(url, events(warm), config.batch, config.in_flight, seed=1)

    actions: dict[str, tuple[int, Callable[[], object]]] = {
        "triton_ensemble": (config.particles, lambda: triton.batched(batch, config.batch, config.in_flight)),
        "ufsim_client": (
            config.particles,
            lambda: client_simulate(url, evts, config.batch, config.in_flight, seed=1),
        ),
        "inprocess_ort": (config.particles, lambda: inprocess(pipeline, batch, config.batch)),
        "inprocess_ort_2threads": (config.particles, lambda: inprocess(pipeline2, batch, config.batch)),
        "triton_per_particle": (config.per_particle, lambda: triton.per_particle(head)),
        "inprocess_per_particle": (config.per_particle, lambda: inprocess(pipeline, head, 1)),
    }
    samples: list[Sample] = []
    outputs: dict[str, dict[str, np.ndarray]] = {}
    try:
        for r in range(config.rounds):
            order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
            for mode in order:
                n, fn = actions[mode]
                sample, result = _timed(mode, r, n, fn)
                samples.append(sample)
                if isinstance(result, dict):
                    outputs[mode] = result
                progress(f"  side-by-side round {r + 1}/{config.rounds} {mode}: {sample.wall_s:.2f} s")
    finally:
        triton.close()
    return Result(config, samples, agreement(outputs["triton_ensemble"], outputs["inprocess_ort"]))
