"""Converters to ONNX: GBDT classifiers (Hummingbird or ONNX-ML) and PyTorch conditional generators."""

from __future__ import annotations

from ._onnx_utils import save_model
from .gbdt import IMPLEMENTATIONS, GBDTConversionError, gbdt_to_onnx, max_tree_depth, model_family
from .generator import GeneratorConversionError, generator_to_onnx

__all__ = [
    "IMPLEMENTATIONS",
    "GBDTConversionError",
    "GeneratorConversionError",
    "gbdt_to_onnx",
    "generator_to_onnx",
    "max_tree_depth",
    "model_family",
    "save_model",
]
