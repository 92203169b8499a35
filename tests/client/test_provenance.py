"""Provenance and units in every output file; the command line's version and verbosity options."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot

from ufsim_client.cli import _parser, main
from ufsim_client.ntuple import UNITS, schema
from ufsim_client.provenance import client_version, provenance
from ufsim_client.report import read_ntuple
from ufsim_client.writers import open_writer


def _rows(n: int) -> dict[str, np.ndarray]:
    return {name: np.arange(n).astype(dtype) for name, dtype in schema().items()}


def test_record_names_inputs_with_their_sha256(tmp_path: Path) -> None:
    card = tmp_path / "card.cmnd"
    card.write_bytes(b"Beams:eCM = 13000.\n")
    record = provenance(seed=7, inputs=[card], command_line=["ufsim", "simulate"])
    assert record["seed"] == 7 and record["ufsim_version"] == client_version()
    assert record["inputs"] == [
        {
            "name": "card.cmnd",
            "path": str(card.resolve()),
            "bytes": 19,
            "sha256": hashlib.sha256(card.read_bytes()).hexdigest(),
        }
    ]
    assert record["units"]["TRUEP"] == "MeV" and record["command_line"] == ["ufsim", "simulate"]
    json.dumps(record)


@pytest.mark.parametrize("late", [False, True])
def test_parquet_holds_provenance_and_units(tmp_path: Path, late: bool) -> None:
    target = tmp_path / "out.parquet"
    writer = open_writer(target, chunk_rows=3)
    if not late:
        writer.set_provenance({"seed": 5})
    writer.write(_rows(4))  # a chunk is written before the provenance when it comes late
    if late:
        writer.set_provenance({"seed": 5})
    writer.close()
    arrow = pq.read_schema(target)
    assert arrow.field("TRACK_P").metadata == {b"unit": b"MeV"}
    assert arrow.field("IP_OWNPV").metadata == {b"unit": b"mm"}
    assert arrow.field("TRUEID").metadata is None
    where = pq.read_metadata(target).metadata if late else arrow.metadata
    assert json.loads(where[b"ufsim"]) == {"seed": 5}
    assert len(read_ntuple(target)["TRUEP"]) == 4


def test_root_holds_provenance_and_units_in_branch_titles(tmp_path: Path) -> None:
    target = tmp_path / "out.root"
    writer = open_writer(target, chunk_rows=2, tree="DecayTree")
    writer.set_provenance({"seed": 5, "inputs": []})
    writer.write(_rows(5))
    writer.close()
    with uproot.open(target) as handle:
        assert json.loads(str(handle["ufsim_provenance"])) == {"seed": 5, "inputs": []}
        tree = handle["DecayTree"]
        for name, unit in UNITS.items():
            assert tree[name].title == f"{name} [{unit}]"
        np.testing.assert_array_equal(tree["TRACK_COV_44"].array(library="np"), np.arange(5))
        assert tree.num_entries == 5


def test_an_aborted_file_gets_no_provenance_and_leaves_nothing(tmp_path: Path) -> None:
    writer = open_writer(tmp_path / "out.root")
    writer.set_provenance({"seed": 1})
    writer.write(_rows(3))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"ufsim {client_version()}"


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["-v", "report", "x"], 1, 0),
        (["report", "x", "-vv"], 2, 0),
        (["report", "-q", "x"], 0, 1),
        (["-q", "report", "x"], 0, 1),
        (["report", "x"], 0, 0),
    ],
)
def test_verbosity_before_or_after_the_command(argv: list[str], verbose: int, quiet: int) -> None:
    args = _parser().parse_args([*argv, "--output", "out"])
    assert (args.verbose, args.quiet) == (verbose, quiet)


def test_report_on_a_missing_tree_names_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    target = tmp_path / "out.root"
    with open_writer(target) as writer:
        writer.write(_rows(3))
    assert main(["report", str(target), "--tree", "foo", "--output", str(tmp_path / "r")]) == 2
    assert "'foo'" in caplog.text and "ufsim" in caplog.text


@pytest.mark.triton
def test_simulate_records_how_the_ntuple_was_made(
    triton: object, hepmc_files: list[Path], tmp_path: Path
) -> None:
    files = hepmc_files[:2]
    for suffix in (".root", ".parquet"):
        target = tmp_path / f"out{suffix}"
        argv = ["simulate", "--server", triton.grpc_url, "--seed", "11", "--no-progress"]  # type: ignore[attr-defined]
        argv += ["--input", *map(str, files), "--output", str(target)]
        assert main(argv) == 0
        if suffix == ".root":
            with uproot.open(target) as handle:
                record = json.loads(str(handle["ufsim_provenance"]))
        else:
            record = json.loads(pq.read_schema(target).metadata[b"ufsim"])
        assert record["seed"] == 11 and record["command_line"][1:] == argv
        assert [i["name"] for i in record["inputs"]] == [f.name for f in files]
        assert record["inputs"][1]["sha256"] == hashlib.sha256(files[1].read_bytes()).hexdigest()
        assert record["server"]["model"] == "pipeline" and record["server"]["urls"] == [triton.grpc_url]  # type: ignore[attr-defined]
        assert record["server"]["repository"]["repository_version"] == "toy-0"  # the servers' identity
        assert record["pv_model"] == "pv_reconstruction" and record["crossing"] == "file"
        data = read_ntuple(target)
        assert set(data["SourceFile"].tolist()) == {0, 1}
        assert (data["MCKey"] > 0).all() and (data["GenEventNumber"] > 0).all()
