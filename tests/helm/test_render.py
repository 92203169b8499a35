"""Every example values file renders with the real Helm engine, lints, and validates against Kubernetes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
from helm_support import (
    CHART,
    EXAMPLES,
    RELEASE,
    Manifest,
    container,
    find,
    flag_value,
    kinds,
    load_values,
    render,
    triton_argv,
    with_overrides,
)

KUBERNETES_VERSIONS = ("1.26", "1.37")
"""The oldest release the chart supports (Chart.yaml kubeVersion) and the newest schemas available."""

CUSTOM_KINDS = {
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
    "ScaledObject": "keda.sh/v1alpha1",
}
"""Custom resources (Prometheus Operator, KEDA) that have no schema in kubernetes-validate."""


def test_three_examples() -> None:
    assert sorted(p.stem for p in EXAMPLES) == ["values-cpu", "values-gpu", "values-gpu-autoscaled-gateway"]


def test_lint_example(example: Path) -> None:
    report = helm_python.lint(CHART, load_values(example), strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    """The lint step can fail: a copy of the chart with a template syntax error is reported."""
    broken = tmp_path / "ufsim"
    with helm_python.Chart.load(CHART) as chart:
        chart.save_dir(tmp_path)
    (broken / "templates" / "broken.yaml").write_text("{{ if }}\n")
    report = helm_python.lint(broken, load_values(EXAMPLES[0]))
    assert any(m["severity"] == 3 for m in report["messages"]), report


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes_schemas(example: Path, version: str) -> None:
    manifests = render(load_values(example))
    assert manifests
    for manifest in manifests:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["kind"] in CUSTOM_KINDS:
            assert manifest["apiVersion"] == CUSTOM_KINDS[manifest["kind"]], name
            with pytest.raises(kubernetes_validate.utils.SchemaNotFoundError):
                kubernetes_validate.validate(manifest, version, strict=True)
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{example.name}: {name} invalid for Kubernetes {version}: {err.path}: {err.message}")


def test_schema_validation_catches_a_bad_manifest(cpu_manifests: list[Manifest]) -> None:
    """The validation step can fail: a Deployment with a misspelled field is rejected."""
    deployment = json.loads(json.dumps(find(cpu_manifests, "Deployment", RELEASE)))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30", strict=True)


def _pod_labels(manifests: list[Manifest]) -> list[dict[str, str]]:
    return [m["spec"]["template"]["metadata"]["labels"] for m in manifests if m["kind"] == "Deployment"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_references_between_objects_resolve(example: Path) -> None:
    """Selectors, Service ports, Ingress backends, scale targets and ServiceMonitor ports all resolve."""
    manifests = render(load_values(example))
    pods = _pod_labels(manifests)
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    deployments = {m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"}
    for service in services.values():
        assert sum(_selects(service["spec"]["selector"], p) for p in pods) == 1, service["metadata"]["name"]
    for pdb in (m for m in manifests if m["kind"] == "PodDisruptionBudget"):
        assert sum(_selects(pdb["spec"]["selector"]["matchLabels"], p) for p in pods) == 1
    for ingress in (m for m in manifests if m["kind"] == "Ingress"):
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
        assert backend["port"]["name"] in ports
    for scaler in (m for m in manifests if m["kind"] in {"ScaledObject", "HorizontalPodAutoscaler"}):
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments
    for monitor in (m for m in manifests if m["kind"] == "ServiceMonitor"):
        selected = [
            s
            for s in services.values()
            if _selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, monitor["metadata"]["name"]
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
            p["name"] for p in selected[0]["spec"]["ports"]
        }


def test_every_object_has_the_common_labels(example: Path) -> None:
    for manifest in render(load_values(example)):
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "ufsim-0.1.0"
        assert labels["app.kubernetes.io/component"]


def test_containers_are_locked_down(example: Path) -> None:
    for deployment in (m for m in render(load_values(example)) if m["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, c["name"]
            assert ctx["allowPrivilegeEscalation"] is False, c["name"]
            assert ctx["capabilities"]["drop"] == ["ALL"], c["name"]
            assert ":latest" not in c["image"] and ":" in c["image"], c["image"]


def test_triton_image_probes_and_ports(cpu_manifests: list[Manifest]) -> None:
    triton = container(find(cpu_manifests, "Deployment", RELEASE), "triton")
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert triton["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading needs minutes"
    service = find(cpu_manifests, "Service", RELEASE)
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": 8001,
        "http": 8000,
        "metrics": 8002,
    }
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    argv = triton_argv(cpu_manifests)
    assert flag_value(argv, "--grpc-port") == [str(ports["grpc"])]
    assert flag_value(argv, "--http-port") == [str(ports["http"])]
    assert flag_value(argv, "--metrics-port") == [str(ports["metrics"])]


def test_drain_hook_runs_and_fits_the_grace_period(cpu_values: dict[str, Any], tmp_path: Path) -> None:
    """The preStop command is a real argv that runs (SuperSONIC's `sh -c touch ...` never did)."""
    values = with_overrides(cpu_values, {"triton": {"drain": {"preStopSleepSeconds": 1}}})
    deployment = find(render(values), "Deployment", RELEASE)
    triton = container(deployment, "triton")
    command = triton["lifecycle"]["preStop"]["exec"]["command"]
    assert command == ["sleep", "1"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    exit_timeout = int(flag_value(triton_argv(render(values)), "--exit-timeout-secs")[0])
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 1 + exit_timeout


def test_cpu_rendering_has_no_gpu(cpu_manifests: list[Manifest]) -> None:
    triton = container(find(cpu_manifests, "Deployment", RELEASE), "triton")
    assert not any("gpu" in key for part in triton["resources"].values() for key in part)
    argv = triton_argv(cpu_manifests)
    assert not [a for a in argv if "gpu" in a or "cuda" in a or "pinned" in a]


def test_gpu_rendering_requests_the_gpu() -> None:
    manifests = render(load_values(next(p for p in EXAMPLES if p.stem == "values-gpu")))
    deployment = find(manifests, "Deployment", RELEASE)
    triton = container(deployment, "triton")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["resources"]["requests"]["nvidia.com/gpu"] == 1
    argv = triton_argv(manifests)
    assert "--allow-gpu-metrics=true" in argv
    assert flag_value(argv, "--cuda-memory-pool-byte-size") == ["0:268435456"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert "nodeAffinity" in pod["affinity"]


@pytest.mark.parametrize("gpus", [2, 4])
def test_memory_pool_flag_per_gpu(cpu_values: dict[str, Any], gpus: int) -> None:
    values = with_overrides(cpu_values, {"triton": {"gpu": {"count": gpus, "cudaMemoryPoolByteSize": 1024}}})
    argv = triton_argv(render(values))
    assert flag_value(argv, "--cuda-memory-pool-byte-size") == [f"{i}:1024" for i in range(gpus)]


def test_model_repository_from_pvc(cpu_manifests: list[Manifest]) -> None:
    pod = find(cpu_manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["model-repository"]["persistentVolumeClaim"] == {
        "claimName": "ufsim-models",
        "readOnly": True,
    }
    assert flag_value(triton_argv(cpu_manifests), "--model-repository") == ["/models"]
    mounts = {
        m["name"]: m for m in container({"spec": {"template": {"spec": pod}}}, "triton")["volumeMounts"]
    }
    assert mounts["model-repository"]["mountPath"] == "/models" and mounts["model-repository"]["readOnly"]


def test_model_repository_from_image() -> None:
    manifests = render(load_values(next(p for p in EXAMPLES if p.stem == "values-gpu")))
    pod = find(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "registry.example.org/lhcb/ufsim-models:2026.10.0"
    assert init["command"] == ["cp", "-R", "/model_repository/.", "/models/"]
    assert init["volumeMounts"] == [{"name": "model-repository", "mountPath": "/models"}]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}["model-repository"]


def test_init_container_copy_command_copies_a_repository(tmp_path: Path) -> None:
    """The init container's argv, run here with only the two paths substituted, copies a whole tree."""
    manifests = render(load_values(next(p for p in EXAMPLES if p.stem == "values-gpu")))
    (init,) = find(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["initContainers"]
    source, target = tmp_path / "image" / "model_repository", tmp_path / "models"
    (source / "pipeline" / "1").mkdir(parents=True)
    (source / "pipeline" / "config.pbtxt").write_text('name: "pipeline"\n')
    (source / ".hidden").write_text("x")
    target.mkdir()
    argv = [
        a.replace("/model_repository", str(source)).replace("/models", str(target)) for a in init["command"]
    ]
    subprocess.run(argv, check=True)
    assert (target / "pipeline" / "config.pbtxt").read_text() == 'name: "pipeline"\n'
    assert (target / "pipeline" / "1").is_dir() and (target / ".hidden").is_file()


def test_model_repository_from_s3(gateway_manifests: list[Manifest]) -> None:
    deployment = find(gateway_manifests, "Deployment", RELEASE)
    triton = container(deployment, "triton")
    assert flag_value(triton_argv(gateway_manifests), "--model-repository") == [
        "s3://https://s3.example.org:443/ufsim/model_repository/2026.10.0"
    ]
    env = {e["name"]: e for e in triton["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "ufsim-s3", "key": name}
    assert env["AWS_DEFAULT_REGION"]["value"] == "us-east-1"
    assert "model-repository" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert "/tmp" in {m["mountPath"] for m in triton["volumeMounts"]}, "S3 downloads need a writable /tmp"


def test_restricted_protocols_use_a_secret_header(cpu_manifests: list[Manifest]) -> None:
    argv = triton_argv(cpu_manifests)
    expected = "model-repository,shared-memory,trace,logging:ufsim-admin-key=$(UFSIM_ADMIN_KEY)"
    assert flag_value(argv, "--grpc-restricted-protocol") == [expected]
    assert flag_value(argv, "--http-restricted-api") == [expected]
    triton = container(find(cpu_manifests, "Deployment", RELEASE), "triton")
    (env,) = [e for e in triton["env"] if e["name"] == "UFSIM_ADMIN_KEY"]
    secret = find(cpu_manifests, "Secret", env["valueFrom"]["secretKeyRef"]["name"])
    assert len(secret["data"][env["valueFrom"]["secretKeyRef"]["key"]]) > 40


def test_existing_admin_secret_is_used(cpu_values: dict[str, Any]) -> None:
    values = with_overrides(cpu_values, {"security": {"restrictedProtocols": {"existingSecret": "ops-key"}}})
    manifests = render(values)
    assert "Secret" not in kinds(manifests)
    triton = container(find(manifests, "Deployment", RELEASE), "triton")
    (env,) = [e for e in triton["env"] if e["name"] == "UFSIM_ADMIN_KEY"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "ops-key", "key": "admin-key"}


def test_grpc_tls(cpu_values: dict[str, Any]) -> None:
    values = with_overrides(
        cpu_values, {"triton": {"tls": {"enabled": True, "secretName": "grpc-tls", "mutual": True}}}
    )
    manifests = render(values)
    argv = triton_argv(manifests)
    assert "--grpc-use-ssl=true" in argv and "--grpc-use-ssl-mutual=true" in argv
    assert flag_value(argv, "--grpc-server-cert") == ["/etc/ufsim/tls/tls.crt"]
    assert flag_value(argv, "--grpc-server-key") == ["/etc/ufsim/tls/tls.key"]
    assert flag_value(argv, "--grpc-root-cert") == ["/etc/ufsim/tls/ca.crt"]
    pod = find(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"] == "grpc-tls"


def test_autoscaled_deployment_leaves_replicas_to_the_autoscaler(gateway_manifests: list[Manifest]) -> None:
    assert "replicas" not in find(gateway_manifests, "Deployment", RELEASE)["spec"]
    scaler = find(gateway_manifests, "ScaledObject")
    assert (scaler["spec"]["minReplicaCount"], scaler["spec"]["maxReplicaCount"]) == (1, 8)


def test_hpa_engine(gateway_values: dict[str, Any]) -> None:
    manifests = render(with_overrides(gateway_values, {"autoscaling": {"engine": "hpa", "minReplicas": 2}}))
    assert "ScaledObject" not in kinds(manifests)
    hpa = find(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] == 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["target"] == {"type": "Value", "value": "2000"}
    rule = find(manifests, "PrometheusRule")["spec"]["groups"][0]["rules"][0]
    assert rule["record"] == metric["external"]["metric"]["name"]
    assert rule["labels"] == {"namespace": "sim", **metric["external"]["metric"]["selector"]["matchLabels"]}


def test_dashboard_is_valid_json_with_the_scaling_query(gateway_manifests: list[Manifest]) -> None:
    configmap = find(gateway_manifests, "ConfigMap", "ufsim-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["ufsim-triton.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert not [e for e in exprs if "__UFSIM" in e]
    by_model = [e for e in exprs if e.startswith("sum by (model) (rate(nv_inference_queue_duration_us")]
    assert len(by_model) == 1 and 'namespace="$namespace",service="$service",model=~"features|' in by_model[0]
    assert f"max({by_model[0]})" in exprs
    assert "count(nv_gpu_utilization" not in json.dumps(dashboard), "counts 0 servers on CPU-only pods"
