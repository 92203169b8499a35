"""Fail-over never mixes model versions: each server declares its repository identity (ensemble
parameters written by ufsim-export), the client refuses a server that differs, and records the identity."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
import uproot
from onnx import numpy_helper

from ufsim_client import ContractError, MemoryWriter, RetryPolicy, ServerPool, particle_gun, simulate
from ufsim_client.cli import main
from ufsim_client.contract import parse_identity
from ufsim_client.simulate import IDENTITY_KEY

pytestmark = pytest.mark.triton

FAST = RetryPolicy(attempts_per_server=1, initial_backoff=0.01, max_backoff=0.05, total_timeout=60)


def _altered_repository(toy_repository: Path, out: Path) -> Path:
    """The toy repository rebuilt by ufsim-export after one tracking_resolution weight was scaled by 1.5,
    keeping the same repository version label (what a careless rebuild would do)."""
    from ufsim_export.repository.writer import write_repository
    from ufsim_export.spec import default_spec_path, load_spec

    models = out.parent / "altered-models"
    shutil.copytree(toy_repository.parent / f"{toy_repository.name}-toy-models", models)
    model = onnx.load(models / "tracking_resolution.onnx")
    weight = next(t for t in model.graph.initializer if len(t.dims) == 2)  # a layer of the network
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.5), weight.name))
    onnx.save(model, models / "tracking_resolution.onnx")
    return write_repository(load_spec(default_spec_path()), models, out, repository_version="toy-0")


@pytest.fixture(scope="module")
def altered_triton(toy_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second real Triton serving the altered repository."""
    serve = pytest.importorskip("ufsim_serve")
    folder = tmp_path_factory.mktemp("altered")
    repository = _altered_repository(toy_repository, folder / "model_repository")
    with serve.LocalTriton(repository, log_path=folder / "triton.log") as server:
        yield server


def test_repository_writer_declares_the_identity(toy_repository: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from ufsim_export.repository.writer import identity_parameters

    manifest = json.loads((toy_repository / "REPOSITORY.json").read_text())
    config = text_format.Parse(
        (toy_repository / "pipeline" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    declared = {key: value.string_value for key, value in config.parameters.items()}
    assert declared == identity_parameters(manifest)
    assert declared["ufsim_repository_version"] == "toy-0"
    assert {f"ufsim_sha256_{name}" for name in manifest["models"]} < set(declared)


def test_pool_exposes_the_served_identity(triton: Any, toy_repository: Path) -> None:
    manifest = json.loads((toy_repository / "REPOSITORY.json").read_text())
    with ServerPool([triton.grpc_url]) as pool:
        pool.contract()
        assert pool.identity == {"repository_version": "toy-0", "models": manifest["models"]}


def test_fail_over_refuses_a_server_serving_another_repository(
    toy_repository: Path, altered_triton: Any, tmp_path: Path
) -> None:
    serve = pytest.importorskip("ufsim_serve")
    with serve.LocalTriton(toy_repository, log_path=tmp_path / "triton.log") as first:
        with ServerPool([first.grpc_url, altered_triton.grpc_url], retry=FAST) as pool:
            pool.contract()
            first.kill()
            writer = MemoryWriter()
            with pytest.raises(ContractError) as refused:
                simulate(particle_gun("n=20", seed=1, n_events=5), pool, writer, seed=1, batch_size=30)
    message = str(refused.value)
    assert f"refusing server {altered_triton.grpc_url}" in message
    assert "tracking_resolution sha256" in message and first.grpc_url in message
    assert len(writer.columns()["eventNumber"]) == 0


def test_the_altered_server_alone_is_usable_but_declares_its_own_identity(
    altered_triton: Any, toy_repository: Path
) -> None:
    with ServerPool([altered_triton.grpc_url]) as pool:
        pool.contract()
        assert pool.identity is not None
        original = json.loads((toy_repository / "REPOSITORY.json").read_text())["models"]
        changed = {k for k, v in pool.identity["models"].items() if original[k] != v}
        assert changed == {"tracking_resolution"}


def test_fail_over_to_a_server_with_the_same_repository_is_accepted(
    triton: Any, toy_repository: Path, tmp_path: Path
) -> None:
    serve = pytest.importorskip("ufsim_serve")
    with serve.LocalTriton(toy_repository, log_path=tmp_path / "triton.log") as first:
        with ServerPool([first.grpc_url, triton.grpc_url], retry=FAST) as pool:
            pool.contract()
            first.kill()
            writer = MemoryWriter()
            simulate(particle_gun("n=20", seed=1, n_events=5), pool, writer, seed=1, batch_size=30)
            assert pool.failovers >= 1
    assert len(writer.columns()["eventNumber"]) == 100


@pytest.mark.parametrize("suffix", [".parquet", ".root"])
def test_output_records_the_identity(triton: Any, toy_repository: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"out{suffix}"
    code = main(["simulate", "--server", triton.grpc_url, "--gun", "n=5", "--events", "2", "--seed", "3",
                 "--output", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    if suffix == ".parquet":
        text = pq.read_metadata(out).metadata[IDENTITY_KEY.encode()].decode()
    else:
        with uproot.open(out) as file:
            text = str(file[IDENTITY_KEY])
    manifest = json.loads((toy_repository / "REPOSITORY.json").read_text())
    assert json.loads(text) == {"repository_version": "toy-0", "models": manifest["models"]}


def test_parse_identity_reads_only_ufsim_parameters() -> None:
    config = {
        "parameters": {
            "ufsim_repository_version": {"string_value": "v1"},
            "ufsim_sha256_rich": {"string_value": "ab"},
            "other": {"string_value": "x"},
        }
    }
    assert parse_identity(config) == {"repository_version": "v1", "models": {"rich": "ab"}}
    assert parse_identity({"parameters": {"other": {"string_value": "x"}}}) is None
