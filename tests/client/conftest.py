"""Fixtures for the ufsim-client tests: shared data, and a real local Triton serving the toy pipeline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def hepmc_files() -> list[Path]:
    """The ten LHCb HepMC2 bunch crossings (read in place from ../shared)."""
    files = sorted((SHARED_DATA / "lamarr-hepmc2").glob("evt*.mc2"))
    if not files:
        pytest.skip(f"no HepMC2 files under {SHARED_DATA / 'lamarr-hepmc2'}")
    return files


@pytest.fixture(scope="session")
def toy_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full pipeline ensemble with small toy models, written by ufsim-export."""
    toy = pytest.importorskip(
        "ufsim_export.testing.toy", reason="ufsim_export.testing.toy (lead's toy repository) not available"
    )
    return Path(toy.write_toy_repository(tmp_path_factory.mktemp("toy_repository"), seed=0))


@pytest.fixture(scope="session")
def triton(toy_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real local Triton (deploy/local) serving the toy repository for the whole session."""
    serve = pytest.importorskip("ufsim_serve", reason="ufsim_serve (deploy/local) not available")
    log_path = tmp_path_factory.mktemp("triton") / "triton.log"
    with serve.LocalTriton(
        toy_repository, grpc_port=0, http_port=0, metrics_port=0, log_path=log_path
    ) as server:
        yield server
