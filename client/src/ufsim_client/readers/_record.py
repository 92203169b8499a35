"""Turning one generator record into an :class:`~ufsim_client.events.Event` (not a public interface)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ufsim_client.events import Event, count_n_tracks, select_simulated


def event_from_record(number: int, pid: ArrayLike, momentum: ArrayLike, origin: ArrayLike) -> Event | None:
    """Event of the simulated particles among final-state ``pid``/``momentum``/``origin``; None if none.

    ``n_tracks`` counts the whole final state given (see :mod:`ufsim_client.events`).
    """
    pid_arr = np.asarray(pid, dtype=np.int64)
    mom = np.asarray(momentum, dtype=np.float64).reshape(-1, 3)
    org = np.asarray(origin, dtype=np.float64).reshape(-1, 3)
    keep = select_simulated(pid_arr, mom)
    if not keep.any():
        return None
    return Event(
        pid=pid_arr[keep],
        origin=org[keep],
        momentum=mom[keep],
        n_tracks=count_n_tracks(pid_arr, mom),
        number=number,
    )
