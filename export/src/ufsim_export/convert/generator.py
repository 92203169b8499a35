"""PyTorch conditional generators to ONNX, with the noise as an explicit graph input.

The generator's ``forward(conditions, noise)`` is exported with torch's legacy (TorchScript) exporter
(``dynamo=False``: torch 2.13's default dynamo exporter needs onnxscript and newer onnx). Random
operators are refused: noise generated inside an ONNX Runtime session is not reproducible per
particle, so the ensemble feeds noise computed from ``rng_key`` instead.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from ._onnx_utils import name_nodes, op_types, set_shape
from .verify import check_production_compat

INPUT_NAMES = ("conditions", "noise")
OUTPUT_NAME = "output"
RANDOM_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


class GeneratorConversionError(ValueError):
    """The module cannot be exported with the generator interface."""


def generator_to_onnx(
    module: torch.nn.Module, n_conditions: int, noise_dim: int, *, opset: int = 17
) -> onnx.ModelProto:
    """Export ``module(conditions, noise) -> output`` to ONNX with a symbolic batch dimension N.

    Inputs ``conditions`` FP32 [N, n_conditions] and ``noise`` FP32 [N, noise_dim]; output ``output``
    FP32 [N, n_out]. The module is exported in eval mode; its training flag is restored afterwards.
    """
    if not 13 <= opset <= 21:
        raise GeneratorConversionError(f"opset {opset} outside 13..21 (ONNX Runtime 1.19.2 runs up to 21)")
    if n_conditions < 1 or noise_dim < 1:
        raise GeneratorConversionError(f"n_conditions={n_conditions} and noise_dim={noise_dim} must be >= 1")
    generator = torch.Generator().manual_seed(0)
    sample = (
        torch.randn(3, n_conditions, generator=generator),
        torch.randn(3, noise_dim, generator=generator),
    )
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = module(*sample)
            if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 3:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise GeneratorConversionError(
                    f"{type(module).__name__}.forward(conditions, noise) must return one [N, n_out] tensor, "
                    f"got {shape} for N=3"
                )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "generator.onnx"
                torch.onnx.export(
                    module,
                    sample,
                    path,
                    dynamo=False,
                    input_names=list(INPUT_NAMES),
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={name: {0: "N"} for name in (*INPUT_NAMES, OUTPUT_NAME)},
                    opset_version=opset,
                    do_constant_folding=True,
                )
                model = onnx.load(path)
    finally:
        module.train(was_training)
    inputs = tuple(i.name for i in model.graph.input)
    if inputs != INPUT_NAMES:
        raise GeneratorConversionError(
            f"exported graph inputs are {inputs}, expected {INPUT_NAMES}: does forward use both conditions "
            "and noise?"
        )
    random_ops = sorted(op_types(model) & RANDOM_OPS)
    if random_ops:
        raise GeneratorConversionError(
            f"{type(module).__name__} draws random numbers inside the graph ({random_ops}); take all noise "
            "from the `noise` argument"
        )
    name_nodes(model)
    set_shape(model.graph.input[0], ["N", n_conditions])
    set_shape(model.graph.input[1], ["N", noise_dim])
    set_shape(model.graph.output[0], ["N", int(out.shape[1])])
    model.doc_string = f"{type(module).__name__} (ufsim_export.convert.generator)"
    check_production_compat(model)
    return model
