"""Ntuple writers: ROOT TTree (uproot), parquet (pyarrow) and in-memory, all written atomically.

A file writer writes to a temporary file next to the target (``.NAME.HOST.PID.XXXX.tmp``), and only
:meth:`~_AtomicWriter.close` makes it appear: fsync, ``os.replace`` onto the target, fsync of the
directory. :meth:`~_AtomicWriter.abort` (or leaving the ``with`` block by an exception) deletes the
temporary file, so a failed run never leaves a partial file at the target. A run killed outright
(SIGKILL) cannot clean up: the next writer to the same path deletes temporary files of that path whose
process, on this host, is gone. Outputs get the permissions the umask allows (like ``open``), not
``mkstemp``'s 0600. Rows are buffered and written in chunks of at least ``chunk_rows``.

``metadata`` (key -> text) is the hook for provenance: whatever is in it at :meth:`~_AtomicWriter.close`
is stored in the file (parquet: the file's key-value metadata, ``pyarrow.parquet.read_metadata``;
ROOT: one ``TObjString`` per key).

Every file records how it was made (:mod:`ufsim_client.provenance`, set by :meth:`set_provenance`
before closing): ROOT files hold the JSON as the TObjString ``ufsim_provenance`` and give each
dimensioned branch the title ``NAME [unit]``; parquet files hold it in the schema metadata key
``ufsim`` and the units in each field's metadata key ``unit`` (:data:`ufsim_client.ntuple.UNITS`).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ufsim_client import extras
from ufsim_client.errors import UfsimError
from ufsim_client.ntuple import UNITS, schema

__all__ = ["MemoryWriter", "OutputError", "ParquetWriter", "RootWriter", "Writer", "open_writer"]

log = logging.getLogger(__name__)

Columns = dict[str, NDArray[Any]]


class OutputError(UfsimError):
    """The output file cannot be created where it was asked for (the message says why)."""


def _umask() -> int:
    """The process umask (read by setting and restoring it; done once per writer, before any thread)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete ``path``'s temporary files left on this host by writers whose process is gone."""
    host = re.escape(socket.gethostname())
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{host}\.(\d+)\.[^.]+\.tmp")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(candidate.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
                log.warning("removed %s, left by a killed run (pid %s)", candidate, match.group(1))
    return removed


class Writer(Protocol):
    """What :func:`ufsim_client.simulate` writes rows to."""

    def write(self, columns: Columns) -> None:
        """Append rows (all columns of :func:`ufsim_client.ntuple.schema`, same length)."""

    def close(self) -> None:
        """Finish the output (for files: make it appear at its path)."""

    def abort(self) -> None:
        """Drop everything written so far."""


class MemoryWriter:
    """Collects rows in memory; :meth:`columns` concatenates them."""

    def __init__(self) -> None:
        self._chunks: list[Columns] = []
        self.provenance: dict[str, Any] | None = None
        self.metadata: dict[str, str] = {}

    def write(self, columns: Columns) -> None:
        self._chunks.append(columns)

    def set_provenance(self, provenance: dict[str, Any]) -> None:
        """Keep the run's provenance record (see :mod:`ufsim_client.provenance`)."""
        self.provenance = provenance

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self._chunks.clear()

    def columns(self) -> Columns:
        """All rows written so far, one array per column."""
        types = schema()
        return {
            name: np.concatenate([c[name] for c in self._chunks]) if self._chunks else np.empty(0, dtype)
            for name, dtype in types.items()
        }


class _AtomicWriter:
    """Buffering and temporary-file handling shared by the file writers."""

    def __init__(self, path: str | os.PathLike[str], *, chunk_rows: int = 100_000) -> None:
        self.path = Path(path)
        self.metadata: dict[str, str] = {}
        try:
            if self.path.is_dir():
                raise IsADirectoryError(f"{self.path} is a directory")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path)
            prefix = f".{self.path.name}.{socket.gethostname()}.{os.getpid()}."
            fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=self.path.parent)
        except OSError as err:
            raise OutputError(f"cannot write the output {str(self.path)!r}: {err.strerror or err}") from None
        try:
            os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        self.tmp_path = Path(tmp)
        self.chunk_rows = chunk_rows
        self.schema = schema()
        self._buffer: list[Columns] = []
        self._buffered = 0
        self._done = False
        self.provenance: dict[str, Any] | None = None

    def set_provenance(self, provenance: dict[str, Any]) -> None:
        """The run's provenance record, written into the file when it is closed."""
        self.provenance = provenance

    def write(self, columns: Columns) -> None:
        self._buffer.append(columns)
        self._buffered += len(next(iter(columns.values())))
        if self._buffered >= self.chunk_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        parts, self._buffer, self._buffered = self._buffer, [], 0
        self._write_chunk(parts)

    def _write_chunk(self, parts: list[Columns]) -> None:
        """Write the buffered requests' rows (``parts``, in order) as one chunk."""
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._done:
            return
        try:
            self._flush()
            self._finish()
            with open(self.tmp_path, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(self.tmp_path, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            self.abort()
            raise
        self._done = True
        log.info("wrote %s", self.path)

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(Exception):
            self._finish()
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> _AtomicWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ParquetWriter(_AtomicWriter):
    """Parquet file, one row group per chunk, opened at the first chunk.

    Provenance set before the first chunk goes into the schema metadata; set later, into the file's
    key-value metadata. Columns are not dictionary-encoded: nearly every value differs, and trying a
    dictionary first took three times as long and gave a larger file. Every column is required
    (non-nullable): ufsim writes sentinels, never nulls, and required columns need no definition levels
    (writing 0.9 -> 0.55 µs per row).
    """

    def __init__(self, path: str | os.PathLike[str], *, chunk_rows: int = 100_000) -> None:
        super().__init__(path, chunk_rows=chunk_rows)
        pa = extras.pyarrow()
        extras.pyarrow_parquet()
        self._arrow_schema = pa.schema(
            [
                pa.field(
                    name,
                    pa.from_numpy_dtype(dtype),
                    nullable=False,
                    metadata={"unit": UNITS[name]} if name in UNITS else None,
                )
                for name, dtype in self.schema.items()
            ]
        )
        self._writer: Any = None

    def _open(self) -> Any:
        if self._writer is None:
            pq = extras.pyarrow_parquet()
            schema = self._arrow_schema
            if self.provenance is not None:
                schema = schema.with_metadata({"ufsim": json.dumps(self.provenance)})
                self._written_provenance = self.provenance
            self._writer = pq.ParquetWriter(str(self.tmp_path), schema, use_dictionary=False)
        return self._writer

    def _write_chunk(self, parts: list[Columns]) -> None:
        pa = extras.pyarrow()
        fields = [(field, self.schema[field.name]) for field in self._arrow_schema]
        batches = [
            pa.RecordBatch.from_arrays(
                [_arrow_array(pa, f.name, part[f.name], f.type, dtype) for f, dtype in fields],
                schema=self._arrow_schema,
            )
            for part in parts
        ]
        self._open().write_table(pa.Table.from_batches(batches, schema=self._arrow_schema))

    def _finish(self) -> None:
        writer = self._open()
        if self.metadata:
            writer.add_key_value_metadata(dict(self.metadata))
        if (
            self.provenance is not None
            and not self._done
            and getattr(self, "_written_provenance", None) is None
        ):
            writer.add_key_value_metadata({"ufsim": json.dumps(self.provenance)})
        writer.close()


def _arrow_array(pa: Any, name: str, values: NDArray[Any], kind: Any, dtype: np.dtype[Any]) -> Any:
    """One column as an arrow array, sharing the numpy buffer when it already has the column's dtype.

    ``pyarrow.array`` would import pandas the first time (about 1 s of CPU); it converts the rest, and a
    null it finds is refused (the columns are required).
    """
    if (
        isinstance(values, np.ndarray)
        and values.dtype == dtype
        and values.ndim == 1
        and values.flags.c_contiguous
    ):
        return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])
    array = pa.array(values, type=kind)
    if array.null_count:
        raise ValueError(
            f"column {name!r}: {array.null_count} null values; ufsim columns hold sentinels, not nulls"
        )
    return array


class RootWriter(_AtomicWriter):
    """ROOT file with one TTree named ``tree`` (default ``ufsim``), one basket per chunk."""

    def __init__(
        self, path: str | os.PathLike[str], *, tree: str = "ufsim", chunk_rows: int = 100_000
    ) -> None:
        super().__init__(path, chunk_rows=chunk_rows)
        uproot = extras.uproot()
        self._file = uproot.recreate(str(self.tmp_path))
        self._tree = self._file.mktree(tree, dict(self.schema.items()), title="ufsim particles")
        _set_branch_titles(self._tree, {name: f"{name} [{unit}]" for name, unit in UNITS.items()})

    def _write_chunk(self, parts: list[Columns]) -> None:
        self._tree.extend({name: np.concatenate([part[name] for part in parts]) for name in self.schema})

    def _finish(self) -> None:
        if self.provenance is not None and not self._done:
            self._file["ufsim_provenance"] = json.dumps(self.provenance)
        for key, text in self.metadata.items():
            self._file[key] = text
        self._file.close()


def _set_branch_titles(tree: Any, titles: dict[str, str]) -> None:
    """Branch titles (units) before the first basket; uproot has no public API for them (uproot5#785)."""
    for branch in tree._cascading._branch_data:
        if branch.get("fName") in titles:
            branch["fTitle"] = titles[branch["fName"]]
    tree._cascading.write_anew(tree._file.sink)


def open_writer(path: str | os.PathLike[str], **options: Any) -> ParquetWriter | RootWriter:
    """A writer chosen by the file name: ``.root`` for ROOT, ``.parquet``/``.pq`` for parquet."""
    suffix = Path(path).suffix.lower()
    if suffix == ".root":
        return RootWriter(path, **options)
    if suffix in (".parquet", ".pq"):
        return ParquetWriter(path, **options)
    raise ValueError(f"unknown output format {suffix!r} for {str(path)!r}; use a .root or .parquet file name")
