"""The Python-based onnxruntime backend inside a real local Triton: config honoured, batching, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from local_support import TABLE, infer_concurrently, make_inputs
from tritonclient.utils import InferenceServerException

from ufsim_serve import LocalTriton

pytestmark = pytest.mark.triton


def _mix_request(rows: int, seed: int, k: np.ndarray | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(rows, 3)).astype(np.float32),
        "key": rng.integers(0, np.iinfo(np.uint64).max, size=(rows, 1), dtype=np.uint64, endpoint=True),
        "k": rng.integers(0, len(TABLE), size=(rows, 1), dtype=np.int32) if k is None else k,
    }


def _check_mix(request: dict[str, np.ndarray], result: grpcclient.InferResult) -> None:
    np.testing.assert_allclose(result.as_numpy("y"), 2 * request["x"] + request["k"], rtol=1e-6)
    assert result.as_numpy("h").dtype == np.uint64
    np.testing.assert_array_equal(result.as_numpy("h"), request["key"] * np.uint64(3))
    np.testing.assert_array_equal(result.as_numpy("t"), TABLE[request["k"]])


def _mix_stats(client: grpcclient.InferenceServerClient) -> tuple[int, int]:
    stats = client.get_inference_statistics("mix", as_json=True)["model_stats"][0]
    return int(stats.get("execution_count", 0)), int(stats.get("inference_count", 0))


def _mix_stats_change(
    client: grpcclient.InferenceServerClient, before: tuple[int, int], expected: tuple[int, int]
) -> tuple[int, int]:
    """(executions, inferences) since ``before``, waiting up to 10 s for ``expected``.

    The responses can reach the client before Triton has counted the run (a CI run on a loaded machine
    read (0, 0)); any other change is returned as it stands once the wait is over.
    """
    deadline = time.monotonic() + 10.0
    while True:
        after = _mix_stats(client)
        change = (after[0] - before[0], after[1] - before[1])
        if change == expected or time.monotonic() > deadline:
            return change
        time.sleep(0.05)


def test_concurrent_requests_share_one_run_with_dtype_mix(client: grpcclient.InferenceServerClient) -> None:
    """Requests of 1, 2 and 3 rows (FP32, UINT64 incl. values above 2^63, INT32) share one session run."""
    requests = [_mix_request(rows, seed) for seed, rows in enumerate((1, 2, 3))]
    requests[0]["key"][0, 0] = np.iinfo(np.uint64).max
    before = _mix_stats(client)
    answers = infer_concurrently(client, "mix", requests)
    for request, (result, error) in zip(requests, answers, strict=True):
        assert error is None
        assert result is not None
        _check_mix(request, result)
        np.testing.assert_array_equal(result.as_numpy("rows"), np.full((len(request["x"]), 1), 6))
    assert _mix_stats_change(client, before, (1, 6)) == (1, 6)


def test_failing_request_in_a_batch_gets_its_own_error(client: grpcclient.InferenceServerClient) -> None:
    """A row that makes ONNX Runtime fail (Gather index 99) fails only its request; the instance lives on."""
    bad_k = np.array([[3], [99]], dtype=np.int32)
    requests = [_mix_request(1, 10), _mix_request(2, 11, k=bad_k), _mix_request(3, 12)]
    answers = infer_concurrently(client, "mix", requests)
    (good1, error1), (bad, bad_error), (good3, error3) = answers
    assert bad is None
    assert isinstance(bad_error, InferenceServerException)
    assert "model 'mix'" in str(bad_error)
    assert "99" in str(bad_error)
    for request, result, error in ((requests[0], good1, error1), (requests[2], good3, error3)):
        assert error is None
        assert result is not None
        _check_mix(request, result)
        rows = len(request["x"])
        np.testing.assert_array_equal(result.as_numpy("rows"), np.full((rows, 1), rows))
    again = [_mix_request(rows, 20 + rows) for rows in (3, 3)]
    for request, (result, error) in zip(again, infer_concurrently(client, "mix", again), strict=True):
        assert error is None and result is not None
        _check_mix(request, result)
        np.testing.assert_array_equal(result.as_numpy("rows"), np.full((3, 1), 6))


def test_reshape_on_inputs_and_outputs(client: grpcclient.InferenceServerClient) -> None:
    """Client-side dims [4] reach the model as [2, 2]; outputs [2, 2] and [] come back as [4] and [1]."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = client.infer("shaped", make_inputs({"a": a}))
    assert result.as_numpy("b").shape == (3, 4)
    np.testing.assert_allclose(result.as_numpy("b"), 2 * a)
    assert result.as_numpy("s").shape == (3, 1)
    np.testing.assert_allclose(result.as_numpy("s"), a.sum(axis=1, keepdims=True))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"a": np.zeros((2, 4), np.float64)}, "FP64"),
        ({"a": np.zeros((2, 5), np.float32)}, "[2,5]"),
        ({"zz": np.zeros((2, 4), np.float32)}, "zz"),
        ({}, "expected 1 inputs but got 0"),
    ],
    ids=["wrong-dtype", "wrong-shape", "wrong-name", "missing-input"],
)
def test_malformed_request_fails_alone(
    client: grpcclient.InferenceServerClient, inputs: dict[str, np.ndarray], message: str
) -> None:
    """A malformed request gets a clear error while a concurrent good one (and a NaN one) succeed."""
    good = np.ones((2, 4), np.float32)
    with_nan = np.full((1, 4), np.nan, np.float32)
    answers = infer_concurrently(client, "shaped", [{"a": good}, inputs, {"a": with_nan}])
    (result, error), (bad, bad_error), (nan_result, nan_error) = answers
    assert error is None and result is not None
    np.testing.assert_allclose(result.as_numpy("b"), 2 * good)
    assert bad is None
    assert isinstance(bad_error, InferenceServerException)
    assert message in str(bad_error)
    assert nan_error is None and nan_result is not None
    assert np.isnan(nan_result.as_numpy("b")).all()


def test_output_without_batch_dimension_is_a_request_error(client: grpcclient.InferenceServerClient) -> None:
    """A graph whose output loses the batch dimension fails the request that exposes it, clearly."""
    with pytest.raises(InferenceServerException, match="batch as first dimension"):
        client.infer("collapse", make_inputs({"c": np.array([[1.0], [-1.0]], np.float32)}))
    result = client.infer("collapse", make_inputs({"c": np.array([[5.0], [6.0]], np.float32)}))
    np.testing.assert_array_equal(result.as_numpy("d"), [[5.0], [6.0]])


def test_model_without_batching_and_missing_optional_input(client: grpcclient.InferenceServerClient) -> None:
    """max_batch_size 0 runs each request as is; an optional input the graph needs gives a request error."""
    u = np.array([1, 2], np.int32)
    v = np.array([10, -20], np.int32)
    result = client.infer("opt", make_inputs({"u": u, "v": v}))
    assert result.as_numpy("w").dtype == np.int32
    np.testing.assert_array_equal(result.as_numpy("w"), [11, -18])
    with pytest.raises(InferenceServerException, match="model 'opt'.*v"):
        client.infer("opt", make_inputs({"u": u}))
    np.testing.assert_array_equal(client.infer("opt", make_inputs({"u": u, "v": v})).as_numpy("w"), [11, -18])


def test_ensemble_of_two_models(client: grpcclient.InferenceServerClient) -> None:
    """The ensemble 'chain' (shaped -> scale) loads and serves: q = 3 (2 a), s = sum(a)."""
    a = np.linspace(-1, 1, 20, dtype=np.float32).reshape(5, 4)
    result = client.infer("chain", make_inputs({"a": a}))
    np.testing.assert_allclose(result.as_numpy("q"), 6 * a, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("s"), a.sum(axis=1, keepdims=True), rtol=1e-6)


def test_instances_and_thread_parameter(server: LocalTriton) -> None:
    """Each configured instance opens its own session with the configured intra-op thread count."""
    log = server.log_path.read_text()
    for instance in ("shaped_0_0", "shaped_0_1"):
        assert f"model 'shaped' instance '{instance}' loaded" in log
    assert log.count("model 'shaped' instance") == 2
    shaped = [line for line in log.splitlines() if "model 'shaped' instance" in line]
    assert all("intra_op_thread_count=2" in line for line in shaped)
    scale = [line for line in log.splitlines() if "model 'scale' instance" in line]
    assert len(scale) == 1 and "intra_op_thread_count=1" in scale[0]


def test_memory_parameters(server: LocalTriton, client: grpcclient.InferenceServerClient) -> None:
    """enable_mem_pattern, max_rows_per_run and idle_release_seconds reach the instance (logged); a batch
    larger than max_rows_per_run runs in slices with exact answers; once idle, the instance frees memory."""
    log = server.log_path.read_text()
    lean = [line for line in log.splitlines() if "model 'lean' instance" in line]
    assert len(lean) == 1
    assert "enable_mem_pattern=0, max_rows_per_run=4096, idle_release_seconds=1" in lean[0]
    scale = [line for line in log.splitlines() if "model 'scale' instance" in line]
    assert "enable_mem_arena=1, enable_mem_pattern=1, max_rows_per_run=0, idle_release_seconds=0" in scale[0]
    offset = len(server.log_path.read_text())
    p = np.random.default_rng(3).standard_normal((20000, 4)).astype(np.float32)
    for rows in (20000, 4096, 7):
        result = client.infer("lean", make_inputs({"p": p[:rows]}))
        np.testing.assert_array_equal(result.as_numpy("q"), 3 * p[:rows])
    deadline = time.monotonic() + 30
    while "model 'lean' idle, memory released" not in server.log_path.read_text()[offset:]:
        assert time.monotonic() < deadline, "the idle instance did not release its memory within 30 s"
        time.sleep(0.5)
    result = client.infer("lean", make_inputs({"p": p[:5]}))
    np.testing.assert_array_equal(result.as_numpy("q"), 3 * p[:5])


def test_sliced_run_keeps_the_batch_check(client: grpcclient.InferenceServerClient) -> None:
    """A graph that loses rows still fails its request clearly when the batch runs in slices."""
    with pytest.raises(InferenceServerException, match="batch as first dimension"):
        client.infer("collapse_sliced", make_inputs({"c": np.array([[1.0], [-1.0]], np.float32)}))
    result = client.infer("collapse_sliced", make_inputs({"c": np.array([[5.0], [6.0]], np.float32)}))
    np.testing.assert_array_equal(result.as_numpy("d"), [[5.0], [6.0]])


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("no_file", "no ONNX model at"),
        ("bad_name", "config input 'pp' is not an input of the ONNX model"),
        ("bad_dtype", "input 'p' is float64 in config.pbtxt but tensor(float)"),
        ("bad_dims", "output 'q' has shape [-1, 5] in config.pbtxt"),
        ("fixed_batch", "fixed first dimension 4"),
        ("bad_threads", "intra_op_thread_count must be a non-negative integer, got 'two'"),
        ("bad_arena", "parameter enable_mem_arena must be 0 or 1, got 'maybe'"),
        ("undeclared", "ONNX inputs ['v'] are missing from config.pbtxt"),
    ],
)
def test_config_that_disagrees_with_the_graph_fails_to_load(
    client: grpcclient.InferenceServerClient, server: LocalTriton, model: str, message: str
) -> None:
    """Loading fails with a message naming the model and the disagreement; the server keeps serving."""
    with pytest.raises(InferenceServerException) as failure:
        client.load_model(model, headers=server.admin_headers)
    assert message in str(failure.value)
    assert not client.is_model_ready(model)
    assert client.is_server_live()
    np.testing.assert_allclose(
        client.infer("scale", make_inputs({"p": np.ones((1, 4), np.float32)})).as_numpy("q"), 3.0
    )
