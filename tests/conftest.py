"""Shared test fixtures: repository paths, the pipeline spec, and the shared reference data."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from ufsim_export.spec import PipelineSpec, default_spec_path, load_spec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def spec() -> PipelineSpec:
    """The LHCb pipeline spec shipped with ufsim_export (package data)."""
    return load_spec(default_spec_path())


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (reference data); tests that need it fail loudly if it is missing."""
    path = SHARED / "data"
    assert path.is_dir(), f"reference data not found at {path} (tests need ../shared beside the repository)"
    return path


@pytest.fixture(scope="session")
def toy_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete model repository with small stand-in models (the real ensemble wiring)."""
    from ufsim_export.testing.toy import write_toy_repository

    return write_toy_repository(tmp_path_factory.mktemp("toy") / "model_repository", seed=0)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tls.crt, tls.key, ca.crt (self-signed for 127.0.0.1, by openssl), as in a kubernetes.io/tls Secret."""
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    (folder / "ca.crt").write_bytes((folder / "tls.crt").read_bytes())
    return folder


@pytest.fixture(scope="session")
def inflated_candidate() -> Callable[[Path, Path, str, int], None]:
    """Copy a trained candidate ``step`` from one folder to another as seed ``seed``, its served ONNX output
    multiplied by 4 (the same graph with one more ``Mul``): a degraded run a selection must reject."""

    def make(good: Path, bad: Path, step: str, seed: int) -> None:
        bad.mkdir(parents=True, exist_ok=True)
        (bad / f"{step}.pt").write_bytes((good / f"{step}.pt").read_bytes())
        manifest = json.loads((good / f"{step}.json").read_text())
        (bad / f"{step}.json").write_text(json.dumps({**manifest, "seed": seed}))
        model = onnx.load(good / f"{step}.onnx")
        last = next(node for node in model.graph.node if "output" in node.output)
        last.output[list(last.output).index("output")] = "unscaled"
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(4.0, np.float32), "inflate"))
        model.graph.node.append(
            onnx.helper.make_node("Mul", ["unscaled", "inflate"], ["output"], name="inflate")
        )
        onnx.save(model, bad / f"{step}.onnx")

    return make
