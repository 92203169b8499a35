"""Tiny ONNX models and Triton configs (onnx.helper) and client helpers for the deploy/local tests."""

from __future__ import annotations

import functools
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper
from tritonclient.utils import np_to_triton_dtype

OPSET = 18
TABLE = np.arange(10, dtype=np.float32) * 1.5
"""The lookup table of ``mix``'s Gather: index k gives 1.5 k; k outside 0..9 makes ONNX Runtime fail."""


def _model(nodes: list[onnx.NodeProto], inputs: list, outputs: list, initializers: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def mix_model() -> onnx.ModelProto:
    """x FP32[N,3], key UINT64[N,1], k INT32[N,1] -> y = 2x + k, h = 3 key (mod 2^64), t = TABLE[k], rows.

    ``rows`` repeats the number of rows of the session run, so a response shows how it was batched.
    """
    nodes = [
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Add", ["x2", "kf"], ["y"]),
        helper.make_node("Mul", ["key", "three"], ["h"]),
        helper.make_node("Gather", ["table", "k"], ["t"], axis=0),
        helper.make_node("Mul", ["kf", "zero"], ["kz"]),
        helper.make_node("Add", ["kz", "one"], ["ones"]),
        helper.make_node("ReduceSum", ["ones", "axis0"], ["total"], keepdims=1),
        helper.make_node("Mul", ["ones", "total"], ["rowsf"]),
        helper.make_node("Cast", ["rowsf"], ["rows"], to=TensorProto.INT64),
    ]
    initializers = [
        _const("two", np.array(2.0, np.float32)),
        _const("three", np.array(3, np.uint64)),
        _const("table", TABLE),
        _const("zero", np.array(0.0, np.float32)),
        _const("one", np.array(1.0, np.float32)),
        _const("axis0", np.array([0], np.int64)),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("key", TensorProto.UINT64, ["N", 1]),
        helper.make_tensor_value_info("k", TensorProto.INT32, ["N", 1]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
        helper.make_tensor_value_info("h", TensorProto.UINT64, ["N", 1]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 1]),
        helper.make_tensor_value_info("rows", TensorProto.INT64, ["N", 1]),
    ]
    return _model(nodes, inputs, outputs, initializers)


def shaped_model() -> onnx.ModelProto:
    """a FP32[N,2,2] -> b = 2a FP32[N,2,2], s = sum(a) FP32[N] (config reshapes both sides)."""
    nodes = [
        helper.make_node("Mul", ["a", "two"], ["b"]),
        helper.make_node("ReduceSum", ["a", "axes"], ["s"], keepdims=0),
    ]
    initializers = [_const("two", np.array(2.0, np.float32)), _const("axes", np.array([1, 2], np.int64))]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2, 2])]
    outputs = [
        helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2, 2]),
        helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N"]),
    ]
    return _model(nodes, inputs, outputs, initializers)


def scale_model(first_dim: int | str = "N") -> onnx.ModelProto:
    """p FP32[N,4] -> q = 3p FP32[N,4]."""
    nodes = [helper.make_node("Mul", ["p", "three"], ["q"])]
    initializers = [_const("three", np.array(3.0, np.float32))]
    inputs = [helper.make_tensor_value_info("p", TensorProto.FLOAT, [first_dim, 4])]
    outputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [first_dim, 4])]
    return _model(nodes, inputs, outputs, initializers)


def sum_model() -> onnx.ModelProto:
    """u INT32[2] + v INT32[2] -> w INT32[2] (a model without a batch dimension)."""
    nodes = [helper.make_node("Add", ["u", "v"], ["w"])]
    inputs = [
        helper.make_tensor_value_info("u", TensorProto.INT32, [2]),
        helper.make_tensor_value_info("v", TensorProto.INT32, [2]),
    ]
    outputs = [helper.make_tensor_value_info("w", TensorProto.INT32, [2])]
    return _model(nodes, inputs, outputs, [])


def collapse_model() -> onnx.ModelProto:
    """c FP32[N,1] -> d = the rows of c that are > 0: fewer rows than the batch, a batching bug."""
    nodes = [
        helper.make_node("Greater", ["c", "zero"], ["positive"]),
        helper.make_node("Reshape", ["positive", "flat"], ["keep"]),
        helper.make_node("Compress", ["c", "keep"], ["d"], axis=0),
    ]
    initializers = [_const("zero", np.array(0.0, np.float32)), _const("flat", np.array([-1], np.int64))]
    inputs = [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", 1])]
    outputs = [helper.make_tensor_value_info("d", TensorProto.FLOAT, ["N", 1])]
    return _model(nodes, inputs, outputs, initializers)


def write_model(repository: Path, name: str, config: str, model: onnx.ModelProto | None) -> Path:
    """Write ``<repository>/<name>/config.pbtxt`` and, when given, ``1/model.onnx``."""
    directory = repository / name
    (directory / "1").mkdir(parents=True, exist_ok=True)
    (directory / "config.pbtxt").write_text(f'name: "{name}"\n{config}')
    if model is not None:
        onnx.save(model, directory / "1" / "model.onnx")
    return directory


def tensor(
    name: str, data_type: str, dims: list[int], reshape: list[int] | None = None, extra: str = ""
) -> str:
    """One config.pbtxt input/output entry."""
    text = f'{{ name: "{name}" data_type: {data_type} dims: {dims}'
    if reshape is not None:
        text += f" reshape: {{ shape: {reshape} }}"
    return f"{text} {extra}}}"


def config(
    inputs: list[str],
    outputs: list[str],
    *,
    max_batch_size: int = 8,
    batching: str = "dynamic_batching { }",
    instances: int = 1,
    threads: str | None = None,
    parameters: dict[str, str] | None = None,
) -> str:
    """A config.pbtxt body for the ``onnxruntime`` backend (no ``runtime:``, as in model_repository/)."""
    text = (
        'backend: "onnxruntime"\n'
        f"max_batch_size: {max_batch_size}\n"
        f"input [ {', '.join(inputs)} ]\n"
        f"output [ {', '.join(outputs)} ]\n"
        f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
        f"{batching if max_batch_size > 0 else ''}\n"
    )
    if threads is not None:
        text += f'parameters {{ key: "intra_op_thread_count" value {{ string_value: "{threads}" }} }}\n'
    for key, value in (parameters or {}).items():
        text += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    return text


def scale_config(**kwargs: object) -> str:
    """Config of ``scale_model``: p FP32[4] -> q FP32[4]."""
    return config([tensor("p", "TYPE_FP32", [4])], [tensor("q", "TYPE_FP32", [4])], **kwargs)  # type: ignore[arg-type]


def infer_concurrently(
    client: grpcclient.InferenceServerClient, model: str, requests: list[dict[str, Any]]
) -> list[tuple[grpcclient.InferResult | None, Exception | None]]:
    """Send every request (input name -> numpy array) at once; return (result, error) in order."""
    done = threading.Semaphore(0)
    answers: list[tuple[grpcclient.InferResult | None, Exception | None]] = [(None, None)] * len(requests)

    def store(index: int, result: grpcclient.InferResult | None, error: Exception | None) -> None:
        answers[index] = (result, error)
        done.release()

    for index, arrays in enumerate(requests):
        client.async_infer(model, make_inputs(arrays), callback=functools.partial(store, index))
    for _ in requests:
        done.acquire()
    return answers


def make_inputs(arrays: dict[str, Any]) -> list[grpcclient.InferInput]:
    """tritonclient inputs for numpy arrays, the Triton type taken from the array's dtype."""
    inputs = []
    for name, array in arrays.items():
        entry = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        entry.set_data_from_numpy(array)
        inputs.append(entry)
    return inputs


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:port (a new server could bind it; TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) in process group ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
