"""The pipeline's non-learnt steps as ONNX graphs, and the adapters around the learnt models.

Graph steps (named in the spec with ``kind: graph``):

- ``features``: kinematics -> Lamarr's model inputs (log10 p, slopes, eta, phi, species flags,
  charge, straight-line propagation of the origin to the point closest to the beam). Its square
  roots, logarithms and atan2 come from :mod:`.elementary`, so no row depends on its batch.
  A particle with a NaN or infinite origin, momentum or n_tracks, a negative n_tracks or a momentum
  component beyond :data:`MAX_MOMENTUM_MEV` is not simulated (species 0, hence ``track_type = -1``
  and every output at its sentinel), and its features are computed from harmless stand-in values,
  so the server's contract holds for any input a Triton client sends.
- ``acceptance_sampling``: samples the geometrical acceptance of simulated particles.
- ``track_sampling``: samples the track class of the particles in acceptance; builds the resolution
  conditions.
- ``pid_sampling``: samples isMuon for long tracks.
- ``assembly``: reconstructed state, covariance and PID with documented sentinels.

Learnt models are exported with canonical tensor names (``features -> probabilities`` for GBDTs,
``conditions, noise -> output`` for generators); :func:`adapt_learnt` wraps them so that their
inputs and outputs carry the spec's tensor names, concatenates and selects condition columns, and
draws the generator noise inside the graph from ``rng_key``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import version_converter

from ..spec import RNG_KEY, Gate, PipelineSpec, StepSpec
from . import elementary, rng
from .builder import OPSET, GraphBuilder

MAX_MOMENTUM_MEV = 1.0e7
"""Largest accepted |px|, |py|, |pz| (10 TeV, above the LHC beam energy); beyond it a particle is absurd."""

HADRONS = ("pi", "K", "p")
"""Species counted as hadrons (``mc_is_h``); e and mu are leptons (their negative charge has a + id)."""


def species_pdg(spec: PipelineSpec) -> dict[int, int]:
    """species code -> |PDG id|, from the spec; code 0 means not simulated (and pz <= 0 likewise)."""
    return {code: s.pdg for code, s in enumerate(spec.species, start=1)}


def _by_name(columns: tuple[str, ...], values: dict[str, str], b: GraphBuilder) -> str:
    """Concatenate named columns in the order the spec declares them."""
    return b.concat(*(values[c] for c in columns))


def _inputs(b: GraphBuilder, spec: PipelineSpec, step: StepSpec) -> dict[str, str]:
    names = {}
    for ref in step.inputs:
        tensor = spec.tensor(ref.name)
        names[ref.name] = b.input(ref.name, tensor.dtype, tensor.width)
    return names


def _outputs(b: GraphBuilder, step: StepSpec, values: dict[str, str]) -> None:
    missing = [t.name for t in step.outputs if t.name not in values]
    if missing:
        raise ValueError(f"graph step {step.name!r} does not compute {missing}")
    for tensor in step.outputs:
        b.output(values[tensor.name], tensor.name, tensor.dtype, tensor.width)


def _sane_inputs(b: GraphBuilder, x: dict[str, str]) -> tuple[dict[str, str], str]:
    """The inputs with every row that is not sane replaced by harmless values, and the mask of sane rows.

    Sane: finite origin, momentum (each |component| <= MAX_MOMENTUM_MEV) and n_tracks >= 0; the others
    get origin 0, momentum (0, 0, 1 GeV) and n_tracks 0.
    """

    def finite(v: str) -> str:  # v - v is 0 for finite values, NaN for NaN and +-inf
        return b.op("Equal", b.op("Sub", v, v), b.const(0.0))

    def all_columns(mask: str) -> str:
        return b.op("Equal", b.op("ReduceMin", b.cast(mask, "INT32"), b.const([1], np.int64), keepdims=1),
                    b.const(1, np.int32))  # fmt: skip

    bounded = b.op("LessOrEqual", b.op("Abs", x["momentum"]), b.const(MAX_MOMENTUM_MEV))
    momentum_ok = all_columns(b.op("And", finite(x["momentum"]), bounded))
    valid = b.op(
        "And",
        b.op("And", all_columns(finite(x["origin"])), momentum_ok),
        b.op("And", finite(x["n_tracks"]), b.op("GreaterOrEqual", x["n_tracks"], b.const(0.0))),
    )
    sane = dict(x)
    sane["origin"] = b.where(valid, x["origin"], b.const(np.zeros((1, 3), np.float32)))
    sane["momentum"] = b.where(valid, x["momentum"], b.const(np.array([[0.0, 0.0, 1000.0]], np.float32)))
    sane["n_tracks"] = b.where(valid, x["n_tracks"], b.const(0.0))
    return sane, valid


def _build_features(b: GraphBuilder, spec: PipelineSpec, step: StepSpec) -> dict[str, str]:
    x, valid = _sane_inputs(b, _inputs(b, spec, step))
    zero, one = b.const(0.0), b.const(1.0)
    px, py, pz = (b.col(x["momentum"], i) for i in range(3))
    x0, y0, z0 = (b.col(x["origin"], i) for i in range(3))

    def sq(v: str) -> str:
        return b.op("Mul", v, v)

    math = elementary.GraphOps(b)
    # pt and p in one [N, 2] square root, over the squares' possible range (|component| <= 1e7 MeV gives
    # p^2 < 2^50; pt below 2^-20 MeV is only ever used as max(pt, 1e-6)): half the nodes of two roots
    pt2 = b.op("Add", sq(px), sq(py))
    roots = elementary.sqrt(math, b.concat(pt2, b.op("Add", pt2, sq(pz))), min_exp=-40, max_exp=50)
    pt, p = b.col(roots, 0), b.col(roots, 1)
    # ln p and eta = asinh(pz / pt) = ln((p + pz) / pt) in one [N, 2] logarithm; the identity holds for
    # pz > 0 without cancellation, and backward particles are not simulated
    ratio = b.op("Div", b.op("Add", p, pz), b.op("Max", pt, b.const(1e-6)))
    logs = elementary.log(math, b.concat(p, ratio), min_exp=-10, max_exp=64)
    log10_p = b.op("Mul", b.col(logs, 0), b.const(1.0 / np.log(10.0)))
    eta = b.col(logs, 1)
    forward = b.op("Greater", pz, zero)
    safe_pz = b.where(forward, pz, one)
    tx = b.where(forward, b.op("Div", px, safe_pz), zero)
    ty = b.where(forward, b.op("Div", py, safe_pz), zero)
    phi = elementary.atan2(math, py, px)
    # species flags from |pid|; particles going backwards (pz <= 0) are not simulated
    abs_pid = b.op("Abs", x["pid"])
    pdg = species_pdg(spec)
    code = {s.name: c for c, s in enumerate(spec.species, start=1)}
    flag = {c: b.op("Equal", abs_pid, b.const(pdg_id, np.int32)) for c, pdg_id in pdg.items()}
    codes = [b.op("Mul", b.cast(flag[c], "INT32"), b.const(c, np.int32)) for c in pdg]
    species = codes[0]
    for c in codes[1:]:
        species = b.op("Add", species, c)
    species = b.where(b.op("And", forward, valid), species, b.const(0, np.int32))
    fl = {c: b.cast(f, "FP32") for c, f in flag.items()}
    is_h = fl[code[HADRONS[0]]]
    for name in HADRONS[1:]:
        is_h = b.op("Add", is_h, fl[code[name]])
    # charge: e-/mu- have positive PDG ids; hadrons carry the sign of their id
    sign = b.op("Sign", b.cast(x["pid"], "FP32"))
    lepton = b.op("Or", flag[code["e"]], flag[code["mu"]])
    charge = b.where(lepton, b.op("Neg", sign), sign)
    # straight line to the point closest to the beam axis: z = z0 - (tx x0 + ty y0) / (tx^2 + ty^2)
    slope2 = b.op("Add", sq(tx), sq(ty))
    has_slope = b.op("Greater", slope2, zero)
    dz = b.where(
        has_slope,
        b.op(
            "Neg",
            b.op(
                "Div", b.op("Add", b.op("Mul", tx, x0), b.op("Mul", ty, y0)), b.where(has_slope, slope2, one)
            ),
        ),
        zero,
    )
    ctb_x = b.op("Add", x0, b.op("Mul", tx, dz))
    ctb_y = b.op("Add", y0, b.op("Mul", ty, dz))
    ctb_z = b.op("Add", z0, dz)
    columns = {
        "mc_x": x0,
        "mc_y": y0,
        "mc_z": z0,
        "mc_log10_p": log10_p,
        "mc_p": p,
        "mc_tx": tx,
        "mc_ty": ty,
        "mc_eta": eta,
        "mc_phi": phi,
        "mc_is_e": fl[code["e"]],
        "mc_is_mu": fl[code["mu"]],
        "mc_is_h": is_h,
        "mc_charge": charge,
        "ctb_x": ctb_x,
        "ctb_y": ctb_y,
        "ctb_z": ctb_z,
        "n_tracks": x["n_tracks"],
        **{f"is_{name}": fl[c] for name, c in code.items()},
    }
    features = {t.name: _by_name(t.columns, columns, b) for t in step.outputs if t.name != "species"}
    return {"species": species, **features}


def _build_acceptance_sampling(b: GraphBuilder, spec: PipelineSpec, step: StepSpec) -> dict[str, str]:
    x = _inputs(b, spec, step)
    assert step.stream is not None
    u = rng.uniforms_graph(b, x[RNG_KEY], step.stream, 1)
    inside = b.op("Less", u, b.col(x["acceptance_probability"], 1))
    simulated = b.op("Greater", x["species"], b.const(0, np.int32))
    return {"in_acceptance": b.cast(b.op("And", simulated, inside), "INT32")}


def _build_track_sampling(b: GraphBuilder, spec: PipelineSpec, step: StepSpec) -> dict[str, str]:
    x = _inputs(b, spec, step)
    assert step.stream is not None
    u = rng.uniforms_graph(b, x[RNG_KEY], step.stream, 1)
    # inverse-CDF sampling of the class; u scaled by the sum so rounding never leaves a gap
    probs = x["efficiency_probability"]
    cdf = b.op("CumSum", probs, b.const(1, np.int64))
    u_class = b.op("Mul", u, b.col(cdf, 3))
    edges = b.cols(cdf, [0, 1, 2])
    klass = b.op(
        "ReduceSum",
        b.cast(b.op("GreaterOrEqual", u_class, edges), "INT64"),
        b.const([1], np.int64),
        keepdims=1,
    )
    efficiency_classes = [spec.track_type(name) for name in spec.step("tracking_efficiency").classes]
    track_type = b.op(
        "Gather",
        b.const(np.asarray(efficiency_classes, np.int32), np.int32),
        b.op("Squeeze", klass, b.const([1], np.int64)),
    )
    track_type = b.op("Unsqueeze", track_type, b.const([1], np.int64))
    keep = b.op("Equal", x["in_acceptance"], b.const(1, np.int32))
    track_type = b.where(keep, track_type, b.const(spec.track_type("outside_acceptance"), np.int32))
    # resolution_conditions = ctb_features then one is_<track type> flag per reconstructed type
    flag_columns = spec.tensor("resolution_conditions").columns[spec.tensor("ctb_features").width :]
    flags = [
        b.cast(b.op("Equal", track_type, b.const(spec.track_type(c.removeprefix("is_")), np.int32)), "FP32")
        for c in flag_columns
    ]
    return {"track_type": track_type, "resolution_conditions": b.concat(x["ctb_features"], *flags)}


def _build_pid_sampling(b: GraphBuilder, spec: PipelineSpec, step: StepSpec) -> dict[str, str]:
    x = _inputs(b, spec, step)
    assert step.stream is not None
    u = rng.uniforms_graph(b, x[RNG_KEY], step.stream, 1)
    passed = b.op("Less", u, b.col(x["is_muon_probability"], 1))
    applies = b.op("Equal", x["track_type"], b.const(spec.track_type("long"), np.int32))
    sentinel = spec.tensor("is_muon").sentinel_values()
    assert sentinel is not None
    is_muon = b.where(applies, b.cast(passed, "INT32"), b.const(sentinel, np.int32))
    return {"is_muon": is_muon, "is_muon_flag": b.cast(b.op("And", applies, passed), "FP32")}


def _covariance_indices() -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """For each upper-triangle entry (i <= j) of the 5x5 covariance: i, j and its correlation slot."""
    corr_order = [(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3), (0, 4), (1, 4), (2, 4), (3, 4)]
    rows, cols, slots = [], [], []
    for i in range(5):
        for j in range(i, 5):
            rows.append(i)
            cols.append(j)
            slots.append(0 if i == j else 1 + corr_order.index((i, j)))
    return np.array(rows), np.array(cols), np.array(slots)


def _build_assembly(b: GraphBuilder, spec: PipelineSpec, step: StepSpec) -> dict[str, str]:
    x = _inputs(b, spec, step)

    def sentinel(name: str) -> str:
        values = spec.tensor(name).sentinel_values()
        assert values is not None, f"output {name!r} needs a sentinel in the spec"
        return b.const(values, spec.tensor(name).numpy_dtype)

    reco = b.op("Greater", x["track_type"], b.const(0, np.int32))
    res = x["resolution_residuals"]
    state = b.op("Add", x["true_state"], b.cols(res, range(6)))
    chi2 = b.op("Max", b.col(res, 6), b.const(0.0))
    ndof = b.op("Max", b.op("Floor", b.col(res, 7)), b.const(1.0))
    ghost = b.op("Clip", b.col(res, 8), b.const(0.0), b.const(1.0))
    quality = b.concat(chi2, ndof, ghost)
    cov_params = x["covariance_parameters"]
    sigma = b.op("Exp", b.op("Mul", b.cols(cov_params, range(5)), b.const(0.5)))
    corr = b.op("Clip", b.cols(cov_params, range(5, 15)), b.const(-1.0), b.const(1.0))
    ones = b.op("Add", b.op("Mul", b.col(sigma, 0), b.const(0.0)), b.const(1.0))
    rows, cols, slots = _covariance_indices()
    rho = b.cols(b.concat(ones, corr), slots)
    cov = b.op("Mul", rho, b.op("Mul", b.cols(sigma, rows), b.cols(sigma, cols)))
    long_track = b.op("Equal", x["track_type"], b.const(spec.track_type("long"), np.int32))
    muon = b.op("Equal", x["is_muon"], b.const(1, np.int32))
    # ProbNN are probabilities: clip them to [0, 1]; the DLL columns pass through
    gpid = x["global_pid_response"]
    probnn = [c.startswith("ProbNN") for c in spec.tensor("global_pid_response").columns]
    gpid = b.op(
        "Max",
        b.op("Min", gpid, b.const([1.0 if p else np.inf for p in probnn])),
        b.const([0.0 if p else -np.inf for p in probnn]),
    )
    return {
        "track_state": b.where(reco, state, sentinel("track_state")),
        "track_quality": b.where(reco, quality, sentinel("track_quality")),
        "track_covariance": b.where(reco, cov, sentinel("track_covariance")),
        "rich_dll": b.where(long_track, x["rich_response"], sentinel("rich_dll")),
        "muon_ll": b.where(muon, x["muon_response"], sentinel("muon_ll")),
        "global_pid": b.where(long_track, gpid, sentinel("global_pid")),
    }


GRAPH_BUILDERS: dict[str, Callable[[GraphBuilder, PipelineSpec, StepSpec], dict[str, str]]] = {
    "features": _build_features,
    "acceptance_sampling": _build_acceptance_sampling,
    "track_sampling": _build_track_sampling,
    "pid_sampling": _build_pid_sampling,
    "assembly": _build_assembly,
}


def build_graph_step(spec: PipelineSpec, step: StepSpec) -> onnx.ModelProto:
    """The ONNX model of a non-learnt step, with the spec's tensor names."""
    try:
        builder = GRAPH_BUILDERS[step.name]
    except KeyError:
        raise KeyError(
            f"step {step.name!r} is kind 'graph' but ufsim-export has no builder for it; "
            f"known graph steps: {sorted(GRAPH_BUILDERS)}"
        ) from None
    b = GraphBuilder(step.name)
    _outputs(b, step, builder(b, spec, step))
    return b.build(doc=f"ufsim non-learnt step {step.name!r}, generated from the pipeline spec")


def compute_features(spec: PipelineSpec, particles: dict[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
    """Run the spec's ``features`` graph on particles (pid, origin, momentum, n_tracks): what it serves."""
    step = spec.step("features")
    session = ort.InferenceSession(
        build_graph_step(spec, step).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    outputs = session.run(None, {ref.name: particles[ref.name] for ref in step.inputs})
    return {t.name: v for t, v in zip(step.outputs, outputs, strict=True)}


def _conditions(b: GraphBuilder, spec: PipelineSpec, step: StepSpec) -> str:
    parts = []
    for ref in step.tensor_inputs:
        tensor = spec.tensor(ref.name)
        name = b.input(ref.name, tensor.dtype, tensor.width)
        parts.append(b.cols(name, ref.columns) if ref.columns is not None else name)
    return b.concat(*parts)


def _gated_rows(b: GraphBuilder, gate: Gate) -> str:
    """Declare the gate input and return the indices [M] (INT64) of the rows the step runs on."""
    values = b.input(gate.tensor, "INT32", 1)
    mask = b.op("Equal", values, b.const(gate.values[0], np.int32))
    for value in gate.values[1:]:
        mask = b.op("Or", mask, b.op("Equal", values, b.const(value, np.int32)))
    flat = b.op("Squeeze", mask, b.const([1], np.int64))
    return b.op("Squeeze", b.op("NonZero", flat), b.const([0], np.int64))


def _scatter_rows(b: GraphBuilder, computed: str, rows: str, gate: str, width: int) -> str:
    """[N, width]: the [M, width] results at their rows, 0 in every other row (N is the gate's batch)."""
    shape = b.op("Concat", b.op("Shape", gate, end=1), b.const([width], np.int64), axis=0)
    zeros = b.op("Expand", b.const(np.zeros((1, width), np.float32)), shape)
    return b.op("ScatterND", zeros, b.op("Unsqueeze", rows, b.const([1], np.int64)), computed)


def adapt_learnt(spec: PipelineSpec, step: StepSpec, raw: onnx.ModelProto) -> onnx.ModelProto:
    """Wrap a learnt model (canonical names) so that it takes and returns the spec's tensors."""
    if raw.opset_import and max(o.version for o in raw.opset_import if o.domain in ("", "ai.onnx")) < OPSET:
        raw = version_converter.convert_version(raw, OPSET)
    raw_inputs = {i.name for i in raw.graph.input}
    raw_outputs = [o.name for o in raw.graph.output]
    b = GraphBuilder(step.name, prefix="ufsim_")
    conditions = _conditions(b, spec, step)
    if step.applies_to is not None:
        rows = _gated_rows(b, step.applies_to)
        conditions = b.op("Gather", conditions, rows, axis=0)
    if step.kind == "gbdt":
        feeds = {"features": conditions}
        produced = "probabilities"
    elif step.kind == "generator":
        key = b.input(RNG_KEY, "UINT64", 1)
        if step.applies_to is not None:
            key = b.op("Gather", key, rows, axis=0)
        assert step.stream is not None and step.noise_dim is not None
        feeds = {"conditions": conditions, "noise": rng.normals_graph(b, key, step.stream, step.noise_dim)}
        produced = "output"
    else:
        raise ValueError(f"step {step.name!r} of kind {step.kind!r} is not a learnt model")
    if raw_inputs != set(feeds) or produced not in raw_outputs:
        raise ValueError(
            f"step {step.name!r}: the learnt model has inputs {sorted(raw_inputs)}, outputs {raw_outputs}; "
            f"a {step.kind} needs inputs {sorted(feeds)} and output {produced!r}"
        )
    out = step.outputs[0]
    graph = raw.graph
    renames = {canonical: feeds[canonical] for canonical in feeds}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    b.adopt(graph.node)
    b.initializers.extend(graph.initializer)
    if step.applies_to is not None:
        produced = _scatter_rows(b, produced, rows, step.applies_to.tensor, out.width)
    b.output(produced, out.name, out.dtype, out.width)
    return b.build(
        doc=f"ufsim learnt step {step.name!r} ({step.kind}), adapted to the pipeline spec",
        extra_opsets=[o for o in raw.opset_import if o.domain not in ("", "ai.onnx")],
    )
