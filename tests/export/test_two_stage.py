"""The tracking generators' two stages: a regression on the library's noise, then a spread chain that
draws what the noise does not resolve."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ufsim_export.training.artifacts import save_original
from ufsim_export.training.fitting import (
    fit_deterministic,
    phase_space_weights,
    refine_lbfgs,
    standardised_mse,
)
from ufsim_export.training.saved import load_quantile_generator
from ufsim_export.training.two_stage import (
    LIBRARY_NOISE,
    TwoStageGenerator,
    fit_spread,
    predict_regression,
    two_stage_noise_dim,
)


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y = c + 0.6 z0 + 0.8 h, h independent of the 128 noise columns: 64 % of var(y | c) unresolvable."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    z = rng.standard_normal((n, LIBRARY_NOISE)).astype(np.float32)
    y = c + 0.6 * z[:, :1] + 0.8 * rng.standard_normal((n, 1)).astype(np.float32)
    return c, z, y.astype(np.float32)


def test_spread_chain_restores_what_the_regression_cannot_resolve() -> None:
    torch.manual_seed(0)
    c, z, y = _toy(20_000, 0)
    module = TwoStageGenerator(1, two_stage_noise_dim(1), 1, width=32, n_residual=2, spread_width=16,
                               spread_residual=1, continuous=[0], n_knots=51)  # fmt: skip
    module.fit_transforms(c, y)
    x, targets = module.core_conditions(c), module.gaussianise_outputs(y)
    fit_deterministic(module.stages.regression, x, z, targets, epochs=3, batch_size=256, lr=3e-3, seed=0)
    residual = targets - predict_regression(module, c, z)
    # the regression alone is the conditional mean: its spread is short by the unresolved 64 %
    assert 0.45 < residual.var() / targets.var() < 0.75
    fit_spread(module, c, z, y, steps=600, batch_size=512, seed=0)

    tc, tz, ty = _toy(20_000, 1)
    extra = np.random.default_rng(2).standard_normal((len(tc), module.noise_dim - LIBRARY_NOISE))
    with torch.no_grad():
        served = module(torch.as_tensor(tc), torch.as_tensor(np.hstack([tz, extra]).astype(np.float32)))
    regressed = module.out_transform(torch.as_tensor(predict_regression(module, tc, tz))).numpy()
    std_library, std_served, std_regressed = ty.std(), served.numpy().std(), regressed.std()
    assert std_regressed < 0.85 * std_library
    assert abs(std_served / std_library - 1) < 0.05
    # the served draw still follows the resolved part of the noise, track by track
    assert np.corrcoef(served.numpy()[:, 0], tz[:, 0])[0, 1] > 0.3


def test_lbfgs_refinement_goes_below_the_adam_plateau_and_keeps_its_best_state() -> None:
    """A deterministic map of (conditions, noise), as the library's: full-batch L-BFGS on chunks of unseen
    rows lowers the held-out loss one Adam epoch left, and the kept state is the best one it measured."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def toy(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
        z = rng.standard_normal((n, LIBRARY_NOISE)).astype(np.float32)
        y = np.tanh(2 * c + z[:, :1] * c) + 0.3 * z[:, 1:2] * z[:, 2:3]
        return c, z, y.astype(np.float32)

    module = TwoStageGenerator(1, two_stage_noise_dim(1), 1, width=16, n_residual=1, spread_width=8,
                               spread_residual=1, continuous=[0], n_knots=51)  # fmt: skip
    c, z, y = toy(12_000)
    vc, vz, vy = toy(3_000)
    module.fit_transforms(c, y)
    regression = module.stages.regression
    x, targets = module.core_conditions(c), module.gaussianise_outputs(y)
    val = (module.core_conditions(vc), vz, module.gaussianise_outputs(vy))
    fit_deterministic(regression, x, z, targets, epochs=1, batch_size=256, lr=3e-3, seed=0)
    adam = standardised_mse(regression, *val)
    history = refine_lbfgs(regression, x, z, targets, val=val, chunks=3, rows=4_000, iterations=10, seed=0)
    assert history.val[0] == pytest.approx(adam)
    assert len(history.train) == 3 and len(history.val) == 4
    assert min(history.val) < 0.8 * adam
    assert standardised_mse(regression, *val) == pytest.approx(min(history.val))


def test_phase_space_weights_lift_sparse_corners_with_mean_one_and_a_cap() -> None:
    rng = np.random.default_rng(0)
    # a dense core and a sparse corner (2 % of tracks at high eta and low p)
    log10p = np.concatenate([rng.uniform(4.0, 5.0, 49_000), rng.uniform(3.0, 3.3, 1_000)])
    eta = np.concatenate([rng.uniform(2.0, 4.0, 49_000), rng.uniform(4.6, 5.0, 1_000)])
    sparse = slice(49_000, None)
    flat = phase_space_weights(log10p, eta, exponent=0.0)
    assert np.allclose(flat, 1.0)
    half = phase_space_weights(log10p, eta, exponent=0.5)
    assert half.mean() == pytest.approx(1.0)
    assert half[sparse].mean() > 1.5 * half[:49_000].mean()  # densities differ 3x: sqrt(3) = 1.7
    capped = phase_space_weights(log10p, eta, exponent=1.0, cap=3.0)
    assert capped.max() <= 3.0 + 1e-9 and capped.mean() == pytest.approx(1.0)
    assert capped[sparse].sum() > half[sparse].sum()


def test_two_stage_generator_names_the_noise_width_it_takes() -> None:
    with pytest.raises(ValueError, match=r"takes 164 \(128 \+ 4 x 9\)"):
        TwoStageGenerator(12, 128, 9)


def _fitted_toy(seed: int, n_residual: int) -> tuple[TwoStageGenerator, np.ndarray, np.ndarray]:
    """A small two-stage generator with fitted transforms and spread chain; its conditions and noise."""
    torch.manual_seed(seed)
    c, z, y = _toy(2_000, seed + 2)
    module = TwoStageGenerator(1, two_stage_noise_dim(1), 1, width=16, n_residual=n_residual, spread_width=8,
                               spread_residual=1, continuous=[0], n_knots=21)  # fmt: skip
    module.fit_transforms(c, y)
    fit_spread(module, c, z, y, steps=20, seed=0)
    return module, c, z


def test_two_stage_generator_reloads_from_its_saved_module(tmp_path: Path) -> None:
    module, c, _ = _fitted_toy(1, n_residual=1)
    save_original(module, tmp_path / "g.pt")
    again = load_quantile_generator(tmp_path / "g.pt")
    assert isinstance(again, TwoStageGenerator)
    cond, noise = torch.as_tensor(c[:500]), torch.randn(500, module.noise_dim)
    with torch.no_grad():
        torch.testing.assert_close(again(cond, noise), module(cond, noise))


def test_float64_regression_computes_in_float64_and_reloads(tmp_path: Path) -> None:
    """The switch changes the regression's arithmetic only: same weights, float32 in and out, saved."""
    module, c, z = _fitted_toy(2, n_residual=2)
    single = predict_regression(module, c, z[:, :LIBRARY_NOISE])
    module.stages.set_regression_precision("float64")
    assert module.stages.regression.inp.weight.dtype == torch.float64
    double = predict_regression(module, c, z[:, :LIBRARY_NOISE])
    assert double.dtype == np.float32
    regression = module.stages.regression
    with torch.no_grad():
        x = torch.as_tensor(module.core_conditions(c)).double()
        exact = regression(x, torch.as_tensor(z[:, :LIBRARY_NOISE]).double()).float().numpy()
    np.testing.assert_array_equal(double, exact)
    assert not np.array_equal(single, double)  # float32 rounding differs somewhere in 2,000 rows
    np.testing.assert_allclose(single, double, atol=1e-5)

    save_original(module, tmp_path / "g.pt")
    again = load_quantile_generator(tmp_path / "g.pt")
    assert isinstance(again, TwoStageGenerator) and again.stages.regression_precision == "float64"
    cond, noise = torch.as_tensor(c[:500]), torch.randn(500, module.noise_dim)
    with torch.no_grad():
        out = again(cond, noise)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, module(cond, noise), rtol=0, atol=0)


def test_regression_precision_names_what_is_accepted() -> None:
    module = TwoStageGenerator(1, two_stage_noise_dim(1), 1, width=8, n_residual=1, spread_width=4)
    with pytest.raises(ValueError, match=r"regression_precision='float16': accepted float32, float64"):
        module.stages.set_regression_precision("float16")
    assert module.stages.regression_precision == "float32"


def test_a_config_with_an_unknown_precision_is_refused_before_any_training() -> None:
    from ufsim_export.training.distill import QUICK_RESOLUTION, DistillConfig

    with pytest.raises(ValueError, match=r"regression_precision='half': accepted float32, float64"):
        dataclasses.replace(QUICK_RESOLUTION, regression_precision="half")
    assert DistillConfig().regression_precision == "float32"
