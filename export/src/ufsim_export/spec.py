"""The declarative pipeline spec: load, check the wiring, and answer questions about tensors.

The spec (``ufsim_export/pipelines/lhcb.yaml``, package data) is the single source of truth for
tensor names, dtypes, shapes, units and sentinels, and for the order of the steps in the ensemble.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    NonNegativeInt,
    PositiveInt,
    Tag,
    ValidationError,
    model_validator,
)

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

    def sentinel_values(self) -> NDArray[Any] | None:
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
class Gate:
    """The rows a learnt step runs on: those whose ``tensor`` (INT32, one column) is one of ``values``.

    The step computes only those rows and returns 0 for the others, which downstream steps ignore.
    """

    tensor: str
    values: tuple[int, ...]


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
    applies_to: Gate | None = None

    @property
    def tensor_inputs(self) -> tuple[InputRef, ...]:
        """Inputs other than the random key and the gate (for learnt models: the conditions, in order)."""
        skip = {RNG_KEY} | ({self.applies_to.tensor} if self.applies_to else set())
        return tuple(ref for ref in self.inputs if ref.name not in skip)

    @property
    def uses_rng(self) -> bool:
        """Whether the step draws random numbers from ``rng_key``."""
        return any(ref.name == RNG_KEY for ref in self.inputs)


@dataclass(frozen=True)
class SpeciesSpec:
    """A simulated species: its name (one-hot column ``is_<name>``) and PDG id (matched by |id|)."""

    name: str
    pdg: int


@dataclass(frozen=True)
class TrackTypeSpec:
    """A value of ``track_type``: its name (a tracking-efficiency class, where it is one) and code."""

    name: str
    code: int


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
    species: tuple[SpeciesSpec, ...] = ()
    track_types: tuple[TrackTypeSpec, ...] = ()
    onnxruntime_parameters: tuple[tuple[str, str], ...] = ()
    """Extra config.pbtxt parameters of every composing model (ONNX Runtime settings), in spec order."""
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

    def track_type(self, name: str) -> int:
        """The ``track_type`` code called ``name`` (for example ``long`` -> 3)."""
        for track_type in self.track_types:
            if track_type.name == name:
                return track_type.code
        raise KeyError(f"no track type {name!r}; declared: {[t.name for t in self.track_types]}")


class _Strict(BaseModel):
    """Schema base: an unknown key (a misspelt ``sentinal``) fails instead of falling back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Tensor(_Strict):
    name: str
    dtype: str
    dims: list[int]
    columns: list[str] = Field(default_factory=list)
    units: list[str] | str = ""
    sentinel: float | list[float] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> _Tensor:
        where = f"tensor {self.name!r}"
        if self.dtype not in DTYPES:
            raise ValueError(f"{where} has dtype {self.dtype!r}; accepted: {sorted(DTYPES)}")
        if not self.dims or any(d <= 0 for d in self.dims):
            raise ValueError(f"{where} has dims {self.dims}; need positive dims")
        width = int(np.prod(self.dims))
        if self.columns and len(self.columns) != width:
            raise ValueError(f"{where} declares {len(self.columns)} columns for dims {self.dims}")
        if isinstance(self.sentinel, list) and len(self.sentinel) != width:
            raise ValueError(f"{where} has {len(self.sentinel)} sentinels for dims {self.dims}")
        return self


class _InputRef(_Strict):
    name: str
    columns: list[int] | None = None


def _bare_or(tag: str) -> Discriminator:
    """A bare tensor name or an inline mapping: two tagged alternatives, so errors name just one."""
    return Discriminator(lambda value: BARE if isinstance(value, str) else tag)


BARE = "bare_name"
_StepInput = Annotated[Annotated[str, Tag(BARE)] | Annotated[_InputRef, Tag("inline")], _bare_or("inline")]
_StepOutput = Annotated[Annotated[str, Tag(BARE)] | Annotated[_Tensor, Tag("inline")], _bare_or("inline")]


class _Gate(_Strict):
    tensor: str
    values: list[int | str] = Field(min_length=1)


class _Step(_Strict):
    name: str
    kind: str
    inputs: list[_StepInput] = Field(default_factory=list)
    outputs: list[_StepOutput] = Field(default_factory=list)
    stream: int | None = None
    noise_dim: int | None = None
    classes: list[str] = Field(default_factory=list)
    applies_to: _Gate | None = None

    @model_validator(mode="after")
    def _known_kind(self) -> _Step:
        if self.kind not in KINDS:
            raise ValueError(f"step {self.name!r}: kind {self.kind!r} is not one of {list(KINDS)}")
        if not self.inputs or not self.outputs:
            raise ValueError(f"step {self.name!r}: needs at least one input and one output")
        return self


class _Species(_Strict):
    name: str
    pdg: PositiveInt


class _TrackType(_Strict):
    name: str
    code: int


class _Pipeline(_Strict):
    name: str
    version: int = 1
    max_batch_size: PositiveInt = 65536
    instance_count: PositiveInt = 1
    max_queue_delay_microseconds: NonNegativeInt = 100
    onnxruntime_parameters: dict[str, str] = Field(default_factory=dict)
    species: list[_Species] = Field(min_length=1)
    track_types: list[_TrackType] = Field(min_length=1)
    inputs: list[_Tensor]
    outputs: list[_Tensor]
    steps: list[_Step]

    @model_validator(mode="after")
    def _unique(self) -> _Pipeline:
        declared: tuple[tuple[str, list[str] | list[int]], ...] = (
            ("species name", [s.name for s in self.species]),
            ("species pdg", [s.pdg for s in self.species]),
            ("track type name", [t.name for t in self.track_types]),
            ("track type code", [t.code for t in self.track_types]),
        )
        for what, values in declared:
            twice = sorted((v for v, n in Counter[str | int](values).items() if n > 1), key=str)
            if twice:
                raise ValueError(f"{what} declared more than once: {twice}")
        return self


_SCHEMAS: dict[tuple[str, ...], type[_Strict]] = {
    (): _Pipeline,
    ("species",): _Species,
    ("track_types",): _TrackType,
    ("inputs",): _Tensor,
    ("outputs",): _Tensor,
    ("steps",): _Step,
    ("steps", "inputs"): _InputRef,
    ("steps", "outputs"): _Tensor,
    ("steps", "applies_to"): _Gate,
}
"""The schema at a location (its field names, ignoring list indices): says which keys are accepted."""


def _path(loc: tuple[int | str, ...], raw: Any) -> str:
    """``steps[rich].outputs[rich_response].sentinal``: list items shown by name where they have one."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int):
            item = node[key] if isinstance(node, list) and key < len(node) else None
            name = item.get("name") if isinstance(item, dict) else item if isinstance(item, str) else None
            parts[-1] += f"[{name}]" if name else f"[{key}]"
            node = item
        else:
            parts.append(key)
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(parts)


def _messages(err: ValidationError, raw: Any) -> list[str]:
    messages = []
    for error in err.errors():
        loc = tuple(k for k in error["loc"] if k not in (BARE, "inline"))
        where = _path(loc, raw) or "pipeline spec"
        if error["type"] == "extra_forbidden":
            schema = _SCHEMAS[tuple(k for k in loc[:-1] if isinstance(k, str))]
            accepted = ", ".join(schema.model_fields)
            messages.append(f"{where}: unknown key {loc[-1]!r}; accepted: {accepted}")
        elif error["type"] == "value_error":
            messages.append(f"{where}: {error['ctx']['error']}")
        elif error["type"] == "missing":
            messages.append(f"{where}: required key is missing")
        else:
            messages.append(f"{where}: {error['msg']} (got {error['input']!r})")
    return messages


def _tensor(raw: _Tensor) -> TensorSpec:
    return TensorSpec(
        name=raw.name,
        dtype=raw.dtype,
        dims=tuple(raw.dims),
        columns=tuple(raw.columns),
        units=tuple(raw.units) if isinstance(raw.units, list) else raw.units,
        sentinel=tuple(raw.sentinel) if isinstance(raw.sentinel, list) else raw.sentinel,
        description=raw.description,
    )


def _input_ref(raw: str | _InputRef) -> InputRef:
    if isinstance(raw, str):
        return InputRef(raw)
    return InputRef(raw.name, None if raw.columns is None else tuple(raw.columns))


def _gate(raw: _Step, track_types: dict[str, int]) -> Gate | None:
    """The step's ``applies_to``, track-type names (``long``) replaced by their codes."""
    if raw.applies_to is None:
        return None
    where = f"step {raw.name!r}: applies_to"
    if any(ref == raw.applies_to.tensor or getattr(ref, "name", None) == raw.applies_to.tensor
           for ref in raw.inputs):  # fmt: skip
        raise SpecError(f"{where}: {raw.applies_to.tensor!r} is also listed in inputs; name it only here")
    values: list[int] = []
    for value in raw.applies_to.values:
        if isinstance(value, int):
            values.append(value)
        elif raw.applies_to.tensor == "track_type" and value in track_types:
            values.append(track_types[value])
        else:
            raise SpecError(
                f"{where}: value {value!r} is not an integer or a track type name; accepted names: "
                f"{sorted(track_types)} (for tensor 'track_type' only)"
            )
    return Gate(raw.applies_to.tensor, tuple(values))


def _step(raw: _Step, outputs_by_name: dict[str, TensorSpec], track_types: dict[str, int]) -> StepSpec:
    where = f"step {raw.name!r}"
    outputs: list[TensorSpec] = []
    for out in raw.outputs:
        if isinstance(out, str):
            if out not in outputs_by_name:
                raise SpecError(f"{where}: output {out!r} is a bare name but not an ensemble output")
            outputs.append(outputs_by_name[out])
        else:
            outputs.append(_tensor(out))
    gate = _gate(raw, track_types)
    inputs = tuple(_input_ref(r) for r in raw.inputs) + ((InputRef(gate.tensor),) if gate else ())
    return StepSpec(
        name=raw.name,
        kind=raw.kind,
        inputs=inputs,
        outputs=tuple(outputs),
        stream=raw.stream,
        noise_dim=raw.noise_dim,
        classes=tuple(raw.classes),
        applies_to=gate,
    )


def parse_spec(raw: Any, source: Path | None = None) -> PipelineSpec:
    """Validate parsed YAML against the schema, build the :class:`PipelineSpec` and check its wiring."""
    try:
        model = _Pipeline.model_validate(raw)
    except ValidationError as err:
        prefix = f"{source}: " if source else ""
        raise SpecError(prefix + "; ".join(_messages(err, raw))) from None
    outputs = tuple(_tensor(t) for t in model.outputs)
    spec = PipelineSpec(
        name=model.name,
        version=model.version,
        max_batch_size=model.max_batch_size,
        instance_count=model.instance_count,
        max_queue_delay_microseconds=model.max_queue_delay_microseconds,
        inputs=tuple(_tensor(t) for t in model.inputs),
        outputs=outputs,
        steps=tuple(
            _step(s, {t.name: t for t in outputs}, {t.name: t.code for t in model.track_types})
            for s in model.steps
        ),
        species=tuple(SpeciesSpec(s.name, s.pdg) for s in model.species),
        track_types=tuple(TrackTypeSpec(t.name, t.code) for t in model.track_types),
        onnxruntime_parameters=tuple(model.onnxruntime_parameters.items()),
        source=source,
    )
    spec._tensors.update(_check_wiring(spec))
    return spec


def load_spec(path: str | Path) -> PipelineSpec:
    """Read and check a pipeline spec YAML file."""
    path = Path(path)
    with path.open() as stream:
        raw = yaml.safe_load(stream)
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
        if step.applies_to is not None:
            gate = available[step.applies_to.tensor]
            if step.kind == "graph" or gate.dtype != "INT32" or gate.width != 1:
                raise SpecError(
                    f"{where}: applies_to needs a learnt step and an INT32 tensor of one column; "
                    f"{step.applies_to.tensor!r} is {gate.dtype}{list(gate.dims)} on a {step.kind} step"
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
