"""Rendering helpers for the Helm chart tests: the real Helm engine (helm-python-sdk), no cluster."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ufsim"
EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))
RELEASE = "ufsim"
NAMESPACE = "sim"

Manifest = dict[str, Any]


def load_values(path: Path) -> dict[str, Any]:
    """A values file as Helm reads it (``-f path``)."""
    values = helm_python.values_from_yaml(path.read_text())
    return values


def render(values: Mapping[str, Any], *, name: str = RELEASE, namespace: str = NAMESPACE) -> list[Manifest]:
    """Every object the chart renders for ``values`` (schema-validated by Helm), NOTES.txt excluded."""
    with helm_python.Chart.load(CHART) as chart:
        files = chart.render(dict(values), name=name, namespace=namespace, is_install=True)
    manifests: list[Manifest] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (and ``name``, if given)."""
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in found]}"
    )
    return found[0]


def kinds(manifests: list[Manifest]) -> set[str]:
    """The kinds rendered."""
    return {m["kind"] for m in manifests}


def container(deployment: Manifest, name: str) -> dict[str, Any]:
    """A container of a Deployment, by name."""
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    return containers[name]


def triton_argv(manifests: list[Manifest]) -> list[str]:
    """The Triton container's command line (command + args), before the kubelet expands $(VAR)."""
    triton = container(find(manifests, "Deployment", RELEASE), "triton")
    return [*triton["command"], *triton["args"]]


def expand_kubelet_vars(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """Expand ``$(VAR)`` in container args as the kubelet does; unknown references stay as written."""

    def substitute(match: re.Match[str]) -> str:
        return env.get(match.group(1), match.group(0))

    return [re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", substitute, arg) for arg in argv]


def flag_value(argv: list[str], flag: str) -> list[str]:
    """Values of ``--flag=value`` arguments, in order."""
    prefix = f"{flag}="
    return [arg[len(prefix) :] for arg in argv if arg.startswith(prefix)]


def with_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` deep-merged with ``overrides`` (like a second ``-f`` file)."""
    merged: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = with_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged
