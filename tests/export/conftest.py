"""Fixtures shared by the export tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ufsim_export.training import library


@pytest.fixture(scope="session")
def library_data(shared_data: Path) -> Path:
    """The tracking reference data with the Lamarr library (skips where the library is absent)."""
    path = shared_data / "lamarr-trk-2016MU"
    if not list(path.glob(library.LIBRARY_GLOB)):
        pytest.skip(f"{path}/library: the Lamarr tracking library is absent")
    return path
