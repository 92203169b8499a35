"""Parametric LHCb PID calibration sample: the truth that ufsim's PID models are trained on.

No public LHCb PID model or calibration sample exists, so this module simulates one from first
principles, with enough physics that the learnt models face the same structure as Lamarr's
(thresholds, saturation, momentum/occupancy/acceptance dependence, mis-identification mechanisms,
correlations between detectors). It is a *parametrisation*, not a detector simulation: every number
below is an order-of-magnitude LHCb Run 2 value, chosen and documented here, not a measurement.

Per track the chain is

1. **Kinematics and event** (:func:`_kinematics`): pseudorapidity ``η ~ N(3.2, 0.8)`` and transverse
   momentum ``pT ~ Gamma(k=2, θ=0.55 GeV)`` (0.75 GeV for muons and protons, which come from heavier
   parents in calibration channels: J/ψ → μμ, Λ → pπ), ``p = pT cosh η``, accepted by rejection in
   the kinematic domain ``2 < p < 200 GeV``, ``1.5 < η < 5.5``. This gives a spectrum falling above
   ~10 GeV and the LHCb p-η correlation (forward tracks are harder). Occupancy ``n_tracks`` (charged
   tracks with 2 < η < 5 in the event) ``~ Gamma(k=2.5, θ=60)``, mean 150, rounded and clipped to
   [0, 600]. Charge ±1 with equal probability.
2. **Latent track quality** ``q ~ N(0, 1)``: one number per track shared by every sub-detector
   (hit purity, ring overlap, matching quality). Worse tracks (q > 0) get wider Cherenkov rings, more
   background photons, larger muon-hit distances and a worse calorimeter match, so RICH, Muon and
   global PID responses are correlated the way real ones are.
3. **RICH** (:func:`_rich`): the two Run 2 gas radiators, RICH1 C4F10 (n − 1 = 1.4e-3) and RICH2 CF4
   (n − 1 = 5e-4); the aerogel was removed for Run 2. A particle of mass m radiates above
   ``p_th = m / sqrt(n² − 1)`` (C4F10: π 2.6, K 9.3, p 17.7 GeV; CF4: π 4.4, K 15.6, p 29.7 GeV) at
   ``cos θ_c = 1/(n β)`` with a yield ``N ∝ sin² θ_c`` (N0 = 22 photons at saturation in RICH1,
   17 in RICH2). Each radiator sees the track with a geometric fraction ``f(η)`` of its ring (RICH1
   25-300 mrad ≈ 1.9 < η < 4.4, RICH2 15-120 mrad ≈ 2.8 < η < 4.9, with soft edges), so rings at the
   acceptance edges are partial. Per photon the single-photon angular resolution is 1.6 mrad (RICH1)
   and 0.7 mrad (RICH2), degraded by occupancy ``× (1 + n_tracks/500)``; background photons from
   other rings scale with occupancy. For every hypothesis H ∈ {e, μ, π, K, p} the extended
   likelihood of the observed photons is evaluated with a Gaussian ring at θ_H plus a flat
   background, and ``RichDLLX = ln L_X − ln L_π`` summed over radiators. So DLL(X − π) is ~0 below
   both thresholds, grows above threshold (photon counting, then angle), saturates, and shrinks at
   high momentum as the angles converge (Δθ ≈ (m_X² − m_π²)/(2 p² θ)), with occupancy (resolution
   and background) and at the η edges. Below the kaon threshold the K and p hypotheses predict the
   same (no) light: ``RichDLLp ≈ RichDLLk``, as in real data.
4. **isMuon** (:func:`_is_muon`): muon stations M2-M5 behind the calorimeters and iron; a muon
   reaches station s if its range (momentum with 8 % straggling) exceeds 2.5, 3.0, 4.5, 5.5 GeV
   (M2...M5) and each reached station fires with 99.7 % efficiency inside the muon-system
   acceptance 1.8 < η < 5.3 (soft edges). LHCb's isMuon requires hits in M2 and M3 for
   3 < p < 6 GeV, M2, M3 and (M4 or M5) for 6 < p < 10 GeV and all of M2-M5 above 10 GeV: the
   efficiency turns on from ~3 GeV to ~98 %.
   Hadrons give muon hits by (a) **decay in flight** π/K → μν before the calorimeter, probability
   ``BR (1 − exp(−L m / (p cτ)))`` with L = 5 m of decay length where the kink still gives a long track
   and a matched muon (cτ_π = 7.80 m, cτ_K = 3.71 m, BR(K → μν) = 0.64), the muon carrying a fraction
   of p uniform between (m_μ/m_h)² and 1 — rising at low p; (b) **punch-through** of the hadronic
   shower, ``0.5 % (1 − exp(−p/40 GeV))`` — rising at high p; (c) **random hits** in the
   momentum-dependent field of interest (multiple scattering ∝ 1/p), a Poisson rate per station
   growing with n_tracks. Mis-ID is ~1 % for pions, a few % for low-p kaons, below 1 % for protons.
5. **Muon likelihoods** (:func:`_muon_ll`, isMuon tracks only): the mean squared hit distance D² in
   units of the pad size follows ``Gamma(k=3, θ=0.35)`` for real muon hits (true muons and decay
   muons; wider by (1 + 3 GeV/p) from multiple scattering and by the track quality) and
   ``Gamma(k=2, θ=3.0)`` for random hits and punch-through. ``MuonMuLL = ln P_μ(D²' > D²)`` and
   ``MuonBgLL = ln P_bg(D²' < D²)`` (survival / cumulative of the reference shapes), each floored
   smoothly at −10: muons have MuonMuLL ≈ 0 and very negative MuonBgLL. Where isMuon = 0 both are
   the −1000 sentinel (``MUON_SENTINEL``).
6. **Global PID** (:func:`_global_pid`): combined DLLs ``PIDK = RichDLLk``, ``PIDp = RichDLLp`` plus
   a small calorimeter term, ``PIDe = RichDLLe + calo_e`` (electron E/p and shower-shape term:
   N(+7, 2.5) for electrons in the ECAL acceptance, N(−3, 2) for hadrons, N(−4, 1) for muons as
   MIPs, all degraded by the latent quality), ``PIDmu = RichDLLmu + MuonMuLL − MuonBgLL`` for
   isMuon tracks, ``RichDLLmu + ln(0.02/0.99)`` otherwise (failing isMuon costs a muon the 2 %
   inefficiency against a hadron's 99 %), plus a MIP term. ``ProbNN`` is a softmax over the five
   species of ``0.35 × combined DLL + ln(prior) + network noise`` (the network sees more than the
   DLLs and is less confident): five probabilities that sum to 1, correlated with the DLLs through
   the same latent quality.

Background-subtracted samples (``background_fraction > 0``): each species' calibration channel has
a discriminating mass (J/ψ → ee, J/ψ → μμ, D*-tagged D0 → Kπ for π and K, Λ → pπ) with a Gaussian
signal and an exponential combinatorial background; background probes are a mixture of species
(π 65 %, K 15 %, p 10 %, e 5 %, μ 5 %) with a softer spectrum, labelled with the channel's nominal
species. The mass is fitted (extended maximum likelihood) and sWeights are computed with the sPlot
formalism (Pivk & Le Diberder, NIM A 555 (2005) 356): ``sweight`` then reproduces the pure-signal
distribution of every variable independent of the mass. Pure samples have ``sweight = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import optimize, special, stats

from ..spec import default_spec_path, load_spec

_SPEC = load_spec(default_spec_path())
SPECIES: tuple[str, ...] = tuple(s.name for s in _SPEC.species)
"""Species names in the order of the one-hot columns (the spec's ``species``)."""
MASS_MEV: dict[str, float] = {
    "e": 0.51099895,
    "mu": 105.6583755,
    "pi": 139.57039,
    "K": 493.677,
    "p": 938.27208816,
}
PID_FEATURES: tuple[str, ...] = _SPEC.tensor("pid_features").columns
"""Conditions of every PID model: the spec's ``pid_features`` columns, in order."""
RICH_COLUMNS: tuple[str, ...] = _SPEC.tensor("rich_response").columns
MUON_COLUMNS: tuple[str, ...] = _SPEC.tensor("muon_response").columns
GLOBAL_COLUMNS: tuple[str, ...] = _SPEC.tensor("global_pid_response").columns
PROBNN_COLUMNS: tuple[str, ...] = tuple(c for c in GLOBAL_COLUMNS if c.startswith("ProbNN"))
MUON_SENTINEL = float(np.asarray(_SPEC.tensor("muon_ll").sentinel))
"""MuonMuLL / MuonBgLL where isMuon == 0 (the spec's ``muon_ll`` sentinel)."""
COLUMNS: tuple[str, ...] = (
    *PID_FEATURES,
    "species",
    "isMuon",
    *RICH_COLUMNS,
    *MUON_COLUMNS,
    *GLOBAL_COLUMNS,
    "sweight",
)
"""Columns of :func:`generate`; samples with background also carry ``mass`` and ``is_signal``."""

P_MIN_MEV, P_MAX_MEV = 2.0e3, 200.0e3
ETA_MIN, ETA_MAX = 1.5, 5.5
N_TRACKS_MAX = 600.0


@dataclass(frozen=True)
class Radiator:
    """One RICH gas radiator: refractive index, photon yield, resolution and η acceptance."""

    name: str
    n_minus_1: float
    n0_photons: float
    """photons of a saturated (β = 1) ring fully in acceptance"""
    sigma_mrad: float
    """single-photon Cherenkov-angle resolution at zero occupancy"""
    eta_lo: float
    eta_hi: float
    bkg_per_100_tracks: float
    """background photons under a ring per 100 tracks of occupancy"""

    def threshold_mev(self, mass: float) -> float:
        """Cherenkov threshold momentum m / sqrt(n² − 1)."""
        n = 1.0 + self.n_minus_1
        return float(mass / np.sqrt(n * n - 1.0))


RICH1 = Radiator("RICH1 C4F10", 1.4e-3, 22.0, 1.6, 1.9, 4.4, 10.0)
RICH2 = Radiator("RICH2 CF4", 5.0e-4, 17.0, 0.7, 2.8, 4.9, 8.0)
RADIATORS = (RICH1, RICH2)

CTAU_MM = {"pi": 7804.5, "K": 3711.0}
BR_MU = {"pi": 0.9999, "K": 0.6356}
DECAY_LENGTH_MM = 5000.0
STATION_RANGE_MEV = np.array([2500.0, 3000.0, 4500.0, 5500.0])
STATION_EFFICIENCY = 0.997
MUON_FAIL_PENALTY = float(np.log(0.02 / 0.99))
PROBNN_TEMPERATURE = 0.35
PROBNN_PRIOR = {"e": 0.05, "mu": 0.05, "pi": 0.6, "K": 0.2, "p": 0.1}

CHANNELS: dict[str, tuple[float, float, float, float]] = {
    "e": (3096.9, 40.0, 2800.0, 3300.0),
    "mu": (3096.9, 14.0, 2950.0, 3250.0),
    "pi": (1864.8, 8.0, 1810.0, 1920.0),
    "K": (1864.8, 8.0, 1810.0, 1920.0),
    "p": (1115.7, 2.0, 1100.0, 1135.0),
}
"""Calibration channel per species: (peak, resolution, window low, window high) of the mass, MeV."""
BACKGROUND_SLOPE_PER_MEV = {"e": -2.0e-3, "mu": -3.0e-3, "pi": -8.0e-3, "K": -8.0e-3, "p": -2.0e-2}
BACKGROUND_COMPOSITION = {"e": 0.05, "mu": 0.05, "pi": 0.65, "K": 0.15, "p": 0.10}


def _smooth_box(x: NDArray[Any], lo: float, hi: float, width: float = 0.08) -> NDArray[Any]:
    """Fraction of an acceptance lo < x < hi with soft edges of the given width."""
    return np.asarray(special.expit((x - lo) / width) * special.expit((hi - x) / width))


def _species_index(species: NDArray[Any]) -> NDArray[Any]:
    lookup = {s: i for i, s in enumerate(SPECIES)}
    return np.array([lookup[s] for s in species], dtype=np.int64)


def _kinematics(
    rng: np.random.Generator, n: int, species: NDArray[Any], *, soft: bool = False
) -> dict[str, NDArray[Any]]:
    """Momentum (MeV), η, occupancy and charge for ``n`` tracks; rejection sampling into the domain."""
    pt_scale = np.where(np.isin(species, ("mu", "p")), 750.0, 550.0)
    if soft:
        pt_scale = np.full(n, 400.0)
    p = np.empty(n)
    eta = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        e = rng.normal(3.2, 0.8, todo.size)
        pt = rng.gamma(2.0, pt_scale[todo])
        mom = pt * np.cosh(e)
        ok = (e > ETA_MIN) & (e < ETA_MAX) & (mom > P_MIN_MEV) & (mom < P_MAX_MEV)
        p[todo[ok]] = mom[ok]
        eta[todo[ok]] = e[ok]
        todo = todo[~ok]
    n_tracks = np.clip(np.round(rng.gamma(2.5, 60.0, n)), 0.0, N_TRACKS_MAX)
    charge = rng.choice(np.array([-1.0, 1.0]), n)
    return {"p": p, "eta": eta, "n_tracks": n_tracks, "charge": charge}


def _cherenkov(p: NDArray[Any], mass: float, radiator: Radiator) -> tuple[NDArray[Any], NDArray[Any]]:
    """Cherenkov angle (mrad, 0 below threshold) and sin²θ / sin²θ_max (photon-yield fraction)."""
    n = 1.0 + radiator.n_minus_1
    cos_theta = np.sqrt(p * p + mass * mass) / (n * p)
    above = cos_theta < 1.0
    cos_theta = np.where(above, cos_theta, 1.0)
    theta = np.arccos(cos_theta) * 1e3
    sin2_max = 1.0 - 1.0 / (n * n)
    return theta, np.where(above, (1.0 - cos_theta**2) / sin2_max, 0.0)


def _rich(
    rng: np.random.Generator, kin: dict[str, NDArray[Any]], true_mass: NDArray[Any], quality: NDArray[Any]
) -> NDArray[Any]:
    """RichDLLe, RichDLLmu, RichDLLk, RichDLLp (extended ring likelihoods, summed over radiators).

    Per radiator: signal photons ``n_s ~ Poisson(f(η) N0 y_true)``, background photons
    ``n_b ~ Poisson(B)`` with B ∝ occupancy, measured ring angle ``θ̂ ~ N(θ_true, σ/√n_s)``. For each
    hypothesis H with expected signal ``s_H = f(η) N0 y_H``: ``ln L_H = −(s_H + B) + n_s ln(s_H g(δ_H) + B u)
    + n_b ln((s_H + B) u)``, where ``g`` is the Gaussian ring density at the (per-photon-smeared)
    distance ``δ_H`` between θ̂ and θ_H and ``u`` the flat density over a 60 mrad window.
    """
    p, eta, n_tracks = kin["p"], kin["eta"], kin["n_tracks"]
    n = p.size
    hypotheses = [MASS_MEV[s] for s in SPECIES]
    total = np.zeros((n, len(hypotheses)))
    window_mrad = 60.0
    u = 1.0 / window_mrad
    for rad in RADIATORS:
        frac = _smooth_box(eta, rad.eta_lo, rad.eta_hi) * 0.97
        sigma = rad.sigma_mrad * (1.0 + n_tracks / 500.0) * np.exp(0.15 * quality)
        bkg = (
            rad.bkg_per_100_tracks * (0.3 + n_tracks / 100.0) * np.exp(0.3 * quality) * np.maximum(frac, 0.05)
        )
        theta_true = np.empty(n)
        yield_true = np.empty(n)
        for m in np.unique(true_mass):
            sel = true_mass == m
            theta_true[sel], yield_true[sel] = _cherenkov(p[sel], m, rad)
        n_sig = rng.poisson(frac * rad.n0_photons * yield_true)
        n_bkg = rng.poisson(bkg)
        theta_hat = theta_true + rng.normal(size=n) * sigma / np.sqrt(np.maximum(n_sig, 1))
        for k, m in enumerate(hypotheses):
            theta_h, yield_h = _cherenkov(p, m, rad)
            s_h = frac * rad.n0_photons * yield_h
            delta2 = ((theta_hat - theta_h) / sigma) ** 2 + 1.0
            g = np.exp(-0.5 * delta2) / (np.sqrt(2.0 * np.pi) * sigma)
            g = np.where(yield_h > 0.0, g, 0.0)
            total[:, k] += -(s_h + bkg) + n_sig * np.log(s_h * g + bkg * u) + n_bkg * np.log((s_h + bkg) * u)
    pi = SPECIES.index("pi")
    dll = total - total[:, [pi]]
    dll = np.delete(dll, pi, axis=1)
    dll += rng.normal(0.0, 0.3, dll.shape) * (1.0 + 0.3 * np.abs(quality[:, None]))
    return dll


def _is_muon(
    rng: np.random.Generator, kin: dict[str, NDArray[Any]], species: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """isMuon decision and the origin of the hits: 1 real/decay muon, 2 punch-through or random, 0 none."""
    p, eta, n_tracks = kin["p"], kin["eta"], kin["n_tracks"]
    n = p.size
    muon_mom = np.where(species == "mu", p, 0.0)
    for h in ("pi", "K"):
        sel = species == h
        decay = 1.0 - np.exp(-DECAY_LENGTH_MM * MASS_MEV[h] / (p[sel] * CTAU_MM[h]))
        decays = rng.random(sel.sum()) < BR_MU[h] * decay
        x_min = (MASS_MEV["mu"] / MASS_MEV[h]) ** 2
        muon_mom[np.flatnonzero(sel)[decays]] = p[sel][decays] * rng.uniform(x_min, 1.0, decays.sum())
    hadron = np.isin(species, ("pi", "K", "p"))
    punch = hadron & (rng.random(n) < 0.005 * (1.0 - np.exp(-p / 40.0e3)))
    station_acc = _smooth_box(eta, 1.8, 5.3, 0.08)
    track_range = muon_mom * (1.0 + 0.08 * rng.normal(size=n))
    reached = track_range[:, None] > STATION_RANGE_MEV[None, :]
    true_hit = reached & (rng.random((n, 4)) < STATION_EFFICIENCY * station_acc[:, None])
    punch_hit = punch[:, None] & (rng.random((n, 4)) < np.array([0.9, 0.8, 0.6, 0.5]))
    foi = 1.0 + 20.0e3 / p
    rate = 1.5e-4 * foi * (1.0 + n_tracks / 100.0)
    random_hit = rng.random((n, 4)) < (1.0 - np.exp(-rate[:, None] * np.array([4.0, 2.0, 1.5, 1.2])))
    hits = true_hit | punch_hit | random_hit
    m2, m3, m4, m5 = hits.T
    is_muon = np.where(
        p < 3.0e3,
        False,
        np.where(p < 6.0e3, m2 & m3, np.where(p < 10.0e3, m2 & m3 & (m4 | m5), m2 & m3 & m4 & m5)),
    )
    real = true_hit[:, :2].all(axis=1)
    origin = np.where(is_muon, np.where(real, 1, 2), 0)
    return is_muon.astype(np.int64), origin


def _muon_ll(
    rng: np.random.Generator, kin: dict[str, NDArray[Any]], origin: NDArray[Any], quality: NDArray[Any]
) -> NDArray[Any]:
    """MuonMuLL and MuonBgLL from the hit-distance D²; sentinel where isMuon == 0."""
    n = origin.size
    p = kin["p"]
    real = origin == 1
    scale_mu = 0.35 * (1.0 + 3.0e3 / p) * np.exp(0.2 * quality) * (1.0 + kin["n_tracks"] / 1000.0)
    d2 = np.where(real, rng.gamma(3.0, 1.0, n) * scale_mu, rng.gamma(2.0, 3.0, n) * np.exp(0.1 * quality))
    floor = np.exp(-10.0)
    mu_ll = np.log(stats.gamma.sf(d2, 3.0, scale=0.35) + floor)
    bg_ll = np.log(stats.gamma.cdf(d2, 2.0, scale=3.0) + floor)
    out: NDArray[np.float64] = np.stack([mu_ll, bg_ll], axis=1)
    out[origin == 0] = MUON_SENTINEL
    return out


def _global_pid(
    rng: np.random.Generator,
    kin: dict[str, NDArray[Any]],
    species: NDArray[Any],
    rich: NDArray[Any],
    is_muon: NDArray[Any],
    muon: NDArray[Any],
    quality: NDArray[Any],
) -> NDArray[Any]:
    """PIDe, PIDK, PIDp, PIDmu (combined DLLs) and ProbNN{e, pi, k, p, mu} (softmax, sums to 1)."""
    n = species.size
    eta = kin["eta"]
    calo_acc = _smooth_box(eta, 1.9, 4.8, 0.1)
    degrade = np.exp(0.25 * quality)
    calo_e = (
        np.where(
            species == "e",
            rng.normal(7.0, 2.5, n) / degrade,
            np.where(species == "mu", rng.normal(-4.0, 1.0, n), rng.normal(-3.0, 2.0, n) * degrade),
        )
        * calo_acc
    )
    mip = np.where(species == "mu", rng.normal(1.0, 0.5, n), rng.normal(-0.5, 0.8, n)) * calo_acc
    muon_dll = np.where(is_muon == 1, np.clip(muon[:, 0] - muon[:, 1], -10.0, 10.0), MUON_FAIL_PENALTY)
    had_calo = rng.normal(0.0, 0.4, (n, 2)) * degrade[:, None]
    pid_e = rich[:, 0] + calo_e
    pid_mu = rich[:, 1] + muon_dll + mip
    pid_k = rich[:, 2] + had_calo[:, 0]
    pid_p = rich[:, 3] + had_calo[:, 1]
    combined = np.stack([pid_e, pid_mu, np.zeros(n), pid_k, pid_p], axis=1)
    prior = np.log(np.array([PROBNN_PRIOR[s] for s in SPECIES]))
    logits = PROBNN_TEMPERATURE * np.clip(combined, -60.0, 60.0) + prior
    logits += rng.normal(0.0, 0.6, (n, 5)) * degrade[:, None]
    prob = special.softmax(logits, axis=1)
    prob_nn = prob[:, [0, 2, 3, 4, 1]]
    return np.column_stack([pid_e, pid_k, pid_p, pid_mu, prob_nn])


def _simulate(
    rng: np.random.Generator, true_species: NDArray[Any], *, soft: bool = False
) -> dict[str, NDArray[Any]]:
    """Kinematics and every PID response for tracks of the given true species."""
    n = true_species.size
    kin = _kinematics(rng, n, true_species, soft=soft)
    quality = rng.normal(size=n)
    true_mass = np.array([MASS_MEV[s] for s in SPECIES])[_species_index(true_species)]
    rich = _rich(rng, kin, true_mass, quality)
    is_muon, origin = _is_muon(rng, kin, true_species)
    muon = _muon_ll(rng, kin, origin, quality)
    glob = _global_pid(rng, kin, true_species, rich, is_muon, muon, quality)
    return {**kin, "isMuon": is_muon, "rich": rich, "muon": muon, "global": glob}


def _frame(sim: dict[str, NDArray[Any]], label: NDArray[Any]) -> pd.DataFrame:
    one_hot = _species_index(label)[:, None] == np.arange(len(SPECIES))[None, :]
    data: dict[str, NDArray[Any]] = {
        "mc_log10_p": np.log10(sim["p"]),
        "mc_eta": sim["eta"],
        "n_tracks": sim["n_tracks"],
        "mc_charge": sim["charge"],
    }
    for k, s in enumerate(SPECIES):
        data[f"is_{s}"] = one_hot[:, k].astype(np.float64)
    data["species"] = label
    data["isMuon"] = sim["isMuon"]
    for k, c in enumerate(RICH_COLUMNS):
        data[c] = sim["rich"][:, k]
    for k, c in enumerate(MUON_COLUMNS):
        data[c] = sim["muon"][:, k]
    for k, c in enumerate(GLOBAL_COLUMNS):
        data[c] = sim["global"][:, k]
    return pd.DataFrame(data)


def _mass_pdfs(m: NDArray[Any], species: str, mu: float, sigma: float, slope: float) -> NDArray[Any]:
    """Normalised signal (Gaussian) and background (exponential) mass densities in the window."""
    _, _, lo, hi = CHANNELS[species]
    norm_s = stats.norm.cdf(hi, mu, sigma) - stats.norm.cdf(lo, mu, sigma)
    sig = stats.norm.pdf(m, mu, sigma) / norm_s
    if abs(slope) < 1e-12:
        bkg = np.full_like(m, 1.0 / (hi - lo))
    else:
        bkg = slope * np.exp(slope * (m - lo)) / np.expm1(slope * (hi - lo))
    return np.stack([sig, bkg], axis=1)


def fit_sweights(mass: NDArray[Any], species: str) -> tuple[NDArray[Any], dict[str, float]]:
    """Extended ML fit of the channel's mass (yields, peak, width, slope) and the sPlot signal weights.

    ``w_s(m) = Σ_j V_sj f_j(m) / Σ_k N_k f_k(m)`` with ``V⁻¹_ij = Σ_events f_i f_j / (Σ_k N_k f_k)²``
    evaluated at the fitted shapes (Pivk & Le Diberder). Weights of background-dominated masses are
    negative; ``Σ w_s`` equals the fitted signal yield.
    """
    peak, res, lo, hi = CHANNELS[species]
    n = float(mass.size)

    def nll(par: NDArray[Any]) -> float:
        n_s, n_b, mu, log_sigma, slope = par
        if n_s < 0 or n_b < 0 or not lo < mu < hi or not -3.0 < log_sigma - np.log(res) < 3.0:
            return 1e30
        with np.errstate(all="ignore"):
            f = _mass_pdfs(mass, species, mu, np.exp(log_sigma), slope * 1e-3)
            dens = n_s * f[:, 0] + n_b * f[:, 1]
        if not np.all(np.isfinite(dens)) or np.any(dens <= 0.0):
            return 1e30
        return float(n_s + n_b - np.sum(np.log(dens)))

    start = np.array([0.5 * n, 0.5 * n, peak, np.log(res), BACKGROUND_SLOPE_PER_MEV[species] * 1e3])
    res_fit = optimize.minimize(
        nll, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-4, "fatol": 1e-4}
    )
    res_fit = optimize.minimize(nll, res_fit.x, method="Powell", options={"xtol": 1e-6, "ftol": 1e-9})
    n_s, n_b, mu, log_sigma, slope = res_fit.x
    f = _mass_pdfs(mass, species, mu, np.exp(log_sigma), slope * 1e-3)
    yields = np.array([n_s, n_b])
    dens = f @ yields
    v_inv = (f[:, :, None] * f[:, None, :] / dens[:, None, None] ** 2).sum(axis=0)
    cov = np.linalg.inv(v_inv)
    weights = (f @ cov[:, 0]) / dens
    info = {
        "n_signal": float(n_s),
        "n_background": float(n_b),
        "mu": float(mu),
        "sigma": float(np.exp(log_sigma)),
        "slope_per_mev": float(slope * 1e-3),
    }
    return weights, info


def _background_sample(rng: np.random.Generator, species: str, n: int) -> pd.DataFrame:
    """Background probes of one channel: a species mixture with a softer spectrum, labelled ``species``."""
    names = np.array(list(BACKGROUND_COMPOSITION))
    true = rng.choice(names, n, p=np.array(list(BACKGROUND_COMPOSITION.values())))
    sim = _simulate(rng, true, soft=True)
    return _frame(sim, np.full(n, species, dtype=object))


def _channel(rng: np.random.Generator, species: str, n: int, background_fraction: float) -> pd.DataFrame:
    n_bkg = int(rng.binomial(n, background_fraction)) if background_fraction > 0 else 0
    n_sig = n - n_bkg
    sig = _frame(_simulate(rng, np.full(n_sig, species, dtype=object)), np.full(n_sig, species, dtype=object))
    if background_fraction <= 0:
        sig["sweight"] = 1.0
        return sig
    bkg = _background_sample(rng, species, n_bkg)
    peak, res, lo, hi = CHANNELS[species]
    sig["mass"] = stats.truncnorm.rvs(
        (lo - peak) / res, (hi - peak) / res, loc=peak, scale=res, size=n_sig, random_state=rng
    )
    slope = BACKGROUND_SLOPE_PER_MEV[species]
    u = rng.random(n_bkg)
    bkg["mass"] = lo + np.log1p(u * np.expm1(slope * (hi - lo))) / slope
    sig["is_signal"] = 1
    bkg["is_signal"] = 0
    both = pd.concat([sig, bkg], ignore_index=True)
    both = both.iloc[rng.permutation(len(both))].reset_index(drop=True)
    both["sweight"], _ = fit_sweights(both["mass"].to_numpy(), species)
    return both


def generate(
    n: int,
    seed: int,
    *,
    species: str | Sequence[str] | None = None,
    background_fraction: float = 0.0,
) -> pd.DataFrame:
    """Simulate ``n`` calibration tracks (see the module docstring for the physics).

    ``species``: one name of :data:`SPECIES`, a sequence of them, or None for all five; rows are split
    evenly between them (one calibration channel each). ``background_fraction`` in [0, 1): fraction of
    each channel's rows that are combinatorial background; with it the frame also has ``mass`` (MeV)
    and ``is_signal`` (truth, for tests), and ``sweight`` holds sPlot signal weights (negative allowed)
    from a fit of each channel's mass. Columns (:data:`COLUMNS`): the nine ``pid_features``
    (``mc_log10_p`` in log10 MeV, ``mc_eta``, ``n_tracks``, ``mc_charge``, one-hot ``is_e ... is_p``),
    ``species``, ``isMuon`` (0/1), ``RichDLL{e,mu,K,p}``, ``MuonMuLL``, ``MuonBgLL`` (−1000 where
    isMuon == 0), ``PID{e,K,p,mu}``, ``ProbNN{e,pi,k,p,mu}``, ``sweight``. Deterministic given ``seed``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= background_fraction < 1.0:
        raise ValueError(f"background_fraction must be in [0, 1), got {background_fraction}")
    names = list(SPECIES) if species is None else [species] if isinstance(species, str) else list(species)
    unknown = [s for s in names if s not in SPECIES]
    if unknown or not names:
        raise ValueError(f"unknown species {unknown or names}; accepted: {', '.join(SPECIES)}")
    rng = np.random.default_rng(seed)
    counts = np.full(len(names), n // len(names))
    counts[: n % len(names)] += 1
    parts = [
        _channel(rng, s, int(c), background_fraction) for s, c in zip(names, counts, strict=True) if c > 0
    ]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c == "species" else float) for c in COLUMNS})
    out = pd.concat(parts, ignore_index=True)
    extra = [c for c in ("mass", "is_signal") if c in out]
    return out[[*COLUMNS, *extra]]
