"""gRPC transport to one or several Triton servers: metadata checks, retries with backoff, fail-over.

:class:`ServerPool` is the only place that talks to tritonclient. ``infer`` is thread-safe; the
simulation keeps several requests in flight by calling it from a thread pool. A transient failure
(UNAVAILABLE, DEADLINE_EXCEEDED, connection refused, server restarting, model not ready) is retried
with exponential backoff; after ``attempts_per_server`` failed attempts on one server the request
moves to the next server, round robin, until ``total_timeout`` has passed. Other failures raise
:class:`~ufsim_client.errors.ServerError` at once. A request either returns exactly one result or
raises: the caller keys results by request id, so retries never duplicate particles.

An attempt that outlives ``request_timeout`` is abandoned, never cancelled: cancelling an in-flight
request (a gRPC deadline, or closing the channel under it) crashes tritonserver up to 2.51 / NGC 24.10
(triton-inference-server/server#7368). The abandoned call finishes on the server and its answer is
dropped; :meth:`ServerPool.close` waits for such calls (up to ``drain_timeout``) before closing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from numpy.typing import NDArray
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter
from tritonclient.utils import InferenceServerException

from ufsim_client.contract import OUTPUT_COLUMNS, Contract, parse_metadata
from ufsim_client.errors import ContractError, ServerError

__all__ = ["RetryPolicy", "ServerPool", "is_transient"]

log = logging.getLogger(__name__)

_INT32_MAX = 2**31 - 1
_TRANSIENT_STATUSES = frozenset(
    {
        "StatusCode.UNAVAILABLE",
        "StatusCode.DEADLINE_EXCEEDED",
        "StatusCode.RESOURCE_EXHAUSTED",
        "StatusCode.ABORTED",
    }
)
_TRANSIENT_MESSAGES = (
    "not ready",
    "no available versions",
    "connection refused",
    "failed to connect",
    "socket closed",
    "connection reset",
    "deadline exceeded",
    "unavailable",
)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on a request.

    Options:
        attempts_per_server (int; 3): failed attempts on one server before failing over to the next.
        initial_backoff (float; 0.2): first wait in seconds; doubles per attempt, with jitter.
        max_backoff (float; 5.0): longest single wait in seconds.
        total_timeout (float; 300.0): give up on a request after this many seconds of retrying.
        request_timeout (float; 120.0): seconds to wait for one attempt before abandoning it.
        drain_timeout (float; 60.0): at close, seconds to wait for abandoned calls to finish.
    """

    attempts_per_server: int = 3
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    total_timeout: float = 300.0
    request_timeout: float = 120.0
    drain_timeout: float = 60.0


def is_transient(error: BaseException) -> bool:
    """Whether a failed call is worth retrying (on the same or another server)."""
    if not isinstance(error, InferenceServerException):
        return False
    if error.status() in _TRANSIENT_STATUSES:
        return True
    message = str(error.message() or "").lower()
    return any(text in message for text in _TRANSIENT_MESSAGES)


def _channel_args() -> list[tuple[str, Any]]:
    # Passing channel_args replaces tritonclient's defaults: re-add its INT32_MAX message sizes and
    # keepalive settings, and reconnect quickly to a restarted server (gRPC's default backoff reaches 120 s).
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", _INT32_MAX),
        ("grpc.max_receive_message_length", _INT32_MAX),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


class _Call:
    """One asynchronous inference call: its outcome once the server has answered."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: InferenceServerException | None = None


class _Server:
    """One server URL, its lazily created gRPC client and its checked contract."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = grpcclient.InferenceServerClient(url, channel_args=_channel_args())
        self.contract: Contract | None = None
        self.running: set[_Call] = set()
        self._lock = threading.RLock()  # the callback may run inside async_infer

    def infer(self, model: str, timeout: float, **kwargs: Any) -> Any:
        """One inference without a gRPC deadline; an unanswered call is abandoned after ``timeout`` s."""
        call = _Call()

        def finish(result: Any, error: InferenceServerException | None) -> None:
            with self._lock:
                self.running.discard(call)
            call.result, call.error = result, error
            call.done.set()

        with self._lock:  # tritonclient keeps the latest call on the client object: not thread-safe
            self.running.add(call)
            try:
                self.client.async_infer(model, callback=finish, **kwargs)
            except BaseException:
                self.running.discard(call)
                raise
        if not call.done.wait(timeout):
            raise InferenceServerException(
                f"no answer from {self.url} within {timeout:g} s; the call is abandoned (not cancelled)",
                status="StatusCode.DEADLINE_EXCEEDED",
            )
        if call.error is not None:
            raise call.error
        return call.result

    def close(self, drain_timeout: float) -> None:
        """Close the channel once abandoned calls have finished (or ``drain_timeout`` has passed)."""
        deadline = time.monotonic() + drain_timeout
        with self._lock:
            pending = list(self.running)
        for call in pending:
            call.done.wait(max(0.0, deadline - time.monotonic()))
        if unanswered := sum(not call.done.is_set() for call in pending):
            log.warning("%s: closing with %d calls still running on the server", self.url, unanswered)
        self.client.close()

    def fetch_contract(self, model: str, timeout: float) -> Contract:
        try:
            metadata = self.client.get_model_metadata(model, as_json=True, client_timeout=timeout)
            config = self.client.get_model_config(model, as_json=True, client_timeout=timeout)
        except InferenceServerException as err:
            if is_transient(err):
                raise
            raise ContractError(f"cannot read the metadata of model {model!r} at {self.url}: {err}") from err
        return parse_metadata(metadata, config.get("config", config), url=self.url)


class ServerPool:
    """Triton servers that serve the same ``model``; requests fail over between them in order.

    Args:
        urls (sequence of str): ``host:port`` gRPC endpoints, tried in this order.
        model (str; "pipeline"): the ensemble to call.
        retry (RetryPolicy; RetryPolicy()): retry and fail-over settings.
    """

    def __init__(
        self, urls: Sequence[str], *, model: str = "pipeline", retry: RetryPolicy | None = None
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL (host:port) is needed")
        self.model = model
        self.retry = retry or RetryPolicy()
        self._servers = [_Server(url) for url in urls]
        self._current = 0
        self._lock = threading.Lock()
        self._contract: Contract | None = None
        self.retries = 0
        self.failovers = 0

    @property
    def urls(self) -> list[str]:
        """The servers' URLs, in fail-over order."""
        return [server.url for server in self._servers]

    def close(self) -> None:
        """Close every gRPC channel, after the calls still running on a server have finished."""
        for server in self._servers:
            server.close(self.retry.drain_timeout)

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def contract(self) -> Contract:
        """The model's contract, read from the first server that answers (with retries)."""
        if self._contract is None:
            self._contract = self._call("metadata", lambda server: self._checked(server))
        return self._contract

    def infer(self, request_id: int, inputs: Mapping[str, NDArray[Any]]) -> dict[str, NDArray[Any]]:
        """Run one request of ``n`` particles; returns every output of :data:`OUTPUT_COLUMNS`.

        Raises:
            ServerError: when every attempt failed, or on a non-transient failure.
        """
        contract = self.contract()
        n = len(inputs["pid"])
        infer_inputs = []
        for name, spec in contract.inputs.items():
            if name not in inputs:
                continue
            data = np.ascontiguousarray(inputs[name], dtype=spec.numpy_dtype).reshape((n, *spec.shape))
            tensor = grpcclient.InferInput(name, list(data.shape), spec.datatype)
            tensor.set_data_from_numpy(data)
            infer_inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(name) for name in OUTPUT_COLUMNS]

        def attempt(server: _Server) -> dict[str, NDArray[Any]]:
            self._checked(server)
            result = server.infer(
                self.model,
                self.retry.request_timeout,
                inputs=infer_inputs,
                outputs=outputs,
                request_id=str(request_id),
            )
            arrays = {name: result.as_numpy(name) for name in OUTPUT_COLUMNS}
            for name, array in arrays.items():
                if array is None or len(array) != n:
                    raise ServerError(
                        f"request {request_id}: output {name!r} from {server.url} lacks {n} rows"
                    )
            return arrays

        return self._call(f"request {request_id}", attempt)

    def _checked(self, server: _Server) -> Contract:
        if server.contract is None:
            contract = server.fetch_contract(self.model, self.retry.request_timeout)
            if self._contract is not None and (
                contract.inputs != self._contract.inputs or contract.outputs != self._contract.outputs
            ):
                raise ContractError(
                    f"server {server.url} serves a model {self.model!r} whose tensors differ from "
                    f"{self._servers[0].url}'s; all --server endpoints must serve the same pipeline"
                )
            server.contract = contract
        return server.contract

    def _call(self, what: str, fn: Any) -> Any:
        with self._lock:
            start = self._current
        policy = self.retry
        per_server = max(1, policy.attempts_per_server)

        def pick(attempt_number: int) -> _Server:
            index = (start + (attempt_number - 1) // per_server) % len(self._servers)
            if attempt_number > 1 and (attempt_number - 1) % per_server == 0 and len(self._servers) > 1:
                with self._lock:
                    self.failovers += 1
                    self._current = index
                log.warning("%s: failing over to %s", what, self._servers[index].url)
            return self._servers[index]

        def before_sleep(state: RetryCallState) -> None:
            with self._lock:
                self.retries += 1
            error = state.outcome.exception() if state.outcome else None
            log.info("%s: attempt %d failed (%s); retrying", what, state.attempt_number, error)

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_delay(policy.total_timeout),
            wait=wait_exponential_jitter(initial=policy.initial_backoff, max=policy.max_backoff),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return fn(pick(attempt.retry_state.attempt_number))
        except InferenceServerException as err:
            kind = "gave up after retrying" if is_transient(err) else "failed"
            raise ServerError(
                f"{what} {kind} on {', '.join(self.urls)} (model {self.model!r}): {err}", status=err.status()
            ) from err
        raise AssertionError("unreachable")  # pragma: no cover
