"""Primary vertices: the served ``pv_reconstruction`` model, and impact parameters of reconstructed tracks.

The PV model's batch dimension is primary vertices: inputs ``true_pv`` (FP32[3], mm) and ``rng_key``
(UINT64, :func:`ufsim_client.keys.pv_keys`); outputs ``pv_position`` (FP32[3], mm) and ``pv_error``
(FP32[3], mm, the uncertainty of each coordinate). Requests go through the same servers, retries and
fail-over as the particles (:class:`~ufsim_client.transport.ServerPool`).

Impact parameters (:func:`impact_parameters`) follow the LHCb definitions: ``IP_OWNPV`` is the distance
of closest approach between the PV and the straight-line track through the reconstructed state
(x, y, z, tx, ty); ``IPCHI2_OWNPV`` = IP² / σ²(IP), where σ²(IP) projects the track's (x, y)
covariance, propagated with its slopes' covariance to the PV's z, and the PV's covariance (diagonal,
from ``pv_error``) onto the IP direction. This is the first-order form of LHCb's IPCHI2, the χ²
increase of the PV fit when the track is added, for a PV that is not refitted without the track.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from numpy.typing import NDArray
from tritonclient.utils import InferenceServerException

from ufsim_client.errors import ContractError, ServerError
from ufsim_client.transport import ServerPool

__all__ = [
    "METADATA_TIMEOUT",
    "NO_VALUE",
    "PV_MODEL",
    "PvReconstruction",
    "impact_parameters",
    "metadata_timeout",
]

log = logging.getLogger(__name__)

PV_MODEL = "pv_reconstruction"
NO_VALUE = -9999.0
"""Written where a PV or IP column does not apply (no PV, or no reconstructed track)."""
METADATA_TIMEOUT = 10.0
"""Least time (s) given to a metadata or config read: tiny answers, so inference deadlines do not apply."""


def metadata_timeout(pool: ServerPool) -> float:
    """Timeout of one metadata or config read on the servers of ``pool``."""
    return max(pool.retry.request_timeout, METADATA_TIMEOUT)


_INPUTS = {"true_pv": ("FP32", 3), "rng_key": ("UINT64", 1)}
_OUTPUTS = {"pv_position": ("FP32", 3), "pv_error": ("FP32", 3)}


class PvReconstruction:
    """Calls the PV model on the servers of ``pool`` (whose retries and fail-over it shares)."""

    def __init__(self, pool: ServerPool, model: str = PV_MODEL) -> None:
        self.pool = pool
        self.model = model

    def available(self) -> bool:
        """Whether the servers serve the PV model with the expected tensors; a mismatch is an error."""

        def metadata(server: Any) -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = server.client.get_model_metadata(
                    self.model,
                    headers=getattr(server, "headers", None),
                    as_json=True,
                    client_timeout=metadata_timeout(self.pool),
                )
                return found
            except InferenceServerException as err:
                if "unknown model" in str(err).lower() or "not found" in str(err).lower():
                    return None
                raise

        found = self.pool._call(f"metadata of {self.model}", metadata)
        if found is None:
            return False
        have = {t["name"]: (t["datatype"], [int(d) for d in t.get("shape", [])][1:]) for t in found["inputs"]}
        have |= {
            t["name"]: (t["datatype"], [int(d) for d in t.get("shape", [])][1:]) for t in found["outputs"]
        }
        wanted = _INPUTS | _OUTPUTS
        wrong = [f"{n} ({dt}[{w}])" for n, (dt, w) in wanted.items() if have.get(n) != (dt, [w])]
        if wrong:
            raise ContractError(f"model {self.model!r} does not have the tensors ufsim-client needs: {wrong}")
        return True

    def infer(
        self, request_id: int, true_pv: NDArray[np.floating[Any]], keys: NDArray[np.uint64]
    ) -> dict[str, NDArray[np.float32]]:
        """Reconstructed positions and errors, (m, 3) each, of ``m`` true PVs with their keys."""
        m = len(keys)
        tensors = []
        for name, data in (
            ("true_pv", np.ascontiguousarray(true_pv, dtype=np.float32).reshape(m, 3)),
            ("rng_key", np.ascontiguousarray(keys, dtype=np.uint64).reshape(m, 1)),
        ):
            tensor = grpcclient.InferInput(name, list(data.shape), _INPUTS[name][0])
            tensor.set_data_from_numpy(data)
            tensors.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(name) for name in _OUTPUTS]

        def attempt(server: Any) -> dict[str, NDArray[np.float32]]:
            result = server.infer(
                self.model,
                self.pool.retry.request_timeout,
                inputs=tensors,
                outputs=outputs,
                request_id=f"pv-{request_id}",
            )
            arrays = {name: result.as_numpy(name) for name in _OUTPUTS}
            for name, array in arrays.items():
                if array is None or array.shape != (m, 3):
                    raise ServerError(
                        f"PV request {request_id}: output {name!r} from {server.url} lacks {m} rows"
                    )
            return arrays

        arrays: dict[str, NDArray[np.float32]] = self.pool._call(f"PV request {request_id}", attempt)
        return arrays


def _covariance(cov15: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Symmetric (n, 5, 5) matrices from the upper triangles ``TRACK_COV_ij`` (i <= j), (n, 15)."""
    n = len(cov15)
    full = np.zeros((n, 5, 5))
    rows, cols = np.triu_indices(5)
    full[:, rows, cols] = cov15
    full[:, cols, rows] = cov15
    return full


def impact_parameters(
    state: NDArray[np.floating[Any]],
    cov15: NDArray[np.floating[Any]],
    pv: NDArray[np.floating[Any]],
    pv_error: NDArray[np.floating[Any]],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """IP (mm) and IPχ² of tracks with respect to PVs (see the module docstring).

    Args:
        state: (n, 5) track state x, y, z [mm], tx, ty at the closest-to-beam point.
        cov15: (n, 15) upper triangle of the covariance of (x, y, tx, ty, q/p).
        pv: (n, 3) PV positions, mm; pv_error: (n, 3) their uncertainties, mm.
    """
    state = np.asarray(state, dtype=np.float64)
    x, y, z, tx, ty = state.T
    pv = np.asarray(pv, dtype=np.float64)
    dz = pv[:, 2] - z
    w = np.stack([x + tx * dz - pv[:, 0], y + ty * dz - pv[:, 1], np.zeros_like(x)], axis=1)
    direction = np.stack([tx, ty, np.ones_like(tx)], axis=1)
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    v = w - np.sum(w * direction, axis=1, keepdims=True) * direction
    ip = np.linalg.norm(v, axis=1)
    u = np.divide(v, ip[:, None], out=np.zeros_like(v), where=ip[:, None] > 0)
    cov = _covariance(np.asarray(cov15, dtype=np.float64))
    jacobian = np.zeros((len(x), 3, 5))
    jacobian[:, 0, 0] = jacobian[:, 1, 1] = 1.0
    jacobian[:, 0, 2] = jacobian[:, 1, 3] = dz
    track = jacobian @ cov @ jacobian.transpose(0, 2, 1)
    total = track + np.einsum("ni,ij->nij", np.asarray(pv_error, dtype=np.float64) ** 2, np.eye(3))
    variance = np.einsum("ni,nij,nj->n", u, total, u)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(variance > 0, ip**2 / variance, np.inf)
    return ip, chi2
