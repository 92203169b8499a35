"""ufsim-client against a real local Triton (deploy/local) serving the toy pipeline ensemble."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ufsim_client import (
    ContractError,
    Event,
    InputError,
    MemoryWriter,
    RetryPolicy,
    ServerError,
    ServerPool,
    open_writer,
    particle_gun,
    read_hepmc,
    simulate,
)
from ufsim_client.cli import main
from ufsim_client.ntuple import schema
from ufsim_client.report import read_ntuple

pytestmark = pytest.mark.triton


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _run(events: Any, url: Any, seed: int = 1, **options: Any) -> dict[str, np.ndarray]:
    writer = MemoryWriter()
    options.setdefault("retry", RetryPolicy(total_timeout=60))  # fail fast should the server die
    simulate(events, [url] if isinstance(url, str) else url, writer, seed=seed, **options)
    return writer.columns()


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


EXACT = ["eventNumber", "particleIndex", "TRUEID", "rngKey", "TRACK_Type", "isMuon"]


def _assert_reproduced(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Same rows, same keys, same sampled decisions; continuous outputs equal up to float32 round-off.

    The tolerance is for the server, not the client: ONNX Runtime may take another GEMM kernel for
    another batch size (see test_server_outputs_bit_identical_across_batch_sizes).
    """
    assert list(a) == list(b)
    for name in a:
        if name in EXACT or name.startswith("TRUE") or name == "nTracks":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _gun_events() -> Iterator[Event]:
    return particle_gun("pid=211/-321/13/2212/-11,p=1000:200000,eta=1.5:5.5,n=37", seed=9, n_events=12)


def test_round_trip_keeps_event_and_particle_order(triton: Any, hepmc_files: list[Path]) -> None:
    events = list(read_hepmc(hepmc_files))
    out = _run(events, triton.grpc_url, batch_size=100, max_in_flight=3)
    assert list(out) == list(schema())
    np.testing.assert_array_equal(
        out["eventNumber"], np.repeat([e.number for e in events], [len(e) for e in events])
    )
    np.testing.assert_array_equal(out["particleIndex"], np.concatenate([np.arange(len(e)) for e in events]))
    np.testing.assert_array_equal(out["TRUEID"], np.concatenate([e.pid for e in events]))
    np.testing.assert_array_equal(out["TRUEP_Z"], np.concatenate([e.momentum[:, 2] for e in events]))
    np.testing.assert_array_equal(out["TRUEORIGINVERTEX_Z"], np.concatenate([e.origin[:, 2] for e in events]))
    np.testing.assert_array_equal(
        out["nTracks"], np.repeat([e.n_tracks for e in events], [len(e) for e in events])
    )
    # Outputs follow the contract's sentinels.
    track_type = out["TRACK_Type"]
    assert set(np.unique(track_type)) <= {-1, 0, 3, 4, 5}
    assert (out["TRACK_P"][track_type <= 0] == -9999).all()
    # reconstructed rows carry values, not sentinels (the toy's dp is absolute MeV, so its sign is no test)
    reco_p = out["TRACK_P"][track_type > 0]
    assert np.isfinite(reco_p).all() and (reco_p != -9999).all()
    assert (out["isMuon"][track_type != 3] == -1).all()
    assert set(np.unique(out["isMuon"][track_type == 3])) <= {0, 1}
    assert (out["MuonMuLL"][out["isMuon"] != 1] == -1000).all()
    assert (out["ProbNNpi"][track_type != 3] == -1).all()


def test_same_seed_same_output_whatever_the_batching(triton: Any) -> None:
    reference = _run(_gun_events(), triton.grpc_url, seed=5, batch_size=4096, max_in_flight=1)
    assert len(reference["eventNumber"]) == 12 * 37
    for batch_size, in_flight in [(4096, 4), (1000, 4), (50, 3), (7, 2), (1, 1)]:
        out = _run(_gun_events(), triton.grpc_url, seed=5, batch_size=batch_size, max_in_flight=in_flight)
        _assert_reproduced(out, reference)
    other = _run(_gun_events(), triton.grpc_url, seed=6, batch_size=4096)
    assert not np.array_equal(other["rngKey"], reference["rngKey"])
    reco = ["TRACK_P", "RichDLLk", "PIDK", "ProbNNpi"]
    assert any(not np.array_equal(other[name], reference[name]) for name in reco)


def test_server_outputs_bit_identical_across_batch_sizes(triton: Any) -> None:
    reference = _run(_gun_events(), triton.grpc_url, seed=5, batch_size=4096, max_in_flight=1)
    _assert_same(_run(_gun_events(), triton.grpc_url, seed=5, batch_size=7, max_in_flight=1), reference)


def test_fail_over_to_the_next_server(triton: Any) -> None:
    fast = RetryPolicy(attempts_per_server=2, initial_backoff=0.01, max_backoff=0.05, total_timeout=60)
    with ServerPool([_closed_port(), triton.grpc_url], retry=fast) as pool:
        out = _run(particle_gun("n=20", seed=1, n_events=5), pool, batch_size=30)
        assert pool.failovers >= 1
    _assert_same(out, _run(particle_gun("n=20", seed=1, n_events=5), triton.grpc_url))


QUEUE_DELAY_S = 3.0
"""How long the first step of a ``held_triton`` holds every request in Triton's queue."""


@pytest.fixture
def held_triton(toy_repository: Path, tmp_path: Path) -> Iterator[Any]:
    """A Triton of its own whose first step holds each request ``QUEUE_DELAY_S`` in its batch queue.

    A client deadline shorter than that delay always expires while the request is inside the server,
    however loaded the machine is (load only makes the request later still).
    """
    serve = pytest.importorskip("ufsim_serve")
    repository = tmp_path / "model_repository"
    shutil.copytree(toy_repository, repository)
    config_path = repository / "features" / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    config.dynamic_batching.max_queue_delay_microseconds = int(QUEUE_DELAY_S * 1e6)
    config_path.write_text(text_format.MessageToString(config))
    with serve.LocalTriton(repository, log_path=tmp_path / "triton.log") as server:
        yield server


def _expire_deadlines(url: str, writer: Any) -> ServerPool:
    deadline = QUEUE_DELAY_S / 10
    tiny = RetryPolicy(initial_backoff=0.01, max_backoff=0.05, total_timeout=2.0, request_timeout=deadline)
    with ServerPool([url], retry=RetryPolicy()) as pool:
        pool.contract()
        pool.retry = tiny
        with pytest.raises(ServerError, match="gave up after retrying") as err:
            simulate(particle_gun("n=50", seed=1, n_events=2), pool, writer, seed=1)
    assert err.value.status in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE")
    return pool


def test_deadline_exceeded_is_retried_then_reported(held_triton: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pool = _expire_deadlines(held_triton.grpc_url, open_writer(out / "o.root"))
    assert pool.retries > 0
    assert list(out.iterdir()) == []


def test_client_deadline_does_not_crash_the_server(held_triton: Any) -> None:
    """Cancelling in-flight requests crashes tritonserver 2.51 (server#7368); the client never cancels.

    Every deadline here expires while its request waits inside the server (``held_triton``).
    """
    for _ in range(3):
        pool = _expire_deadlines(held_triton.grpc_url, MemoryWriter())
        assert pool.retries > 0
        time.sleep(0.5)
        assert held_triton.running
    assert len(_run(_gun_events(), held_triton.grpc_url, seed=5, batch_size=4096)["eventNumber"]) == 12 * 37


def test_server_without_the_pipeline_is_a_contract_error(triton: Any) -> None:
    with pytest.raises(ContractError, match=r"'no_such_model'"):
        _run(particle_gun("n=2", seed=1, n_events=1), triton.grpc_url, model="no_such_model")
    # A composing model of the ensemble is served, but it is not the pipeline.
    with pytest.raises(ContractError, match=r"missing input 'pid'.*missing output 'track_type'"):
        _run(particle_gun("n=2", seed=1, n_events=1), triton.grpc_url, model="tracking_resolution")


def test_bad_event_mid_run_names_the_field_and_leaves_no_output(triton: Any, tmp_path: Path) -> None:
    def events() -> Iterator[Event]:
        yield from particle_gun("n=30", seed=1, n_events=3)
        yield Event(pid=np.array([211, 22]), origin=np.zeros((2, 3)), momentum=np.ones((2, 3)), n_tracks=2)

    target = tmp_path / "out.root"
    with pytest.raises(InputError, match="accepted values") as err:
        simulate(events(), [triton.grpc_url], open_writer(target), seed=1, batch_size=10)
    assert err.value.field == "pid"
    assert list(tmp_path.iterdir()) == []

    def unordered() -> Iterator[Event]:
        yield from particle_gun("n=3", seed=1, n_events=3)
        yield Event(
            pid=np.array([211]), origin=np.zeros((1, 3)), momentum=np.ones((1, 3)), n_tracks=1, number=1
        )

    with pytest.raises(InputError, match="must increase") as err:
        _run(unordered(), triton.grpc_url)
    assert err.value.field == "number"


def test_command_line_root_parquet_and_report(triton: Any, hepmc_files: list[Path], tmp_path: Path) -> None:
    common = [
        "simulate",
        "--server",
        triton.grpc_url,
        "--seed",
        "3",
        "--batch-size",
        "64",
        "--no-progress",
        "--retry-timeout",
        "60",
    ]
    inputs = ["--input", *map(str, hepmc_files[:3]), "--events", "4", "--crossing", "event"]
    assert main([*common, *inputs, "--output", str(tmp_path / "hepmc.root")]) == 0
    assert main([*common, *inputs, "--output", str(tmp_path / "hepmc.parquet"), "--in-flight", "1"]) == 0
    root, parquet = read_ntuple(tmp_path / "hepmc.root"), read_ntuple(tmp_path / "hepmc.parquet")
    _assert_same(root, parquet)
    assert sorted(set(root["eventNumber"].tolist())) == [0, 1, 2, 3]
    assert main([*common, "--pythia", "--events", "2", "--output", str(tmp_path / "pythia.parquet")]) == 0
    assert (
        main([*common, "--gun", "pid=13/211,n=40", "--events", "5", "--output", str(tmp_path / "gun.root")])
        == 0
    )
    assert len(read_ntuple(tmp_path / "gun.root")["eventNumber"]) == 200
    assert main(["report", str(tmp_path / "hepmc.root"), "--output", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "richdllk.png").is_file()


class _SignallingWriter(MemoryWriter):
    """A MemoryWriter that says when its first rows arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()

    def write(self, columns: dict[str, np.ndarray]) -> None:
        super().write(columns)
        self.started.set()


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run(triton: Any) -> None:
    def events() -> Iterator[Event]:
        return particle_gun("pid=211/321/13,n=20", seed=4, n_events=100)

    reference = _run(events(), triton.grpc_url, seed=8, batch_size=16, max_in_flight=2)
    writer = _SignallingWriter()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["summary"] = simulate(
                events(), [triton.grpc_url], writer, seed=8, batch_size=16, max_in_flight=2
            )
        except BaseException as err:  # handed to the test thread
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    assert writer.started.wait(120), "no result arrived before the kill"
    triton.kill()
    time.sleep(1.0)
    triton.start()
    thread.join(600)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"].retries > 0
    assert outcome["summary"].particles == 2000
    out = writer.columns()
    pairs = out["eventNumber"] * 1000 + out["particleIndex"]
    assert len(np.unique(pairs)) == len(pairs) == 2000
    _assert_reproduced(out, reference)
