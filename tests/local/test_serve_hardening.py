"""ufsim-serve for a hostile or careless world: restricted protocols, a dead stub, a repository that fails
to load, and other machines served only over TLS. Each failure is injected into a real tritonserver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from local_support import group_members, make_inputs, port_is_free, scale_config, scale_model, write_model
from test_serve_cli import UFSIM_SERVE, Running
from tritonclient.utils import InferenceServerException

from ufsim_serve import ADMIN_HEADER, LocalTriton, load_failures

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def restricted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """A server started with ufsim-serve's defaults."""
    repository = tmp_path_factory.mktemp("restricted") / "model_repository"
    write_model(repository, "scale", scale_config(), scale_model())
    with LocalTriton(repository, log_path=repository.parent / "triton.log") as server:
        yield server


def _refused(call: object) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()  # type: ignore[operator]
    return str(raised.value)


def test_restricted_protocols_need_the_admin_key(restricted: LocalTriton) -> None:
    """The shared-memory attack of the issue (registering a backend's own region) is refused outright."""
    with grpcclient.InferenceServerClient(restricted.grpc_url) as client:
        region = next(Path("/dev/shm").glob(f"{restricted._shm_prefix}*"), None)
        assert region is not None, "the Python backend's shared memory region was not found"
        calls = {
            "shared memory": lambda h: client.register_system_shared_memory(
                "own", f"/{region.name}", 8, headers=h
            ),
            "logging": lambda h: client.update_log_settings({"log_verbose_level": 1}, headers=h),
            "model repository": lambda h: client.get_model_repository_index(headers=h),
            "trace": lambda h: client.get_trace_settings(headers=h),
        }
        for name, call in calls.items():
            assert "This protocol is restricted" in _refused(lambda c=call: c(None)), name  # type: ignore[misc]
        client.update_log_settings({"log_verbose_level": 0}, headers=restricted.admin_headers)
        assert client.get_model_repository_index(headers=restricted.admin_headers).models
        np.testing.assert_allclose(
            client.infer("scale", make_inputs({"p": np.ones((1, 4), np.float32)})).as_numpy("q"), 3.0
        )
    request = urllib.request.Request(
        f"http://{restricted.http_url}/v2/logging", data=json.dumps({"log_verbose_level": 1}).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert "restricted" in refused.value.read().decode()
    request.add_header(ADMIN_HEADER, restricted.admin_key)
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def test_admin_key_file_opens_the_restricted_protocols(small_repository: Path, tmp_path: Path) -> None:
    key = "k" * 24
    (tmp_path / "key").write_text(f"{key}\n")
    running = Running(small_repository, tmp_path / "serve.log", "--admin-key-file", str(tmp_path / "key"))
    try:
        running.wait_ready()
        with grpcclient.InferenceServerClient(f"127.0.0.1:{running.ports['grpc']}") as client:
            assert "restricted" in _refused(lambda: client.get_model_repository_index())
            assert client.get_model_repository_index(headers={f"triton-grpc-protocol-{ADMIN_HEADER}": key})
    finally:
        running.process.send_signal(signal.SIGTERM)
        status, _, _ = running.finish()
    assert status == 0
    assert key not in running.log.read_text()


def test_a_dead_stub_stops_the_server(small_repository: Path, tmp_path: Path) -> None:
    """Triton answers ready after a stub dies while requests hang; ufsim-serve stops instead."""
    running = Running(small_repository, tmp_path / "serve.log")
    pid = running.wait_ready()
    stubs = [member for member in group_members(pid) if member != pid]
    assert stubs, "no backend stub found"
    os.kill(stubs[0], signal.SIGKILL)
    status, _, stderr = running.finish()
    assert status == 1
    assert f"the backend stub of scale (pid {stubs[0]}) died" in stderr
    assert not group_members(pid)
    assert all(port_is_free(port) for port in running.ports.values())


def _broken(repository: Path, kind: str) -> None:
    for name in ("aaa", "scale", "zzz"):
        write_model(repository, name, scale_config(), scale_model())
    if kind == "truncated-onnx":
        path = repository / "scale" / "1" / "model.onnx"
        path.write_bytes(path.read_bytes()[:40])
    else:
        path = repository / "scale" / "config.pbtxt"
        path.write_text(path.read_text().replace("input [", "input [[ garbled"))


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        ("truncated-onnx", "Protobuf parsing failed"),
        ("garbled-config", "failed to read text proto from"),
    ],
)
def test_repository_that_fails_to_load_names_model_and_cause(kind: str, cause: str, tmp_path: Path) -> None:
    repository = tmp_path / "broken"
    _broken(repository, kind)
    running = Running(repository, tmp_path / "serve.log")
    status, _, stderr = running.finish()
    assert status == 1
    (summary,) = [line for line in stderr.splitlines() if "failed to load:" in line]
    assert summary.strip().startswith("model 'scale' failed to load:") and cause in summary


def test_load_failures_reads_every_model_named_in_the_log() -> None:
    log = (
        "E1202 model_lifecycle.cc:642] \"failed to load 'a' version 1: Internal: bad thing\\n\\nAt:\\n x\"\n"
        "E1202 model_repository_manager.cc:1460] \"Poll failed for model directory 'b': failed to read\"\n"
        "I1202 model_lifecycle.cc:777] \"failed to load 'a'\"\n"
    )
    assert load_failures(log) == [
        "model 'a' failed to load: Internal: bad thing",
        "model 'b' failed to load: failed to read",
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--host", "0.0.0.0"], "would serve other machines without TLS"),
        (["--host", "192.0.2.1"], "would serve other machines without TLS"),
        (["--tls-cert", "/nonexistent.crt"], "--tls-cert and --tls-key go together"),
        (["--", "--grpc-address=0.0.0.0"], "--grpc-address after `--` is not accepted"),
        (["--", "--http-address=0.0.0.0"], "--http-address after `--` is not accepted"),
    ],
)
def test_other_machines_only_with_tls(small_repository: Path, arguments: list[str], message: str) -> None:
    head = [a for a in arguments if a != "--" and not a.startswith("--grpc-address") and "http-addr" not in a]
    tail = arguments[arguments.index("--") :] if "--" in arguments else []
    result = subprocess.run(
        [UFSIM_SERVE, "--model-repository", str(small_repository), *head, *tail],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_help_never_suggests_listening_everywhere_without_tls() -> None:
    result = subprocess.run([UFSIM_SERVE, "--help"], capture_output=True, text=True, check=True)
    assert "0.0.0.0" not in result.stdout
    assert "--tls-cert" in result.stdout and "--host" in result.stdout


def test_serves_other_machines_over_tls(small_repository: Path, certificate: Path, tmp_path: Path) -> None:
    running = Running(
        small_repository, tmp_path / "serve.log", "--host", "0.0.0.0",
        "--tls-cert", str(certificate / "tls.crt"), "--tls-key", str(certificate / "tls.key"),
    )  # fmt: skip
    try:
        running.wait_ready()
        url = f"127.0.0.1:{running.ports['grpc']}"
        with grpcclient.InferenceServerClient(
            url, ssl=True, root_certificates=str(certificate / "tls.crt")
        ) as secure:
            q = secure.infer("scale", make_inputs({"p": np.ones((1, 4), np.float32)})).as_numpy("q")
            np.testing.assert_allclose(q, 3.0)
        with grpcclient.InferenceServerClient(url) as plain:
            deadline = time.monotonic() + 30
            with pytest.raises(InferenceServerException):
                plain.is_server_live(client_timeout=max(1.0, deadline - time.monotonic()))
    finally:
        running.process.send_signal(signal.SIGTERM)
        status, _, _ = running.finish()
    assert status == 0


def test_restrictions_passed_by_the_caller_replace_the_defaults(small_repository: Path) -> None:
    """Triton refuses a protocol restricted twice; the caller's own restriction flags win."""
    own = "--grpc-restricted-protocol=shared-memory:x-key=abcdefghijklmnopqrstuvwxyz"
    server = LocalTriton(small_repository, extra_args=[own])
    command = server.command()
    assert [arg for arg in command if arg.startswith("--grpc-restricted-protocol")] == [own]
    assert len([arg for arg in command if arg.startswith("--http-restricted-api")]) == 1
    server.close()
