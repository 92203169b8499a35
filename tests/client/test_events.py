from __future__ import annotations

import numpy as np
import pytest

from ufsim_client import Event, InputError
from ufsim_client.events import count_n_tracks


def _event(**changes: object) -> Event:
    fields: dict[str, object] = {
        "pid": np.array([211, -321, 13]),
        "origin": np.zeros((3, 3)),
        "momentum": np.array([[100.0, 0.0, 5000.0], [0.0, 200.0, 20000.0], [10.0, 10.0, 3000.0]]),
        "n_tracks": 3,
    }
    fields.update(changes)
    return Event(**fields)  # type: ignore[arg-type]


def test_valid_event_is_converted() -> None:
    event = _event()
    assert event.pid.dtype == np.int32
    assert event.origin.dtype == event.momentum.dtype == np.float32
    assert len(event) == 3


@pytest.mark.parametrize("pid", [22, 12345, 0])
def test_unknown_pid_names_field_and_accepted_values(pid: int) -> None:
    with pytest.raises(InputError, match=r"'pid'.*accepted values are ±11, ±13, ±211, ±321, ±2212") as err:
        _event(pid=np.array([211, pid, 13]))
    assert err.value.field == "pid"
    assert str(pid) in str(err.value)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"pid": np.array([211.0, 321.0, 13.0])}, "pid", "integer"),
        ({"pid": np.array([[211, 321, 13]])}, "pid", "shape"),
        ({"origin": np.zeros((3, 2))}, "origin", r"shape \(3, 3\)"),
        ({"momentum": np.zeros((2, 3))}, "momentum", r"shape \(3, 3\)"),
        ({"momentum": np.array([["a", "b", "c"]] * 3)}, "momentum", "real numbers"),
        ({"momentum": np.array([[1.0, np.nan, 3.0]] * 3)}, "momentum", "NaN"),
        ({"origin": np.array([[0.0, 0.0, np.inf]] * 3)}, "origin", "NaN or infinite"),
        ({"n_tracks": float("nan")}, "n_tracks", "finite"),
        ({"n_tracks": "many"}, "n_tracks", "number"),
        ({"number": -1}, "number", ">= 0"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        _event(**changes)
    assert err.value.field == field
    assert repr(field) in str(err.value)


def test_empty_event_is_an_error() -> None:
    with pytest.raises(InputError, match="no particles") as err:
        _event(pid=np.array([], dtype=np.int32), origin=np.zeros((0, 3)), momentum=np.zeros((0, 3)))
    assert err.value.field == "pid"


def test_n_tracks_counts_charged_species_in_eta_range() -> None:
    # eta of (0, pt, pz): asinh(pz/pt): pt=1, pz=10 -> 3.0 (in), pz=1 -> 0.88 (out), pz=1000 -> 7.6 (out)
    pid = np.array([211, -11, 22, 2212, 321, 13])
    momentum = np.array(
        [[0, 1, 10], [0, 1, 10], [0, 1, 10], [0, 1, 1], [0, 1, 1000], [1, 0, -10]], dtype=float
    )
    assert count_n_tracks(pid, momentum) == 2
