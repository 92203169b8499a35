"""The three wheels install into a clean virtual environment and work from outside the checkout.

The spec (ufsim_export/pipelines/lhcb.yaml), the validation's Pythia cards and the backend's model.py are
package data; before they were, an installed ufsim-export or ufsim-serve looked for them beside a source
tree that is not there.
Dependencies come from the package index (or pip's cache), pinned by requirements/dev.txt.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ufsim_export.repository.docs import contract_markdown
from ufsim_export.spec import default_spec_path, load_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {
    "ufsim_export": ROOT / "export",
    "ufsim_client": ROOT / "client",
    "ufsim_serve": ROOT / "deploy" / "local",
}
PACKAGE_DATA = {
    "ufsim_export": [
        "ufsim_export/py.typed",
        "ufsim_export/pipelines/lhcb.yaml",
        "ufsim_export/validation/cards/minbias.cmnd",
        "ufsim_export/validation/cards/bbbar.cmnd",
    ],
    "ufsim_client": ["ufsim_client/py.typed"],
    "ufsim_serve": ["ufsim_serve/py.typed", "ufsim_serve/backends/onnxruntime/model.py"],
}


def _run(args: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Wheels built from copies of each project's pyproject.toml and src/ (the checkout stays clean)."""
    work = tmp_path_factory.mktemp("wheels")
    out = work / "dist"
    for package, project in PROJECTS.items():
        copy = work / "src" / package
        shutil.copytree(project / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(project / "pyproject.toml", copy)
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
              "-q", "-w", out, copy], cwd=work)  # fmt: skip
    return {package: next(out.glob(f"{package}-*.whl")) for package in PROJECTS}


@pytest.fixture(scope="module")
def venv(wheels: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment (no access to the checkout or the dev environment) with the wheels."""
    work = tmp_path_factory.mktemp("venv")
    env_dir = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir], cwd=work)
    # pip refuses extras in a constraints file: keep the pins, drop the extras
    pins = (ROOT / "requirements" / "dev.txt").read_text()
    constraints = work / "constraints.txt"
    constraints.write_text(re.sub(r"\[[^\]]*\]", "", pins))
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
          "-c", constraints, *wheels.values()], cwd=work)  # fmt: skip
    return env_dir


@pytest.mark.parametrize("package", sorted(PROJECTS))
def test_wheels_carry_their_package_data(wheels: dict[str, Path], package: str) -> None:
    names = set(zipfile.ZipFile(wheels[package]).namelist())
    assert [f for f in PACKAGE_DATA[package] if f not in names] == []


def _outside_env() -> dict[str, str]:
    """The environment without anything pointing into the checkout or the dev virtual environment."""
    return {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}


def test_installed_commands_run_outside_the_checkout(venv: Path, tmp_path: Path) -> None:
    """ufsim --version, ufsim-export contract and ufsim-serve --help work from an unrelated folder."""
    bin_dir, env = venv / "bin", _outside_env()
    assert re.fullmatch(r"ufsim \d+\.\d+\.\d+\s*", _run([bin_dir / "ufsim", "--version"], tmp_path, env))
    assert _run([bin_dir / "ufsim-export", "contract"], tmp_path, env).strip() == contract_markdown(
        load_spec(default_spec_path())
    )
    assert _run([bin_dir / "ufsim-serve", "--help"], tmp_path, env).startswith("usage: ufsim-serve")


def test_installed_packages_use_their_own_data(venv: Path, tmp_path: Path) -> None:
    """The installed spec and backend model.py resolve inside the virtual environment, not the checkout."""
    code = (
        "import ufsim_export, ufsim_serve\n"
        "print(ufsim_export.default_spec_path()); print(ufsim_serve.BACKEND_MODEL)\n"
        "assert ufsim_export.default_spec_path().is_file() and ufsim_serve.BACKEND_MODEL.is_file()\n"
    )
    spec_path, backend = _run([venv / "bin" / "python", "-c", code], tmp_path, _outside_env()).split()
    assert Path(spec_path).is_relative_to(venv) and Path(backend).is_relative_to(venv)
    assert Path(spec_path).read_bytes() == default_spec_path().read_bytes()
