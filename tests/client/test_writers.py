from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from ufsim_client import MemoryWriter, ParquetWriter, RootWriter, open_writer
from ufsim_client.ntuple import schema
from ufsim_client.report import read_ntuple


def _rows(n: int, start: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(start)
    columns = {name: rng.uniform(-5, 5, n).astype(dtype) for name, dtype in schema().items()}
    columns["eventNumber"] = np.arange(start, start + n, dtype=np.int64)
    columns["rngKey"] = np.full(n, 2**64 - 1 - start, dtype=np.uint64)
    return columns


@pytest.mark.parametrize("suffix", [".root", ".parquet"])
def test_round_trip_in_chunks(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    with open_writer(target, chunk_rows=7) as writer:
        for start in (0, 5, 10, 30):
            writer.write(_rows(5 if start < 30 else 3, start))
        assert not target.exists()
    data = read_ntuple(target)
    assert list(data) == list(schema())
    expected = {k: np.concatenate([_rows(5, s)[k] for s in (0, 5, 10)] + [_rows(3, 30)[k]]) for k in schema()}
    for name, dtype in schema().items():
        assert data[name].dtype == dtype, name
        np.testing.assert_array_equal(data[name], expected[name])
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_parquet_columns_of_other_layouts_are_converted(tmp_path: Path) -> None:
    """Strided, other-dtype and list columns go through pyarrow's conversion; the file is the same."""
    rows = _rows(6)
    odd = dict(rows)
    odd["TRUEP_X"] = np.repeat(rows["TRUEP_X"], 2)[::2]
    odd["particleIndex"] = rows["particleIndex"].astype(np.int16)
    odd["TRUEP_Y"] = rows["TRUEP_Y"].tolist()
    assert not odd["TRUEP_X"].flags.c_contiguous
    for name, columns in (("plain", rows), ("odd", odd)):
        with ParquetWriter(tmp_path / f"{name}.parquet") as writer:
            writer.write(columns)
    plain, converted = read_ntuple(tmp_path / "plain.parquet"), read_ntuple(tmp_path / "odd.parquet")
    for column, dtype in schema().items():
        assert converted[column].dtype == dtype, column
        np.testing.assert_array_equal(converted[column], plain[column])


def test_parquet_columns_are_required(tmp_path: Path) -> None:
    """ufsim writes sentinels, never nulls: every column is REQUIRED, and a null is refused."""
    import pyarrow.parquet as pq

    with ParquetWriter(tmp_path / "out.parquet") as writer:
        writer.write(_rows(4))
    parquet_schema = pq.ParquetFile(tmp_path / "out.parquet").schema
    assert {parquet_schema.column(i).max_definition_level for i in range(len(parquet_schema))} == {0}
    rows = _rows(2)
    rows["TRUEP_Y"] = [1.0, None]  # type: ignore[assignment]
    with (
        pytest.raises(ValueError, match="column 'TRUEP_Y': 1 null values"),
        ParquetWriter(tmp_path / "bad.parquet") as writer,
    ):
        writer.write(rows)
    assert not (tmp_path / "bad.parquet").exists()


def test_root_branch_names_and_tree(tmp_path: Path) -> None:
    target = tmp_path / "tuple.root"
    with RootWriter(target, tree="DecayTree") as writer:
        writer.write(_rows(4))
    with uproot.open(target) as handle:
        tree = handle["DecayTree"]
        assert tree.num_entries == 4
        for branch in (
            "TRACK_Type",
            "TRACK_CHI2NDOF",
            "TRACK_GhostProb",
            "PIDK",
            "ProbNNpi",
            "isMuon",
            "RichDLLk",
            "MuonMuLL",
            "TRUEID",
            "eventNumber",
        ):
            assert branch in tree


@pytest.mark.parametrize("writer_class", [RootWriter, ParquetWriter])
def test_failure_leaves_no_partial_file(tmp_path: Path, writer_class: type) -> None:
    target = tmp_path / "out.data"
    target.write_text("previous run")
    with pytest.raises(RuntimeError, match="boom"), writer_class(target, chunk_rows=2) as writer:
        writer.write(_rows(5))
        raise RuntimeError("boom")
    assert target.read_text() == "previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["out.data"]


def test_empty_output_has_all_columns(tmp_path: Path) -> None:
    with open_writer(tmp_path / "empty.parquet") as writer:
        pass
    data = read_ntuple(writer.path)
    assert list(data) == list(schema()) and all(len(v) == 0 for v in data.values())


def test_memory_writer_and_unknown_format(tmp_path: Path) -> None:
    writer = MemoryWriter()
    writer.write(_rows(3))
    writer.write(_rows(2, 3))
    assert len(writer.columns()["eventNumber"]) == 5
    with pytest.raises(ValueError, match=r"\.root or \.parquet"):
        open_writer(tmp_path / "out.csv")
