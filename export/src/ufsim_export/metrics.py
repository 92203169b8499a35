"""Accuracy metrics the field uses for ultra-fast simulation models.

- :func:`w1_over_sigma`: 1-D Wasserstein distance between model and reference samples divided by the
  reference standard deviation (0 for identical samples, scale-free);
- :func:`binned_w1_over_sigma`: the same in bins of a binning key (p, η), each bin divided by its own
  reference spread;
- :func:`c2st_auc`: classifier two-sample test: a gradient-boosted classifier learns to tell model rows
  from reference rows (conditions + outputs); its held-out ROC AUC is 0.5 when the joint distributions
  agree;
- :func:`binned_mean`: weighted means in bins (efficiency curves);
- :func:`group_fidelity`: the model's bias and width at fixed conditions (many rows of one particle), in
  units of the reference's own spread there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import wasserstein_distance
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

MIN_BIN_ROWS = 300
"""Bins with fewer reference rows are not scored (their W1 is dominated by sampling noise)."""
TARGET_BIN_ROWS = 5_000
"""(p, η) bins with fewer reference rows are not scored for W1/σ against the fidelity target (tracking and
PID alike, the report and the candidate selections): the target's own threshold. Below it the W1/σ of two
halves of the reference alone nears or passes 0.05."""
LOG10P_EDGES = np.array([-np.inf, 3.5, 4.0, 4.5, np.inf])
ETA_EDGES = np.array([-np.inf, 2.5, 3.5, 4.5, np.inf])
"""(log10(p/MeV), η) bins generators are scored in: the validation report, RICH's candidate selection."""


def robust_sigma(x: NDArray[Any]) -> float:
    """Interquartile range / 1.349 (= σ for a Gaussian), insensitive to tails."""
    q1, q3 = np.percentile(x, [25, 75])
    return float((q3 - q1) / 1.349)


def w1_over_sigma(reference: NDArray[Any], model: NDArray[Any], *, sigma: float | None = None) -> float:
    """W1(reference, model) / σ(reference) (or / ``sigma``); 0 when σ is 0 and the samples agree."""
    reference = np.asarray(reference, np.float64)
    model = np.asarray(model, np.float64)
    w1 = wasserstein_distance(reference, model)
    scale = float(np.std(reference)) if sigma is None else float(sigma)
    if scale <= 0:
        return 0.0 if w1 == 0 else float("inf")
    return float(w1 / scale)


@dataclass(frozen=True)
class BinnedW1:
    """W1/σ per (p, η) bin: ``values[i, j]`` for p bin i and η bin j (NaN where too few rows)."""

    p_edges: NDArray[Any]
    eta_edges: NDArray[Any]
    values: NDArray[Any]
    counts: NDArray[Any]

    @property
    def worst(self) -> float:
        """Largest scored bin value (NaN if no bin is scored)."""
        return float(np.nanmax(self.values)) if np.isfinite(self.values).any() else float("nan")


def binned_w1_over_sigma(
    reference: NDArray[Any],
    model: NDArray[Any],
    p: NDArray[Any],
    eta: NDArray[Any],
    p_edges: NDArray[Any],
    eta_edges: NDArray[Any],
    *,
    min_rows: int = MIN_BIN_ROWS,
) -> BinnedW1:
    """W1/σ in bins of (p, η); reference and model rows share the binning variables (same conditions)."""
    ip = np.digitize(p, p_edges[1:-1])
    ie = np.digitize(eta, eta_edges[1:-1])
    values = np.full((len(p_edges) - 1, len(eta_edges) - 1), np.nan)
    counts = np.zeros_like(values, dtype=np.int64)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            sel = (ip == i) & (ie == j)
            counts[i, j] = int(sel.sum())
            if counts[i, j] >= min_rows:
                values[i, j] = w1_over_sigma(reference[sel], model[sel])
    return BinnedW1(np.asarray(p_edges), np.asarray(eta_edges), values, counts)


def c2st_auc(
    reference: NDArray[Any],
    model: NDArray[Any],
    *,
    seed: int = 0,
    max_iter: int = 200,
    test_fraction: float = 0.5,
) -> float:
    """Held-out ROC AUC of a HistGradientBoostingClassifier separating model rows from reference rows.

    Rows are [conditions, outputs]; the two samples should share the conditions, so the classifier can
    only win on the conditional distribution of the outputs. 0.5 = indistinguishable. Deterministic
    for a seed. Uses half of the rows to train (early stopping on an internal split) and half to score.
    """
    reference = np.asarray(reference, np.float64)
    model = np.asarray(model, np.float64)
    X = np.concatenate([reference, model])
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(model))])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    n_test = int(len(X) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    clf = HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=0.1, max_leaf_nodes=31, early_stopping=True,
        validation_fraction=0.2, n_iter_no_change=10, random_state=seed,
    )  # fmt: skip
    clf.fit(X[train], y[train])
    return float(roc_auc_score(y[test], clf.predict_proba(X[test])[:, 1]))


def binned_mean(
    x: NDArray[Any], values: NDArray[Any], edges: NDArray[Any], weights: NDArray[Any] | None = None
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Weighted mean of ``values`` in bins of ``x`` and the summed weights per bin (NaN where empty)."""
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    idx = np.digitize(x, edges[1:-1])
    n_bins = len(edges) - 1
    sum_w = np.bincount(idx, weights=w, minlength=n_bins)[:n_bins]
    sum_wv = np.bincount(idx, weights=w * values, minlength=n_bins)[:n_bins]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sum_w > 0, sum_wv / sum_w, np.nan), sum_w


def binned_mean_2d(
    x: NDArray[Any],
    y: NDArray[Any],
    values: NDArray[Any],
    x_edges: NDArray[Any],
    y_edges: NDArray[Any],
    weights: NDArray[Any] | None = None,
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Weighted mean of ``values`` in (x, y) bins, and the summed weights (NaN where empty)."""
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    ix = np.digitize(x, x_edges[1:-1])
    iy = np.digitize(y, y_edges[1:-1])
    flat = ix * (len(y_edges) - 1) + iy
    n = (len(x_edges) - 1) * (len(y_edges) - 1)
    sum_w = np.bincount(flat, weights=w, minlength=n)[:n]
    sum_wv = np.bincount(flat, weights=w * values, minlength=n)[:n]
    shape = (len(x_edges) - 1, len(y_edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sum_w > 0, sum_wv / sum_w, np.nan)
    return mean.reshape(shape), sum_w.reshape(shape)


@dataclass(frozen=True)
class GroupFidelity:
    """Model vs reference at fixed conditions, medians (and spreads) over the groups scored."""

    groups: int
    spread: float
    """The reference's standard deviation within a group over its overall one."""
    bias: float
    bias_p90: float
    """|model mean - reference mean| within a group, over the reference's standard deviation there."""
    width: float
    width_p10: float
    width_p90: float
    """Model over reference standard deviation within a group."""


def group_fidelity(
    reference: NDArray[Any],
    model: NDArray[Any],
    groups: NDArray[Any],
    *,
    model_groups: NDArray[Any] | None = None,
    min_rows: int = MIN_BIN_ROWS,
) -> GroupFidelity:
    """Bias and width of ``model`` against ``reference`` within each group both have >= ``min_rows`` of.

    ``groups``: one label per row (1-D). A group is one set of conditions drawn many times (one particle);
    the overall W1 averages over groups, so a model can match it and still be biased or too wide at every
    fixed particle. ``model_groups``: the model rows' groups where they are not the reference rows' (two
    halves of one sample, for a floor).
    """
    ref, mod = np.asarray(reference, np.float64), np.asarray(model, np.float64)
    g_ref = np.asarray(groups)
    g_mod = g_ref if model_groups is None else np.asarray(model_groups)
    _, inverse = np.unique(np.concatenate([g_ref, g_mod]), return_inverse=True)
    inverse = inverse.ravel()
    k = int(inverse.max()) + 1 if inverse.size else 0

    def moments(x: NDArray[Any], key: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
        n = np.bincount(key, minlength=k).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(key, weights=x, minlength=k) / n
            var = np.bincount(key, weights=x * x, minlength=k) / n - mean**2
        return n, mean, np.sqrt(np.maximum(var, 0.0))

    n_ref, m_ref, s_ref = moments(ref, inverse[: len(ref)])
    n_mod, m_mod, s_mod = moments(mod, inverse[len(ref) :])
    sel = (n_ref >= min_rows) & (n_mod >= min_rows) & (s_ref > 0)
    if not sel.any():
        nan = float("nan")
        return GroupFidelity(0, nan, nan, nan, nan, nan, nan)
    bias = np.abs(m_mod - m_ref)[sel] / s_ref[sel]
    width = s_mod[sel] / s_ref[sel]
    return GroupFidelity(
        groups=int(sel.sum()),
        spread=float(np.median(s_ref[sel]) / max(float(ref.std()), 1e-30)),
        bias=float(np.median(bias)),
        bias_p90=float(np.percentile(bias, 90)),
        width=float(np.median(width)),
        width_p10=float(np.percentile(width, 10)),
        width_p90=float(np.percentile(width, 90)),
    )
