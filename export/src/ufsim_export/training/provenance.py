"""What a trained model records about how it was made: data hashes, the git commit, library versions.

Every model's manifest (``<step>.json``) is written by :func:`write_manifest`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_text

LIBRARIES = (
    "numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "lightgbm", "torch", "hummingbird-ml", "onnx",
    "onnxruntime",
)  # fmt: skip


def sha256_files(paths: Iterable[Path]) -> str:
    """SHA-256 over the named files' bytes, in sorted path order (names included, so renames count)."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of one file's bytes (what ``sha256sum`` prints)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


TRAINING_OUTPUTS = ("export/models", "model_repository", "export/reports")
"""What training and validation write: changes there do not make the code that trains ``-dirty``."""


def git_commit(repo: Path | None = None) -> str:
    """HEAD of this package's repository (``-dirty`` when tracked code differs), or ``unknown``.

    The trained models, the repository and the reports are outputs, not code: one model finishing while
    another trains must not mark the second's provenance dirty.
    """
    cwd = repo or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--",
             *(f":(top,exclude){path}" for path in TRAINING_OUTPUTS)],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries a model depends on (``absent`` when not installed)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as indented JSON (numpy scalars and arrays converted), ending with a newline."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return write_text(path, json.dumps(manifest, indent=2, default=default) + "\n")


def set_training_seconds(path: Path, seconds: float) -> Path:
    """Record the wall time a step's training took in the manifest beside ``path`` (``<step>.json``)."""
    manifest_path = Path(path).with_suffix(".json")
    manifest = json.loads(manifest_path.read_text())
    manifest["training_seconds"] = round(seconds, 1)
    return write_manifest(manifest_path, manifest)
