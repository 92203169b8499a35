"""values.schema.json really validates: bad values files fail to render, naming the key and the problem."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python
import pytest
from helm_support import CHART, find, load_values, render

BAD = Path(__file__).parent / "bad-values"

EXPECTED = {
    "wrong-type": (helm_python.HelmValuesError, "at '/triton/replicas': got string, want integer"),
    "unknown-key": (helm_python.HelmValuesError, "at '/triton': additional properties 'gpus' not allowed"),
    "missing-required": (helm_python.HelmValuesError, "at '/modelRepository/s3': missing property 'uri'"),
    "wrong-enum": (
        helm_python.HelmValuesError,
        "at '/triton/modelControlMode': value must be one of 'none', 'poll'",
    ),
    "ensemble-as-scaling-model": (helm_python.HelmValuesError, "at '/autoscaling/composingModels/0'"),
    "latest-image": (helm_python.HelmValuesError, "at '/triton/image/tag'"),
    "root-user": (
        helm_python.HelmValuesError,
        "at '/triton/podSecurityContext/runAsNonRoot': value must be true",
    ),
    "cpu-quantity": (helm_python.HelmValuesError, "'two' does not match pattern"),
    "auth-without-keys": (helm_python.HelmValuesError, "at '/gateway/auth/jwks/uri': minLength"),
    "short-grace-period": (
        helm_python.HelmRenderError,
        "triton.terminationGracePeriodSeconds (60) must be at least triton.drain.preStopSleepSeconds (15)"
        " + triton.exitTimeoutSeconds (120) + 5 = 140",
    ),
    "keda-without-prometheus": (
        helm_python.HelmRenderError,
        "autoscaling.engine=keda needs autoscaling.keda.prometheusAddress",
    ),
    "ingress-without-gateway": (
        helm_python.HelmRenderError,
        "ingress.enabled=true exposes Triton's gRPC port without authentication or rate limits",
    ),
}


def test_every_bad_file_has_an_expectation() -> None:
    assert sorted(p.stem for p in BAD.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_values_fail_with_a_clear_message(name: str) -> None:
    error, message = EXPECTED[name]
    with pytest.raises(error) as raised:
        render(load_values(BAD / f"{name}.yaml"))
    assert message in str(raised.value)


@pytest.mark.parametrize(
    "name", sorted(n for n, (e, _) in EXPECTED.items() if e is helm_python.HelmValuesError)
)
def test_lint_reports_bad_values(name: str) -> None:
    """helm lint reports schema violations (it only logs a template's `fail`, so those are render tests)."""
    report = helm_python.lint(CHART, load_values(BAD / f"{name}.yaml"))
    errors = [m["error"] for m in report["messages"] if m["severity"] == 3]
    assert any(EXPECTED[name][1] in e for e in errors), report


def test_defaults_alone_lint_and_render() -> None:
    """`helm lint` and `helm template` pass with the chart's own defaults (the PVC ufsim-models)."""
    report = helm_python.lint(CHART, {}, strict=True, kube_version="v1.30.0")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    volumes = find(render({}), "Deployment")["spec"]["template"]["spec"]["volumes"]
    pvc = {"claimName": "ufsim-models", "readOnly": True}
    assert {"name": "model-repository", "persistentVolumeClaim": pvc} in volumes


def test_an_empty_claim_name_is_refused() -> None:
    with pytest.raises(helm_python.HelmValuesError) as raised:
        render({"modelRepository": {"pvc": {"claimName": ""}}})
    assert "at '/modelRepository/pvc/claimName'" in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"modelRepository": {"source": "image"}},
            "at '/modelRepository/image': missing property 'repository'",
        ),
        (
            {"modelRepository": {"source": "s3", "s3": {"uri": "s3://b/r"}}},
            "at '/modelRepository/s3/credentialsSecret': missing property 'name'",
        ),
        (
            {"modelRepository": {"pvc": {"claimName": "m"}, "s3": {"uri": "https://b/r"}}},
            "at '/modelRepository/s3/uri'",
        ),
        (
            {"modelRepository": {"pvc": {"claimName": "m"}}, "triton": {"tls": {"enabled": True}}},
            "secretName",
        ),
        ({"modelRepository": {"pvc": {"claimName": "m"}}, "surprise": 1}, "additional properties 'surprise'"),
        (
            {"modelRepository": {"pvc": {"claimName": "m"}}, "autoscaling": {"window": 5}},
            "at '/autoscaling/window': got number, want string",
        ),
    ],
)
def test_more_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as raised:
        render(overrides)
    assert message in str(raised.value)


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, sub in schema.get("properties", {}).items():
        found.append((f"{path}.{key}", sub))
        found.extend(_objects(sub, f"{path}.{key}"))
    return found


def test_schema_is_hand_written_and_closed() -> None:
    """Every key has a description, and every chart-defined object rejects unknown keys."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    for path, sub in _objects(schema):
        if "$ref" not in sub:
            assert sub.get("description"), f"{path} has no description"
        if sub.get("type") == "object" and "properties" in sub and path not in _KUBERNETES_OBJECTS:
            assert sub.get("additionalProperties") is False, f"{path} accepts unknown keys"


_KUBERNETES_OBJECTS = {
    ".triton.podSecurityContext",
    ".triton.securityContext",
    ".gateway.podSecurityContext",
    ".gateway.securityContext",
}
"""Kubernetes objects passed through as they are (checked after rendering against the Kubernetes schemas)."""
