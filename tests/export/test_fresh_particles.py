"""Fresh validation particles: new Pythia runs and the HepMC2 crossings through the served features
graph, the library's own probabilities, a cache keyed by the sources, and reconstructed tracks drawn from
them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ufsim_export.training import library, tracking
from ufsim_export.validation import fresh_particles
from ufsim_export.validation.fresh_particles import FreshSource

TINY = (
    FreshSource("pythia_minbias", "minbias.cmnd", 101, 3),
    FreshSource("pythia_bbbar", "bbbar.cmnd", 102, 2),
)


@pytest.fixture(scope="module")
def data(library_data: Path) -> Path:
    return library_data


def test_fresh_particles_carry_served_features_and_library_probabilities(data: Path, tmp_path: Path) -> None:
    frame = fresh_particles.particle_frame(data, TINY, cache_dir=tmp_path)
    cols = tracking.Columns.from_spec()
    expected = ["source", *cols.tracking_features, "acceptance", *tracking.EFFICIENCY_LABELS]
    assert list(frame.columns) == expected
    assert set(frame["source"]) == {"pythia_minbias", "pythia_bbbar"}
    # simulated species only, going forward; η from the slopes as the features graph computes it
    flags = frame[["mc_is_e", "mc_is_mu", "mc_is_h"]].to_numpy()
    assert np.all(flags.sum(axis=1) == 1)
    theta = np.arctan(np.hypot(frame["mc_tx"], frame["mc_ty"]))
    np.testing.assert_allclose(frame["mc_eta"], -np.log(np.tan(theta / 2)), rtol=2e-4, atol=2e-4)
    features = frame[list(cols.tracking_features)].to_numpy(np.float32)
    acceptance, efficiency = library.probabilities(data, features)
    np.testing.assert_array_equal(frame["acceptance"], acceptance)
    np.testing.assert_allclose(frame[list(tracking.EFFICIENCY_LABELS)].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(frame[list(tracking.EFFICIENCY_LABELS)], efficiency)


def test_fresh_particles_are_cached_per_run_and_tracks_are_drawn_from_them(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = fresh_particles.particle_frame(data, TINY, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("fresh-particles-*.parquet"))) == 1

    def no_pythia(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached particles should have been read")

    monkeypatch.setattr(fresh_particles, "pythia_records", no_pythia)
    frame, tracks = fresh_particles.fresh_tracks(data, TINY, 200, cache_dir=tmp_path)
    assert frame.equals(first)
    assert len(tracks) == 200 and tracks.seed == fresh_particles.FRESH_SEED
    # every track's slopes and momentum are a fresh particle's
    known = {(round(tx, 5), round(p, 5)) for tx, p in zip(frame["mc_tx"], frame["mc_log10_p"], strict=True)}
    drawn = {(round(float(tx), 5), round(float(p), 5)) for tx, p in tracks.conditions[:, [3, 5]]}
    assert drawn <= known
    # another run (a different seed) is another cache entry
    monkeypatch.undo()
    other = (FreshSource("pythia_minbias", "minbias.cmnd", 103, 3),)
    fresh_particles.particle_frame(data, other, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("fresh-particles-*.parquet"))) == 2


def test_hepmc_crossings_are_a_source_and_a_missing_folder_is_named(data: Path, tmp_path: Path) -> None:
    frame = fresh_particles.particle_frame(data, fresh_particles.HEPMC_SOURCES, cache_dir=tmp_path)
    assert set(frame["source"]) == {"hepmc2_crossings"}
    assert 1000 < len(frame) <= 1682  # the simulated species going forward, of the 1,682 to simulate
    assert frame["acceptance"].between(0, 1).all() and (frame["acceptance"] > 0.5).any()
    elsewhere = tmp_path / "data" / "lamarr-trk-2016MU"
    with pytest.raises(FileNotFoundError, match="lamarr-hepmc2/evt"):
        fresh_particles.HEPMC_SOURCES[0].files(elsewhere)
