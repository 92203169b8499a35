"""Rebuild a generator saved in ``<step>.pt``, whichever of the training classes wrote it.

Every generator is saved the same way (``artifacts.save_generator``: class name, constructor arguments,
state_dict); the constructor arguments tell the classes apart, so one loader serves the warm starts,
``reexport`` and the validation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models.quantile import QuantileResidualGenerator, restore_quantile_layers
from .chained import ChainedGenerator, PartialQuantileGenerator
from .pid import MaskedGlobalPID
from .two_stage import TwoStageGenerator


def load_module(path: Path) -> nn.Module:
    """The generator saved in ``<step>.pt`` (read once), in evaluation mode."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    kwargs = dict(payload["kwargs"])
    wrapper = kwargs.pop("wrapper", None)
    inner: QuantileResidualGenerator
    if kwargs.pop("chained", False):
        inner = ChainedGenerator(**kwargs)
    elif "spread_width" in kwargs:
        inner = TwoStageGenerator(**kwargs)
    elif "passthrough" in kwargs:
        inner = PartialQuantileGenerator(**kwargs)
    else:
        inner = QuantileResidualGenerator(**kwargs)
    module: nn.Module = MaskedGlobalPID(inner) if wrapper == "MaskedGlobalPID" else inner
    restore_quantile_layers(inner, payload["state_dict"], prefix="inner." if wrapper else "")
    module.load_state_dict(payload["state_dict"])
    module.eval()
    return module


def inner_generator(module: nn.Module) -> QuantileResidualGenerator:
    """The quantile generator inside ``module`` (itself, or the one a wrapper holds)."""
    inner = getattr(module, "inner", module)
    if not isinstance(inner, QuantileResidualGenerator):
        raise TypeError(f"{type(module).__name__} holds no QuantileResidualGenerator")
    return inner


def load_quantile_generator(path: Path) -> QuantileResidualGenerator:
    """The saved generator of a step that is not wrapped (the tracking generators)."""
    module = load_module(path)
    if not isinstance(module, QuantileResidualGenerator):
        raise TypeError(f"{path}: holds a wrapped {type(module).__name__}, not a quantile generator")
    return module
