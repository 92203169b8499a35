"""GBDT classifiers to ONNX: Hummingbird tensor graphs (the shipped path) or ONNX-ML TreeEnsemble.

Supported models: scikit-learn ``GradientBoostingClassifier`` and ``HistGradientBoostingClassifier``,
LightGBM ``LGBMClassifier`` and XGBoost ``XGBClassifier`` (1.x), binary and multi-class.

Hummingbird 0.4.12's own ONNX route calls the dynamo exporter and fails with torch 2.13, so the model
is converted to a PyTorch module by Hummingbird and exported here with the legacy exporter. Every
result has the same interface whatever the implementation: one input ``features`` FP32 [N, n_features],
one output ``probabilities`` FP32 [N, n_classes] (binary models give two columns, like
``predict_proba``), symbolic N. Hummingbird's label output is removed from the graph.

Implementations:

- ``perf_tree_trav`` (default): perfect-tree traversal; allocates ``n_trees x 2**max_depth`` leaf tables,
  so it is refused above depth :data:`PERF_TREE_TRAV_MAX_DEPTH` (bound ``max_depth`` when training).
- ``tree_trav``: gather-based traversal, any depth.
- ``gemm``: three matrix products over all nodes; memory grows as rows x all tree nodes, so large
  batches need a lot of memory. Hummingbird's ``torch.squeeze`` without an axis (hummingbird#676)
  breaks this graph at batch size 1; it is replaced here by an explicit reshape, and the exported
  graph is checked to contain no axis-less ``Squeeze``.
- ``native``: ONNX-ML ``TreeEnsembleClassifier`` through skl2onnx (scikit-learn) or onnxmltools
  (LightGBM, XGBoost). ONNX Runtime implements it on CPU only: the documented option for CPU-only
  deployments (see ``benchmarks/results/gbdt_speed.md``), not for GPUs. The converters round float64
  split thresholds to nearest; they are replaced by :func:`float32_thresholds` of the originals.
"""

from __future__ import annotations

import contextlib
import io
import json
import types
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
import torch
from numpy.typing import NDArray
from onnx import version_converter

from ._onnx_utils import keep_outputs, name_nodes, rename_tensor, set_shape
from .verify import check_production_compat

IMPLEMENTATIONS = ("perf_tree_trav", "tree_trav", "gemm", "native")
PERF_TREE_TRAV_MAX_DEPTH = 10
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
ML_OPSET = 3
"""ai.onnx.ml opset of the native converters (TreeEnsembleClassifier v3, loaded by ONNX Runtime 1.19)."""
ONNXMLTOOLS_MAX_OPSET = 15


class GBDTConversionError(ValueError):
    """The model cannot be converted as asked (unsupported type, depth, implementation)."""


def model_family(model: Any) -> str:
    """``sklearn-gb``, ``sklearn-hgb``, ``lightgbm`` or ``xgboost``; raises for anything else."""
    # deferred: scikit-learn takes seconds to import; generator-only users of `convert` never need it
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier

    if isinstance(model, GradientBoostingClassifier):
        family = "sklearn-gb"
    elif isinstance(model, HistGradientBoostingClassifier):
        family = "sklearn-hgb"
    elif type(model).__module__.startswith("lightgbm") and type(model).__name__ == "LGBMClassifier":
        family = "lightgbm"
    elif type(model).__module__.startswith("xgboost") and type(model).__name__ == "XGBClassifier":
        family = "xgboost"
    else:
        raise GBDTConversionError(
            f"unsupported model type {type(model).__module__}.{type(model).__name__}; accepted: "
            "sklearn GradientBoostingClassifier, HistGradientBoostingClassifier, lightgbm.LGBMClassifier, "
            "xgboost.XGBClassifier"
        )
    if not hasattr(model, "classes_"):
        raise GBDTConversionError(f"{type(model).__name__} is not fitted (no classes_)")
    return family


def _json_depth(node: dict[str, Any], children: tuple[str, ...]) -> int:
    subs = [node[c] for c in children if c in node]
    if "children" in node:
        subs = list(node["children"])
    return 0 if not subs else 1 + max(_json_depth(s, children) for s in subs)


def max_tree_depth(model: Any) -> int:
    """Deepest split path (number of splits root to leaf) over all trees of a fitted model."""
    family = model_family(model)
    if family == "sklearn-gb":
        return max(int(est.tree_.max_depth) for est in np.ravel(model.estimators_))
    if family == "sklearn-hgb":
        return max(int(p.nodes["depth"].max()) for preds in model._predictors for p in preds)
    if family == "lightgbm":
        trees = model.booster_.dump_model()["tree_info"]
        return max(_json_depth(t["tree_structure"], ("left_child", "right_child")) for t in trees)
    dumps = model.get_booster().get_dump(dump_format="json")
    return max(_json_depth(json.loads(d), ()) for d in dumps)


def _gemm_aggregation(self: Any, x: torch.Tensor) -> torch.Tensor:
    """Hummingbird's GEMM GBDT aggregation with an explicit reshape instead of ``torch.squeeze(x)``.

    ``x`` is [n_trees, 1, N]; ``squeeze`` without an axis also drops N when N == 1 (hummingbird#676)
    and the tree axis when there is one tree.
    """
    output = x.reshape(self.n_trees, -1).t().reshape(-1, self.n_gbdt_classes, self.n_trees_per_class).sum(2)
    result: torch.Tensor = self.post_transform(output)
    return result


def _patch_gemm(executor: torch.nn.Module) -> None:
    # deferred (as every hummingbird import here): only the Hummingbird implementations need it
    from hummingbird.ml.operator_converters._tree_implementations import GEMMGBDTImpl

    for op in executor.modules():
        if isinstance(op, GEMMGBDTImpl):
            if op.hidden_three_size != 1:
                raise GBDTConversionError(
                    f"gemm: unexpected Hummingbird GEMM layout (hidden_three_size={op.hidden_three_size}); "
                    "use perf_tree_trav or tree_trav"
                )
            op.aggregation = types.MethodType(_gemm_aggregation, op)


def float32_thresholds(thresholds: Any, decision: str) -> Any:
    """Float32 thresholds that split float32 inputs exactly as the float64 ones do.

    ``x <= t`` for every float32 ``x`` iff ``x <= t32`` with ``t32`` the largest float32 <= ``t``
    (``x < t``: the smallest float32 >= ``t``). Plain rounding, which Hummingbird does, sends inputs
    lying between ``t`` and its rounded value down the wrong branch (scikit-learn and LightGBM
    store float64 midpoints between training values).
    """
    t = np.asarray(thresholds, dtype=np.float64)
    t32 = t.astype(np.float32)
    if decision == "<=":
        t32 = np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32)
    elif decision == "<":
        t32 = np.where(t32.astype(np.float64) < t, np.nextafter(t32, np.float32(np.inf)), t32)
    else:
        raise ValueError(f"decision {decision!r} not in ('<=', '<')")
    exact = t32.astype(np.float64)
    return exact.tolist() if isinstance(thresholds, list) else exact


def _hist_gbdt_parameters(trees: Any, extra_config: dict[str, Any]) -> Any:
    """HistGradientBoosting tree parameters, without Hummingbird's ``0 -> -1`` substitutions.

    Hummingbird 0.4.12 replaces a threshold or a leaf value that is exactly 0 by -1 (meant for
    missing children), which changes the predictions of trees with such splits or leaves.
    """
    from hummingbird.ml.operator_converters._tree_commons import TreeParameters  # deferred: see _patch_gemm

    nodes = trees.nodes
    leaf = nodes["is_leaf"].astype(bool)
    return TreeParameters(
        np.where(leaf, -1, nodes["left"]).tolist(),
        np.where(leaf, -1, nodes["right"]).tolist(),
        nodes["feature_idx"].tolist(),
        np.where(leaf, 0.0, nodes["num_threshold"]).tolist(),
        [[float(v)] for v in nodes["value"]],
    )


@contextlib.contextmanager
def _exact_parameters(family: str) -> Iterator[None]:
    """While Hummingbird converts, give its parsed trees exactly the original model's decisions.

    Thresholds become :func:`float32_thresholds` (not needed for XGBoost, whose thresholds are
    float32 and whose text dump rounds back exactly), and HistGradientBoosting trees are parsed by
    :func:`_hist_gbdt_parameters`.
    """
    # deferred: see _patch_gemm
    from hummingbird.ml.operator_converters import _tree_commons
    from hummingbird.ml.operator_converters.sklearn import gbdt as hb_sklearn_gbdt

    cls = _tree_commons.TreeParameters
    original_init = cls.__init__
    original_hist = hb_sklearn_gbdt._get_parameters_hist_gbdt

    def init(self: Any, lefts: Any, rights: Any, features: Any, thresholds: Any, values: Any) -> None:
        original_init(self, lefts, rights, features, float32_thresholds(thresholds, "<="), values)

    if family != "xgboost":
        cls.__init__ = init
    if family == "sklearn-hgb":
        hb_sklearn_gbdt._get_parameters_hist_gbdt = _hist_gbdt_parameters
    try:
        yield
    finally:
        cls.__init__ = original_init
        hb_sklearn_gbdt._get_parameters_hist_gbdt = original_hist


class _ProbabilitiesOnly(torch.nn.Module):
    """Hummingbird executor returning only the class probabilities (drops the label)."""

    def __init__(self, executor: torch.nn.Module) -> None:
        super().__init__()
        self.executor = executor

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.executor(features)
        probabilities: torch.Tensor = out[-1] if isinstance(out, tuple) else out
        return probabilities


def _hummingbird(
    model: Any, family: str, sample: NDArray[np.float32], implementation: str, opset: int
) -> onnx.ModelProto:
    import hummingbird.ml  # deferred: see _patch_gemm

    # n_threads=None: Hummingbird would otherwise change torch's global thread settings.
    extra = {"tree_implementation": implementation, "container": False, "n_threads": None}
    with _exact_parameters(family):
        executor = hummingbird.ml.convert(model, "torch", sample, extra_config=extra)
    if implementation == "gemm":
        _patch_gemm(executor)
    wrapper = _ProbabilitiesOnly(executor).eval()
    trace_input = torch.from_numpy(sample[: max(2, min(len(sample), 64))].copy())
    if len(trace_input) < 2:
        trace_input = trace_input.repeat(2, 1)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # torch.jit re-exports TracerWarning without listing it in __all__
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(
            wrapper,
            (trace_input,),
            buffer,  # type: ignore[arg-type]  # torch's stub omits the file-like targets export accepts
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    onnx_model = onnx.load_from_string(buffer.getvalue())
    check_no_axisless_squeeze(onnx_model, implementation)
    return onnx_model


def check_no_axisless_squeeze(onnx_model: onnx.ModelProto, implementation: str = "") -> None:
    """Refuse ``Squeeze`` without axes: it drops the batch axis at batch size 1 (hummingbird#676)."""
    squeezes = [
        n.name or n.output[0]
        for n in onnx_model.graph.node
        if n.op_type == "Squeeze" and len(n.input) < 2 and not any(a.name == "axes" for a in n.attribute)
    ]
    if squeezes:
        raise GBDTConversionError(
            f"{implementation or 'graph'}: Squeeze without axes ({squeezes}) breaks batch size 1 "
            "(hummingbird#676); use perf_tree_trav or tree_trav"
        )


def _native(model: Any, family: str, n_features: int, opset: int) -> onnx.ModelProto:
    if family.startswith("sklearn"):
        # optional: skl2onnx / onnxmltools are not dependencies of ufsim-export, only `native` needs them
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        onnx_model = convert_sklearn(
            model,
            initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
            target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
            options={type(model): {"zipmap": False}},
        )
    else:
        import onnxmltools  # optional: see the scikit-learn branch
        from onnxmltools.convert.common.data_types import FloatTensorType as MLFloatTensorType

        # onnxmltools 1.16 converts up to opset 15 and picks the lowest opsets its operators need
        types_ = [(INPUT_NAME, MLFloatTensorType([None, n_features]))]
        ml_opset = min(opset, ONNXMLTOOLS_MAX_OPSET)
        if family == "lightgbm":
            onnx_model = onnxmltools.convert_lightgbm(
                model, initial_types=types_, target_opset=ml_opset, zipmap=False
            )
        else:
            onnx_model = onnxmltools.convert_xgboost(model, initial_types=types_, target_opset=ml_opset)
    probs = [
        o.name
        for o in onnx_model.graph.output
        if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and len(o.type.tensor_type.shape.dim) == 2
    ]
    if len(probs) != 1:
        names = [o.name for o in onnx_model.graph.output]
        raise GBDTConversionError(f"native: expected one FP32 [N, n_classes] output, got {names}")
    keep_outputs(onnx_model, probs)
    rename_tensor(onnx_model, probs[0], OUTPUT_NAME)
    if family != "xgboost":  # XGBoost splits float32 inputs on float32 thresholds already
        _exact_native_thresholds(onnx_model, _float64_thresholds(model, family))
    return _normalise_opsets(onnx_model, opset)


def _float64_thresholds(model: Any, family: str) -> dict[int, NDArray[np.float64]]:
    """Feature index -> every float64 ``<=`` split threshold of the fitted model on that feature."""
    found: dict[int, list[float]] = {}
    if family == "sklearn-gb":
        for estimator in np.ravel(model.estimators_):
            tree = estimator.tree_
            for feature, threshold in zip(tree.feature, tree.threshold, strict=True):
                if feature >= 0:
                    found.setdefault(int(feature), []).append(float(threshold))
    elif family == "sklearn-hgb":
        for predictor in (p for per_class in model._predictors for p in per_class):
            for node in predictor.nodes[~predictor.nodes["is_leaf"].astype(bool)]:
                found.setdefault(int(node["feature_idx"]), []).append(float(node["num_threshold"]))
    else:
        stack = [info["tree_structure"] for info in model.booster_.dump_model()["tree_info"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            if node.get("decision_type", "<=") != "<=":
                raise GBDTConversionError(f"native: split {node['decision_type']!r} is not supported")
            found.setdefault(int(node["split_feature"]), []).append(float(node["threshold"]))
            stack += [node["left_child"], node["right_child"]]
    return {feature: np.unique(values) for feature, values in found.items()}


def _exact_native_thresholds(onnx_model: onnx.ModelProto, thresholds: dict[int, NDArray[np.float64]]) -> None:
    """Give every ``BRANCH_LEQ`` node the float32 threshold that splits float32 inputs like the original.

    A node's float64 original is found by feature and by its value (rounded to nearest, or already
    corrected); the fix is refused when two such originals need different float32 thresholds.
    """
    exact = {
        feature: (t.astype(np.float32), np.asarray(float32_thresholds(t, "<=")))
        for feature, t in thresholds.items()
    }
    for node in onnx_model.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: a for a in node.attribute}
        modes = [m.decode() for m in attrs["nodes_modes"].strings]
        if set(modes) - {"BRANCH_LEQ", "LEAF"}:
            raise GBDTConversionError(f"native: node modes {sorted(set(modes))}, expected BRANCH_LEQ")
        values = np.asarray(attrs["nodes_values"].floats, dtype=np.float32)
        for i, (mode, feature) in enumerate(zip(modes, attrs["nodes_featureids"].ints, strict=True)):
            if mode == "LEAF":
                continue
            rounded, corrected = exact[int(feature)]
            # converters round to nearest (onnxmltools) or already round down (skl2onnx)
            candidates = np.unique(corrected[(rounded == values[i]) | (corrected == values[i])])
            if len(candidates) != 1:
                raise GBDTConversionError(
                    f"native: cannot restore the float64 threshold of feature {feature} near {values[i]!r} "
                    f"({len(candidates)} candidates)"
                )
            values[i] = candidates[0]
        attrs["nodes_values"].ClearField("floats")
        attrs["nodes_values"].floats.extend(values.tolist())


def _normalise_opsets(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """One import per domain, the default domain at ``opset``, the IR version those opsets need."""
    versions: dict[str, int] = {}
    for imp in model.opset_import:
        domain = "" if imp.domain == "ai.onnx" else imp.domain
        versions[domain] = max(versions.get(domain, 0), imp.version)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    if versions.get("", opset) < opset:
        model = version_converter.convert_version(model, opset)
    elif "" not in versions:
        model.opset_import.append(onnx.helper.make_opsetid("", opset))
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(model.ir_version, needed)
    return model


def gbdt_to_onnx(
    model: Any, sample: NDArray[Any], *, implementation: str = "perf_tree_trav", opset: int = 17
) -> onnx.ModelProto:
    """Convert a fitted GBDT classifier to ONNX: ``features`` [N, F] -> ``probabilities`` [N, n_classes].

    ``sample`` (a few rows of real inputs) fixes the number of features and traces the graph.
    Checks the result for ONNX Runtime 1.19.2 compatibility; prove equality with
    :func:`ufsim_export.verify.verify_classifier`.
    """
    if implementation not in IMPLEMENTATIONS:
        raise GBDTConversionError(f"implementation {implementation!r} not in {IMPLEMENTATIONS}")
    if not 13 <= opset <= 21:
        raise GBDTConversionError(f"opset {opset} outside 13..21 (ONNX Runtime 1.19.2 runs up to 21)")
    family = model_family(model)
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if sample.ndim != 2 or len(sample) == 0:
        raise GBDTConversionError(f"sample must be a non-empty 2-D array, got shape {sample.shape}")
    n_features = int(getattr(model, "n_features_in_", sample.shape[1]))
    if sample.shape[1] != n_features:
        raise GBDTConversionError(f"sample has {sample.shape[1]} columns, the model expects {n_features}")
    if implementation == "perf_tree_trav":
        depth = max_tree_depth(model)
        if depth > PERF_TREE_TRAV_MAX_DEPTH:
            raise GBDTConversionError(
                f"perf_tree_trav allocates n_trees x 2**depth leaves; trees are {depth} deep "
                f"(> {PERF_TREE_TRAV_MAX_DEPTH}): bound max_depth when training or use tree_trav"
            )
    if implementation == "native":
        onnx_model = _native(model, family, n_features, opset)
    else:
        onnx_model = _hummingbird(model, family, sample, implementation, opset)
    name_nodes(onnx_model)
    set_shape(onnx_model.graph.input[0], ["N", n_features])
    set_shape(onnx_model.graph.output[0], ["N", len(model.classes_)])
    onnx_model.doc_string = f"{type(model).__name__} via {implementation} (ufsim_export.convert.gbdt)"
    onnx_model.graph.name = f"{type(model).__name__}_{implementation}"  # onnxmltools gives a random uuid
    check_production_compat(onnx_model)
    return onnx_model
