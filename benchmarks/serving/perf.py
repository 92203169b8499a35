"""perf_analyzer runs against a local Triton and parsing of what it prints.

Each run measures one model at one batch size and concurrency; the client- and server-side
numbers come from perf_analyzer's ``-f`` CSV, and for the ensemble the per-composing-model server
breakdown (queue and compute time of each step) from its standard output.
"""

from __future__ import annotations

import csv
import math
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from .common import ROOT, infer_inputs, perf_analyzer_binary, perf_analyzer_env


@dataclass(frozen=True)
class Settings:
    """How perf_analyzer measures: count windows sized from a probe so one window lasts ~``window_s``."""

    window_s: float
    min_requests: int = 3
    max_requests: int = 300
    stability_percentage: int = 50
    max_trials: int = 6
    timeout_s: float = 300.0

    def requests_per_window(self, latency_s: float) -> int:
        """Requests per count window for requests that take ``latency_s`` alone."""
        wanted = math.ceil(self.window_s / max(latency_s, 1e-6))
        return int(min(max(wanted, self.min_requests), self.max_requests))


FULL = Settings(window_s=2.0)
QUICK = Settings(window_s=0.7, stability_percentage=80, max_trials=4, timeout_s=120.0)


def probe_latency(url: str, model: str, tensors: dict[str, np.ndarray], repeats: int = 3) -> float:
    """Seconds one request of ``tensors`` takes alone (after one warm-up request)."""
    client = grpcclient.InferenceServerClient(url)
    try:
        inputs = infer_inputs(tensors)
        client.infer(model, inputs)
        start = time.perf_counter()
        for _ in range(repeats):
            client.infer(model, inputs)
        return (time.perf_counter() - start) / repeats
    finally:
        client.close()


@dataclass
class Composing:
    """Server-side averages of one composing model under an ensemble measurement (microseconds)."""

    model: str
    inference_count: int
    execution_count: int
    request_us: float
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float

    @property
    def compute_us(self) -> float:
        """Compute input + infer + output per request."""
        return self.compute_input_us + self.compute_infer_us + self.compute_output_us


@dataclass
class Measurement:
    """One (model, batch, concurrency) point."""

    model: str
    batch: int
    concurrency: int
    throughput: float
    avg_latency_us: float
    p50_us: float
    p99_us: float
    client_send_us: float
    client_recv_us: float
    server_queue_us: float
    server_compute_us: float
    stable: bool = True
    composing: list[Composing] = field(default_factory=list)


def command(
    model: str,
    url: str,
    batch: int,
    concurrency: int,
    input_json: Path,
    csv_path: Path,
    requests_per_window: int,
    settings: Settings,
) -> list[str]:
    """The perf_analyzer command line for one model, batch size and concurrency."""
    return [
        str(perf_analyzer_binary()),
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "-a",
        "-b",
        str(batch),
        "--concurrency-range",
        str(concurrency),
        "--input-data",
        str(input_json),
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        str(requests_per_window),
        "--stability-percentage",
        str(settings.stability_percentage),
        "--max-trials",
        str(settings.max_trials),
        "-f",
        str(csv_path),
        "--verbose-csv",
    ]


def display(cmd: list[str]) -> str:
    """A command line as a reader would type it from the repository root."""
    out = []
    for part in cmd:
        path = Path(part)
        if path.is_absolute() and path.is_relative_to(ROOT):
            part = str(path.relative_to(ROOT))
        elif part.endswith(".json") or part.endswith(".csv"):
            part = f"<work>/{path.name}"
        out.append(part)
    return shlex.join(out)


_CONCURRENCY = re.compile(r"^Request concurrency: (\d+)", re.M)
_COMPOSING = re.compile(
    r"^\s*(?P<model>[\w.-]+), version: \S*\s*\n"
    r"\s*Inference count: (?P<inf>\d+)\s*\n"
    r"\s*Execution count: (?P<exe>\d+)\s*\n"
    r"(?:\s*Successful request count: \d+\s*\n)?"
    r"\s*Avg request latency: (?P<lat>\d+) usec \(overhead \d+ usec \+ queue (?P<q>\d+) usec \+ "
    r"compute input (?P<ci>\d+) usec \+ compute infer (?P<cf>\d+) usec \+ compute output (?P<co>\d+) usec\)",
    re.M,
)
_UNSTABLE = re.compile(r"Failed to obtain stable measurement.*?concurrency (\d+)", re.I)


def parse_composing(stdout: str) -> dict[int, list[Composing]]:
    """Per-concurrency composing-model breakdown from perf_analyzer's standard output."""
    marks = [(int(m.group(1)), m.start()) for m in _CONCURRENCY.finditer(stdout)]
    out: dict[int, list[Composing]] = {}
    for i, (conc, start) in enumerate(marks):
        end = marks[i + 1][1] if i + 1 < len(marks) else len(stdout)
        block = stdout[start:end]
        if "Composing models:" not in block:
            continue
        block = block.split("Composing models:", 1)[1]
        out[conc] = [
            Composing(
                m["model"],
                int(m["inf"]),
                int(m["exe"]),
                float(m["lat"]),
                float(m["q"]),
                float(m["ci"]),
                float(m["cf"]),
                float(m["co"]),
            )
            for m in _COMPOSING.finditer(block)
        ]
    return out


def parse_csv(path: Path, model: str, batch: int) -> list[Measurement]:
    """Rows of perf_analyzer's ``-f`` CSV (with ``--verbose-csv``) as measurements."""
    rows: list[Measurement] = []
    with path.open() as f:
        for row in csv.DictReader(f):
            if not row.get("Concurrency"):
                continue

            def num(key: str, row: dict[str, str] = row) -> float:
                value = row.get(key, "")
                return float(value) if value not in ("", None) else float("nan")

            rows.append(
                Measurement(
                    model=model,
                    batch=batch,
                    concurrency=int(num("Concurrency")),
                    throughput=num("Inferences/Second"),
                    avg_latency_us=num("Avg latency"),
                    p50_us=num("p50 latency"),
                    p99_us=num("p99 latency"),
                    client_send_us=num("Client Send"),
                    client_recv_us=num("Client Recv"),
                    server_queue_us=num("Server Queue"),
                    server_compute_us=num("Server Compute Input")
                    + num("Server Compute Infer")
                    + num("Server Compute Output"),
                )
            )
    return rows


@dataclass
class Run:
    """One perf_analyzer invocation and what it measured."""

    model: str
    batch: int
    concurrency: int
    command: list[str]
    returncode: int
    measurements: list[Measurement]
    stdout: str


def run(
    model: str,
    url: str,
    batch: int,
    concurrency: int,
    input_json: Path,
    work: Path,
    requests_per_window: int,
    settings: Settings,
) -> Run:
    """Run perf_analyzer for ``model`` at ``batch`` and ``concurrency``; a failure gives no measurement."""
    csv_path = work / "perf_analyzer_csv" / f"{model}_b{batch}_c{concurrency}.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.unlink(missing_ok=True)
    cmd = command(model, url, batch, concurrency, input_json, csv_path, requests_per_window, settings)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=perf_analyzer_env(), timeout=settings.timeout_s
        )
        stdout, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        stdout, code = out + f"\n[timed out after {settings.timeout_s:.0f} s]", -1
    measurements = parse_csv(csv_path, model, batch) if csv_path.is_file() else []
    unstable = {int(c) for c in _UNSTABLE.findall(stdout)}
    composing = parse_composing(stdout)
    for m in measurements:
        m.stable = m.concurrency not in unstable
        m.composing = composing.get(m.concurrency, [])
    return Run(model, batch, concurrency, cmd, code, measurements, stdout)
