"""Generator conversion: explicit noise input, dynamic batch, verified on 10,000 rows at batch 1, 2, 1000."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from torch import nn

from ufsim_export.convert import GeneratorConversionError, generator_to_onnx
from ufsim_export.convert.verify import VerificationError, column_scale, verify_generator
from ufsim_export.models import ResidualGenerator

N_ROWS = 10_000
N_CONDITIONS = 12
NOISE_DIM = 16
# Lamarr tracking-resolution-like outputs: residuals ~1e-4..50, quality ~1..30 (mean, spread)
OUTPUT_SCALES = [(0, 0.02), (0, 0.1), (0, 1e-4), (0, 50.0), (1.2, 0.3), (30.0, 5.0), (0.05, 0.02)]


class ResidualTanh(nn.Module):
    """Dense(tanh) -> residual tanh blocks -> Dense, outputs scaled to physical ranges."""

    def __init__(self, n_conditions: int, noise_dim: int, width: int = 48, n_residual: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(n_conditions + noise_dim, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(n_residual))
        self.out = nn.Linear(width, len(OUTPUT_SCALES))
        scales = torch.tensor(OUTPUT_SCALES, dtype=torch.float32)
        self.register_buffer("mean", scales[:, 0])
        self.register_buffer("scale", scales[:, 1])
        self.dropout = nn.Dropout(0.5)

    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(torch.cat([conditions, noise], dim=1)))
        for block in self.blocks:
            h = h + torch.tanh(block(self.dropout(h)))
        return self.out(h) * self.scale + self.mean


class RandomInside(ResidualTanh):
    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return super().forward(conditions, torch.randn_like(noise))


class IgnoresNoise(ResidualTanh):
    def forward(self, conditions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return super().forward(conditions, torch.zeros_like(conditions[:, :1]).expand(-1, NOISE_DIM))


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    conditions = rng.normal([4.0, 3.5, 0.0, 0.0, 0.0, 150.0] * 2, [0.7, 1.0, 1.8, 0.05, 0.05, 80.0] * 2)
    conditions = conditions[None, :] * rng.normal(1, 0.3, (N_ROWS, 1))
    return conditions.astype(np.float32), rng.normal(size=(N_ROWS, NOISE_DIM)).astype(np.float32)


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _modules() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    lamarr = ResidualGenerator(N_CONDITIONS, NOISE_DIM, 9, width=64, n_residual=6)
    lamarr.set_normalisation(
        np.random.default_rng(1).normal(3, 2, (100, N_CONDITIONS)),
        np.random.default_rng(2).normal(0, [1e-4, 0.02, 0.1, 1e-4, 1e-4, 50, 0.3, 5, 0.02], (100, 9)),
    )
    return {"residual-tanh": ResidualTanh(N_CONDITIONS, NOISE_DIM), "lamarr-residual": lamarr}


@pytest.mark.parametrize("name", ["residual-tanh", "lamarr-residual"])
def test_generator_matches_torch(name: str, inputs: tuple[np.ndarray, np.ndarray]) -> None:
    module = _modules()[name].train()
    onnx_model = generator_to_onnx(module, N_CONDITIONS, NOISE_DIM)
    assert module.training, "training flag restored after export"

    graph = onnx_model.graph
    assert [i.name for i in graph.input] == ["conditions", "noise"]
    assert [o.name for o in graph.output] == ["output"]
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*graph.input, *graph.output])
    assert _dims(graph.input[0]) == ["N", N_CONDITIONS]
    assert _dims(graph.input[1]) == ["N", NOISE_DIM]
    n_out = module(torch.zeros(1, N_CONDITIONS), torch.zeros(1, NOISE_DIM)).shape[1]
    assert _dims(graph.output[0]) == ["N", n_out]
    assert onnx_model.ir_version <= 10
    assert [(o.domain, o.version) for o in onnx_model.opset_import] == [("", 17)]
    assert not {n.op_type for n in graph.node} & {"RandomNormal", "RandomNormalLike", "Dropout"}

    report = verify_generator(module, onnx_model, *inputs, name=name)
    assert module.training
    assert set(report.max_error) == {1, 2, 1000}
    assert report.worst <= 1e-5


def test_random_ops_inside_the_graph_are_refused() -> None:
    with pytest.raises(GeneratorConversionError, match="random numbers inside the graph"):
        generator_to_onnx(RandomInside(N_CONDITIONS, NOISE_DIM), N_CONDITIONS, NOISE_DIM)


def test_a_generator_ignoring_its_noise_is_refused() -> None:
    with pytest.raises(GeneratorConversionError, match="both conditions and noise"):
        generator_to_onnx(IgnoresNoise(N_CONDITIONS, NOISE_DIM), N_CONDITIONS, NOISE_DIM)


def test_wrong_input_widths_are_refused() -> None:
    with pytest.raises(RuntimeError):
        generator_to_onnx(ResidualTanh(N_CONDITIONS, NOISE_DIM), N_CONDITIONS + 1, NOISE_DIM)
    with pytest.raises(GeneratorConversionError, match="opset"):
        generator_to_onnx(ResidualTanh(N_CONDITIONS, NOISE_DIM), N_CONDITIONS, NOISE_DIM, opset=22)


def test_broken_onnx_raises_with_the_worst_rows(inputs: tuple[np.ndarray, np.ndarray]) -> None:
    module = ResidualTanh(N_CONDITIONS, NOISE_DIM)
    onnx_model = generator_to_onnx(module, N_CONDITIONS, NOISE_DIM)
    target = [t for t in onnx_model.graph.initializer if len(t.dims) == 2][-1]
    values = numpy_helper.to_array(target).copy()
    values[0, 0] *= 1.001
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    with pytest.raises(VerificationError) as excinfo:
        verify_generator(module, onnx_model, *inputs, name="tracking_resolution")
    message = str(excinfo.value)
    assert "tracking_resolution" in message and "Worst rows" in message
    assert message.count("\n  row ") == 5
    assert "conditions=" in message and "noise=" in message


def test_relative_error_uses_the_column_scale_near_zero() -> None:
    y = np.array([[0.0, 5.0, 0.0], [1e-9, 5.0, 0.0], [-1e-9, 5.0, 0.0]])
    scale = column_scale(y)
    assert scale[0] == pytest.approx(np.std(y[:, 0]))
    assert scale[1] == 5.0
    assert scale[2] == 1.0


def test_mismatched_rows_are_refused(inputs: tuple[np.ndarray, np.ndarray]) -> None:
    module = ResidualTanh(N_CONDITIONS, NOISE_DIM)
    onnx_model = generator_to_onnx(module, N_CONDITIONS, NOISE_DIM)
    conditions, noise = inputs
    with pytest.raises(ValueError, match="noise rows"):
        verify_generator(module, onnx_model, conditions, noise[:-1])


def test_tail_sigmas_bounds_the_error_by_the_column_spread_far_out(
    inputs: tuple[np.ndarray, np.ndarray],
) -> None:
    """An offset of 3e-5 σ fails the plain check (1e-5 of σ) and passes the tail-aware one (1e-4 σ)."""
    module = ResidualTanh(N_CONDITIONS, NOISE_DIM).eval()
    onnx_model = generator_to_onnx(module, N_CONDITIONS, NOISE_DIM)
    with torch.no_grad():
        sigma = module(*(torch.from_numpy(x) for x in inputs)).numpy()[:, 0].std()
        module.mean[0] += 3e-5 * float(sigma)
    with pytest.raises(VerificationError):
        verify_generator(module, onnx_model, *inputs, batch_sizes=(1000,))
    report = verify_generator(module, onnx_model, *inputs, tail_sigmas=10, batch_sizes=(1000,))
    assert 2e-6 < report.worst < 1e-5
    assert "10 column spread" in report.kind
