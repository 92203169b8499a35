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

Until some server has answered, ``connect_timeout`` bounds the retrying (a wrong address fails in
seconds, not after the whole ``total_timeout``); every connection failure is logged as a warning when
it happens. Each server's repository identity (:func:`~ufsim_client.contract.parse_identity`: the
repository version and every model's sha256, served as ensemble parameters) is read at start and
again at every fail-over; a server whose identity differs from the first one's is refused, so one
run never mixes model versions. Authentication failures (a gateway's UNAUTHENTICATED or
PERMISSION_DENIED) fail at once, naming the server and where the token came from.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from numpy.typing import NDArray
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter
from tritonclient.utils import InferenceServerException

from ufsim_client.contract import OUTPUT_COLUMNS, Contract, parse_identity, parse_metadata
from ufsim_client.endpoints import Endpoint, TlsSettings, Token, parse_endpoint
from ufsim_client.errors import ContractError, ServerError

_T = TypeVar("_T")

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
_AUTH_STATUSES = frozenset({"StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED"})
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
        connect_timeout (float; 30.0): give up after this many seconds if no server has answered yet.
    """

    attempts_per_server: int = 3
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    total_timeout: float = 300.0
    request_timeout: float = 120.0
    drain_timeout: float = 60.0
    connect_timeout: float = 30.0


def is_transient(error: BaseException) -> bool:
    """Whether a failed call is worth retrying (on the same or another server)."""
    if not isinstance(error, InferenceServerException) or error.status() in _AUTH_STATUSES:
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
    """One server endpoint, its gRPC client, its checked contract and repository identity."""

    def __init__(self, endpoint: Endpoint, tls: TlsSettings, token: Token | None) -> None:
        self.endpoint = endpoint
        self.url = str(endpoint)
        self.headers = token.header() if token is not None and endpoint.tls else None
        options: dict[str, Any] = {}
        if endpoint.tls:
            options = {
                "ssl": True,
                "root_certificates": tls.roots(),
                "private_key": None if tls.key_file is None else str(tls.key_file),
                "certificate_chain": None if tls.cert_file is None else str(tls.cert_file),
            }
        self.client = grpcclient.InferenceServerClient(
            endpoint.target, channel_args=_channel_args(), **options
        )
        self.contract: Contract | None = None
        self.identity: dict[str, Any] | None = None
        self.failing = False
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
                self.client.async_infer(model, callback=finish, headers=self.headers, **kwargs)
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

    def fetch_contract(self, model: str, timeout: float) -> tuple[Contract, dict[str, Any] | None]:
        """The model's contract and the repository identity it declares (None if it declares none)."""
        try:
            metadata = self.client.get_model_metadata(
                model, headers=self.headers, as_json=True, client_timeout=timeout
            )
            config = self.client.get_model_config(
                model, headers=self.headers, as_json=True, client_timeout=timeout
            )
        except InferenceServerException as err:
            if is_transient(err) or err.status() in _AUTH_STATUSES:
                raise
            raise ContractError(f"cannot read the metadata of model {model!r} at {self.url}: {err}") from err
        config = config.get("config", config)
        return parse_metadata(metadata, config, url=self.url), parse_identity(config)


class ServerPool:
    """Triton servers that serve the same ``model``; requests fail over between them in order.

    Args:
        urls (sequence of str or Endpoint): gRPC endpoints (:func:`~ufsim_client.endpoints.parse_endpoint`),
            tried in this order.
        model (str; "pipeline"): the ensemble to call.
        retry (RetryPolicy; RetryPolicy()): retry and fail-over settings.
        tls (TlsSettings; system CAs): for ``grpcs://`` endpoints.
        token (Token; None): bearer token, sent to TLS endpoints only.
    """

    def __init__(
        self,
        urls: Sequence[str | Endpoint],
        *,
        model: str = "pipeline",
        retry: RetryPolicy | None = None,
        tls: TlsSettings | None = None,
        token: Token | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL (host:port) is needed")
        endpoints = [u if isinstance(u, Endpoint) else parse_endpoint(u) for u in urls]
        self.model = model
        self.retry = retry or RetryPolicy()
        self.token = token
        self._servers = [_Server(e, tls or TlsSettings(), token) for e in endpoints]
        self._current = 0
        self._lock = threading.Lock()
        self._contract: Contract | None = None
        self._identity: dict[str, Any] | None = None
        self._reference: str | None = None
        self._answered = False
        self._started = time.monotonic()
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

    @property
    def identity(self) -> dict[str, Any] | None:
        """The repository identity every server used so far declared (None before the first answer)."""
        return self._identity

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
        n = len(inputs["pid"])
        if n == 0:
            raise ValueError(f"request {request_id}: a request needs at least one particle (not batch 0)")
        contract = self.contract()
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
            timeout = self.retry.request_timeout
            if not self._answered:
                timeout = min(timeout, max(1.0, self.retry.connect_timeout))
            contract, identity = server.fetch_contract(self.model, timeout)
            with self._lock:
                self._answered = True
                if self._contract is not None and (
                    contract.inputs != self._contract.inputs or contract.outputs != self._contract.outputs
                ):
                    raise ContractError(
                        f"server {server.url} serves a model {self.model!r} whose tensors differ from "
                        f"{self._reference}'s; all --server endpoints must serve the same pipeline"
                    )
                if self._contract is not None and identity != self._identity:
                    raise ContractError(
                        f"refusing server {server.url}: it serves another model repository than "
                        f"{self._reference} ({describe_difference(self._identity, identity)}); "
                        "all --server endpoints must serve the same repository, or results would mix "
                        "model versions"
                    )
                if self._contract is None:
                    self._contract, self._identity, self._reference = contract, identity, server.url
            server.contract, server.identity = contract, identity
        return server.contract

    def _call(self, what: str, fn: Callable[[_Server], _T]) -> _T:
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
                    self._servers[index].contract = None  # re-read its identity before using it
                log.warning("%s: failing over to %s", what, self._servers[index].url)
            return self._servers[index]

        def before_sleep(state: RetryCallState) -> None:
            with self._lock:
                self.retries += 1
            error = state.outcome.exception() if state.outcome else None
            index = (start + (state.attempt_number - 1) // per_server) % len(self._servers)
            server = self._servers[index]
            if not server.failing:
                server.failing = True
                log.warning("%s: %s failed (%s); retrying", what, server.url, _short(error))
            else:
                log.info("%s: attempt %d failed (%s); retrying", what, state.attempt_number, error)

        budget = stop_after_delay(policy.total_timeout)

        def stop(state: RetryCallState) -> bool:
            never_answered = time.monotonic() - self._started >= policy.connect_timeout and not self._answered
            return budget(state) or never_answered

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop,
            wait=wait_exponential_jitter(initial=policy.initial_backoff, max=policy.max_backoff),
            before_sleep=before_sleep,
            reraise=True,
        )
        tried: list[_Server] = []
        try:
            for attempt in retrying:
                with attempt:
                    server = pick(attempt.retry_state.attempt_number)
                    tried.append(server)
                    result = fn(server)
                    server.failing = False
                    return result
        except InferenceServerException as err:
            if err.status() in _AUTH_STATUSES:
                raise ServerError(self._auth_message(err, tried[-1]), status=err.status()) from err
            kind = "gave up after retrying" if is_transient(err) else "failed"
            if not self._answered and is_transient(err):
                kind += f" (no server answered; connect timeout {policy.connect_timeout:g} s)"
            raise ServerError(
                f"{what} {kind} on {', '.join(self.urls)} (model {self.model!r}): {err}", status=err.status()
            ) from err
        raise AssertionError("unreachable")  # pragma: no cover

    def _auth_message(self, err: InferenceServerException, server: _Server) -> str:
        where = server.url
        if self.token is None:
            found = "no bearer token was found (BEARER_TOKEN, BEARER_TOKEN_FILE, $XDG_RUNTIME_DIR/bt_u<uid>)"
        elif not server.endpoint.tls:
            found = f"the token from {self.token.source} is sent only over TLS: use grpcs://HOST[:PORT]"
        else:
            found = f"token from {self.token.source}"
        return f"authentication failed at {where}: {err.message()} ({err.status()}; {found})"


def _short(error: BaseException | None) -> str:
    if isinstance(error, InferenceServerException):
        return f"{error.status()}: {str(error.message() or '').splitlines()[0][:200]}"
    return str(error)


def describe_difference(first: dict[str, Any] | None, other: dict[str, Any] | None) -> str:
    """What differs between two repository identities, for a refusal message."""
    if first is None or other is None:
        return "one declares no repository identity" if first is not other else "same"
    changes = []
    if first.get("repository_version") != other.get("repository_version"):
        changes.append(f"repository {first.get('repository_version')} vs {other.get('repository_version')}")
    models_a, models_b = first.get("models", {}), other.get("models", {})
    for name in sorted(set(models_a) | set(models_b)):
        if models_a.get(name) != models_b.get(name):
            changes.append(f"{name} sha256 {str(models_a.get(name))[:12]} vs {str(models_b.get(name))[:12]}")
    return "; ".join(changes) or "identities differ"
