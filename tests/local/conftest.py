"""Fixtures for the deploy/local tests: tiny model repositories and a real local Triton serving them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from local_support import (
    collapse_model,
    config,
    mix_model,
    scale_config,
    scale_model,
    shaped_model,
    sum_model,
    tensor,
    write_model,
)

from ufsim_serve import LocalTriton

LOADED = ("mix", "shaped", "scale", "lean", "chain", "opt", "collapse", "collapse_sliced")
"""Models the shared server loads at start; the others in the repository are loaded by tests."""

CHAIN = """\
platform: "ensemble"
max_batch_size: 8
input [ { name: "a" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "q" data_type: TYPE_FP32 dims: [ 4 ] },
  { name: "s" data_type: TYPE_FP32 dims: [ 1 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "shaped"
      model_version: -1
      input_map { key: "a" value: "a" }
      output_map { key: "b" value: "doubled" }
      output_map { key: "s" value: "s" }
    },
    {
      model_name: "scale"
      model_version: -1
      input_map { key: "p" value: "doubled" }
      output_map { key: "q" value: "q" }
    }
  ]
}
"""

SLEEPY = '''\
"""A Python model that never finishes loading, so the server never becomes ready."""

import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(3600)

    def execute(self, requests):
        return []
'''


def write_serving_repository(repository: Path) -> Path:
    """Good models of every kind the backend must serve, and broken ones that must fail to load."""
    write_model(
        repository,
        "mix",
        config(
            [
                tensor("x", "TYPE_FP32", [3]),
                tensor("key", "TYPE_UINT64", [1]),
                tensor("k", "TYPE_INT32", [1]),
            ],
            [
                tensor("y", "TYPE_FP32", [3]),
                tensor("h", "TYPE_UINT64", [1]),
                tensor("t", "TYPE_FP32", [1]),
                tensor("rows", "TYPE_INT64", [1]),
            ],
            max_batch_size=6,
            batching="dynamic_batching { max_queue_delay_microseconds: 60000000 }",
        ),
        mix_model(),
    )
    write_model(
        repository,
        "shaped",
        config(
            [tensor("a", "TYPE_FP32", [4], reshape=[2, 2])],
            [tensor("b", "TYPE_FP32", [4], reshape=[2, 2]), tensor("s", "TYPE_FP32", [1], reshape=[])],
            instances=2,
            threads="2",
        ),
        shaped_model(),
    )
    write_model(repository, "scale", scale_config(), scale_model())
    lean = {"enable_mem_pattern": "false", "max_rows_per_run": "4096", "idle_release_seconds": "1"}
    write_model(repository, "lean", scale_config(parameters=lean, max_batch_size=32768), scale_model())
    sliced = config(
        [tensor("c", "TYPE_FP32", [1])],
        [tensor("d", "TYPE_FP32", [1])],
        batching="",
        parameters={"max_rows_per_run": "1"},
    )
    write_model(repository, "collapse_sliced", sliced, collapse_model())
    (repository / "chain" / "1").mkdir(parents=True)
    (repository / "chain" / "config.pbtxt").write_text(f'name: "chain"\n{CHAIN}')
    write_model(
        repository,
        "opt",
        config(
            [tensor("u", "TYPE_INT32", [2]), tensor("v", "TYPE_INT32", [2], extra="optional: true")],
            [tensor("w", "TYPE_INT32", [2])],
            max_batch_size=0,
        ),
        sum_model(),
    )
    write_model(
        repository,
        "collapse",
        config([tensor("c", "TYPE_FP32", [1])], [tensor("d", "TYPE_FP32", [1])], batching=""),
        collapse_model(),
    )
    write_model(repository, "no_file", scale_config(), None)
    write_model(
        repository,
        "bad_name",
        config([tensor("pp", "TYPE_FP32", [4])], [tensor("q", "TYPE_FP32", [4])]),
        scale_model(),
    )
    write_model(
        repository,
        "bad_dtype",
        config([tensor("p", "TYPE_FP64", [4])], [tensor("q", "TYPE_FP32", [4])]),
        scale_model(),
    )
    write_model(
        repository,
        "bad_dims",
        config([tensor("p", "TYPE_FP32", [4])], [tensor("q", "TYPE_FP32", [5])]),
        scale_model(),
    )
    write_model(repository, "fixed_batch", scale_config(), scale_model(first_dim=4))
    write_model(repository, "bad_threads", scale_config(threads="two"), scale_model())
    maybe = {"enable_mem_arena": "maybe"}
    write_model(repository, "bad_arena", scale_config(parameters=maybe), scale_model())
    write_model(
        repository,
        "undeclared",
        config([tensor("u", "TYPE_INT32", [2])], [tensor("w", "TYPE_INT32", [2])], max_batch_size=0),
        sum_model(),
    )
    return repository


@pytest.fixture(scope="session")
def serving_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository served by ``server``."""
    return write_serving_repository(tmp_path_factory.mktemp("local") / "model_repository")


@pytest.fixture(scope="session")
def server(serving_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    """One real Triton for the backend tests (explicit model control, so tests can load broken models)."""
    load = [f"--load-model={name}" for name in LOADED]
    log = tmp_path_factory.mktemp("local-log") / "triton.log"
    with LocalTriton(
        serving_repository, log_path=log, extra_args=["--model-control-mode=explicit", *load]
    ) as running:
        yield running


@pytest.fixture
def client(server: LocalTriton) -> Iterator[grpcclient.InferenceServerClient]:
    """A gRPC client of ``server``."""
    with grpcclient.InferenceServerClient(server.grpc_url) as connection:
        yield connection


@pytest.fixture(scope="session")
def small_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the single model ``scale`` (for start/stop tests)."""
    repository = tmp_path_factory.mktemp("small") / "model_repository"
    write_model(repository, "scale", scale_config(), scale_model())
    return repository


@pytest.fixture(scope="session")
def sleepy_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose only model never finishes loading."""
    repository = tmp_path_factory.mktemp("sleepy") / "model_repository"
    (repository / "sleepy" / "1").mkdir(parents=True)
    (repository / "sleepy" / "1" / "model.py").write_text(SLEEPY)
    (repository / "sleepy" / "config.pbtxt").write_text(
        'name: "sleepy"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "i" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "o" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    return repository
