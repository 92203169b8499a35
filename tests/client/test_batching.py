from __future__ import annotations

import numpy as np
import pytest

from ufsim_client import Event
from ufsim_client.batching import Batcher, Reorderer
from ufsim_client.keys import rng_keys


def _events(sizes: list[int]) -> list[Event]:
    events = []
    for number, size in enumerate(sizes):
        rng = np.random.default_rng(number)
        events.append(
            Event(
                pid=rng.choice([11, 13, 211, 321, 2212], size),
                origin=rng.normal(size=(size, 3)),
                momentum=rng.uniform(100, 1000, size=(size, 3)),
                n_tracks=size,
                number=number,
            )
        )
    return events


def _requests(events: list[Event], batch_size: int, seed: int = 5) -> list:
    batcher = Batcher(seed=seed, batch_size=batch_size)
    requests = [r for event in events for r in batcher.add(event, int(event.number or 0))]
    return requests + list(batcher.flush())


@pytest.mark.parametrize("batch_size", [1, 3, 7, 64, 1000])
def test_requests_cover_every_particle_once_in_order(batch_size: int) -> None:
    sizes = [5, 1, 12, 3, 30, 2]
    events = _events(sizes)
    requests = _requests(events, batch_size)
    assert [r.id for r in requests] == list(range(len(requests)))
    assert all(0 < len(r) <= batch_size for r in requests)
    assert all(len(r) == batch_size for r in requests[:-1])
    event = np.concatenate([r.event for r in requests])
    index = np.concatenate([r.index for r in requests])
    np.testing.assert_array_equal(event, np.repeat(np.arange(len(sizes)), sizes))
    np.testing.assert_array_equal(index, np.concatenate([np.arange(s) for s in sizes]))
    pid = np.concatenate([r.inputs["pid"] for r in requests])
    np.testing.assert_array_equal(pid, np.concatenate([e.pid for e in events]))
    momentum = np.concatenate([r.inputs["momentum"] for r in requests])
    np.testing.assert_array_equal(momentum, np.concatenate([e.momentum for e in events]))
    n_tracks = np.concatenate([r.inputs["n_tracks"] for r in requests])
    np.testing.assert_array_equal(n_tracks, np.repeat(np.array(sizes, dtype=np.float32), sizes))
    keys = np.concatenate([r.inputs["rng_key"] for r in requests])
    np.testing.assert_array_equal(keys, rng_keys(5, event, index))


def test_last_event_marks_completed_events() -> None:
    requests = _requests(_events([4, 4, 4]), batch_size=6)
    assert [r.last_event for r in requests] == [0, 2]


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Batcher(seed=0, batch_size=0)


def test_reorderer_releases_in_request_order() -> None:
    reorder: Reorderer[str] = Reorderer()
    assert reorder.put(2, "c") == []
    assert reorder.put(1, "b") == []
    assert reorder.pending == 2
    assert reorder.put(0, "a") == ["a", "b", "c"]
    assert reorder.put(3, "d") == ["d"]
    with pytest.raises(ValueError, match="twice"):
        reorder.put(1, "again")
