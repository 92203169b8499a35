"""Fixtures for the Helm chart tests: example values files and their renderings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helm_support import EXAMPLES, Manifest, load_values, render


@pytest.fixture(params=EXAMPLES, ids=lambda p: p.stem)
def example(request: pytest.FixtureRequest) -> Path:
    """Each example values file in deploy/helm/ufsim/examples."""
    path: Path = request.param
    return path


@pytest.fixture(scope="session")
def cpu_values() -> dict[str, Any]:
    """examples/values-cpu.yaml."""
    return load_values(next(p for p in EXAMPLES if p.stem == "values-cpu"))


@pytest.fixture(scope="session")
def gateway_values() -> dict[str, Any]:
    """examples/values-gpu-autoscaled-gateway.yaml."""
    return load_values(next(p for p in EXAMPLES if p.stem == "values-gpu-autoscaled-gateway"))


@pytest.fixture(scope="session")
def cpu_manifests(cpu_values: dict[str, Any]) -> list[Manifest]:
    """The CPU-only example rendered."""
    return render(cpu_values)


@pytest.fixture(scope="session")
def gateway_manifests(gateway_values: dict[str, Any]) -> list[Manifest]:
    """The autoscaled-GPU-behind-the-gateway example rendered."""
    return render(gateway_values)
