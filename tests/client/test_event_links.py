"""Generator links and primary vertices on events: validation, and the crossing warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyhepmc
import pytest

from ufsim_client import Event, InputError, read_hepmc
from ufsim_client.batching import Batcher
from ufsim_client.keys import pv_keys


def _event(**extra: object) -> Event:
    return Event(
        pid=np.array([211, 321]), origin=np.zeros((2, 3)), momentum=np.ones((2, 3)), n_tracks=2, **extra
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"mc": {"MCKey": np.array([1])}}, "MCKey"),
        ({"mc": {"MCKey": np.array([1.5, 2.0])}}, "MCKey"),
        ({"mc": {"Barcode": np.array([1, 2])}}, "mc"),
        ({"primary_vertices": np.zeros((1, 2))}, "primary_vertices"),
        ({"primary_vertices": np.full((1, 3), np.nan)}, "primary_vertices"),
        ({"primary_vertices": np.zeros((1, 3)), "own_pv": np.array([0, 1])}, "own_pv"),
        ({"own_pv": np.array([0, 0])}, "own_pv"),
    ],
)
def test_bad_links_name_the_field(extra: dict, field: str) -> None:
    with pytest.raises(InputError) as err:
        _event(**extra)
    assert err.value.field == field


def test_requests_carry_links_and_each_pv_once() -> None:
    event = _event(
        number=None,
        mc={"MCKey": np.array([7, 9])},
        primary_vertices=np.array([[0.8, -0.2, 10.0], [0.9, -0.1, -20.0]]),
        own_pv=np.array([1, -1]),
    )
    plain = _event()
    batcher = Batcher(seed=5, batch_size=3)
    first, second = [*batcher.add(event, 4), *batcher.add(plain, 5), *batcher.flush()]
    assert first.truth["MCKey"].tolist() == [7, 9, -1]  # the plain event has no links: -1
    assert first.truth["MC_MOTHER_ID"].tolist() == [0, 0, 0]
    assert first.truth["nPVs"].tolist() == [2, 2, 0]
    assert first.pv_row.tolist() == [0, -1, -1]
    np.testing.assert_array_equal(first.pv_true, [[0.9, -0.1, -20.0]])
    assert first.pv_keys.tolist() == pv_keys(5, [4], [1]).tolist()
    assert second.pv_row.tolist() == [-1] and len(second.pv_keys) == 0


def test_many_genevents_read_as_one_crossing_warn(
    hepmc_files: list[Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    many = tmp_path / "many.hepmc3"
    with pyhepmc.open(hepmc_files[0]) as source:
        first = next(iter(source))
    with pyhepmc.open(many, "w", format="HepMC3") as sink:
        for number in range(31):
            first.event_number = number
            sink.write(first)
    with caplog.at_level(logging.WARNING):
        (crossing,) = read_hepmc(many)
    assert "31 GenEvents read as one bunch crossing" in caplog.text
    assert len(crossing.primary_vertices) == 31
    caplog.clear()
    assert len(list(read_hepmc(many, crossing="event"))) <= 31 and "GenEvents" not in caplog.text
