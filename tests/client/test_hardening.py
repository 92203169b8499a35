"""Every way a run can fail without a server's help: bad input files, signals, leftovers of a killed run,
permissions, unwritable outputs, invalid arguments and unreachable servers. Each is injected for real."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ufsim_client.cli import main
from ufsim_client.endpoints import Endpoint, discover_token, parse_endpoint, parse_endpoints
from ufsim_client.errors import InputError
from ufsim_client.ntuple import schema
from ufsim_client.readers.hepmc_check import check_hepmc_file
from ufsim_client.writers import open_writer

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def _simulate(tmp_path: Path, *args: str, output: str = "out.root") -> int:
    return main(["simulate", *args, "--seed", "1", "--output", str(tmp_path / output), "--no-progress"])


def _garble(source: Path, target: Path, count: int) -> None:
    """Replace one field of ``count`` random P lines by text that is not a number."""
    lines = source.read_text().splitlines(keepends=True)
    rng = random.Random(1)
    particles = [i for i, line in enumerate(lines) if line.startswith("P ")]
    for index in rng.sample(particles, count):
        fields = lines[index].split()
        fields[rng.randrange(1, len(fields))] = "x@!"
        lines[index] = " ".join(fields) + "\n"
    target.write_text("".join(lines))


def _bad_file(kind: str, hepmc: Path, folder: Path) -> Path:
    path = folder / f"{kind}.mc2"
    if kind == "truncated":
        path.write_bytes(hepmc.read_bytes()[:120_000])
    elif kind == "truncated-at-a-line":
        text = hepmc.read_bytes()[:120_000]
        path.write_bytes(text[: text.rindex(b"\n") + 1])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbled":
        _garble(hepmc, path, 53)
    elif kind == "missing-particle":
        lines = hepmc.read_text().splitlines(keepends=True)
        drop = next(i for i, line in enumerate(lines) if line.startswith("P ") and i > 100)
        path.write_text("".join(lines[:drop] + lines[drop + 1 :]))
    return path


@pytest.mark.parametrize(
    ("kind", "where"),
    [
        ("truncated", "event 1"),
        ("truncated-at-a-line", "event 1"),
        ("random", "not ASCII"),
        ("empty", "is empty"),
        ("garbled", "event 1, line"),
        ("missing-particle", "event 1 (line 4): declares 902 particles but holds 901"),
    ],
)
def test_bad_hepmc_file_exits_2_naming_file_and_event(
    kind: str,
    where: str,
    hepmc_files: list[Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    bad = _bad_file(kind, hepmc_files[1], source)
    out = tmp_path / "out"
    code = main(["simulate", "--server", _closed_port(), "--input", str(bad), "--seed", "1",
                 "--output", str(out / "x.root"), "--no-progress"])  # fmt: skip
    assert code == 2
    assert str(bad) in caplog.text and where in caplog.text
    assert not out.exists() or list(out.iterdir()) == []
    assert "wrote" not in capsys.readouterr().out


def test_hepmc_check_accepts_the_lhcb_files_and_counts_their_particles(hepmc_files: list[Path]) -> None:
    """The declared counts agree with pyhepmc on every real file (garbled files are what differ)."""
    import pyhepmc

    for path in hepmc_files:
        with pyhepmc.open(path) as source:
            counts = [len(event.particles) for event in source]
        assert [event.particles for event in check_hepmc_file(path)] == counts


def _slow_run(tmp_path: Path, output: Path) -> subprocess.Popen[str]:
    """A ufsim process holding its temporary output while it retries an unreachable server."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p / "src") for p in ("client", "export"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "ufsim_client.cli", "simulate", "--server", _closed_port(), "--gun", "n=3",
         "--events", "2", "--seed", "1", "--output", str(output), "--connect-timeout", "600",
         "--retry-timeout", "600", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(f".{output.name}.*.tmp")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the temporary output never appeared"
        time.sleep(0.1)
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_termination_signals_clean_up_and_say_so(signum: signal.Signals, tmp_path: Path) -> None:
    output = tmp_path / "out.root"
    process = _slow_run(tmp_path, output)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    assert "no output written" in stderr
    assert list(tmp_path.iterdir()) == []


def test_next_run_removes_what_a_killed_run_left(tmp_path: Path) -> None:
    output = tmp_path / "out.root"
    process = _slow_run(tmp_path, output)
    process.kill()
    process.communicate(timeout=60)
    (leftover,) = tmp_path.glob(".out.root.*.tmp")
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        alive = tmp_path / f".out.root.{socket.gethostname()}.{sleeper.pid}.abcd.tmp"
        alive.write_bytes(b"another run still writing")
        other = tmp_path / f".other.root.{socket.gethostname()}.999999999.abcd.tmp"
        other.write_bytes(b"another output")
        with open_writer(output) as writer:
            writer.write({name: np.zeros(1, dtype) for name, dtype in schema().items()})
        assert not leftover.exists()
        assert alive.exists() and other.exists()
        assert output.is_file()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask(umask: int, mode: int, tmp_path: Path) -> None:
    previous = os.umask(umask)
    try:
        for name in ("out.root", "out.parquet"):
            with open_writer(tmp_path / name) as writer:
                writer.write({n: np.zeros(1, dtype) for n, dtype in schema().items()})
            assert (tmp_path / name).stat().st_mode & 0o777 == mode
    finally:
        os.umask(previous)


def test_output_under_a_file_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "afile").write_text("x")
    code = _simulate(tmp_path, "--server", _closed_port(), "--gun", "n=3", "--events", "1",
                     output="afile/out.root")  # fmt: skip
    assert code == 2
    assert "cannot write the output" in caplog.text and "afile/out.root" in caplog.text


def test_output_in_an_unwritable_directory_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who may write anywhere (root): permissions cannot be injected")
        code = _simulate(tmp_path, "--server", _closed_port(), "--gun", "n=3", "--events", "1",
                         output="locked/out.root")  # fmt: skip
    finally:
        locked.chmod(0o700)
    assert code == 2
    assert "cannot write the output" in caplog.text and "Permission denied" in caplog.text


def test_output_on_a_read_only_file_system_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Works as root too: /proc/self refuses new files whoever asks."""
    code = main(["simulate", "--server", _closed_port(), "--gun", "n=3", "--events", "1", "--seed", "1",
                 "--output", "/proc/self/out.root", "--no-progress"])  # fmt: skip
    assert code == 2
    assert "cannot write the output '/proc/self/out.root'" in caplog.text


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--seed", str(2**64)], "'seed'"),
        (["--seed", "-1"], "'seed'"),
        (["--server", "not a url"], "'server'"),
        (["--server", "http://127.0.0.1:8000"], "'server'"),
        (["--server", "127.0.0.1:99999"], "'server'"),
        (["--server", "127.0.0.1:0"], "'server'"),
        (["--server", "host:port"], "'server'"),
        (["--server", "grpc://host/path"], "'server'"),
        (["--batch-size", "0"], "'batch-size'"),
        (["--connect-timeout", "0"], "'connect-timeout'"),
        (["--retry-timeout", "nan"], "'retry-timeout'"),
        (["--tls-ca", "/nonexistent/ca.pem"], "'tls-ca'"),
        (["--token-file", "/nonexistent/token"], "'token'"),
    ],
)
def test_invalid_arguments_exit_2_at_once(
    args: list[str],
    field: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UFSIM_SERVER", raising=False)
    options = {"--server": _closed_port(), "--seed": "1", "--retry-timeout": "600"}
    options.update(zip(args[::2], args[1::2], strict=True))
    output = str(tmp_path / "o.root")
    argv = ["simulate", "--gun", "n=3", "--events", "1", "--no-progress", "--output", output]
    for flag, value in options.items():
        argv += [flag, value]
    assert main(argv) == 2
    assert f"invalid input field {field}" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_endpoint_defaults() -> None:
    assert parse_endpoint("localhost") == Endpoint("localhost", 8001, False)
    assert parse_endpoint("grpc://h.example:9000") == Endpoint("h.example", 9000, False)
    assert parse_endpoint("grpcs://gw.example") == Endpoint("gw.example", 443, True)
    assert parse_endpoint("https://gw.example:8443").target == "gw.example:8443"
    assert parse_endpoint("[::1]:8001").target == "[::1]:8001"
    assert parse_endpoints(None, {"UFSIM_SERVER": "a:1, grpcs://b"}) == [
        Endpoint("a", 1, False),
        Endpoint("b", 443, True),
    ]
    assert parse_endpoints(["c"], {"UFSIM_SERVER": "a:1"}) == [Endpoint("c", 8001, False)]
    with pytest.raises(InputError, match="UFSIM_SERVER"):
        parse_endpoints([], {})


def test_ufsim_server_environment_variable_names_the_servers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _closed_port()
    monkeypatch.setenv("UFSIM_SERVER", url)
    code = main(["simulate", "--gun", "n=3", "--events", "1", "--seed", "1", "--output",
                 str(tmp_path / "o.root"), "--connect-timeout", "1", "--no-progress"])  # fmt: skip
    assert code == 3
    assert url in caplog.text


def test_wrong_address_fails_on_the_connect_timeout_and_says_so_as_it_happens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = _closed_port()
    code = _simulate(tmp_path, "--server", url, "--gun", "n=3", "--events", "1", "--connect-timeout", "2")
    assert code == 3
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and url in r.getMessage()]
    assert warnings and "UNAVAILABLE" in warnings[0].getMessage()
    assert "no server answered; connect timeout 2 s" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_bearer_token_discovery_order(tmp_path: Path) -> None:
    uid = os.getuid()
    (tmp_path / f"bt_u{uid}").write_text("from-xdg\n")
    (tmp_path / "file").write_text(" from-file \n")
    (tmp_path / "explicit").write_text("from-option")
    env = {
        "BEARER_TOKEN": "from-env",
        "BEARER_TOKEN_FILE": str(tmp_path / "file"),
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    assert discover_token(tmp_path / "explicit", env).value == "from-option"  # type: ignore[union-attr]
    assert discover_token(None, env).value == "from-env"  # type: ignore[union-attr]
    del env["BEARER_TOKEN"]
    assert discover_token(None, env).value == "from-file"  # type: ignore[union-attr]
    del env["BEARER_TOKEN_FILE"]
    found = discover_token(None, env)
    assert found is not None and found.value == "from-xdg" and str(tmp_path) in found.source
    (tmp_path / "file").write_text("two tokens\n")
    with pytest.raises(InputError, match="holds no single token"):
        discover_token(None, {"BEARER_TOKEN_FILE": str(tmp_path / "file")})


def test_leftover_cleanup_takes_output_names_literally(tmp_path: Path) -> None:
    """Glob characters in the output name match only themselves."""
    from ufsim_client.writers import remove_stale_temporaries

    host = socket.gethostname()
    mine = tmp_path / f".run[1].root.{host}.999999999.abcd.tmp"
    other = tmp_path / f".run1.root.{host}.999999999.abcd.tmp"
    for path in (mine, other):
        path.write_bytes(b"left by a killed run")
    assert remove_stale_temporaries(tmp_path / "run[1].root") == [mine]
    assert other.exists()


def test_compressed_hepmc_is_checked_and_read_like_plain(hepmc_files: list[Path], tmp_path: Path) -> None:
    import gzip

    from ufsim_client import read_hepmc

    packed = tmp_path / "evt1.mc2.gz"
    packed.write_bytes(gzip.compress(hepmc_files[1].read_bytes()))
    assert check_hepmc_file(packed) == check_hepmc_file(hepmc_files[1])
    (plain,) = read_hepmc(hepmc_files[1])
    (unpacked,) = read_hepmc(packed)
    np.testing.assert_array_equal(plain.momentum, unpacked.momentum)
    truncated = tmp_path / "cut.mc2.gz"
    truncated.write_bytes(gzip.compress(hepmc_files[1].read_bytes()[:120_000]))
    with pytest.raises(InputError, match="cut.mc2.gz: event 1"):
        check_hepmc_file(truncated)
