"""The served pipeline as a user runs it: ``ufsim-serve`` in its own process, the ``ufsim`` client command.

CPU is counted for the server's whole process group (tritonserver and its Python backend stubs) from
``/proc/<pid>/stat``, plus the ``ufsim-serve`` wrapper, and for the client from its resource usage; memory
is the proportional set size (``Pss`` in ``/proc/<pid>/smaps_rollup``) of the same processes.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
_TICK = os.sysconf("SC_CLK_TCK")
_READY = re.compile(r"ready, pid (\d+): grpc (?:grpc://)?([^\s,]+)")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                members.append(int(entry.name))
    return members


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (their reaped children included)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(x) for x in fields[11:15])
    return total / _TICK


def pss_bytes(pids: list[int]) -> int:
    """Summed proportional set size of these processes, bytes."""
    total = 0
    for pid in pids:
        try:
            text = (Path("/proc") / str(pid) / "smaps_rollup").read_text()
        except OSError:
            continue
        match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        if match:
            total += int(match.group(1)) * 1024
    return total


@dataclass
class Served:
    """A running ``ufsim-serve``: its wrapper process, tritonserver's process group and gRPC address."""

    wrapper: subprocess.Popen[str]
    pgid: int
    grpc_url: str
    log: Path

    def pids(self) -> list[int]:
        """The wrapper and every process of tritonserver's group (server and stubs)."""
        return [self.wrapper.pid, *group_members(self.pgid)]

    def cpu(self) -> float:
        """CPU seconds used so far by the server side."""
        return cpu_seconds(self.pids())

    def pss(self) -> int:
        """PSS of the server side now, bytes."""
        return pss_bytes(self.pids())

    def stop(self) -> None:
        """SIGINT to ufsim-serve (its clean shutdown), then wait."""
        if self.wrapper.poll() is None:
            self.wrapper.send_signal(2)
            try:
                self.wrapper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.wrapper.kill()
                self.wrapper.wait()


def start_served(repository: Path, work: Path, timeout: float = 300.0) -> Served:
    """Start ``ufsim-serve`` on ``repository`` with free ports; returns once it reports ready."""
    log = work / "ufsim-serve.log"
    command = [
        str(BIN / "ufsim-serve"), "--model-repository", str(repository), "--grpc-port", "0",
        "--http-port", "0", "--metrics-port", "0", "--log-file", str(log),
    ]  # fmt: skip
    wrapper = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
    deadline = time.monotonic() + timeout
    assert wrapper.stdout is not None
    for line in wrapper.stdout:
        match = _READY.search(line)
        if match:
            threading.Thread(target=wrapper.stdout.read, daemon=True).start()
            return Served(wrapper, int(match.group(1)), match.group(2).removeprefix("grpc://"), log)
        if time.monotonic() > deadline:
            break
    wrapper.kill()
    raise RuntimeError(f"ufsim-serve did not become ready: {' '.join(command)}; see {log}")


@dataclass(frozen=True)
class ClientRun:
    """One ``ufsim simulate`` command: its CPU, the server's CPU during it, and wall time."""

    particles: int
    client_cpu_s: float
    server_cpu_s: float
    wall_s: float


def run_client(
    served: Served, arguments: list[str], particles: int, stdout: list[str] | None = None
) -> ClientRun:
    """Run ``ufsim simulate --server <served> ARGUMENTS`` to completion and account its CPU; its standard
    output is appended to ``stdout`` when given."""
    command = [str(BIN / "ufsim"), "simulate", "--server", served.grpc_url, "--no-progress", *arguments]
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before, wall = served.cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - wall
    server_cpu = served.cpu() - server_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    if stdout is not None:
        stdout.append(done.stdout)
    client_cpu = (after.ru_utime - before_children.ru_utime) + (after.ru_stime - before_children.ru_stime)
    return ClientRun(particles, client_cpu, server_cpu, wall)


@dataclass
class MemoryProfile:
    """PSS of the server side over a load: (seconds since start, bytes, phase) samples."""

    samples: list[tuple[float, int, str]] = field(default_factory=list)

    def peak(self, phase: str) -> int:
        """Largest PSS seen during ``phase``."""
        return max((b for _, b, p in self.samples if p == phase), default=0)

    def last(self, phase: str) -> int:
        """Last PSS seen during ``phase``."""
        return [b for _, b, p in self.samples if p == phase][-1]


def mem_available() -> int:
    """The machine's available memory now (``MemAvailable`` of /proc/meminfo), bytes."""
    match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(match.group(1)) * 1024 if match else 0


def memory_profile(
    served: Served,
    request: Callable[[], None],
    *,
    concurrent: tuple[int, ...] = (1, 4),
    rest_s: float = 30.0,
    period_s: float = 0.2,
) -> tuple[MemoryProfile, list[str]]:
    """PSS fresh, under ``request`` run by 1 then 4 threads at once, and ``rest_s`` after each load ends.

    A load is skipped (and said so) when what one request added, times its concurrency, would take more
    than 70 % of the machine's available memory (the machine is shared)."""
    profile = MemoryProfile()
    notes: list[str] = []
    start = time.monotonic()
    phase = ["idle"]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            profile.samples.append((time.monotonic() - start, served.pss(), phase[0]))
            stop.wait(period_s)

    def guarded() -> None:
        try:
            request()
        except Exception as error:  # the report says which load failed and why
            notes.append(f"{phase[0]}: a request failed: {error}")

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(5 * period_s)
    try:
        for count in concurrent:
            fresh = profile.last("idle")
            added = max((profile.peak(p) for p in ("1 at once",)), default=0) - fresh
            if count > 1 and added * count > 0.7 * mem_available():
                notes.append(
                    f"{count} at once skipped: one request added {added / 1e9:.1f} GB, the machine has "
                    f"{mem_available() / 1e9:.1f} GB available"
                )
                continue
            phase[0] = f"{count} at once"
            threads = [threading.Thread(target=guarded) for _ in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            phase[0] = f"{rest_s:g} s after {count} at once"
            time.sleep(rest_s)
    finally:
        stop.set()
        sampler.join()
    return profile, notes


def max_request(served: Served, inputs: dict[str, np.ndarray]) -> Callable[[], None]:
    """A function sending ``inputs`` (one request, e.g. 65,536 particles) to the ensemble and waiting."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import np_to_triton_dtype

    def send() -> None:
        client = grpcclient.InferenceServerClient(served.grpc_url)
        tensors = []
        for name, value in inputs.items():
            tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        client.infer("pipeline", tensors, client_timeout=600)
        client.close()

    return send
