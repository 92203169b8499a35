"""The served PV model agrees with SQLamarr 0.0rc7's PVReconstruction on the LHCb HepMC2 crossings."""

from __future__ import annotations

import numpy as np
import pytest

from ufsim_export.validation import pv_sqlamarr


@pytest.fixture(scope="module")
def sqlamarr() -> dict:
    files = sorted(pv_sqlamarr.DATA.glob("evt*.mc2"))
    if not files:
        pytest.skip(f"no HepMC2 files under {pv_sqlamarr.DATA} (needs ../shared beside the repository)")
    if not pv_sqlamarr.SQLAMARR_PYTHON.is_file():
        pytest.skip("SQLamarr environment absent: run `make venv-sqlamarr` (make test does)")
    return pv_sqlamarr.run_sqlamarr(files, pv_sqlamarr.DATA / "PrimaryVertexSmearing.db", repeats=80, seed=3)


def test_same_primary_vertices_as_the_client_reader(sqlamarr: dict) -> None:
    from ufsim_client import read_hepmc

    ours = np.concatenate([e.primary_vertices for e in read_hepmc(sorted(pv_sqlamarr.DATA.glob("evt*.mc2")))])
    theirs = np.unique(sqlamarr["true"], axis=0)
    assert len(theirs) == len(ours) == 26
    np.testing.assert_allclose(np.unique(ours.astype(np.float32), axis=0), theirs, atol=1e-5)


def test_residuals_and_uncertainties_agree(sqlamarr: dict) -> None:
    vertices = np.unique(sqlamarr["true"], axis=0)
    true, reco, error = pv_sqlamarr.served_smearing(vertices, repeats=80, seed=3)
    rows = pv_sqlamarr.compare(reco - true, sqlamarr["reco"] - sqlamarr["true"])
    for row in rows:
        assert row["n_ufsim"] == row["n_sqlamarr"] == 26 * 80
        assert row["ks_pvalue"] > 1e-3, row
        assert row["w68_ufsim"] == pytest.approx(row["w68_sqlamarr"], rel=0.1), row
    np.testing.assert_allclose(np.unique(error, axis=0), np.unique(sqlamarr["sigma"], axis=0), rtol=1e-6)
