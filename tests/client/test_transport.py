"""Failure paths that need no running server: nothing listens on a closed port (connection refused)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ufsim_client import RetryPolicy, ServerError, ServerPool, simulate
from ufsim_client.contract import parse_metadata
from ufsim_client.errors import ContractError
from ufsim_client.readers import particle_gun
from ufsim_client.transport import is_transient


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


FAST = RetryPolicy(
    attempts_per_server=2, initial_backoff=0.01, max_backoff=0.05, total_timeout=1.0, request_timeout=1.0
)


def test_unreachable_servers_give_up_with_a_clear_error() -> None:
    urls = [_closed_port(), _closed_port()]
    with (
        ServerPool(urls, retry=FAST) as pool,
        pytest.raises(ServerError, match="gave up after retrying") as err,
    ):
        pool.contract()
    assert all(url in str(err.value) for url in urls)
    assert pool.retries > 0 and pool.failovers > 0
    assert isinstance(err.value.__cause__, Exception) and is_transient(err.value.__cause__)


def test_simulate_against_unreachable_server_writes_nothing(tmp_path: Path) -> None:
    from ufsim_client import open_writer

    target = tmp_path / "out.root"
    writer = open_writer(target)
    with pytest.raises(ServerError):
        simulate(particle_gun("n=5", seed=1, n_events=2), [_closed_port()], writer, seed=1, retry=FAST)
    assert list(tmp_path.iterdir()) == []


def test_simulate_checks_its_arguments(tmp_path: Path) -> None:
    from ufsim_client import open_writer

    with pytest.raises(ValueError, match="max_in_flight"):
        simulate([], [_closed_port()], open_writer(tmp_path / "out.root"), seed=1, max_in_flight=0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="at least one server"):
        ServerPool([])


def _metadata(**changes: object) -> dict:
    inputs = [
        {"name": "pid", "datatype": "INT32", "shape": ["-1", "1"]},
        {"name": "origin", "datatype": "FP32", "shape": ["-1", "3"]},
        {"name": "momentum", "datatype": "FP32", "shape": ["-1", "3"]},
        {"name": "n_tracks", "datatype": "FP32", "shape": ["-1", "1"]},
        {"name": "rng_key", "datatype": "UINT64", "shape": ["-1", "1"]},
    ]
    outputs = [
        {"name": name, "datatype": dt, "shape": ["-1", str(w)]}
        for name, dt, w in [
            ("track_type", "INT32", 1),
            ("track_state", "FP32", 6),
            ("track_quality", "FP32", 3),
            ("track_covariance", "FP32", 15),
            ("is_muon", "INT32", 1),
            ("rich_dll", "FP32", 4),
            ("muon_ll", "FP32", 2),
            ("global_pid", "FP32", 9),
        ]
    ]
    metadata = {"name": "pipeline", "inputs": inputs, "outputs": outputs}
    metadata.update(changes)
    return metadata


def test_contract_accepts_the_pipeline_and_names_every_mismatch() -> None:
    contract = parse_metadata(_metadata(), {"max_batch_size": 65536})
    assert contract.max_batch_size == 65536 and contract.inputs["origin"].shape == (3,)
    bad = _metadata()
    bad["inputs"] = [i for i in bad["inputs"] if i["name"] != "rng_key"]
    bad["inputs"][0] = {"name": "pid", "datatype": "INT64", "shape": ["-1", "1"]}
    bad["outputs"][2] = {"name": "track_quality", "datatype": "FP32", "shape": ["-1", "4"]}
    with pytest.raises(ContractError) as err:
        parse_metadata(bad, {"max_batch_size": 8}, url="host:1")
    message = str(err.value)
    assert "missing input 'rng_key'" in message
    assert "input 'pid' is INT64, expected INT32" in message
    assert "output 'track_quality' has shape [4]" in message
    assert "host:1" in message
    with pytest.raises(ContractError, match="max_batch_size 0"):
        parse_metadata(_metadata(), {"max_batch_size": 0})


@pytest.mark.parametrize(
    ("status", "message", "transient"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", True),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", True),
        ("StatusCode.INTERNAL", "Request for unknown model: 'pipeline' is not ready", True),
        ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'pid'", False),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'nope' is not found", False),
    ],
)
def test_transient_classification(status: str, message: str, transient: bool) -> None:
    from tritonclient.utils import InferenceServerException

    assert is_transient(InferenceServerException(message, status=status)) is transient
    assert not is_transient(RuntimeError("unavailable"))


def test_summary_rates() -> None:
    from ufsim_client import Summary

    summary = Summary(
        events=10, particles=1000, requests=2, retries=1, failovers=0, wall_s=2.0, cpu_s=0.5, source_cpu_s=0.3
    )
    assert summary.events_per_s == 5.0 and summary.particles_per_s == 500.0
    assert summary.cpu_us_per_particle == 500.0
    assert summary.transport_cpu_us_per_particle == pytest.approx(200.0)
    assert "500 particles/s" in str(summary) and "1 retries" in str(summary)
