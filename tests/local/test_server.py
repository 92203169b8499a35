"""LocalTriton's life cycle against the real server: start, SIGTERM, SIGKILL, restart, failures to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from local_support import group_members, make_inputs, port_is_free, scale_config, write_model
from tritonclient.utils import InferenceServerException

import ufsim_serve
from ufsim_serve import LocalTriton, ServerStartError, build_backend_directory, command_line

pytestmark = pytest.mark.triton

SHM = Path("/dev/shm")


def _scale(server: LocalTriton) -> np.ndarray:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        return client.infer("scale", make_inputs({"p": np.ones((2, 4), np.float32)})).as_numpy("q")


def _flag(server: LocalTriton, prefix: str) -> str:
    """The value of the server command's argument starting with ``prefix``."""
    return next(arg for arg in server.command() if arg.startswith(prefix))[len(prefix) :]


def _shm_regions(server: LocalTriton) -> list[Path]:
    """The Python backend's shared-memory regions of this server (named with its own prefix)."""
    return sorted(SHM.glob(f"{_flag(server, '--backend-config=python,shm-region-prefix-name=')}*"))


def _ports(server: LocalTriton) -> list[int]:
    return [server.grpc_port, server.http_port, server.metrics_port]


def _wait_gone(pid: int) -> None:
    """Wait (bounded by the test timeout) until ``pid`` and its process group have no live process."""
    while group_members(pid):
        time.sleep(0.1)


def test_sigterm_shuts_down_cleanly(small_repository: Path, tmp_path: Path) -> None:
    """stop() sends SIGTERM: tritonserver unloads, exits 0, its stubs end, ports and shared memory freed."""
    server = LocalTriton(small_repository, log_path=tmp_path / "triton.log")
    with server:
        backends = Path(_flag(server, "--backend-directory="))
        np.testing.assert_allclose(_scale(server), 3.0)
        pid = server.pid
        assert pid is not None
        members = group_members(pid)
        assert len(members) >= 2, "tritonserver and the stub of 'scale'"
        assert _shm_regions(server)
        assert server.stop() == 0
        assert not server.running
        assert not set(members) & set(group_members(pid))
        assert all(port_is_free(port) for port in _ports(server))
        assert not _shm_regions(server)
    log = (tmp_path / "triton.log").read_text()
    assert "successfully unloaded 'scale'" in log
    assert not backends.exists()


def test_kill_and_restart_keep_the_urls(small_repository: Path) -> None:
    """kill() takes down server and stubs at once (shared memory removed); start() serves on the same URLs."""
    with LocalTriton(small_repository) as server:
        url = server.grpc_url
        pid = server.pid
        assert pid is not None
        members = group_members(pid)
        assert server.kill() == -signal.SIGKILL
        assert not set(members) & set(group_members(pid))
        assert not _shm_regions(server)
        with pytest.raises(InferenceServerException):
            _scale(server)
        server.start()
        assert server.grpc_url == url
        assert server.pid != pid
        np.testing.assert_allclose(_scale(server), 3.0)
        server.stop()
        server.start()
        np.testing.assert_allclose(_scale(server), 3.0)


def test_stubs_of_a_server_killed_from_outside_are_cleaned_up(small_repository: Path) -> None:
    """A tritonserver SIGKILLed by someone else can leave its stubs running; stop() kills them.

    The stubs are paused first: left running, their own watch on the parent may end them before the
    check (it did on a loaded machine), and the case under test would not arise.
    """
    with LocalTriton(small_repository) as server:
        pid = server.pid
        assert pid is not None
        stubs = set(group_members(pid)) - {pid}
        assert stubs
        for stub in stubs:
            os.kill(stub, signal.SIGSTOP)
        os.kill(pid, signal.SIGKILL)
        while server.running:
            time.sleep(0.05)
        assert stubs <= set(group_members(pid)), "stubs outlive their server"
        assert server.stop() == -signal.SIGKILL
        assert not group_members(pid)
        assert not _shm_regions(server)


def test_model_that_fails_to_load_stops_the_start(tmp_path: Path) -> None:
    """tritonserver exits when a model fails to load; start() raises with the log's reason and cleans up."""
    repository = tmp_path / "broken"
    write_model(repository, "scale", scale_config(), None)
    server = LocalTriton(repository, log_path=tmp_path / "triton.log")
    with pytest.raises(ServerStartError, match="no ONNX model at") as failure:
        server.start()
    assert "exited with status 1" in str(failure.value)
    assert not server.running
    assert all(port_is_free(port) for port in _ports(server))
    server.close()


def test_server_that_never_gets_ready_is_killed(sleepy_repository: Path, tmp_path: Path) -> None:
    """After ready_timeout the server and its stubs are killed and ServerStartError names the log."""
    server = LocalTriton(sleepy_repository, log_path=tmp_path / "triton.log", ready_timeout=3)
    with pytest.raises(ServerStartError, match="not ready after 3 s") as failure:
        with server:
            pytest.fail("the server must not become ready")
    assert str(tmp_path / "triton.log") in str(failure.value)
    assert not server.running
    assert all(port_is_free(port) for port in _ports(server))
    assert not _shm_regions(server)


def test_server_stops_when_its_parent_dies(small_repository: Path, tmp_path: Path) -> None:
    """A parent killed without cleanup (SIGKILL) still takes its tritonserver down (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from ufsim_serve import LocalTriton
        server = LocalTriton(Path({str(small_repository)!r})).start()
        print(server.pid, flush=True)
        time.sleep(3600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    assert group_members(pid)
    parent.kill()
    parent.wait()
    _wait_gone(pid)
    assert not group_members(pid)


def test_server_left_running_at_exit_is_killed(small_repository: Path) -> None:
    """A script that exits without stopping its server takes the server and stubs down before it ends."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from ufsim_serve import LocalTriton
        print(LocalTriton(Path({str(small_repository)!r})).start().pid, flush=True)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert not group_members(int(result.stdout))


def test_missing_repository_is_rejected(tmp_path: Path) -> None:
    """A model repository that does not exist is refused before anything starts."""
    with pytest.raises(FileNotFoundError, match="not a directory"):
        LocalTriton(tmp_path / "nowhere")


def test_command_line_is_the_portable_tritonserver_command() -> None:
    """The flags the Helm chart can compare against; extra arguments come last."""
    assert command_line(Path("/models"), 8001, 8000, 8002, ["--log-verbose=1"]) == [
        "tritonserver",
        "--model-repository=/models",
        "--grpc-port=8001",
        "--http-port=8000",
        "--metrics-port=8002",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--log-verbose=1",
    ]


def test_local_command_adds_local_flags_before_extra_args(small_repository: Path) -> None:
    """The local argv is command_line's flags, then local ones, then the caller's (which win)."""
    server = LocalTriton(small_repository, grpc_port=18001, extra_args=["--grpc-address=0.0.0.0"])
    command = server.command()
    assert command[0] == str(ufsim_serve.tritonserver_binary())
    portable = command_line(small_repository, 18001, server.http_port, server.metrics_port)
    assert command[1 : len(portable)] == portable[1:]
    assert command.index("--grpc-address=127.0.0.1") < command.index("--grpc-address=0.0.0.0")
    assert command[-1] == "--grpc-address=0.0.0.0"
    assert len({server.grpc_port, server.http_port, server.metrics_port}) == 3
    server.close()


def test_backend_directory(tmp_path: Path) -> None:
    """python/ holds the Python backend and this interpreter's stub; onnxruntime/ holds ufsim's model.py."""
    backends = build_backend_directory(tmp_path / "backends")
    names = {p.relative_to(backends).as_posix() for p in backends.rglob("*") if p.is_file()}
    assert names == {
        "python/libtriton_python.so",
        "python/triton_python_backend_utils.py",
        "python/triton_python_backend_stub",
        "onnxruntime/model.py",
    }
    assert os.access(backends / "python" / "triton_python_backend_stub", os.X_OK)
    assert (backends / "onnxruntime" / "model.py").read_bytes() == ufsim_serve.BACKEND_MODEL.read_bytes()


def test_backend_directory_without_a_stub_for_this_python(tmp_path: Path) -> None:
    """A Python version the wheel has no stub for is named in the error, with the versions it has."""
    with pytest.raises(FileNotFoundError, match=r"no Python backend stub for Python 2\.7.*ships stubs for"):
        build_backend_directory(tmp_path / "backends", python_version=(2, 7))
