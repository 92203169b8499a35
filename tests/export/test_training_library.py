"""Labels from the Lamarr tracking library itself: the ctypes calls reproduce the shared labels and
particle probabilities bit for bit, labelled sets are cached and reused, noise regenerates per chunk, bad
input is refused by name; and the distillation helpers (student inputs in the contract's order, parity
statistics)."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ufsim_export.training import distill, library, tracking
from ufsim_export.validation.tracking_library import served_ndof, tail_aware_error


@pytest.fixture(scope="module")
def data(library_data: Path) -> Path:
    return library_data


@pytest.fixture(scope="module")
def small_set(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[library.LabelledSet, Path]:
    particles, val = tracking.load_particles(data)
    cache = tmp_path_factory.mktemp("cache")
    subset = particles[val].iloc[:5000].reset_index(drop=True)
    return library.labelled_set(data, subset, 300, seed=11, cache_dir=cache, workers=2), cache


def test_library_reproduces_the_shared_labels(data: Path) -> None:
    df, _ = tracking.load_tracks(data)
    cols = tracking.Columns.from_spec()
    rows = df.iloc[:200]
    lib = library._load(str(library.library_path(data)))
    noise = tracking.noise_module(data)
    z_res = noise.noise(noise.RESOLUTION_KEY, 0, 200)[rows["noise_row"].to_numpy()]
    got = library.call_library(lib, "resolution", rows[list(cols.resolution_conditions)].to_numpy(), z_res)
    np.testing.assert_array_equal(got, rows[list(cols.resolution_outputs)].to_numpy(np.float32))
    z_cov = noise.noise(noise.COVARIANCE_KEY, 0, 200)[rows["noise_row"].to_numpy()]
    cov_cond = library.covariance_conditions(rows[list(cols.resolution_conditions)].to_numpy(), got)
    got_cov = library.call_library(lib, "covariance", cov_cond, z_cov)
    np.testing.assert_array_equal(got_cov, rows[list(cols.covariance_outputs)].to_numpy(np.float32))


def test_library_probabilities_reproduce_the_shared_particles(data: Path) -> None:
    particles = pd.read_parquet(data / tracking.ACCEPTANCE_FILE).iloc[:: 600_000 // 3000]
    features = particles[list(tracking.Columns.from_spec().tracking_features)].to_numpy(np.float32)
    acceptance, efficiency = library.probabilities(data, features, workers=2)
    np.testing.assert_array_equal(acceptance, particles["acceptance"].to_numpy(np.float32))
    expected = particles[list(tracking.EFFICIENCY_LABELS)].to_numpy(np.float32)
    np.testing.assert_array_equal(efficiency, expected)
    empty_acc, empty_eff = library.probabilities(data, features[:0])
    assert empty_acc.shape == (0,) and empty_eff.shape == (0, 4)


def test_labelled_set_matches_the_library_and_is_reused_from_cache(
    data: Path, small_set: tuple[library.LabelledSet, Path]
) -> None:
    labelled, cache = small_set
    assert len(labelled) == 300
    files = list(cache.glob("tracks-300-11-*.npz"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    particles, val = tracking.load_particles(data)
    again = library.labelled_set(
        data, particles[val].iloc[:5000].reset_index(drop=True), 300, seed=11, cache_dir=cache
    )
    assert files[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.resolution, labelled.resolution)
    lib = library._load(str(library.library_path(data)))
    direct = library.call_library(lib, "resolution", labelled.conditions, labelled.noise("resolution"))
    np.testing.assert_array_equal(direct, labelled.resolution)
    direct_cov = library.call_library(
        lib, "covariance", labelled.covariance_conditions(), labelled.noise("covariance")
    )
    np.testing.assert_array_equal(direct_cov, labelled.covariance)
    # tracks only: one-hot track type, species flags, and the CTB point really is closest to the beam
    assert np.all(labelled.conditions[:, 9:].sum(axis=1) == 1)
    ctb = labelled.conditions.astype(np.float64)
    np.testing.assert_allclose(ctb[:, 0] * ctb[:, 3] + ctb[:, 1] * ctb[:, 4], 0, atol=1e-5)


def test_balanced_draw_lifts_sparse_corners_and_is_cached_apart(data: Path, tmp_path: Path) -> None:
    particles, val = tracking.load_particles(data)
    train = particles[~val].reset_index(drop=True)

    def corner_share(conditions: np.ndarray) -> float:
        log10p, eta = library.log10p_eta(conditions)
        return float(np.mean((eta > 4.5) & (log10p < 4.0)))

    natural = library.sample_track_conditions(train, 40_000, np.random.default_rng(5))
    balanced = library.sample_track_conditions(train, 40_000, np.random.default_rng(5), balance=0.75)
    assert balanced.shape == natural.shape and np.all(balanced[:, 9:].sum(axis=1) == 1)
    assert corner_share(balanced) > 2 * corner_share(natural) > 0
    assert len(np.unique(balanced, axis=0)) > 0.5 * len(balanced)  # mostly distinct tracks, not copies
    subset = train.iloc[:3000].reset_index(drop=True)
    plain = library.labelled_set(data, subset, 40, seed=3, cache_dir=tmp_path)
    lifted = library.labelled_set(data, subset, 40, seed=3, cache_dir=tmp_path, balance=0.75)
    assert len(list(tmp_path.glob("tracks-40-3-*.npz"))) == 2
    assert not np.array_equal(plain.conditions, lifted.conditions)


def test_noise_chunks_regenerate_alone_and_streams_differ() -> None:
    n = library.CHUNK_ROWS + 100
    full = library.noise_rows(3, library.RESOLUTION_STREAM, n)
    assert full.shape == (n, 128) and full.dtype == np.float32
    np.testing.assert_array_equal(full[library.CHUNK_ROWS :], library.noise_chunk(3, 1, 1, 100))
    other = library.noise_rows(3, library.COVARIANCE_STREAM, n)
    assert not np.allclose(full, other)
    assert abs(float(full.mean())) < 0.01 and abs(float(full.std()) - 1) < 0.01


def test_missing_library_and_bad_input_are_refused_by_name(data: Path, tmp_path: Path) -> None:
    with pytest.raises(library.LibraryError, match="library/\\*.so"):
        library.library_path(tmp_path)
    lib = library._load(str(library.library_path(data)))
    with pytest.raises(ValueError, match="conditions"):
        library.call_library(lib, "covariance", np.zeros((2, 12)), np.zeros((2, 128)))
    with pytest.raises(ValueError, match="noise"):
        library.call_library(lib, "resolution", np.zeros((2, 12)), np.zeros((2, 64)))
    with pytest.raises(ValueError, match="kind"):
        library.call_library(lib, "efficiency", np.zeros((2, 12)), np.zeros((2, 128)))
    with pytest.raises(ValueError, match="features: shape"):
        library.call_probability(lib, "acceptance", np.zeros((2, 15)))
    with pytest.raises(ValueError, match="kind"):
        library.call_probability(lib, "resolution", np.zeros((2, 12)))
    empty = pd.DataFrame({c: [0.0] for c in ("acceptance", *library.EFFICIENCY_COLUMNS)})
    with pytest.raises(ValueError, match="reconstructed"):
        library.sample_track_conditions(empty, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n=0"):
        library.labelled_set(data, empty, 0, seed=0, cache_dir=None)


def test_student_inputs_follow_the_contract(small_set: tuple[library.LabelledSet, Path]) -> None:
    labelled, _ = small_set
    cols = tracking.Columns.from_spec()
    cond, noise, out = distill.student_inputs("tracking_covariance", labelled)
    assert cond.shape[1] == len(cols.covariance_conditions) and out.shape[1] == len(cols.covariance_outputs)
    quality = [cols.covariance_conditions.index(c) for c in ("chi2PerDoF", "nDoF_f", "ghostProb")]
    np.testing.assert_array_equal(cond[:, quality], labelled.resolution[:, 6:9])
    np.testing.assert_array_equal(noise, labelled.noise("covariance"))
    with pytest.raises(ValueError, match="step"):
        distill.student_inputs("rich", labelled)


def test_parity_and_fidelity_statistics() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 2.0, (10_000, 2))
    stats = distill.parity(ref + 0.2, ref, ("a", "b"))
    assert stats["a"]["median"] == pytest.approx(0.1, rel=0.05) and stats["b"]["p99"] == pytest.approx(
        0.1, rel=0.05
    )
    assert distill.parity(ref, ref, ("a", "b"))["a"] == {"median": 0.0, "p99": 0.0}
    # 1e-4 σ near zero passes the tail-aware criterion; 1e-4 relative on a large value does not
    y = np.array([[1e-6], [2.0], [-2.0]])
    sigma = float(y.std())
    assert tail_aware_error(y, y + np.array([[1e-4 * sigma], [0], [0]])) == pytest.approx(1e-5, rel=1e-6)
    assert tail_aware_error(y * 1e6, y * 1e6 * (1 + 1e-4)) > 1e-5
    np.testing.assert_array_equal(served_ndof(np.array([0.3, 4.99, 17.0])), [1.0, 4.0, 17.0])


def test_workers_are_niced(data: Path) -> None:
    path = str(library.library_path(data))
    with ProcessPoolExecutor(1, initializer=library._init_worker, initargs=(path,)) as pool:
        assert pool.submit(os.nice, 0).result() == max(os.nice(0), library.WORKER_NICE)
