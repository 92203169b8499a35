"""Small ONNX graph edits shared by the converters: keep outputs, rename tensors, set shapes, list ops."""

from __future__ import annotations

from pathlib import Path

import onnx

from ..files import replacing


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """``onnx.save`` to ``path`` atomically (:func:`~ufsim_export.files.replacing`)."""
    with replacing(path) as tmp:
        onnx.save(model, tmp)
    return Path(path)


def keep_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Drop every graph output not in ``names`` and the nodes and initializers only they needed."""
    graph = model.graph
    missing = [n for n in names if n not in {o.name for o in graph.output}]
    if missing:
        raise ValueError(f"graph has no output(s) {missing}; outputs are {[o.name for o in graph.output]}")
    kept_outputs = [o for o in graph.output if o.name in names]
    needed = set(names)
    kept_nodes: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept_nodes.append(node)
            needed.update(i for i in node.input if i)
    kept_nodes.reverse()
    kept_init = [t for t in graph.initializer if t.name in needed]
    kept_inputs = [i for i in graph.input if i.name in needed]
    kept_vi = [v for v in graph.value_info if v.name in needed]
    for field, values in (
        ("output", kept_outputs),
        ("node", kept_nodes),
        ("initializer", kept_init),
        ("input", kept_inputs),
        ("value_info", kept_vi),
    ):
        container = getattr(graph, field)
        del container[:]
        container.extend(values)
    return model


def rename_tensor(model: onnx.ModelProto, old: str, new: str) -> None:
    """Rename a tensor everywhere in the graph (inputs, outputs, node ports, value infos)."""
    if old == new:
        return
    graph = model.graph
    for node in graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.name == old:
            vi.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def set_shape(value_info: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    """Declare the shape of a graph input or output: ints are fixed, strings symbolic."""
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def op_types(model: onnx.ModelProto) -> set[str]:
    """Every operator type used in the main graph."""
    return {node.op_type for node in model.graph.node}


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name (ONNX Runtime 1.19.2 refuses some graphs with unnamed nodes)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}_{i}"
        seen.add(node.name)
