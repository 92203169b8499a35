"""Shared pieces of the serving benchmarks: paths, the repository under test, particles, the machine."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from ufsim_client.keys import rng_keys
from ufsim_export.repository.gun import synthetic_particles
from ufsim_export.spec import PipelineSpec, default_spec_path, load_spec
from ufsim_export.testing.toy import write_toy_repository

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
REFERENCE_REPOSITORY = ROOT / "model_repository"
ENSEMBLE = "pipeline"
PARTICLE_SEED = 20240611


@dataclass(frozen=True)
class Repository:
    """The model repository a benchmark runs, and how to describe it in a report."""

    path: Path
    kind: str
    spec: PipelineSpec

    @property
    def steps(self) -> list[str]:
        """Composing model names in execution order."""
        return [step.name for step in self.spec.steps]


def reference_complete(spec: PipelineSpec, repository: Path = REFERENCE_REPOSITORY) -> bool:
    """Whether every composing model of the reference repository has its ``1/model.onnx``."""
    return all((repository / step.name / "1" / "model.onnx").is_file() for step in spec.steps)


def choose_repository(work: Path, override: Path | None = None) -> Repository:
    """The reference repository when all its models exist, else a toy one written under ``work``."""
    spec = load_spec(default_spec_path())
    if override is not None:
        return Repository(Path(override).resolve(), f"given on the command line ({override})", spec)
    if reference_complete(spec):
        return Repository(REFERENCE_REPOSITORY, "reference (model_repository/, trained models)", spec)
    toy = work / "toy_repository"
    if not reference_complete(spec, toy):
        if toy.exists():
            shutil.rmtree(toy)
        write_toy_repository(toy, seed=0)
    return Repository(toy, "toy (ufsim_export.toy.write_toy_repository, seed 0: small stand-in models)", spec)


def particles(n: int, seed: int = PARTICLE_SEED) -> dict[str, np.ndarray]:
    """``n`` gun particles with the ensemble's five inputs (``rng_key`` as the client derives it)."""
    batch = synthetic_particles(n, seed)
    batch["rng_key"] = rng_keys(seed, 0, np.arange(n)).reshape(n, 1)
    return batch


def take(batch: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` of every tensor, contiguous."""
    return {name: np.ascontiguousarray(value[start:stop]) for name, value in batch.items()}


def infer_inputs(batch: dict[str, np.ndarray]) -> list[grpcclient.InferInput]:
    """tritonclient gRPC inputs holding ``batch`` (one per tensor, batch dimension first)."""
    inputs = []
    for name, value in batch.items():
        tensor = grpcclient.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def cuda_runtime_lib() -> Path:
    """Folder holding ``libcudart.so.12`` from the nvidia-cuda-runtime-cu12 wheel (perf_analyzer needs it)."""
    return Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_runtime" / "lib"


def perf_analyzer_binary() -> Path:
    """The perf_analyzer shipped in the tritonclient 2.51 wheel, beside this interpreter."""
    return Path(sys.executable).parent / "perf_analyzer"


def perf_analyzer_env() -> dict[str, str]:
    """Environment for perf_analyzer: ``libcudart.so.12`` on ``LD_LIBRARY_PATH``."""
    env = dict(os.environ)
    parts = [str(cuda_runtime_lib()), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in parts if p)
    return env


def perf_analyzer_problem() -> str | None:
    """Why perf_analyzer cannot run here (with the fix), or None when it can."""
    if not perf_analyzer_binary().is_file():
        return f"{perf_analyzer_binary()} not found: install tritonclient==2.51.0 (requirements/dev.txt)"
    if not (cuda_runtime_lib() / "libcudart.so.12").is_file():
        return "libcudart.so.12 not found: pip install -r requirements/bench.txt"
    if not any(Path(d).glob("libb64.so.0*") for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib")):
        return "libb64.so.0d not found: apt-get install -y libb64-0d"
    return None


def machine_note() -> str:
    """One line on the machine: CPU model, cores, load, Python and ONNX Runtime versions."""
    import onnxruntime

    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (shared with other users; load average at start {load}), "
        f"no GPU; {platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"ONNX Runtime {onnxruntime.__version__} in-process, Triton 2.51.0 (nvidia-pytriton wheel)"
    )
