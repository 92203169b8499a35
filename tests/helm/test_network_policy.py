"""The Triton NetworkPolicy: with the gateway on, only the gateway's pods reach Triton's gRPC port, through
the Service, the headless peers or a pod IP alike; metrics only from the scrapers. Evaluated with the
NetworkPolicy rules of the Kubernetes API (same namespace, podSelector matchLabels, named ports)."""

from __future__ import annotations

from typing import Any

import pytest
from helm_support import EXAMPLES, NAMESPACE, Manifest, find, load_values, render, with_overrides

GATEWAY = {"app.kubernetes.io/name": "ufsim", "app.kubernetes.io/instance": "ufsim",
           "app.kubernetes.io/component": "gateway"}  # fmt: skip
STRANGER = {"app": "someone-else"}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_admits(peer: dict[str, Any], labels: dict[str, str], namespace: str) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": namespace}
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif namespace != NAMESPACE:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def admitted(policy: Manifest, labels: dict[str, str], port: str, namespace: str = NAMESPACE) -> bool:
    """Whether a pod with ``labels`` in ``namespace`` may open a connection to the named ``port``."""
    for rule in policy["spec"].get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        peers = rule.get("from")
        if not peers or any(_peer_admits(peer, labels, namespace) for peer in peers):
            return True
    return False


def _triton_pod_labels(manifests: list[Manifest]) -> dict[str, str]:
    labels: dict[str, str] = find(manifests, "Deployment", "ufsim")["spec"]["template"]["metadata"]["labels"]
    return labels


def test_gateway_is_the_only_way_in(gateway_manifests: list[Manifest]) -> None:
    policy = find(gateway_manifests, "NetworkPolicy", "ufsim-triton")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _selects(policy["spec"]["podSelector"], _triton_pod_labels(gateway_manifests))
    gateway_pods = find(gateway_manifests, "Deployment", "ufsim-gateway")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert admitted(policy, gateway_pods, "grpc")
    for who, namespace in ((STRANGER, NAMESPACE), (STRANGER, "other"), (GATEWAY, "other")):
        assert not admitted(policy, who, "grpc", namespace), (who, namespace)
        assert not admitted(policy, who, "http", namespace), (who, namespace)
    assert not admitted(policy, gateway_pods, "http")


def test_headless_peers_lead_to_the_same_guarded_pods(gateway_manifests: list[Manifest]) -> None:
    """The headless Service the gateway resolves selects exactly the pods the policy guards."""
    policy = find(gateway_manifests, "NetworkPolicy", "ufsim-triton")
    for name in ("ufsim", "ufsim-peers"):
        service = find(gateway_manifests, "Service", name)
        assert service["spec"]["selector"] == policy["spec"]["podSelector"]["matchLabels"], name


def test_metrics_only_from_the_scrapers(gateway_values: dict[str, Any]) -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}  # fmt: skip
    manifests = render(with_overrides(gateway_values, {"networkPolicy": {"metricsScrapers": [scraper]}}))
    policy = find(manifests, "NetworkPolicy", "ufsim-triton")
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert admitted(policy, prometheus, "metrics", "monitoring")
    assert not admitted(policy, prometheus, "grpc", "monitoring")
    assert not admitted(policy, STRANGER, "metrics")
    assert not admitted(policy, prometheus, "metrics", NAMESPACE)


def test_without_the_gateway_clients_are_configurable() -> None:
    open_policy = find(render({}), "NetworkPolicy", "ufsim-triton")
    assert admitted(open_policy, STRANGER, "grpc", "anywhere")
    assert admitted(open_policy, STRANGER, "metrics")
    simulation = {"podSelector": {"matchLabels": {"role": "simulation"}}}
    closed = find(render({"networkPolicy": {"clients": [simulation]}}), "NetworkPolicy", "ufsim-triton")
    assert admitted(closed, {"role": "simulation"}, "grpc")
    assert admitted(closed, {"role": "simulation"}, "http")
    assert not admitted(closed, STRANGER, "grpc")


def test_gateway_pods_take_clients_on_grpc_and_scrapers_on_ops(gateway_values: dict[str, Any]) -> None:
    manifests = render(gateway_values)
    policy = find(manifests, "NetworkPolicy", "ufsim-gateway")
    gateway_pods = find(manifests, "Deployment", "ufsim-gateway")["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["spec"]["podSelector"], gateway_pods)
    assert admitted(policy, STRANGER, "grpc", "anywhere") and admitted(policy, STRANGER, "ops")
    assert not admitted(policy, STRANGER, "admin")
    simulation = {"podSelector": {"matchLabels": {"role": "simulation"}}}
    closed = render(with_overrides(gateway_values, {"networkPolicy": {"clients": [simulation]}}))
    policy = find(closed, "NetworkPolicy", "ufsim-gateway")
    assert admitted(policy, {"role": "simulation"}, "grpc")
    assert not admitted(policy, STRANGER, "grpc")
    triton = find(closed, "NetworkPolicy", "ufsim-triton")
    assert not admitted(triton, {"role": "simulation"}, "grpc"), (
        "clients reach Triton only through the gateway"
    )


def test_policy_can_be_turned_off(gateway_values: dict[str, Any]) -> None:
    manifests = render(with_overrides(gateway_values, {"networkPolicy": {"enabled": False}}))
    assert not [m for m in manifests if m["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("name", ["values-cpu", "values-gpu", "values-gpu-autoscaled-gateway"])
def test_every_example_renders_a_policy_whose_named_ports_exist(name: str) -> None:
    manifests = render(load_values(next(p for p in EXAMPLES if p.stem == name)))
    policy = find(manifests, "NetworkPolicy", "ufsim-triton")
    containers = find(manifests, "Deployment", "ufsim")["spec"]["template"]["spec"]["containers"]
    named = {port["name"] for c in containers for port in c.get("ports", [])}
    for rule in policy["spec"]["ingress"]:
        assert {p["port"] for p in rule["ports"]} <= named
