"""Python-based Triton backend ``onnxruntime``: runs ``<model>/<version>/model.onnx`` with ONNX Runtime.

Triton uses this file only where ``libtriton_onnxruntime.so`` is absent (the local pytriton server), so one
model repository serves both locally and in the NGC image. It honours the model config as the native
backend does: input/output names and types, ``reshape`` (applied by Triton core), dynamic batching
(requests concatenated along dim 0, one session run, outputs split back), one session per instance, and
the native backend's parameters ``intra_op_thread_count``, ``enable_mem_arena`` and ``enable_mem_pattern``
("0" or "1"). A failing request gets its own error; the others still succeed.

Memory (parameters of this backend only; the native one ignores them): ``max_rows_per_run`` runs a larger
batch through the session in slices of that many rows, so ONNX Runtime's memory arena never grows past
one slice's working set (graphs whose rows are independent give the same bits); ``idle_release_seconds``
gives the arena's memory back to the system once the instance has been idle that long (the session is
reopened, which drops its arena, then ``malloc_trim``). Both default to 0, off.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from numpy.typing import NDArray

_ORT_TYPES: dict[str, Any] = {
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(string)": np.object_,
}


@dataclass(frozen=True)
class _TensorSpec:
    """One config input or output: its name, numpy dtype and the shape the ONNX model sees."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @classmethod
    def from_config(cls, entry: dict[str, Any], batching: bool) -> _TensorSpec:
        """Read a config entry; the model-side shape is ``reshape`` when given, else ``dims``."""
        reshape = entry.get("reshape")
        dims = reshape.get("shape", []) if reshape is not None else entry.get("dims", [])
        shape = tuple(int(d) for d in dims)
        dtype = np.dtype(pb_utils.triton_string_to_numpy(entry["data_type"]))
        return cls(entry["name"], dtype, ((-1,) if batching else ()) + shape)


@dataclass
class _Item:
    """One request's inputs and the outputs it asked for."""

    index: int
    feeds: dict[str, NDArray[Any]]
    wanted: tuple[str, ...]

    @property
    def rows(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0]) if self.feeds else 0


class TritonPythonModel:
    """One instance of an ``onnxruntime`` model: its own ONNX Runtime session."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the session and check the config against the ONNX graph, so a bad pair fails to load."""
        config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        filename = config.get("default_model_filename") or "model.onnx"
        path = Path(args["model_repository"]) / args["model_version"] / filename
        if not path.is_file():
            raise FileNotFoundError(f"model '{self.name}': no ONNX model at {path}")
        threads = _int_parameter(config, "intra_op_thread_count", default=1)
        arena = _bool_parameter(config, "enable_mem_arena", default=True)
        pattern = _bool_parameter(config, "enable_mem_pattern", default=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_cpu_mem_arena = arena
        options.enable_mem_pattern = pattern
        self.max_rows = _int_parameter(config, "max_rows_per_run", default=0)
        idle = _int_parameter(config, "idle_release_seconds", default=0)
        self.path, self.options = path, options
        self.session = self._open()
        self.inputs = [_TensorSpec.from_config(e, self.batching) for e in config.get("input", [])]
        self.outputs = [_TensorSpec.from_config(e, self.batching) for e in config.get("output", [])]
        self.output_names = tuple(spec.name for spec in self.outputs)
        _check(self.name, "input", self.inputs, self.session.get_inputs(), self.batching)
        _check(self.name, "output", self.outputs, self.session.get_outputs(), self.batching)
        declared = {spec.name for spec in self.inputs}
        undeclared = [i.name for i in self.session.get_inputs() if i.name not in declared]
        if undeclared:
            raise ValueError(f"model '{self.name}': ONNX inputs {undeclared} are missing from config.pbtxt")
        self._lock = threading.Lock()
        self._last_run = time.monotonic()
        self._released = True
        self._stop = threading.Event()
        if idle > 0 and self.batching:
            threading.Thread(target=self._release_when_idle, args=(float(idle),), daemon=True).start()
        pb_utils.Logger.log_info(
            f"ufsim onnxruntime backend: model '{self.name}' instance '{args.get('model_instance_name')}' "
            f"loaded {path} (ONNX Runtime {ort.__version__}, intra_op_thread_count={threads}, "
            f"enable_mem_arena={int(arena)}, enable_mem_pattern={int(pattern)}, "
            f"max_rows_per_run={self.max_rows}, idle_release_seconds={idle}, "
            f"max_batch_size={config.get('max_batch_size', 0)})"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run compatible requests as one batch; a batch that fails is retried request by request."""
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[Any, ...], list[_Item]] = {}
        for index, request in enumerate(requests):
            feeds: dict[str, NDArray[Any]] = {}
            for spec in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is not None:
                    feeds[spec.name] = tensor.as_numpy()
            wanted = tuple(request.requested_output_names()) or self.output_names
            item = _Item(index, feeds, wanted)
            if self.batching:
                key: tuple[Any, ...] = tuple((n, a.shape[1:], a.dtype.str) for n, a in feeds.items())
            else:
                key = (index,)
            groups.setdefault(key, []).append(item)
        for items in groups.values():
            if len(items) > 1:
                try:
                    self._run(items, responses)
                    continue
                except Exception as error:
                    pb_utils.Logger.log_verbose(
                        f"model '{self.name}': batch of {len(items)} requests failed ({error}); "
                        "running them one by one"
                    )
            for item in items:
                try:
                    self._run([item], responses)
                except Exception as error:
                    responses[item.index] = pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"model '{self.name}': {error}")
                    )
        return responses

    def finalize(self) -> None:
        """Stop the idle-release thread and release the session."""
        self._stop.set()
        self.session = None

    def _release_when_idle(self, idle: float) -> None:
        """Background thread: once the instance has been idle ``idle`` seconds, give memory back (once)."""
        while not self._stop.wait(min(idle / 4, 1.0)):
            with self._lock:
                due = not self._released and time.monotonic() - self._last_run >= idle
                if due:
                    self._released = True
            if due:
                self._release()

    def _open(self) -> ort.InferenceSession:
        """A new ONNX Runtime session on the model file (CPU)."""
        return ort.InferenceSession(str(self.path), self.options, providers=["CPUExecutionProvider"])

    def _release(self) -> None:
        """Replace the session by a fresh one, dropping the old one's memory arena.

        Nothing is replaced when a request came in meanwhile; then ``malloc_trim`` gives the freed heap
        back to the system.
        """
        decided = time.monotonic()
        try:
            fresh = self._open()
        except Exception as error:
            pb_utils.Logger.log_warn(
                f"model '{self.name}': could not reopen the session to free memory ({error})"
            )
            return
        with self._lock:
            if self.session is None or self._last_run > decided:
                return
            self.session = fresh
        del fresh
        libc = _glibc()
        if libc is not None:
            libc.malloc_trim(0)
        pb_utils.Logger.log_info(f"ufsim onnxruntime backend: model '{self.name}' idle, memory released")

    def _session_run(self, names: list[str], feeds: dict[str, NDArray[Any]]) -> list[NDArray[Any]]:
        """``session.run``, in slices of ``max_rows`` rows when the batch is larger (outputs concatenated)."""
        with self._lock:
            self._last_run = time.monotonic()
            self._released = False
            session = self.session
        rows = int(next(iter(feeds.values())).shape[0]) if self.batching and feeds else 0
        if self.max_rows <= 0 or rows <= self.max_rows:
            return list(session.run(names, feeds))
        pieces = [
            session.run(names, {name: value[start : start + self.max_rows] for name, value in feeds.items()})
            for start in range(0, rows, self.max_rows)
        ]
        return [np.concatenate([np.atleast_1d(piece[j]) for piece in pieces]) for j in range(len(names))]

    def _run(self, items: list[_Item], responses: list[Any]) -> None:
        """One session run over the concatenated requests, outputs split back by each request's rows."""
        wanted = set().union(*(item.wanted for item in items))
        names = [name for name in self.output_names if name in wanted]
        if len(items) == 1:
            feeds = items[0].feeds
        else:
            feeds = {name: np.concatenate([item.feeds[name] for item in items]) for name in items[0].feeds}
        results = self._session_run(names, feeds)
        if not self.batching:
            parts = [[value] for value in results]
        else:
            rows = [item.rows for item in items]
            for name, value in zip(names, results, strict=True):
                if value.ndim == 0 or value.shape[0] != sum(rows):
                    raise ValueError(
                        f"ONNX output '{name}' has shape {list(value.shape)} for a batch of {sum(rows)} "
                        "rows; a batching model's outputs need the batch as first dimension"
                    )
            bounds = np.cumsum(rows)[:-1]
            parts = [np.split(value, bounds) for value in results]
        for k, item in enumerate(items):
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(parts[j][k]))
                for j, name in enumerate(names)
                if name in item.wanted
            ]
            responses[item.index] = pb_utils.InferenceResponse(output_tensors=tensors)


def _int_parameter(config: dict[str, Any], key: str, default: int) -> int:
    """A non-negative integer from config ``parameters { key: ... value { string_value: ... } }``."""
    entry = config.get("parameters", {}).get(key)
    if entry is None:
        return default
    text = str(entry.get("string_value", "")).strip()
    if not text.isdigit():
        raise ValueError(
            f"model '{config.get('name')}': parameter {key} must be a non-negative integer, got {text!r}"
        )
    return int(text)


def _bool_parameter(config: dict[str, Any], key: str, default: bool) -> bool:
    """A "0"/"1" (or "false"/"true") switch from config ``parameters``, as the native backend reads it."""
    entry = config.get("parameters", {}).get(key)
    if entry is None:
        return default
    text = str(entry.get("string_value", "")).strip().lower()
    if text not in ("0", "1", "false", "true"):
        raise ValueError(f"model '{config.get('name')}': parameter {key} must be 0 or 1, got {text!r}")
    return text in ("1", "true")


def _glibc() -> Any:
    """The C library when it is glibc (it has ``malloc_trim``), else None (nothing to trim)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _check(model: str, kind: str, specs: list[_TensorSpec], graph: list[Any], batching: bool) -> None:
    """Fail loading when a config tensor's name, type or shape disagrees with the ONNX graph."""
    by_name = {node.name: node for node in graph}
    for spec in specs:
        node = by_name.get(spec.name)
        if node is None:
            raise ValueError(
                f"model '{model}': config {kind} '{spec.name}' is not an {kind} of the ONNX model "
                f"(it has {sorted(by_name)})"
            )
        onnx_dtype = _ORT_TYPES.get(node.type)
        if onnx_dtype is None or np.dtype(onnx_dtype) != spec.dtype:
            raise ValueError(
                f"model '{model}': {kind} '{spec.name}' is {spec.dtype} in config.pbtxt "
                f"but {node.type} in the ONNX model"
            )
        onnx_shape = list(node.shape)
        mismatch = len(onnx_shape) != len(spec.shape) or any(
            isinstance(o, int) and o >= 0 and c >= 0 and o != c
            for o, c in zip(onnx_shape, spec.shape, strict=False)
        )
        if mismatch:
            raise ValueError(
                f"model '{model}': {kind} '{spec.name}' has shape {list(spec.shape)} in config.pbtxt "
                f"(batch dimension first, after reshape) but {onnx_shape} in the ONNX model"
            )
        if batching and isinstance(onnx_shape[0], int) and onnx_shape[0] >= 0:
            raise ValueError(
                f"model '{model}': {kind} '{spec.name}' has a fixed first dimension {onnx_shape[0]} in the "
                "ONNX model, but max_batch_size > 0 needs it dynamic (the batch)"
            )
