"""ReDecay for in-process Pythia: copies share the underlying event and differ in the signal decays."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from ufsim_client import InputError, generate_pythia
from ufsim_client.cli import main


def _particles(event: object) -> set[tuple[int, int, float]]:
    return {
        (int(k), int(p), round(float(pz), 3))
        for k, p, pz in zip(event.mc["MCKey"], event.pid, event.momentum[:, 2], strict=True)  # type: ignore[attr-defined]
    }


def test_copies_share_the_underlying_event() -> None:
    events = list(generate_pythia(seed=3, n_events=12, redecay=421, redecay_times=4))
    assert [e.number for e in events] == list(range(12))
    copies: dict[int, list[object]] = defaultdict(list)
    for event in events:
        copies[int(event.mc["GenEventNumber"][0])].append(event)
    assert [len(c) for c in copies.values()] == [4, 4, 4]
    differing = 0
    for group in copies.values():
        sets = [_particles(e) for e in group]
        shared = set.intersection(*sets)
        assert len(shared) >= 0.5 * min(len(s) for s in sets)  # the underlying event
        differing += len(set.union(*sets) - shared) > 0  # the re-decayed signal (if it reaches LHCb)
        assert all((e.primary_vertices == group[0].primary_vertices).all() for e in group)  # type: ignore[attr-defined]
    assert differing >= 1
    plain = list(generate_pythia(seed=3, n_events=3))
    assert len({int(e.mc["GenEventNumber"][0]) for e in plain}) == 3


def test_bad_redecay_requests_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="can decay") as err:
        list(generate_pythia(seed=1, n_events=1, redecay=22, redecay_times=2))
    assert err.value.field == "redecay"
    with pytest.raises(InputError) as err:
        list(generate_pythia(seed=1, n_events=1, redecay=421, redecay_times=0))
    assert err.value.field == "redecay_times"
    common = [
        "simulate",
        "--server",
        "127.0.0.1:1",
        "--seed",
        "1",
        "--events",
        "2",
        "--output",
        str(tmp_path / "o.root"),
    ]
    assert main([*common, "--gun", "n=3", "--redecay", "421"]) == 2
    assert main([*common, "--pythia", "--redecay", "421", "--redecay-times", "0"]) == 2
    assert list(tmp_path.iterdir()) == []
