"""GBDT conversion: each supported model kind and implementation, verified on 10,000 rows (batch 1, 2, 1000).

Also the helpers (synthetic Lamarr-like features, small classifiers of each kind) that
``test_ort_compat.py`` reuses.
"""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np
import onnx
import pytest
import xgboost
from onnx import TensorProto, helper, numpy_helper
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)

from ufsim_export.convert import GBDTConversionError, gbdt_to_onnx, max_tree_depth
from ufsim_export.convert.gbdt import IMPLEMENTATIONS, check_no_axisless_squeeze, float32_thresholds
from ufsim_export.convert.verify import (
    CompatibilityError,
    VerificationError,
    check_production_compat,
    verify_classifier,
)

FAMILIES = ("sklearn-gb", "sklearn-hgb", "lightgbm", "xgboost")
N_ROWS = 10_000
N_TRAIN = 3_000


def features(n: int = N_ROWS, seed: int = 0) -> np.ndarray:
    """log10 p, eta, phi, slopes, occupancy, charge (+-1), a species flag: continuous and discrete."""
    rng = np.random.default_rng(seed)
    logp = rng.uniform(3.0, 5.5, n)
    eta = rng.uniform(1.5, 5.5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    tx, ty = np.cos(phi) / np.sinh(eta), np.sin(phi) / np.sinh(eta)
    occupancy = rng.uniform(10, 300, n)
    charge = rng.choice([-1.0, 1.0], n)
    flag = (rng.random(n) < 0.2).astype(float)
    return np.stack([logp, eta, phi, tx, ty, occupancy, charge, flag], axis=1).astype(np.float32)


def labels(X: np.ndarray, n_classes: int, seed: int = 1) -> np.ndarray:
    """Noisy labels depending on several features, balanced over ``n_classes``."""
    rng = np.random.default_rng(seed)
    score = X[:, 0] - 0.3 * (X[:, 1] - 3.5) ** 2 + 0.002 * X[:, 5] * X[:, 6] + X[:, 7]
    score = score + rng.normal(0, 0.3, len(X))
    return np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])).astype(int)


def make_model(family: str, *, n_estimators: int = 12, max_depth: int = 4) -> Any:
    """An unfitted classifier of ``family`` with bounded depth (perf_tree_trav needs it)."""
    if family == "sklearn-gb":
        return GradientBoostingClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=0)
    if family == "sklearn-hgb":
        return HistGradientBoostingClassifier(max_iter=n_estimators, max_depth=max_depth, random_state=0)
    if family == "lightgbm":
        return lightgbm.LGBMClassifier(
            n_estimators=n_estimators, max_depth=max_depth, num_leaves=15, random_state=0, verbose=-1
        )
    if family == "xgboost":
        return xgboost.XGBClassifier(n_estimators=n_estimators, max_depth=max_depth, random_state=0, n_jobs=1)
    raise KeyError(family)


def fitted(family: str, n_classes: int, X: np.ndarray) -> Any:
    """A ``family`` classifier fitted on the first N_TRAIN rows of ``X``."""
    return make_model(family).fit(X[:N_TRAIN], labels(X, n_classes)[:N_TRAIN])


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return features()


@pytest.fixture(scope="module")
def zoo(X: np.ndarray) -> dict[tuple[str, int], Any]:
    return {(f, k): fitted(f, k, X) for f in FAMILIES for k in (2, 4)}


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_converted_gbdt_matches_predict_proba(
    zoo: dict[tuple[str, int], Any], X: np.ndarray, family: str, n_classes: int, implementation: str
) -> None:
    model = zoo[(family, n_classes)]
    onnx_model = gbdt_to_onnx(model, X[:64], implementation=implementation)

    graph = onnx_model.graph
    assert [i.name for i in graph.input] == ["features"]
    assert [o.name for o in graph.output] == ["probabilities"]
    assert graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _dims(graph.input[0]) == ["N", X.shape[1]]
    assert _dims(graph.output[0]) == ["N", n_classes]
    assert onnx_model.ir_version <= 10
    assert {o.domain or "ai.onnx": o.version for o in onnx_model.opset_import}["ai.onnx"] == 17
    check_no_axisless_squeeze(onnx_model)

    report = verify_classifier(model, onnx_model, X, name=f"{family}-{n_classes}-{implementation}")
    assert report.n_rows == N_ROWS
    assert set(report.max_error) == {1, 2, 1000}
    assert report.worst <= 1e-5


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_conversion_is_byte_for_byte_reproducible(
    zoo: dict[tuple[str, int], Any], X: np.ndarray, implementation: str
) -> None:
    model = zoo[("lightgbm", 4)]
    first, second = (gbdt_to_onnx(model, X[:64], implementation=implementation) for _ in range(2))
    assert first.SerializeToString() == second.SerializeToString()
    assert first.graph.name == f"LGBMClassifier_{implementation}"


@pytest.mark.parametrize("family", ["sklearn-gb", "sklearn-hgb", "lightgbm"])
def test_split_between_adjacent_float32_values_is_exact(family: str) -> None:
    """A float64 threshold between two adjacent float32 values must not round onto one of them."""
    a = np.nextafter(np.float32(1.0), np.float32(2.0))  # odd mantissa: the midpoint rounds up to b
    b = np.nextafter(a, np.float32(2.0))
    rng = np.random.default_rng(3)
    x0 = rng.choice(np.array([a, b], dtype=np.float32), N_ROWS)
    X = np.stack([x0, rng.normal(size=N_ROWS).astype(np.float32)], axis=1)
    y = (x0 == b).astype(int)
    model = make_model(family, n_estimators=3, max_depth=2)
    if family == "lightgbm":
        model.set_params(min_data_in_bin=1, min_child_samples=1)
    model.fit(X, y)
    assert model.predict_proba(X[x0 == b])[:, 1].min() > 0.5 > model.predict_proba(X[x0 == a])[:, 1].max()
    for implementation in ("perf_tree_trav", "gemm", "native"):
        onnx_model = gbdt_to_onnx(model, X[:8], implementation=implementation)
        verify_classifier(model, onnx_model, X, batch_sizes=(1000,), name=f"{family}-{implementation}")


def test_hist_gbdt_zero_leaf_and_zero_threshold_are_kept(X: np.ndarray) -> None:
    """Hummingbird 0.4.12 turns HistGradientBoosting thresholds and leaf values of exactly 0 into -1."""
    model = fitted("sklearn-hgb", 4, X)
    nodes = model._predictors[0][0].nodes
    leaves = np.flatnonzero(nodes["is_leaf"])
    nodes["value"][leaves[np.argmax(nodes["count"][leaves])]] = 0.0
    # a split on a feature with values around 0 (phi, tx, ty) moved to exactly 0
    splits = [
        (p.nodes, i)
        for predictors in model._predictors
        for p in predictors
        for i in np.flatnonzero(np.isin(p.nodes["feature_idx"], [2, 3, 4]) & (p.nodes["is_leaf"] == 0))
    ]
    assert splits, "expected a split on phi, tx or ty"
    split_nodes, index = splits[0]
    split_nodes["num_threshold"][index] = 0.0
    for implementation in ("perf_tree_trav", "tree_trav", "gemm"):
        onnx_model = gbdt_to_onnx(model, X[:64], implementation=implementation)
        verify_classifier(model, onnx_model, X, batch_sizes=(1000,), name=f"hgbc-{implementation}")


def test_float32_thresholds_preserve_every_comparison() -> None:
    rng = np.random.default_rng(0)
    x32 = rng.normal(size=20_000).astype(np.float32)
    # thresholds exactly between adjacent float32 values, and arbitrary float64 values
    halfway = (x32.astype(np.float64) + np.nextafter(x32, np.float32(np.inf)).astype(np.float64)) / 2
    thresholds = np.concatenate([halfway, rng.normal(size=20_000)])
    for decision, op in (("<=", np.less_equal), ("<", np.less)):
        t32 = np.asarray(float32_thresholds(thresholds, decision)).astype(np.float32)
        probes = np.concatenate([x32, np.nextafter(x32, np.float32(np.inf))])
        for shift in (0, 1, 7):
            xs = np.roll(probes, shift)[: len(thresholds)]
            assert np.array_equal(op(xs.astype(np.float64), thresholds), op(xs, t32))
    assert float32_thresholds([0.5, -1.0], "<=") == [0.5, -1.0]


def test_gemm_has_no_axisless_squeeze_and_runs_at_batch_1(
    zoo: dict[tuple[str, int], Any], X: np.ndarray
) -> None:
    """hummingbird#676: gemm's torch.squeeze(x) dropped the batch axis at batch size 1."""
    for family in FAMILIES:
        model = zoo[(family, 4)]
        onnx_model = gbdt_to_onnx(model, X[:1], implementation="gemm")
        assert not [n for n in onnx_model.graph.node if n.op_type == "Squeeze" and len(n.input) < 2]
        verify_classifier(model, onnx_model, X[:N_ROWS], batch_sizes=(1,), name=f"{family}-gemm")


def test_axisless_squeeze_is_refused() -> None:
    node = helper.make_node("Squeeze", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(GBDTConversionError, match="hummingbird#676"):
        check_no_axisless_squeeze(helper.make_model(graph), "gemm")


def test_perf_tree_trav_refuses_deep_trees(X: np.ndarray) -> None:
    y = labels(X, 2)
    deep = lightgbm.LGBMClassifier(
        n_estimators=2, num_leaves=256, max_depth=-1, min_child_samples=2, verbose=-1
    ).fit(X[:N_TRAIN], y[:N_TRAIN])
    assert max_tree_depth(deep) > 10
    with pytest.raises(GBDTConversionError, match="max_depth"):
        gbdt_to_onnx(deep, X[:8], implementation="perf_tree_trav")
    onnx_model = gbdt_to_onnx(deep, X[:8], implementation="tree_trav")
    verify_classifier(deep, onnx_model, X, batch_sizes=(1000,), name="deep-lightgbm")


def test_max_tree_depth_matches_the_fitted_depth(zoo: dict[tuple[str, int], Any]) -> None:
    for (family, _), model in zoo.items():
        assert 1 <= max_tree_depth(model) <= 4, family


@pytest.mark.parametrize(
    ("model", "kwargs", "message"),
    [
        (RandomForestClassifier(n_estimators=2), {}, "unsupported model type"),
        (GradientBoostingClassifier(), {}, "not fitted"),
        (None, {"implementation": "onnxml"}, "implementation"),
        (None, {"opset": 22}, "opset 22"),
    ],
)
def test_bad_requests_are_refused(
    zoo: dict[tuple[str, int], Any], X: np.ndarray, model: Any, kwargs: dict[str, Any], message: str
) -> None:
    if model is None:
        model = zoo[("sklearn-hgb", 2)]
    elif isinstance(model, RandomForestClassifier):
        model.fit(X[:200], labels(X[:200], 2))
    with pytest.raises(GBDTConversionError, match=message):
        gbdt_to_onnx(model, X[:8], **kwargs)


def test_sample_with_wrong_width_is_refused(zoo: dict[tuple[str, int], Any], X: np.ndarray) -> None:
    with pytest.raises(GBDTConversionError, match="columns"):
        gbdt_to_onnx(zoo[("lightgbm", 2)], X[:8, :5])


def _perturb_largest_initializer(onnx_model: onnx.ModelProto, delta: float) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(onnx_model)
    floats = [t for t in broken.graph.initializer if t.data_type == TensorProto.FLOAT and t.dims]
    target = max(floats, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(target).copy()
    values.flat[int(np.argmax(np.abs(values)))] += delta
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    return broken


def test_broken_onnx_raises_with_the_worst_rows(zoo: dict[tuple[str, int], Any], X: np.ndarray) -> None:
    model = zoo[("lightgbm", 4)]
    onnx_model = gbdt_to_onnx(model, X[:64], implementation="perf_tree_trav")
    broken = _perturb_largest_initializer(onnx_model, 0.5)
    with pytest.raises(VerificationError) as excinfo:
        verify_classifier(model, broken, X, name="tracking_efficiency")
    message = str(excinfo.value)
    assert "tracking_efficiency" in message
    assert "Worst rows" in message
    assert message.count("\n  row ") == 5
    assert "inputs" in message and "original" in message and "onnx" in message


def test_verification_needs_ten_thousand_rows(zoo: dict[tuple[str, int], Any], X: np.ndarray) -> None:
    model = zoo[("sklearn-gb", 2)]
    onnx_model = gbdt_to_onnx(model, X[:64])
    with pytest.raises(ValueError, match="at least 10000 rows"):
        verify_classifier(model, onnx_model, X[:9_999])


def _tiny_model(ir_version: int, opsets: dict[str, int], node_name: str = "identity") -> onnx.ModelProto:
    node = helper.make_node("Identity", ["x"], ["y"], name=node_name)
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    imports = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=ir_version)


@pytest.mark.parametrize(
    ("ir_version", "opsets", "message"),
    [
        (11, {"": 21}, "IR version 11"),
        (10, {"": 22}, "opset ai.onnx 22"),
        (10, {"": 17, "ai.onnx.ml": 6}, "opset ai.onnx.ml 6"),
        (8, {"": 17, "com.example": 1}, "com.example"),
    ],
)
def test_production_compat_rejects(ir_version: int, opsets: dict[str, int], message: str) -> None:
    with pytest.raises(CompatibilityError, match=message):
        check_production_compat(_tiny_model(ir_version, opsets))


def test_production_compat_accepts_the_limits() -> None:
    check_production_compat(_tiny_model(10, {"": 21, "ai.onnx.ml": 5}))


def test_production_compat_rejects_unnamed_nodes() -> None:
    """ONNX Runtime 1.19.2's GatherSliceToSplitFusion refuses graphs with unnamed Gather nodes."""
    with pytest.raises(CompatibilityError, match="1 unnamed"):
        check_production_compat(_tiny_model(8, {"": 17}, node_name=""))
