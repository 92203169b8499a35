"""The served pipeline's contract for any Triton client, through a real local Triton: NaN, infinite and
absurd inputs come back as track_type -1 with the sentinels, next to untouched valid particles."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from ufsim_client import ServerPool
from ufsim_client.contract import OUTPUT_COLUMNS

pytestmark = pytest.mark.triton

SENTINELS = {"track_state": -9999.0, "track_quality": -9999.0, "track_covariance": -9999.0, "is_muon": -1,
             "rich_dll": -1000.0, "muon_ll": -1000.0}  # fmt: skip


def _infer(url: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    inputs = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(
            "pipeline", inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUT_COLUMNS]
        )
    return {name: result.as_numpy(name) for name in OUTPUT_COLUMNS}


def _particles(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "pid": rng.choice([211, -321, 13, 2212], (n, 1)).astype(np.int32),
        "origin": rng.normal(0, 0.05, (n, 3)).astype(np.float32),
        "momentum": np.column_stack(
            [rng.normal(0, 300, n), rng.normal(0, 300, n), rng.uniform(5e3, 5e4, n)]
        ).astype(np.float32),
        "n_tracks": np.full((n, 1), 80.0, np.float32),
        "rng_key": np.arange(n, dtype=np.uint64).reshape(n, 1) * np.uint64(7919) + np.uint64(1),
    }


def test_nan_infinite_and_absurd_particles_get_sentinels(triton: Any) -> None:
    good = _particles(37)
    mixed = {name: value.copy() for name, value in good.items()}
    mixed["origin"][0:30, 0] = np.nan  # the reproduction: 29-30 of 37 rows came back reconstructed
    mixed["momentum"][30, 1] = np.inf
    mixed["momentum"][31, 2] = 1e12
    mixed["n_tracks"][32] = -np.inf
    bad = np.zeros(37, bool)
    bad[:33] = True
    out = _infer(triton.grpc_url, mixed)
    assert (out["track_type"][bad] == -1).all()
    for name, sentinel in SENTINELS.items():
        assert (out[name][bad] == sentinel).all(), name
    assert (out["global_pid"][bad][:, :4] == -1000.0).all() and (out["global_pid"][bad][:, 4:] == -1.0).all()
    for name, values in out.items():
        assert np.isfinite(values.astype(np.float64)).all(), name
    alone = _infer(triton.grpc_url, {name: value[~bad] for name, value in good.items()})
    for name in out:
        np.testing.assert_array_equal(out[name][~bad], alone[name], err_msg=name)


def test_an_empty_batch_is_refused_and_the_server_keeps_serving(triton: Any) -> None:
    """Triton core refuses it (before any model runs), naming an input; the client never sends one."""
    empty = {name: value[:0] for name, value in _particles(1).items()}
    with pytest.raises(InferenceServerException) as refused:
        _infer(triton.grpc_url, empty)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input byte size mismatch for input" in str(refused.value)
    assert _infer(triton.grpc_url, _particles(2))["track_type"].shape == (2, 1)
    with ServerPool([triton.grpc_url]) as pool, pytest.raises(ValueError, match="at least one particle"):
        pool.infer(0, empty)
