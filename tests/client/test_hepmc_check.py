"""The HepMC check's two ways: whole events by regular expressions, and line by line for the rest.

The fast way must accept only what the line check accepts, with the same counts and line numbers; any
file it declines is decided by the line check, so unusual but valid files still read.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyhepmc
import pytest

from ufsim_client.errors import InputError
from ufsim_client.readers.hepmc_check import _line_check, _whole_events, check_hepmc_file


def _outcome(path: Path) -> list[object] | str:
    """The line check's events, or its error message."""
    try:
        return list(_line_check(path))
    except InputError as err:
        return str(err)


@pytest.mark.parametrize("chunk_bytes", [1 << 24, 50_000, 4096, 300])
def test_whole_events_agree_with_the_line_check_on_the_lhcb_files(
    hepmc_files: list[Path], chunk_bytes: int
) -> None:
    """Same events, counts and E-line numbers, read in one chunk or in many (events cut across chunks)."""
    for path in hepmc_files:
        fast = _whole_events(path, chunk_bytes)
        assert fast is not None
        assert fast == _line_check(path)


def test_whole_events_read_hepmc3(hepmc_files: list[Path], tmp_path: Path) -> None:
    converted = tmp_path / "evt1.hepmc3"
    with pyhepmc.open(hepmc_files[1]) as source, pyhepmc.open(converted, "w", format="HepMC3") as sink:
        for event in source:
            sink.write(event)
    fast = _whole_events(converted, 4096)
    assert fast is not None
    assert fast == _line_check(converted)


def _with_flows(line: str, count: int) -> str:
    fields = line.split()
    fields[12:] = [str(count)] + [str(v) for i in range(count) for v in (i + 1, 500 + i)]
    return " ".join(fields)


@pytest.mark.parametrize(
    "variant",
    ["crlf", "tab", "double space", "many flows", "blank lines", "nan mass", "trailing spaces"],
)
def test_unusual_valid_files_are_left_to_the_line_check(
    variant: str, hepmc_files: list[Path], tmp_path: Path
) -> None:
    """Files the expressions decline, valid all the same: the line check reads them, same events."""
    lines = hepmc_files[1].read_text().splitlines()
    particle = next(i for i, line in enumerate(lines) if line.startswith("P ") and i > 100)
    if variant == "crlf":
        text = "\r\n".join(lines) + "\r\n"
    else:
        if variant == "tab":
            lines[particle] = lines[particle].replace(" ", "\t", 1)
        elif variant == "double space":
            lines[particle] = lines[particle].replace(" ", "  ", 2)
        elif variant == "many flows":
            lines[particle] = _with_flows(lines[particle], 5)
        elif variant == "blank lines":
            lines.insert(particle, "")
        elif variant == "nan mass":
            fields = lines[particle].split()
            fields[7] = "nan"
            lines[particle] = " ".join(fields)
        elif variant == "trailing spaces":
            lines[particle] += "   "
        text = "\n".join(lines) + "\n"
    path = tmp_path / "variant.mc2"
    path.write_bytes(text.encode())
    assert _whole_events(path) is None
    expected = _line_check(hepmc_files[1])
    if variant == "blank lines":  # one more line before the later events
        expected = [e if e.line < particle else type(e)(e.number, e.line + 1, e.particles) for e in expected]
    assert check_hepmc_file(path) == expected


def test_whole_events_read_four_flows(hepmc_files: list[Path], tmp_path: Path) -> None:
    """Up to four colour flows are the expressions' own (more are the line check's, above)."""
    lines = hepmc_files[1].read_text().splitlines()
    particle = next(i for i, line in enumerate(lines) if line.startswith("P ") and i > 100)
    lines[particle] = _with_flows(lines[particle], 4)
    path = tmp_path / "flows.mc2"
    path.write_text("\n".join(lines) + "\n")
    assert _whole_events(path) == _line_check(path) == _line_check(hepmc_files[1])


def test_whole_events_never_accept_what_the_line_check_rejects(
    hepmc_files: list[Path], tmp_path: Path
) -> None:
    """Random edits of a one-event file: the expressions decline or agree with the line check."""
    one_event = hepmc_files[1].read_bytes()
    assert one_event.count(b"\nE ") == 1
    rng = random.Random(3)
    alphabet = b" \n\t-+.e0159PVEx"
    outcomes = {"declined": 0, "agreed": 0, "rejected": 0}
    for trial in range(120):
        edited = bytearray(one_event)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(edited))
            action = rng.randrange(3)
            if action == 0:
                edited[at] = rng.choice(alphabet)
            elif action == 1:
                del edited[at]
            else:
                edited.insert(at, rng.choice(alphabet))
        path = tmp_path / f"edit{trial}.mc2"
        path.write_bytes(bytes(edited))
        fast, expected = _whole_events(path), _outcome(path)
        outcomes["rejected"] += isinstance(expected, str)
        if fast is None:
            outcomes["declined"] += 1
        else:
            assert fast == expected, f"trial {trial}"
            outcomes["agreed"] += 1
    assert min(outcomes.values()) > 0, outcomes
