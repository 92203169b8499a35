"""Atomic replacement: the old file or the new one, never half; readable as any file; nothing left over."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ufsim_export.files import replacing, write_bytes, write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "config.pbtxt", "old\n")
    with pytest.raises(RuntimeError, match="killed"), replacing(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.pbtxt"]


def test_replaced_files_have_the_mode_any_file_gets(tmp_path: Path, umask_022: None) -> None:
    """0o644 under umask 022, not mkstemp's 0o600 (a Triton container's user must read them)."""
    for path in (write_text(tmp_path / "a" / "config.pbtxt", "x"), write_bytes(tmp_path / "m.onnx", b"\0")):
        assert path.stat().st_mode & 0o777 == 0o644


def test_the_temporary_keeps_the_suffix_numpy_needs(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "tracks.npz"  # folder created on the way
    with replacing(target) as tmp:
        np.savez(tmp, x=np.arange(3))  # appends .npz unless the name ends with it
    with np.load(target) as saved:
        np.testing.assert_array_equal(saved["x"], np.arange(3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["tracks.npz"]
