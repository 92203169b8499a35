"""The parametric PID calibration sample: contract (columns, sentinels, determinism) and its physics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("scipy")
pytest.importorskip("pandas")

from ufsim_export.spec import default_spec_path, load_spec
from ufsim_export.training import calibration
from ufsim_export.training.calibration import (
    COLUMNS,
    GLOBAL_COLUMNS,
    MASS_MEV,
    MUON_COLUMNS,
    MUON_SENTINEL,
    PID_FEATURES,
    PROBNN_COLUMNS,
    RICH1,
    RICH2,
    SPECIES,
)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    return calibration.generate(100_000, seed=7)


def _p_gev(frame: pd.DataFrame) -> np.ndarray:
    return 10 ** frame["mc_log10_p"].to_numpy() / 1e3


def test_columns_follow_the_spec(sample: pd.DataFrame) -> None:
    spec = load_spec(default_spec_path())
    assert list(PID_FEATURES) == list(spec.tensor("pid_features").columns)
    assert list(calibration.RICH_COLUMNS) == list(spec.tensor("rich_dll").columns)
    assert list(MUON_COLUMNS) == list(spec.tensor("muon_ll").columns)
    assert list(GLOBAL_COLUMNS) == list(spec.tensor("global_pid").columns)
    assert MUON_SENTINEL == spec.tensor("muon_ll").sentinel_values()[0]
    assert list(sample.columns) == list(COLUMNS)


def test_deterministic_and_seed_dependent() -> None:
    a = calibration.generate(2_000, seed=3)
    b = calibration.generate(2_000, seed=3)
    c = calibration.generate(2_000, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["RichDLLk"], c["RichDLLk"])


def test_domain_one_hot_and_species(sample: pd.DataFrame) -> None:
    p = _p_gev(sample)
    assert p.min() >= 2.0 and p.max() <= 200.0
    assert sample["mc_eta"].between(1.5, 5.5).all()
    assert sample["n_tracks"].between(0, 600).all()
    assert set(sample["mc_charge"].unique()) == {-1.0, 1.0}
    one_hot = sample[[f"is_{s}" for s in SPECIES]].to_numpy()
    assert np.all(one_hot.sum(axis=1) == 1)
    assert np.all(np.array(SPECIES)[one_hot.argmax(axis=1)] == sample["species"].to_numpy())
    assert sample["species"].value_counts().min() == 20_000
    assert (sample["sweight"] == 1.0).all()


def test_muon_sentinel_and_probnn_sum(sample: pd.DataFrame) -> None:
    no_muon = sample["isMuon"] == 0
    assert (sample.loc[no_muon, list(MUON_COLUMNS)] == MUON_SENTINEL).all().all()
    ll = sample.loc[~no_muon, list(MUON_COLUMNS)].to_numpy()
    assert np.all((ll <= 0.0) & (ll >= -10.5))
    probs = sample[list(PROBNN_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert np.all((probs >= 0) & (probs <= 1))
    assert sample[list(COLUMNS[:9]) + list(GLOBAL_COLUMNS)].notna().all().all()


def test_species_selection_and_bad_arguments() -> None:
    only_k = calibration.generate(500, seed=1, species="K")
    assert set(only_k["species"]) == {"K"}
    two = calibration.generate(501, seed=1, species=["mu", "p"])
    assert two["species"].value_counts().to_dict() == {"mu": 251, "p": 250}
    assert len(calibration.generate(0, seed=1)) == 0
    with pytest.raises(ValueError, match="unknown species"):
        calibration.generate(10, seed=1, species="kaon")
    with pytest.raises(ValueError, match="background_fraction"):
        calibration.generate(10, seed=1, background_fraction=1.0)


def test_cherenkov_thresholds() -> None:
    """p_th = m / sqrt(n^2 - 1) for the Run 2 gas radiators (values of the LHCb RICH papers)."""
    expected = {RICH1: {"pi": 2.6, "K": 9.3, "p": 17.7}, RICH2: {"pi": 4.4, "K": 15.6, "p": 29.7}}
    for radiator, values in expected.items():
        for species, p_gev in values.items():
            assert radiator.threshold_mev(MASS_MEV[species]) / 1e3 == pytest.approx(p_gev, abs=0.1)


def test_rich_kaon_separation_turns_on_saturates_and_degrades(sample: pd.DataFrame) -> None:
    p = _p_gev(sample)
    k = (sample["species"] == "K").to_numpy()
    pi = (sample["species"] == "pi").to_numpy()
    dll = sample["RichDLLk"].to_numpy()

    def sep(lo: float, hi: float, extra: np.ndarray | None = None) -> float:
        sel = (p > lo) & (p < hi) & (np.ones_like(k) if extra is None else extra)
        return float(np.median(dll[sel & k]) - np.median(dll[sel & pi]))

    below = (p < 2.5) & pi
    assert abs(np.median(dll[below])) < 1.0, "pions below their threshold give no kaon information"
    assert sep(10, 30) > 40.0, "above the kaon threshold K and pi separate"
    assert sep(100, 200) < 0.3 * sep(10, 30), "Cherenkov angles converge at high momentum"
    occ = sample["n_tracks"].to_numpy()
    assert sep(10, 30, occ > 300) < sep(10, 30, occ < 80), "occupancy degrades the separation"
    below_kaon = (p > 3) & (p < 9) & (sample["species"] == "p").to_numpy()
    diff = sample["RichDLLp"].to_numpy()[below_kaon] - dll[below_kaon]
    assert np.median(np.abs(diff)) < 1.0, "below the kaon threshold DLLp ~ DLLK"


def test_electron_rich_and_calorimeter(sample: pd.DataFrame) -> None:
    p = _p_gev(sample)
    low = p < 10
    e = (sample["species"] == "e").to_numpy()
    assert np.median(sample["RichDLLe"].to_numpy()[low & e]) > 20
    assert np.median(sample["PIDe"].to_numpy()[e]) > np.median(sample["RichDLLe"].to_numpy()[e])


def test_is_muon_turn_on_and_misid(sample: pd.DataFrame) -> None:
    p = _p_gev(sample)
    is_muon = sample["isMuon"].to_numpy()
    species = sample["species"].to_numpy()
    mu = species == "mu"
    assert is_muon[mu & (p < 3)].mean() < 0.01, "muons below 3 GeV do not reach M3"
    central = sample["mc_eta"].between(2.5, 4.5).to_numpy()
    assert is_muon[mu & (p > 20) & central].mean() > 0.96
    assert is_muon[mu & (p > 3) & (p < 5)].mean() < is_muon[mu & (p > 10)].mean()
    pi = species == "pi"
    assert 0.002 < is_muon[pi].mean() < 0.03, "pion mis-ID ~1 % (decays in flight)"
    assert is_muon[pi & (p > 4) & (p < 8)].mean() > is_muon[pi & (p > 40)].mean(), "decays rise at low p"
    kaon = species == "K"
    assert is_muon[kaon & (p < 10)].mean() > is_muon[pi & (p < 10)].mean(), "K decays more per metre"
    assert is_muon[species == "p"].mean() < 0.005


def test_muon_likelihoods_separate(sample: pd.DataFrame) -> None:
    sel = sample["isMuon"] == 1
    muon_dll = (sample["MuonMuLL"] - sample["MuonBgLL"])[sel]
    species = sample["species"][sel]
    assert muon_dll[species == "mu"].median() > 1.0
    assert (
        sample["PIDmu"][sample["species"] == "mu"].median()
        > sample["PIDmu"][sample["species"] == "pi"].median()
    )
    assert sample["ProbNNmu"][sample["species"] == "mu"].mean() > 0.2


def test_latent_quality_correlates_detectors(sample: pd.DataFrame) -> None:
    """The global PID is built on the RICH response: combined and RICH DLLs are strongly correlated."""
    k = sample[sample["species"] == "K"]
    assert np.corrcoef(k["RichDLLk"], k["PIDK"])[0, 1] > 0.95
    assert np.corrcoef(k["PIDK"], np.log(k["ProbNNk"]))[0, 1] > 0.3


def test_sweights_reproduce_the_signal() -> None:
    mixed = calibration.generate(30_000, seed=11, species="K", background_fraction=0.35)
    assert {"mass", "is_signal"} <= set(mixed.columns)
    w = mixed["sweight"].to_numpy()
    n_signal = int(mixed["is_signal"].sum())
    assert w.sum() == pytest.approx(n_signal, abs=4 * np.sqrt(len(mixed) * 0.35))
    assert (w < 0).any(), "background-like masses get negative sWeights"
    signal = mixed[mixed["is_signal"] == 1]
    for column in ("RichDLLk", "mc_log10_p", "isMuon", "PIDp"):
        truth = signal[column].mean()
        weighted = np.average(mixed[column], weights=w)
        unweighted = mixed[column].mean()
        assert abs(weighted - truth) < 0.3 * abs(unweighted - truth), column


def test_fit_sweights_recovers_yields() -> None:
    rng = np.random.default_rng(5)
    peak, res, lo, hi = calibration.CHANNELS["p"]
    sig = rng.normal(peak, res, 4000)
    sig = sig[(sig > lo) & (sig < hi)]
    bkg = rng.uniform(lo, hi, 6000)
    weights, info = calibration.fit_sweights(np.concatenate([sig, bkg]), "p")
    assert info["n_signal"] == pytest.approx(len(sig), rel=0.05)
    assert info["mu"] == pytest.approx(peak, abs=0.2)
    assert weights.sum() == pytest.approx(info["n_signal"], rel=1e-6)
