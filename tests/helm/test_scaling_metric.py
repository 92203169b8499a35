"""The autoscaling query: per-request queue time of each composing model, written once, as intended."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import promql_parser as promql
import pytest
from helm_support import ROOT, Manifest, find, render, with_overrides

COMPOSING = [
    "features",
    "acceptance",
    "acceptance_sampling",
    "tracking_efficiency",
    "track_sampling",
    "tracking_resolution",
    "tracking_covariance",
    "is_muon",
    "rich",
    "muon",
    "global_pid",
    "pid_sampling",
    "assembly",
]

Series = tuple[dict[str, str], float, float]
"""One counter series: labels, value at the start and at the end of the rate window."""
Vector = dict[frozenset[tuple[str, str]], float]


def _keda_query(manifests: list[Manifest]) -> str:
    query: str = find(manifests, "ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    return query


def _ensemble_steps() -> list[str]:
    config = (ROOT / "model_repository" / "pipeline" / "config.pbtxt").read_text()
    return re.findall(r'model_name:\s*"([^"]+)"', config)


def _matches(matcher: Any, labels: Mapping[str, str]) -> bool:
    value = labels.get(matcher.name, "")
    if matcher.op == promql.MatchOp.Equal:
        return bool(value == matcher.value)
    if matcher.op == promql.MatchOp.Re:
        return re.fullmatch(matcher.value, value) is not None
    raise AssertionError(f"unexpected matcher {matcher.op}")


def evaluate(node: Any, data: Mapping[str, list[Series]], window: float) -> Vector:
    """Evaluate the PromQL subset the query uses (rate, sum by, max, /, clamp_min, or, vector) on counters."""
    if isinstance(node, promql.Call):
        name = node.func.name
        if name == "rate":
            selector = node.args[0].vector_selector
            return {
                frozenset(labels.items()): (end - start) / window
                for labels, start, end in data.get(selector.name, [])
                if all(_matches(m, labels) for m in selector.matchers.matchers)
            }
        if name == "clamp_min":
            return {k: max(v, node.args[1].val) for k, v in evaluate(node.args[0], data, window).items()}
        if name == "vector":
            return {frozenset(): node.args[0].val}
        raise AssertionError(f"unexpected function {name}")
    if isinstance(node, promql.AggregateExpr):
        by = list(node.modifier.labels) if node.modifier is not None else []
        groups: dict[frozenset[tuple[str, str]], list[float]] = {}
        for key, value in evaluate(node.expr, data, window).items():
            group = frozenset((k, v) for k, v in key if k in by)
            groups.setdefault(group, []).append(value)
        reduce = {"sum": sum, "max": max}[str(node.op)]
        return {group: reduce(values) for group, values in groups.items()}
    if isinstance(node, promql.BinaryExpr):
        lhs, rhs = evaluate(node.lhs, data, window), evaluate(node.rhs, data, window)
        if str(node.op) == "/":
            return {k: lhs[k] / rhs[k] for k in lhs if k in rhs}
        if str(node.op) == "or":
            return lhs or rhs
        raise AssertionError(f"unexpected operator {node.op}")
    raise AssertionError(f"unexpected node {type(node).__name__}")


def test_composing_models_are_the_ensemble_steps(gateway_manifests: list[Manifest]) -> None:
    """The default list is exactly the pipeline's steps (model_repository/pipeline/config.pbtxt)."""
    assert sorted(_ensemble_steps()) == sorted(COMPOSING)
    selector = promql.parse(_keda_query(gateway_manifests)).lhs.expr.lhs.expr.args[0].vector_selector
    (model,) = [m for m in selector.matchers.matchers if m.name == "model"]
    for name in _ensemble_steps():
        assert re.fullmatch(model.value, name), name
    for name in ("pipeline", "acceptance_v2", "muonx", ""):
        assert not re.fullmatch(model.value, name), name


def test_query_structure(gateway_manifests: list[Manifest]) -> None:
    """max over models of sum(rate(queue µs)) / sum(rate(successful requests)), 0 when nothing is scraped."""
    query = promql.parse(_keda_query(gateway_manifests))
    assert str(query.op) == "or" and query.rhs.func.name == "vector" and query.rhs.args[0].val == 0
    top = query.lhs
    assert str(top.op) == "max" and top.modifier is None
    ratio = top.expr
    assert str(ratio.op) == "/"
    numerator, denominator = ratio.lhs, ratio.rhs.args[0]
    assert ratio.rhs.func.name == "clamp_min"
    selectors = []
    for part, metric in (
        (numerator, "nv_inference_queue_duration_us"),
        (denominator, "nv_inference_request_success"),
    ):
        assert str(part.op) == "sum" and list(part.modifier.labels) == ["model"]
        assert part.expr.func.name == "rate"
        matrix = part.expr.args[0]
        assert matrix.range.total_seconds() == 120
        assert matrix.vector_selector.name == metric
        selectors.append([(m.name, m.value) for m in matrix.vector_selector.matchers.matchers])
    assert selectors[0] == selectors[1]
    assert selectors[0][:2] == [("namespace", "sim"), ("service", "ufsim")]


def test_value_is_queue_time_per_request_of_the_worst_model(gateway_manifests: list[Manifest]) -> None:
    """Two pods, dynamic batching (many requests per execution), the ensemble's own counters present:
    the query gives the bottleneck model's queue µs per request, not per batch execution."""
    window = 120.0
    pods = ("ufsim-0", "ufsim-1")

    def series(model: str, pod: str, start: float, end: float, service: str = "ufsim") -> Series:
        labels = {"namespace": "sim", "service": service, "pod": pod, "model": model, "version": "1"}
        return labels, start, end

    data: dict[str, list[Series]] = {
        # rich: 1000 + 3000 requests queued 40 000 + 200 000 µs in all -> 60 µs per request.
        "nv_inference_request_success": [
            series("rich", pods[0], 0, 1000),
            series("rich", pods[1], 500, 3500),
            series("acceptance", pods[0], 0, 4000),
            series("pipeline", pods[0], 0, 4000),
            series("rich", pods[0], 0, 10, service="other-release"),
        ],
        "nv_inference_queue_duration_us": [
            series("rich", pods[0], 0, 40_000),
            series("rich", pods[1], 0, 200_000),
            series("acceptance", pods[0], 0, 8_000),
            # The ensemble's counter is never part of the metric, whatever it says.
            series("pipeline", pods[0], 0, 9_000_000),
            series("rich", pods[0], 0, 9_000_000, service="other-release"),
        ],
        # 40 executions: per execution the queue time would read 6000 µs.
        "nv_inference_exec_count": [series("rich", pods[0], 0, 10), series("rich", pods[1], 0, 30)],
    }
    query = promql.parse(_keda_query(gateway_manifests))
    assert evaluate(query, data, window) == {frozenset(): pytest.approx(60.0)}
    by_model = evaluate(query.lhs.expr, data, window)
    assert by_model == {
        frozenset({("model", "rich")}): pytest.approx(60.0),
        frozenset({("model", "acceptance")}): pytest.approx(2.0),
    }
    idle = {name: [(labels, 5.0, 5.0) for labels, _, _ in rows] for name, rows in data.items()}
    assert evaluate(query, idle, window) == {frozenset(): 0.0}, "an idle server reads 0, not NaN"
    assert evaluate(query, {}, window) == {frozenset(): 0.0}, "no series at all reads 0"


def test_keda_and_hpa_use_the_same_query(
    gateway_values: dict[str, Any], gateway_manifests: list[Manifest]
) -> None:
    hpa = render(with_overrides(gateway_values, {"autoscaling": {"engine": "hpa"}}))
    rule = find(hpa, "PrometheusRule")["spec"]["groups"][0]["rules"][0]
    assert rule["expr"] == _keda_query(gateway_manifests)
    trigger = find(gateway_manifests, "ScaledObject")["spec"]["triggers"][0]
    assert trigger["metricType"] == "Value" and trigger["metadata"]["threshold"] == "2000"


def test_metric_labels_and_window_are_configurable(gateway_values: dict[str, Any]) -> None:
    values = with_overrides(
        gateway_values,
        {"autoscaling": {"window": "5m", "metricLabels": {"job": "triton", "cluster": "purdue"}}},
    )
    query = promql.parse(_keda_query(render(values)))
    matrix = query.lhs.expr.lhs.expr.args[0]
    assert matrix.range.total_seconds() == 300
    assert [(m.name, m.value) for m in matrix.vector_selector.matchers.matchers][:2] == [
        ("cluster", "purdue"),
        ("job", "triton"),
    ]


def test_release_name_and_namespace_select_the_series(gateway_values: dict[str, Any]) -> None:
    manifests = render(gateway_values, name="lhcb-sim", namespace="prod")
    matrix = promql.parse(_keda_query(manifests)).lhs.expr.lhs.expr.args[0]
    labels = {m.name: m.value for m in matrix.vector_selector.matchers.matchers}
    assert labels["namespace"] == "prod" and labels["service"] == "lhcb-sim-ufsim"
    monitor = find(manifests, "ServiceMonitor", "lhcb-sim-ufsim")
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["prod"]
