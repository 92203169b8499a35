"""Atomic file replacement: a reader sees the old file or the new one, never half of either.

Every artifact ufsim-export writes (models, manifests, Triton configs, label caches) goes through
:func:`replacing`, so a run killed mid-write leaves what was there before and no stray temporary file
survives a failed write. The temporary file is created the way ``open`` would (mode 0o666 less the
umask), so the renamed file is as readable as any other: a Triton container running as another user can
read a repository written here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write; renamed over ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (``np.savez`` and friends append theirs otherwise). The
    folder is created if missing. On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; ``path``."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``path``."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
