"""A small, readable builder for hand-written ONNX graphs (the pipeline's non-learnt steps).

Every graph has a dynamic batch dimension ``N`` (particles) as its first axis. Models use opset 18
(the first with BitwiseXor) and IR version 8, both loadable by ONNX Runtime 1.19.2 (NGC 24.10).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

OPSET = 18
IR_VERSION = 8
BATCH = "N"

ONNX_TYPES: dict[str, int] = {
    "FP32": TensorProto.FLOAT,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT64": TensorProto.UINT64,
    "BOOL": TensorProto.BOOL,
}


class GraphBuilder:
    """Accumulates nodes, constants and graph inputs/outputs, then emits a checked ModelProto."""

    def __init__(self, name: str, prefix: str = "") -> None:
        self.name = name
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._ids = itertools.count()

    def _fresh(self, hint: str) -> str:
        return f"{self.prefix}{hint}_{next(self._ids)}"

    def input(self, name: str, dtype: str, width: int) -> str:
        """Declare a graph input of shape [N, width]."""
        self.inputs.append(helper.make_tensor_value_info(name, ONNX_TYPES[dtype], [BATCH, width]))
        return name

    def output(self, value: str, name: str, dtype: str, width: int) -> None:
        """Expose ``value`` as the graph output ``name`` of shape [N, width]."""
        self.nodes.append(helper.make_node("Identity", [value], [name], name=self._fresh("output")))
        self.outputs.append(helper.make_tensor_value_info(name, ONNX_TYPES[dtype], [BATCH, width]))

    def const(
        self, value: NDArray[Any] | float | Sequence[float], dtype: type[np.generic] = np.float32
    ) -> str:
        """Add a constant tensor and return its name."""
        name = self._fresh("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        """Add one node with a single output and return the output's name."""
        out = self._fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def adopt(self, nodes: Sequence[onnx.NodeProto]) -> None:
        """Append foreign nodes, naming unnamed or clashing ones (ONNX Runtime 1.19 fuses by node name)."""
        taken = {node.name for node in self.nodes}
        for node in nodes:
            if not node.name or node.name in taken:
                node.name = self._fresh(f"{node.op_type.lower()}_node")
            taken.add(node.name)
            self.nodes.append(node)

    def col(self, x: str, index: int) -> str:
        """Column ``index`` of a [N, k] tensor, as [N, 1]."""
        return self.cols(x, [index])

    def cols(self, x: str, indices: Sequence[int] | NDArray[np.integer[Any]]) -> str:
        """Columns of a [N, k] tensor, as [N, len(indices)]."""
        return self.op("Gather", x, self.const(np.asarray(indices, dtype=np.int64), np.int64), axis=1)

    def concat(self, *xs: str) -> str:
        """Concatenate along the feature axis."""
        return xs[0] if len(xs) == 1 else self.op("Concat", *xs, axis=1)

    def where(self, cond: str, a: str, b: str) -> str:
        """Elementwise ``a if cond else b`` with broadcasting."""
        return self.op("Where", cond, a, b)

    def cast(self, x: str, dtype: str) -> str:
        """Cast to a Triton-named dtype (bit-preserving between INT64 and UINT64)."""
        return self.op("Cast", x, to=ONNX_TYPES[dtype])

    def build(
        self, *, doc: str = "", extra_opsets: Sequence[onnx.OperatorSetIdProto] = ()
    ) -> onnx.ModelProto:
        """Emit the model, checked by the ONNX checker; ``extra_opsets``: other domains' imports."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), *extra_opsets],
            producer_name="ufsim-export",
        )
        model.ir_version = IR_VERSION
        model.doc_string = doc
        onnx.checker.check_model(model, full_check=True)
        return model
