"""The declarative pipeline spec: load, check the wiring, and answer questions about tensors.

The spec (``ufsim_export/pipelines/lhcb.yaml``, package data) is the single source of truth for
tensor names, dtypes, shapes, units and sentinels, and for the order of the steps in the ensemble.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DTYPES: dict[str, type[np.generic]] = {
    "FP32": np.float32,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT64": np.uint64,
}
KINDS = ("graph", "gbdt", "generator")
RNG_KEY = "rng_key"


class SpecError(ValueError):
    """The pipeline spec is malformed or its wiring is inconsistent."""


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: name, Triton dtype, dims without the batch dimension, and documentation."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    columns: tuple[str, ...] = ()
    units: tuple[str, ...] | str = ""
    sentinel: tuple[float, ...] | float | None = None
    description: str = ""

    @property
    def numpy_dtype(self) -> type[np.generic]:
        """The numpy dtype that carries this tensor."""
        return DTYPES[self.dtype]

    @property
    def width(self) -> int:
        """Number of values per particle."""
        return int(np.prod(self.dims))

    def sentinel_values(self) -> np.ndarray | None:
        """The sentinel as one value per column, or None when the tensor has none."""
        if self.sentinel is None:
            return None
        values = np.broadcast_to(np.asarray(self.sentinel, dtype=self.numpy_dtype), (self.width,))
        return values.copy()


@dataclass(frozen=True)
class InputRef:
    """A step input: a tensor produced upstream, optionally restricted to some of its columns."""

    name: str
    columns: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StepSpec:
    """One composing model of the ensemble."""

    name: str
    kind: str
    inputs: tuple[InputRef, ...]
    outputs: tuple[TensorSpec, ...]
    stream: int | None = None
    noise_dim: int | None = None
    classes: tuple[str, ...] = ()

    @property
    def tensor_inputs(self) -> tuple[InputRef, ...]:
        """Inputs other than the random key (for learnt models: the conditions, in order)."""
        return tuple(ref for ref in self.inputs if ref.name != RNG_KEY)

    @property
    def uses_rng(self) -> bool:
        """Whether the step draws random numbers from ``rng_key``."""
        return any(ref.name == RNG_KEY for ref in self.inputs)


@dataclass(frozen=True)
class PipelineSpec:
    """The whole pipeline: ensemble inputs and outputs, and the steps in execution order."""

    name: str
    version: int
    max_batch_size: int
    instance_count: int
    max_queue_delay_microseconds: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    steps: tuple[StepSpec, ...]
    source: Path | None = None
    _tensors: dict[str, TensorSpec] = field(default_factory=dict, repr=False, compare=False)

    def tensor(self, name: str) -> TensorSpec:
        """The declaration of any tensor (ensemble input, step output or ensemble output)."""
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in pipeline {self.name!r}") from None

    def step(self, name: str) -> StepSpec:
        """The step called ``name``."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"no step {name!r} in pipeline {self.name!r}; steps: {[s.name for s in self.steps]}")

    def input_width(self, step: StepSpec) -> int:
        """Number of condition/feature columns a learnt step sees after column selection."""
        return sum(
            len(ref.columns) if ref.columns is not None else self.tensor(ref.name).width
            for ref in step.tensor_inputs
        )

    def learnt_steps(self) -> tuple[StepSpec, ...]:
        """Steps whose models are trained (GBDTs and generators)."""
        return tuple(step for step in self.steps if step.kind != "graph")


def _tensor(raw: dict[str, Any], where: str) -> TensorSpec:
    for key in ("name", "dtype", "dims"):
        if key not in raw:
            raise SpecError(f"{where}: tensor {raw.get('name', '?')!r} has no {key!r}")
    if raw["dtype"] not in DTYPES:
        raise SpecError(
            f"{where}: tensor {raw['name']!r} has dtype {raw['dtype']!r}; accepted: {sorted(DTYPES)}"
        )
    dims = tuple(int(d) for d in raw["dims"])
    if not dims or any(d <= 0 for d in dims):
        raise SpecError(f"{where}: tensor {raw['name']!r} has dims {list(dims)}; need positive dims")
    columns = tuple(raw.get("columns", ()))
    if columns and len(columns) != int(np.prod(dims)):
        raise SpecError(
            f"{where}: tensor {raw['name']!r} declares {len(columns)} columns for dims {list(dims)}"
        )
    units = raw.get("units", "")
    sentinel = raw.get("sentinel")
    if isinstance(sentinel, list):
        if len(sentinel) != int(np.prod(dims)):
            raise SpecError(f"{where}: tensor {raw['name']!r} has {len(sentinel)} sentinels for {dims}")
        sentinel = tuple(float(s) for s in sentinel)
    return TensorSpec(
        name=str(raw["name"]),
        dtype=str(raw["dtype"]),
        dims=dims,
        columns=columns,
        units=tuple(units) if isinstance(units, list) else str(units),
        sentinel=sentinel,
        description=str(raw.get("description", "")),
    )


def _input_ref(raw: str | dict[str, Any], where: str) -> InputRef:
    if isinstance(raw, str):
        return InputRef(raw)
    if "name" not in raw:
        raise SpecError(f"{where}: input {raw!r} has no 'name'")
    columns = raw.get("columns")
    return InputRef(str(raw["name"]), tuple(int(c) for c in columns) if columns is not None else None)


def _step(raw: dict[str, Any], outputs_by_name: dict[str, TensorSpec]) -> StepSpec:
    name = raw.get("name")
    if not name:
        raise SpecError(f"a step has no name: {raw!r}")
    where = f"step {name!r}"
    kind = raw.get("kind")
    if kind not in KINDS:
        raise SpecError(f"{where}: kind {kind!r} is not one of {list(KINDS)}")
    inputs = tuple(_input_ref(r, where) for r in raw.get("inputs", ()))
    outputs: list[TensorSpec] = []
    for out in raw.get("outputs", ()):
        if isinstance(out, str):
            if out not in outputs_by_name:
                raise SpecError(f"{where}: output {out!r} is a bare name but not an ensemble output")
            outputs.append(outputs_by_name[out])
        else:
            outputs.append(_tensor(out, where))
    if not inputs or not outputs:
        raise SpecError(f"{where}: needs at least one input and one output")
    return StepSpec(
        name=str(name),
        kind=str(kind),
        inputs=inputs,
        outputs=tuple(outputs),
        stream=int(raw["stream"]) if "stream" in raw else None,
        noise_dim=int(raw["noise_dim"]) if "noise_dim" in raw else None,
        classes=tuple(raw.get("classes", ())),
    )


def parse_spec(raw: dict[str, Any], source: Path | None = None) -> PipelineSpec:
    """Build a :class:`PipelineSpec` from a parsed YAML mapping and check its wiring."""
    for key in ("name", "inputs", "outputs", "steps"):
        if key not in raw:
            raise SpecError(f"pipeline spec has no {key!r}")
    inputs = tuple(_tensor(t, "ensemble inputs") for t in raw["inputs"])
    outputs = tuple(_tensor(t, "ensemble outputs") for t in raw["outputs"])
    steps = tuple(_step(s, {t.name: t for t in outputs}) for s in raw["steps"])
    spec = PipelineSpec(
        name=str(raw["name"]),
        version=int(raw.get("version", 1)),
        max_batch_size=int(raw.get("max_batch_size", 65536)),
        instance_count=int(raw.get("instance_count", 1)),
        max_queue_delay_microseconds=int(raw.get("max_queue_delay_microseconds", 100)),
        inputs=inputs,
        outputs=outputs,
        steps=steps,
        source=source,
    )
    spec._tensors.update(_check_wiring(spec))
    return spec


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and check a pipeline spec YAML file."""
    path = Path(path)
    with path.open() as stream:
        raw = yaml.safe_load(stream)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    return parse_spec(raw, source=path)


def default_spec_path() -> Path:
    """The LHCb pipeline spec shipped as package data (ufsim_export/pipelines/lhcb.yaml)."""
    return Path(__file__).resolve().parent / "pipelines" / "lhcb.yaml"


def _same(a: TensorSpec, b: TensorSpec) -> bool:
    return a.dtype == b.dtype and a.dims == b.dims


def _check_wiring(spec: PipelineSpec) -> dict[str, TensorSpec]:
    """Check that every step input is produced upstream and every produced tensor is used."""
    available: dict[str, TensorSpec] = {}
    producer: dict[str, str] = {}
    for tensor in spec.inputs:
        if tensor.name in available:
            raise SpecError(f"ensemble input {tensor.name!r} is declared twice")
        available[tensor.name] = tensor
        producer[tensor.name] = "ensemble inputs"
    if RNG_KEY in available and available[RNG_KEY].dtype != "UINT64":
        raise SpecError(f"ensemble input {RNG_KEY!r} must be UINT64")
    declared_outputs = {t.name: t for t in spec.outputs}
    consumed: set[str] = set()
    names: set[str] = set()
    streams: dict[int, str] = {}
    for step in spec.steps:
        where = f"step {step.name!r}"
        if step.name in names:
            raise SpecError(f"{where} is declared twice")
        names.add(step.name)
        for ref in step.inputs:
            if ref.name not in available:
                raise SpecError(
                    f"{where}: input {ref.name!r} is not produced by an earlier step or the ensemble inputs"
                )
            consumed.add(ref.name)
            if ref.columns is not None:
                width = available[ref.name].width
                bad = [c for c in ref.columns if not 0 <= c < width]
                if bad:
                    raise SpecError(
                        f"{where}: input {ref.name!r} selects columns {bad} outside 0..{width - 1}"
                    )
        if step.uses_rng or step.kind == "generator":
            if not step.uses_rng:
                raise SpecError(f"{where}: a generator needs {RNG_KEY!r} among its inputs")
            if step.stream is None:
                raise SpecError(f"{where}: draws random numbers but declares no 'stream'")
            if step.stream in streams:
                raise SpecError(
                    f"{where}: stream {step.stream} is already used by step {streams[step.stream]!r}"
                )
            streams[step.stream] = step.name
        if step.kind == "generator" and not step.noise_dim:
            raise SpecError(f"{where}: a generator needs a positive 'noise_dim'")
        if step.kind == "gbdt":
            if len(step.outputs) != 1 or step.outputs[0].dtype != "FP32":
                raise SpecError(f"{where}: a GBDT has exactly one FP32 output (class probabilities)")
            if step.classes and step.outputs[0].width != len(step.classes):
                raise SpecError(
                    f"{where}: output {step.outputs[0].name!r} has {step.outputs[0].width} columns "
                    f"for {len(step.classes)} classes"
                )
        if step.kind != "graph":
            for ref in step.tensor_inputs:
                if available[ref.name].dtype != "FP32":
                    raise SpecError(f"{where}: input {ref.name!r} of a learnt model must be FP32")
        for out in step.outputs:
            if out.name in available:
                raise SpecError(f"{where}: output {out.name!r} is already produced by {producer[out.name]}")
            if out.name in declared_outputs and not _same(out, declared_outputs[out.name]):
                ens = declared_outputs[out.name]
                raise SpecError(
                    f"{where}: output {out.name!r} is {out.dtype}{list(out.dims)} but the ensemble "
                    f"declares {ens.dtype}{list(ens.dims)}"
                )
            available[out.name] = declared_outputs.get(out.name, out)
            producer[out.name] = where
    for name in declared_outputs:
        if name not in available or producer[name] == "ensemble inputs":
            raise SpecError(f"ensemble output {name!r} is not produced by any step")
    unused = [n for n in available if n not in consumed and n not in declared_outputs]
    if unused:
        details = ", ".join(f"{n!r} (from {producer[n]})" for n in unused)
        raise SpecError(f"tensors produced or declared but never used: {details}")
    return available


def columns_of(spec: PipelineSpec, names: Iterable[str]) -> list[str]:
    """Column names of the concatenation of the given tensors (for training tables)."""
    return [col for name in names for col in spec.tensor(name).columns]
