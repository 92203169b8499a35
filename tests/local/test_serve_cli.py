"""The ``ufsim-serve`` command: help, serving in the foreground, signals, failures and exit statuses."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from local_support import group_members, make_inputs, port_is_free, scale_config, write_model

from ufsim_serve import free_port

pytestmark = pytest.mark.triton

UFSIM_SERVE = str(Path(sys.executable).with_name("ufsim-serve"))


class Running:
    """A ``ufsim-serve`` process started by a test, with its ports."""

    def __init__(self, repository: Path, log: Path, *extra: str) -> None:
        self.ports = {name: free_port() for name in ("grpc", "http", "metrics")}
        self.log = log
        self.process = subprocess.Popen(
            [
                UFSIM_SERVE,
                "--model-repository",
                str(repository),
                *(f"--{name}-port={port}" for name, port in self.ports.items()),
                "--log-file",
                str(log),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> int:
        """Read stdout until the ready line; return tritonserver's pid."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            found = re.search(r"ready, pid (\d+)", line)
            if found:
                return int(found.group(1))
        raise AssertionError(f"ufsim-serve ended before it was ready: {self.process.stderr.read()}")  # type: ignore[union-attr]

    def finish(self) -> tuple[int, str, str]:
        """Wait for the exit; return status, stdout and stderr."""
        stdout, stderr = self.process.communicate()
        return self.process.returncode, stdout, stderr


@pytest.fixture
def started() -> Iterator[list[Running]]:
    """Processes a test starts; any still running at the end are killed."""
    processes: list[Running] = []
    yield processes
    for running in processes:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGTERM)
            running.process.communicate()


def test_help() -> None:
    """--help explains the command, its defaults and the pass-through after `--`."""
    result = subprocess.run([UFSIM_SERVE, "--help"], capture_output=True, text=True, check=True)
    for text in ("--model-repository", "--grpc-port", "8001", "--http-port", "--metrics-port", "--log-file"):
        assert text in result.stdout
    assert "SIGTERM" in result.stdout
    assert "after `--` go to tritonserver" in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serves_until_signalled(
    small_repository: Path, tmp_path: Path, signum: signal.Signals, started: list[Running]
) -> None:
    """Serves on the chosen ports, passes `--` arguments through, and exits 0 with the server gone."""
    running = Running(small_repository, tmp_path / "serve.log", "--", "--exit-timeout-secs=7")
    started.append(running)
    pid = running.wait_ready()
    with grpcclient.InferenceServerClient(f"127.0.0.1:{running.ports['grpc']}") as client:
        q = client.infer("scale", make_inputs({"p": np.ones((1, 4), np.float32)})).as_numpy("q")
    np.testing.assert_allclose(q, 3.0)
    assert re.search(r"\| exit_timeout\s+\| 7\s+\|", running.log.read_text())
    running.process.send_signal(signum)
    status, stdout, _ = running.finish()
    assert status == 0
    assert f"{signum.name}, shutting down" in stdout
    assert "tritonserver stopped (status 0)" in stdout
    assert not group_members(pid)
    assert all(port_is_free(port) for port in running.ports.values())


def test_model_that_fails_to_load_exits_1(tmp_path: Path, started: list[Running]) -> None:
    """A server that cannot start makes ufsim-serve exit 1 with the reason on stderr."""
    repository = tmp_path / "broken"
    write_model(repository, "scale", scale_config(), None)
    running = Running(repository, tmp_path / "serve.log")
    started.append(running)
    status, _, stderr = running.finish()
    assert status == 1
    assert "no ONNX model at" in stderr


def test_server_that_dies_exits_1(small_repository: Path, tmp_path: Path, started: list[Running]) -> None:
    """When tritonserver dies under it, ufsim-serve reports the exit status and the log tail, and exits 1."""
    running = Running(small_repository, tmp_path / "serve.log")
    started.append(running)
    pid = running.wait_ready()
    os.kill(pid, signal.SIGKILL)
    status, _, stderr = running.finish()
    assert status == 1
    assert "exited unexpectedly with status -9" in stderr
    assert not group_members(pid), "the orphaned backend stubs are killed too"
    assert all(port_is_free(port) for port in running.ports.values())


def test_signal_while_starting_stops_the_server(
    sleepy_repository: Path, tmp_path: Path, started: list[Running]
) -> None:
    """SIGTERM before the server is ready still takes it down and exits 0."""
    running = Running(sleepy_repository, tmp_path / "serve.log")
    started.append(running)
    while "loading: sleepy:1" not in (running.log.read_text() if running.log.exists() else ""):
        time.sleep(0.1)
    pid = int(re.findall(r"^[IWE]\d{4} [\d:.]+ (\d+) ", running.log.read_text(), re.M)[0])
    running.process.send_signal(signal.SIGTERM)
    status, stdout, _ = running.finish()
    assert status == 0
    assert "SIGTERM, shutting down" in stdout
    assert not group_members(pid)
    assert all(port_is_free(port) for port in running.ports.values())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model-repository", "/nonexistent/repository"], "is not a directory"),
        (["--grpc-port", "70000"], "--grpc-port must be between 0 and 65535"),
    ],
)
def test_bad_arguments_exit_2(small_repository: Path, arguments: list[str], message: str) -> None:
    """Bad arguments are refused before anything starts, with exit status 2."""
    base = ["--model-repository", str(small_repository)]
    result = subprocess.run([UFSIM_SERVE, *base, *arguments], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr
