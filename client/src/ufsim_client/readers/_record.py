"""Turning one generator record into an :class:`~ufsim_client.events.Event` (not a public interface)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ufsim_client.events import Event, count_n_tracks, select_simulated


def event_from_record(
    number: int,
    pid: ArrayLike,
    momentum: ArrayLike,
    origin: ArrayLike,
    *,
    mc: Mapping[str, ArrayLike] | None = None,
    primary_vertices: ArrayLike | None = None,
    own_pv: ArrayLike | None = None,
) -> Event | None:
    """Event of the simulated particles among final-state ``pid``/``momentum``/``origin``; None if none.

    ``n_tracks`` counts the whole final state given (see :mod:`ufsim_client.events`); ``mc`` and
    ``own_pv`` are per final-state particle and are cut like the particles.
    """
    pid_arr = np.asarray(pid, dtype=np.int64)
    mom = np.asarray(momentum, dtype=np.float64).reshape(-1, 3)
    org = np.asarray(origin, dtype=np.float64).reshape(-1, 3)
    keep = select_simulated(pid_arr, mom)
    if not keep.any():
        return None
    links: dict[str, Any] | None = None if mc is None else {k: np.asarray(v)[keep] for k, v in mc.items()}
    return Event(
        pid=pid_arr[keep],
        origin=org[keep],
        momentum=mom[keep],
        n_tracks=count_n_tracks(pid_arr, mom),
        number=number,
        mc=links,
        primary_vertices=None if primary_vertices is None else np.asarray(primary_vertices, dtype=np.float64),
        own_pv=None if own_pv is None else np.asarray(own_pv)[keep],
    )
