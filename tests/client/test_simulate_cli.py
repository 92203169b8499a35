from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from ufsim_client.cli import main
from ufsim_client.ntuple import schema
from ufsim_client.writers import open_writer


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _fake_ntuple(path: Path, n: int = 2000) -> None:
    rng = np.random.default_rng(0)
    columns = {name: np.zeros(n, dtype) for name, dtype in schema().items()}
    columns["eventNumber"] = np.arange(n) // 20
    columns["TRUEID"] = rng.choice([211, -211, 321, 13, -13, 2212, 11], n).astype(np.int32)
    columns["TRUEP"] = rng.uniform(2000, 50000, n).astype(np.float32)
    columns["TRACK_Type"] = rng.choice([-1, 0, 3, 4, 5], n, p=[0.3, 0.1, 0.4, 0.1, 0.1]).astype(np.int32)
    long = columns["TRACK_Type"] == 3
    columns["TRACK_P"] = np.where(long, columns["TRUEP"] * (1 + rng.normal(0, 0.005, n)), -9999).astype(
        np.float32
    )
    columns["RichDLLk"] = np.where(long, rng.normal(0, 10, n), -1000).astype(np.float32)
    columns["PIDmu"] = np.where(long, rng.normal(0, 3, n), -1000).astype(np.float32)
    columns["isMuon"] = np.where(long, rng.integers(0, 2, n), -1).astype(np.int32)
    with open_writer(path) as writer:
        writer.write(columns)


@pytest.mark.parametrize("suffix", [".root", ".parquet"])
def test_report(tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]) -> None:
    ntuple = tmp_path / f"tuple{suffix}"
    _fake_ntuple(ntuple)
    assert main(["report", str(ntuple), "--output", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    for png in ("efficiency_pi.png", "momentum_resolution.png", "richdllk.png", "pidmu.png"):
        assert (tmp_path / "report" / png).stat().st_size > 1000
        assert png in report
    assert "2000 particles in 100 events" in report
    assert "report.md" in capsys.readouterr().out


def test_report_missing_ntuple(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "nope.root"), "--output", str(tmp_path)]) == 2


def test_gun_spectra_command(tmp_path: Path) -> None:
    out = tmp_path / "spectra.npz"
    assert main(["gun-spectra", "--events", "3", "--seed", "2", "--output", str(out)]) == 0
    with np.load(out) as data:
        assert data["counts"].sum() > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gun", "pid=22,n=3", "--events", "2"], "'pid'"),
        (["--gun", "n=3"], "'events'"),
        (["--gun", "n=3", "--events", "0"], "'events'"),
    ],
)
def test_simulate_bad_input_exits_2(
    tmp_path: Path, args: list[str], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.root"
    code = main(["simulate", "--server", _closed_port(), *args, "--seed", "1", "--output", str(out)])
    assert code == 2
    assert message in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_simulate_unreachable_server_exits_3(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = _closed_port()
    out = tmp_path / "out.parquet"
    code = main(
        [
            "simulate",
            "--server",
            url,
            "--gun",
            "n=3",
            "--events",
            "2",
            "--seed",
            "1",
            "--output",
            str(out),
            "--retry-timeout",
            "0.5",
            "--no-progress",
        ]
    )
    assert code == 3
    assert url in caplog.text
    assert list(tmp_path.iterdir()) == []
