"""How an ntuple was made, written into every output: seed, versions, served repository, command line, inputs.

The record is a JSON object: ``ufsim_version``, ``seed``, ``created`` (UTC, ISO 8601), ``command_line``
(argv, when run from the command line), ``inputs`` (name, path, size and sha256 of each input file,
in the order that ``SourceFile`` indexes), ``server`` (the servers' URLs, the served model and its
version, and the repository identity the ensemble's config declares) and ``units``. ROOT files hold it
as the TObjString ``ufsim_provenance``; parquet files as the schema metadata key ``ufsim``.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["client_version", "file_record", "provenance", "served_identity"]


def client_version() -> str:
    """The installed ufsim-client version ("unknown" when run from sources that are not installed)."""
    try:
        return importlib.metadata.version("ufsim-client")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Name, absolute path, size and sha256 of one input file."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {
        "name": path.name,
        "path": str(path.resolve()),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }


def provenance(
    *,
    seed: int,
    inputs: Sequence[str | os.PathLike[str]] = (),
    command_line: Sequence[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance record of a run (``server`` is added by :func:`ufsim_client.simulate`)."""
    from ufsim_client.ntuple import UNITS

    record: dict[str, Any] = {
        "ufsim_version": client_version(),
        "seed": int(seed),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command_line": list(command_line) if command_line is not None else None,
        "inputs": [file_record(p) for p in inputs],
        "units": UNITS,
    }
    record.update(extra)
    return record


def served_identity(pool: Any, model: str) -> dict[str, Any]:
    """URLs, model, versions and the repository identity of the servers (the ensemble's config parameters).

    Uses the pool's own ``identity`` when it has one (the server pool may cache it); else reads the
    served model's config from the first server that answers.
    """
    identity: dict[str, Any] = {"urls": list(pool.urls), "model": model}
    own = getattr(pool, "identity", None)
    if own is not None:
        identity["repository"] = own() if callable(own) else own
        return identity

    def read(server: Any) -> dict[str, Any]:
        from ufsim_client.vertices import metadata_timeout

        timeout = metadata_timeout(pool)
        headers = getattr(server, "headers", None)
        config = server.client.get_model_config(model, headers=headers, as_json=True, client_timeout=timeout)
        metadata = server.client.get_model_metadata(
            model, headers=headers, as_json=True, client_timeout=timeout
        )
        config = config.get("config", config)
        parameters = {k: v.get("string_value", v) for k, v in config.get("parameters", {}).items()}
        return {"server": server.url, "versions": metadata.get("versions", []), "parameters": parameters}

    identity["repository"] = pool._call(f"config of {model}", read)
    return identity
