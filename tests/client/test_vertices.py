"""Primary vertices and impact parameters: the geometry, and the served PV model end to end."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ufsim_client import MemoryWriter, RetryPolicy, particle_gun, read_hepmc, simulate
from ufsim_client.keys import pv_keys
from ufsim_client.vertices import NO_VALUE, impact_parameters


def _cov(**entries: float) -> np.ndarray:
    """Upper triangle (15,) of a (x, y, tx, ty, q/p) covariance with the given entries (e.g. c00=1)."""
    full = np.zeros((5, 5))
    for name, value in entries.items():
        i, j = int(name[1]), int(name[2])
        full[i, j] = full[j, i] = value
    return full[np.triu_indices(5)]


def test_ip_is_the_distance_of_closest_approach() -> None:
    rng = np.random.default_rng(3)
    n = 200
    state = np.column_stack(
        [
            rng.normal(0, 1, n),
            rng.normal(0, 1, n),
            rng.normal(0, 50, n),
            rng.normal(0, 0.2, n),
            rng.normal(0, 0.2, n),
        ]
    )
    pv = rng.normal(0, [0.05, 0.05, 50], (n, 3))
    ip, _ = impact_parameters(state, np.tile(_cov(c00=1e-3, c11=1e-3), (n, 1)), pv, np.full((n, 3), 0.01))
    point = state[:, :3]
    direction = np.column_stack([state[:, 3], state[:, 4], np.ones(n)])
    expected = np.linalg.norm(np.cross(pv - point, direction), axis=1) / np.linalg.norm(direction, axis=1)
    np.testing.assert_allclose(ip, expected, rtol=1e-9, atol=1e-12)


def test_ipchi2_adds_track_and_pv_variances_along_the_ip() -> None:
    # A track parallel to the beam at x = 0.1 mm, PV at the origin: the IP is along x.
    state = np.array([[0.1, 0.0, 0.0, 0.0, 0.0]])
    ip, chi2 = impact_parameters(
        state, _cov(c00=4e-4, c11=9.0), np.zeros((1, 3)), np.array([[0.02, 5.0, 5.0]])
    )
    assert ip[0] == pytest.approx(0.1)
    assert chi2[0] == pytest.approx(0.01 / (4e-4 + 0.02**2))
    # The state 10 mm upstream of the PV: x's variance grows with the slope's (and their covariance).
    state = np.array([[0.1, 0.0, -10.0, 0.0, 0.0]])
    ip, chi2 = impact_parameters(
        state, _cov(c00=4e-4, c02=1e-6, c22=1e-6), np.zeros((1, 3)), np.zeros((1, 3))
    )
    assert chi2[0] == pytest.approx(0.01 / (4e-4 + 2 * 10 * 1e-6 + 100 * 1e-6))


def test_pv_keys_never_meet_particle_keys() -> None:
    from ufsim_client.keys import rng_keys

    particles = rng_keys(7, np.repeat(np.arange(20), 500), np.tile(np.arange(500), 20))
    vertices = pv_keys(7, np.repeat(np.arange(20), 8), np.tile(np.arange(8), 20))
    assert not set(particles.tolist()) & set(vertices.tolist())
    assert len(set(vertices.tolist())) == 160


def _run(events: Any, url: str, **options: Any) -> dict[str, np.ndarray]:
    writer = MemoryWriter()
    simulate(events, [url], writer, seed=4, retry=RetryPolicy(total_timeout=60), **options)
    return writer.columns()


@pytest.mark.triton
def test_served_pvs_and_ips_on_the_lhcb_crossings(triton: Any, hepmc_files: list[Path]) -> None:
    pv = pytest.importorskip("ufsim_export.graphs.pv")
    events = list(read_hepmc(hepmc_files))
    out = _run(events, triton.grpc_url, batch_size=97)
    # Every particle's own PV is its collision's, reconstructed by the served model from its key.
    true = np.column_stack([out[f"TRUEOWNPV_{a}"] for a in "XYZ"])
    own = np.concatenate([e.own_pv for e in events])
    expected_true = np.concatenate([e.primary_vertices[e.own_pv] for e in events])
    np.testing.assert_allclose(true, expected_true, rtol=0, atol=1e-5)
    keys = pv_keys(4, out["eventNumber"], own)
    position, error = pv.reconstruct(pv.load_parameters(), expected_true.astype(np.float32), keys)
    np.testing.assert_array_equal(np.column_stack([out[f"OWNPV_{a}"] for a in "XYZ"]), position)
    np.testing.assert_array_equal(np.column_stack([out[f"OWNPV_{a}ERR"] for a in "XYZ"]), error)
    np.testing.assert_array_equal(
        out["nPVs"], np.repeat([len(e.primary_vertices) for e in events], [len(e) for e in events])
    )
    assert out["nPVs"].sum() > 0 and set(out["nPVs"].tolist()) > {1}
    tracks = out["TRACK_Type"] > 0
    assert (out["IP_OWNPV"][tracks] >= 0).all() and (out["IPCHI2_OWNPV"][tracks] >= 0).all()
    assert (out["IP_OWNPV"][~tracks] == NO_VALUE).all()
    # The same PVs whatever the batching (a PV's particles may span several requests).
    other = _run(events, triton.grpc_url, batch_size=5000)
    for name in ("OWNPV_X", "OWNPV_Z", "OWNPV_ZERR"):
        np.testing.assert_array_equal(other[name], out[name], err_msg=name)


@pytest.fixture
def triton_without_pv(toy_repository: Path, tmp_path: Path) -> Iterator[Any]:
    """A Triton serving the pipeline but no pv_reconstruction model (an older repository)."""
    serve = pytest.importorskip("ufsim_serve")
    repository = tmp_path / "repository"
    shutil.copytree(toy_repository, repository, ignore=shutil.ignore_patterns("pv_reconstruction"))
    with serve.LocalTriton(repository, log_path=tmp_path / "triton.log") as server:
        yield server


@pytest.mark.triton
def test_server_without_the_pv_model_leaves_sentinels(
    triton_without_pv: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        out = _run(particle_gun("n=20", seed=1, n_events=3), triton_without_pv.grpc_url)
    assert "do not serve 'pv_reconstruction'" in caplog.text
    assert len(out["OWNPV_X"]) == 60
    assert (out["OWNPV_X"] == NO_VALUE).all() and (out["IPCHI2_OWNPV"] == NO_VALUE).all()
    assert (out["TRUEOWNPV_Z"] != NO_VALUE).all()


@pytest.mark.triton
def test_a_pv_model_with_other_tensors_is_a_contract_error(triton: Any) -> None:
    from ufsim_client import ContractError, ServerPool
    from ufsim_client.vertices import PvReconstruction

    with ServerPool([triton.grpc_url], retry=RetryPolicy(total_timeout=60)) as pool:
        with pytest.raises(ContractError, match="true_pv"):
            PvReconstruction(pool, model="tracking_resolution").available()
        assert not PvReconstruction(pool, model="no_such_model").available()
