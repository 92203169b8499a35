"""The Triton command line of the rendered Deployment runs the local Triton 2.51 (deploy/local).

Only what a pod and this machine cannot share is substituted: the binary path, the model repository path,
the ports (LocalTriton supplies free ones and adds its loopback addresses and backend directory), TLS file
paths, and $(UFSIM_ADMIN_KEY), which the kubelet expands from the Secret.
"""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
from helm_support import (
    CHART,
    ROOT,
    Manifest,
    container,
    expand_kubelet_vars,
    find,
    load_values,
    render,
    triton_argv,
    with_overrides,
)
from tritonclient.utils import InferenceServerException

from ufsim_serve import LocalTriton, command_line

pytestmark = pytest.mark.triton

MODEL_REPOSITORY = ROOT / "model_repository"
ADMIN_KEY = "test-admin-key-9f4c"
GRPC_ADMIN_HEADER = "triton-grpc-protocol-ufsim-admin-key"
"""Over gRPC Triton expects the restricted-protocol header with this prefix (HTTP takes the name as given)."""
SUBSTITUTED = ("--model-repository", "--grpc-port", "--http-port", "--metrics-port")


def local_args(manifests: list[Manifest], tls: Path | None = None) -> list[str]:
    """The rendered tritonserver flags with the substitutions above; LocalTriton adds repository and ports."""
    argv = expand_kubelet_vars(triton_argv(manifests), {"UFSIM_ADMIN_KEY": ADMIN_KEY})
    assert argv[0] == "tritonserver"
    flags = argv[1:]
    for flag in SUBSTITUTED:
        assert len([a for a in flags if a.startswith(f"{flag}=")]) == 1, flag
    kept = [a for a in flags if not a.startswith(tuple(f"{f}=" for f in SUBSTITUTED))]
    assert not [a for a in kept if "$(" in a], "every $(VAR) is defined in the container's env"
    if tls is not None:
        kept = [a.replace("/etc/ufsim/tls", str(tls)) for a in kept]
    return kept


def _missing_models() -> list[str]:
    """What the repository lacks for the pipeline to load: its config, or a step's config or model file."""
    pipeline = MODEL_REPOSITORY / "pipeline" / "config.pbtxt"
    if not pipeline.is_file():
        return [str(pipeline.relative_to(ROOT))]
    missing = []
    for step in re.findall(r'model_name:\s*"([^"]+)"', pipeline.read_text()):
        folder = MODEL_REPOSITORY / step
        if not (folder / "config.pbtxt").is_file() or not list(folder.glob("[0-9]*/model.*")):
            missing.append(f"model_repository/{step}/<version>/model.*")
    return missing


@pytest.fixture(scope="module")
def rendered_on_empty_repository(
    cpu_manifests: list[Manifest], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalTriton]:
    """The CPU example's command line on an empty repository: needs no exported models."""
    repository = tmp_path_factory.mktemp("empty_repository")
    with LocalTriton(repository, extra_args=local_args(cpu_manifests)) as server:
        yield server


def test_chart_runs_the_portable_command_line(cpu_manifests: list[Manifest]) -> None:
    """Every flag of deploy/local's portable command line is in the Deployment, with the same value."""
    portable = command_line("/models", 8001, 8000, 8002)
    rendered = triton_argv(cpu_manifests)
    assert rendered[0] == portable[0] == "tritonserver"
    assert set(portable[1:]) <= set(rendered[1:]), set(portable[1:]) - set(rendered[1:])


def test_rendered_flags_are_accepted(
    cpu_manifests: list[Manifest], rendered_on_empty_repository: LocalTriton
) -> None:
    server = rendered_on_empty_repository
    command = server.command()
    kept = local_args(cpu_manifests)
    assert command[-len(kept) :] == kept, "the rendered flags come last, so they win"
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().version == "2.51.0"
    client.close()


def test_restricted_protocols_are_closed_without_the_key(rendered_on_empty_repository: LocalTriton) -> None:
    server = rendered_on_empty_repository
    client = grpcclient.InferenceServerClient(server.grpc_url)
    for call in (
        lambda h: client.get_model_repository_index(headers=h),
        lambda h: client.load_model("pipeline", headers=h),
        lambda h: client.get_system_shared_memory_status(headers=h),
        lambda h: client.register_system_shared_memory("r", "/ufsim_helm_test", 8, headers=h),
        lambda h: client.get_log_settings(headers=h),
        lambda h: client.get_trace_settings(headers=h),
    ):
        with pytest.raises(InferenceServerException) as refused:
            call(None)
        assert "This protocol is restricted" in str(refused.value), refused.value
        with pytest.raises(InferenceServerException) as refused:
            call({GRPC_ADMIN_HEADER: "wrong"})
        assert "This protocol is restricted" in str(refused.value), refused.value
    admin = {GRPC_ADMIN_HEADER: ADMIN_KEY}
    assert client.get_model_repository_index(headers=admin).models == []
    assert client.get_log_settings(headers=admin) is not None
    assert client.is_server_live(), "health, metadata and inference stay open"
    client.close()
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused_http:
        urllib.request.urlopen(request, timeout=10)
    assert refused_http.value.code == 403
    request.add_header("ufsim-admin-key", ADMIN_KEY)
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200


def test_probe_endpoints_answer(
    cpu_manifests: list[Manifest], rendered_on_empty_repository: LocalTriton
) -> None:
    triton = container(find(cpu_manifests, "Deployment", "ufsim"), "triton")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = triton[probe]["httpGet"]["path"]
        with urllib.request.urlopen(
            f"http://{rendered_on_empty_repository.http_url}{path}", timeout=10
        ) as reply:
            assert reply.status == 200, probe
    with urllib.request.urlopen(
        f"http://{rendered_on_empty_repository.metrics_url}/metrics", timeout=10
    ) as reply:
        assert "nv_" in reply.read().decode()


def test_drain_sequence_exits_cleanly(cpu_values: dict[str, Any], tmp_path: Path) -> None:
    """preStop hook, then SIGTERM: Triton honours --exit-timeout-secs and exits with status 0."""
    manifests = render(with_overrides(cpu_values, {"triton": {"drain": {"preStopSleepSeconds": 1}}}))
    hook = container(find(manifests, "Deployment", "ufsim"), "triton")["lifecycle"]["preStop"]["exec"][
        "command"
    ]
    (tmp_path / "repository").mkdir()
    with LocalTriton(tmp_path / "repository", extra_args=local_args(manifests)) as server:
        assert subprocess.run(hook, check=False).returncode == 0
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_server_ready(), "still serving during the preStop pause"
        client.close()
        assert server.stop() == 0
        assert "--exit-timeout-secs=60" in server.command()


def test_grpc_tls_flags_are_accepted(cpu_values: dict[str, Any], certificate: Path, tmp_path: Path) -> None:
    values = with_overrides(cpu_values, {"triton": {"tls": {"enabled": True, "secretName": "grpc-tls"}}})
    manifests = render(values)
    (tmp_path / "repository").mkdir()
    with LocalTriton(tmp_path / "repository", extra_args=local_args(manifests, tls=certificate)) as server:
        secure = grpcclient.InferenceServerClient(
            server.grpc_url, ssl=True, root_certificates=str(certificate / "ca.crt")
        )
        assert secure.is_server_live()
        secure.close()
        plain = grpcclient.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException):
            plain.is_server_live()
        plain.close()


@pytest.mark.slow
@pytest.mark.skipif(
    bool(_missing_models()),
    reason="model_repository/ is not built yet (missing: "
    + ", ".join(_missing_models()[:3])
    + (" ..." if len(_missing_models()) > 3 else "")
    + "); run `make repository` to build it",
)
def test_rendered_command_serves_the_pipeline_ensemble(cpu_manifests: list[Manifest]) -> None:
    """The real check: the CPU example's command line on model_repository/ makes the ensemble ready."""
    with LocalTriton(MODEL_REPOSITORY, extra_args=local_args(cpu_manifests), ready_timeout=900) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready("pipeline")
        config = client.get_model_config("pipeline", as_json=True)["config"]
        steps = [s["model_name"] for s in config["ensemble_scheduling"]["step"]]
        assert steps and all(client.is_model_ready(step) for step in steps)
        assert sorted(steps) == sorted(load_values(CHART / "values.yaml")["autoscaling"]["composingModels"])
        client.close()
