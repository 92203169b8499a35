"""Start and stop the Triton 2.51 binary shipped in the nvidia-pytriton wheel on one machine, no containers.

The wheel has the server and the Python backend only; this module assembles the backend directory it
needs (the Python backend for this interpreter plus ufsim's Python-based ``onnxruntime`` backend) and
runs ``tritonserver`` with an environment in which the backend stubs import this venv's packages.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytriton

BACKEND_MODEL = Path(__file__).resolve().parent / "backends" / "onnxruntime" / "model.py"
"""ufsim's Python-based ``onnxruntime`` backend, shipped as package data of ufsim_serve."""

_WHEEL = Path(pytriton.__file__).resolve().parent / "tritonserver"
_SHM_DIR = Path("/dev/shm")
_LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


RESTRICTED_PROTOCOLS = ("shared-memory", "model-repository", "logging", "trace")
"""Triton protocol groups a client can use only with the admin-key header (as in the Helm chart)."""

ADMIN_HEADER = "ufsim-admin-key"
"""HTTP header whose value opens :data:`RESTRICTED_PROTOCOLS`; gRPC clients send it as the metadata key
``triton-grpc-protocol-ufsim-admin-key`` (Triton's prefix for restricted-protocol keys)."""

_LOAD_FAILURES = (
    re.compile(r"failed to load '([^']+)' version \d+: (.*?)(?:\\n|\"$)", re.M),
    re.compile(r"Poll failed for model directory '([^']+)': (.*?)\"$", re.M),
)


class ServerStartError(RuntimeError):
    """tritonserver exited, or did not become ready in time, while starting."""


@dataclass(frozen=True)
class GrpcTls:
    """Server certificate and key for gRPC over TLS; ``ca`` also makes clients present a certificate."""

    cert: Path
    key: Path
    ca: Path | None = None

    def flags(self) -> list[str]:
        """tritonserver's gRPC TLS flags."""
        flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.ca is not None:
            flags += [f"--grpc-root-cert={self.ca}", "--grpc-use-ssl-mutual=true"]
        return flags


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_failures(log_text: str) -> list[str]:
    """``model 'NAME': cause`` for every model tritonserver's log says failed to load."""
    found: dict[str, str] = {}
    for pattern in _LOAD_FAILURES:
        for name, cause in pattern.findall(log_text):
            found.setdefault(name, cause.strip())
    return [f"model {name!r} failed to load: {cause}" for name, cause in found.items()]


def tritonserver_binary() -> Path:
    """The tritonserver executable inside the installed nvidia-pytriton wheel."""
    return _WHEEL / "bin" / "tritonserver"


def tritonserver_libraries() -> Path:
    """The wheel's shared libraries (``site-packages/nvidia_pytriton.libs``), needed on LD_LIBRARY_PATH."""
    return _WHEEL.parents[1] / "nvidia_pytriton.libs"


def command_line(
    model_repository: Path | str,
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The portable ``tritonserver`` command every ufsim deployment runs (argv[0] is ``tritonserver``).

    The local launcher adds only machine-local flags (backend and cache directories, loopback addresses,
    shared-memory prefix) before ``extra_args``, so later flags, including the caller's, win.
    """
    return [
        "tritonserver",
        f"--model-repository={model_repository}",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        *extra_args,
    ]


def build_backend_directory(destination: Path, python_version: tuple[int, int] | None = None) -> Path:
    """Write ``python/`` (Python backend and the stub for ``python_version``) and ``onnxruntime/model.py``.

    ``python_version`` defaults to the running interpreter's, whose packages the stubs import.
    """
    major, minor = python_version or sys.version_info[:2]
    stubs = _WHEEL / "python_backend_stubs"
    stub = stubs / f"{major}.{minor}" / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in stubs.iterdir() if (p / "triton_python_backend_stub").is_file())
        raise FileNotFoundError(
            f"the nvidia-pytriton wheel has no Python backend stub for Python {major}.{minor} "
            f"(looked for {stub}); it ships stubs for Python {', '.join(available)}"
        )
    python_dir = destination / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(_WHEEL / "backends" / "python" / name, python_dir / name)
    shutil.copy2(stub, python_dir / stub.name)
    onnxruntime_dir = destination / "onnxruntime"
    onnxruntime_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BACKEND_MODEL, onnxruntime_dir / "model.py")
    return destination


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver: the wheel's libraries, and this interpreter for the backend stubs.

    The stub embeds libpython (this interpreter's shared library goes first on LD_LIBRARY_PATH) and,
    ignoring PYTHONPATH, takes its ``sys.executable`` from the first ``python3`` on PATH: with this
    interpreter's directory first on PATH it starts as this venv's Python and sees its site-packages.
    """
    env = dict(os.environ if base is None else base)
    libraries = [str(tritonserver_libraries())]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libraries.append(str(sysconfig.get_config_var("LIBDIR")))
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libraries, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *filter(None, [env.get("PATH")])])
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _terminate_with_parent() -> None:
    """In the forked child: have Linux SIGTERM it when the thread that started it dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (the stubs, while they are being killed)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


_RUNNING: set[LocalTriton] = set()
"""Started servers not yet stopped, held so that one dropped without ``close()`` is still killed at exit."""


@atexit.register
def _stop_all() -> None:
    """Never leave a server behind when the Python process that started it exits normally."""
    for server in list(_RUNNING):
        server.kill()


class LocalTriton:
    """A real tritonserver process on this machine serving ``model_repository``; restartable.

    Port 0 picks a free port once, so the URLs stay the same across ``stop()``/``start()`` and ``kill()``.
    The server gets SIGTERM when the thread that started it ends (or its process dies), so keep that
    thread alive as long as the server is needed (the main thread, typically).
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        grpc_port: int = 0,
        http_port: int = 0,
        metrics_port: int = 0,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 180.0,
        admin_key: str | None = None,
        restricted_protocols: Sequence[str] = RESTRICTED_PROTOCOLS,
        grpc_address: str = "127.0.0.1",
        tls: GrpcTls | None = None,
    ) -> None:
        if not is_loopback(grpc_address) and tls is None:
            raise ValueError(
                f"serving gRPC on {grpc_address} (other machines) needs TLS: give a certificate and key"
            )
        self.admin_key = admin_key or secrets.token_urlsafe(32)
        self.restricted_protocols = tuple(restricted_protocols)
        self.grpc_address = grpc_address
        self.tls = tls
        self._stubs: dict[int, str] = {}
        self.model_repository = Path(model_repository).resolve()
        if not self.model_repository.is_dir():
            raise FileNotFoundError(f"model repository {self.model_repository} is not a directory")
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.extra_args = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self._workdir: Path | None = None
        self._user_log = Path(log_path) if log_path is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._shm_prefix = f"ufsim_{uuid.uuid4().hex[:12]}_"

    @property
    def grpc_url(self) -> str:
        """gRPC endpoint on this machine, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        """gRPC metadata that opens the restricted protocols (shared memory, model repository, ...)."""
        return {f"triton-grpc-protocol-{ADMIN_HEADER}": self.admin_key}

    @property
    def http_url(self) -> str:
        """HTTP/REST endpoint, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics endpoint, ``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.metrics_port}"

    @property
    def log_path(self) -> Path:
        """The file receiving tritonserver's stdout and stderr (a temporary one unless given)."""
        if self._user_log is not None:
            return self._user_log
        return self._ensure_workdir() / "tritonserver.log"

    @property
    def pid(self) -> int | None:
        """Process id of the running tritonserver, None when stopped."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        """Whether the tritonserver process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The full argv this server runs: ``command_line`` plus the machine-local flags."""
        workdir = self._ensure_workdir()
        portable = command_line(self.model_repository, self.grpc_port, self.http_port, self.metrics_port)
        local = [
            f"--backend-directory={workdir / 'backends'}",
            f"--cache-directory={_WHEEL / 'caches'}",
            f"--grpc-address={self.grpc_address}",
            "--http-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]
        if self.restricted_protocols:
            # Triton refuses a protocol restricted twice: restrictions among extra_args replace these.
            restricted = f"{','.join(self.restricted_protocols)}:{ADMIN_HEADER}={self.admin_key}"
            for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
                if not any(arg.startswith(f"{flag}=") for arg in self.extra_args):
                    local.append(f"{flag}={restricted}")
        if self.tls is not None:
            local += self.tls.flags()
        return [str(tritonserver_binary()), *portable[1:], *local, *self.extra_args]

    def start(self) -> LocalTriton:
        """Start tritonserver and wait until ``/v2/health/ready``; no-op when already running."""
        if self.running:
            return self
        workdir = self._ensure_workdir()
        if not (workdir / "backends" / "onnxruntime" / "model.py").is_file():
            build_backend_directory(workdir / "backends")
        command = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            start_offset = log.tell()
            shown = " ".join(command).replace(self.admin_key, "<admin key>")
            log.write(f"=== ufsim-serve: starting {shown}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                cwd=workdir,
                start_new_session=True,
                preexec_fn=_terminate_with_parent,
            )
        _RUNNING.add(self)
        try:
            self._wait_ready(start_offset)
        except BaseException:
            self.kill()
            raise
        self._stubs = self._stub_models()
        return self

    def dead_stubs(self) -> dict[int, str]:
        """Backend stubs (pid -> model) running when the server became ready that have died since.

        Triton keeps answering ready after a stub dies, and requests to its model hang: a caller that
        sees one should restart the server.
        """
        if not self.running:
            return {}
        alive = set(_live_group_members(self._process.pid))  # type: ignore[union-attr]
        return {pid: model for pid, model in self._stubs.items() if pid not in alive}

    def _stub_models(self) -> dict[int, str]:
        """The running backend stubs, pid -> the model whose instance each one runs."""
        assert self._process is not None
        stubs = {}
        for pid in _live_group_members(self._process.pid):
            if pid == self._process.pid:
                continue
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"triton_python_backend_stub") and len(argv) > 1:
                    path = Path(argv[1].decode(errors="replace"))
                    inside = path.is_relative_to(self.model_repository)
                    stubs[pid] = path.relative_to(self.model_repository).parts[0] if inside else str(path)
        return stubs

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait for a clean exit (SIGKILL after ``timeout`` s); returns the exit status."""
        if self._process is None:
            return None
        if self._process.poll() is None and not self._exited(0):
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
        if not self._exited(timeout):
            self._signal_group(signal.SIGKILL)
        return self._reap()

    def kill(self) -> int | None:
        """SIGKILL tritonserver and its backend stubs at once, as a crash would; returns the exit status."""
        if self._process is None:
            return None
        self._signal_group(signal.SIGKILL)
        return self._reap()

    def close(self) -> None:
        """Stop the server and delete its temporary files."""
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def log_tail(self, lines: int = _LOG_TAIL_LINES, offset: int = 0) -> str:
        """The last ``lines`` lines of the server log written after byte ``offset``."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LocalTriton:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"LocalTriton({self.model_repository}, grpc={self.grpc_url}, {state})"

    def _ensure_workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="ufsim-serve-"))
        return self._workdir

    def _wait_ready(self, log_offset: int) -> None:
        """Poll ``/v2/health/ready`` until it answers 200, the process exits, or ``ready_timeout`` passes."""
        assert self._process is not None
        url = f"http://{self.http_url}/v2/health/ready"
        deadline = time.monotonic() + self.ready_timeout
        while True:
            status = self._process.poll()
            if status is not None:
                failures = load_failures(self.log_tail(lines=1_000_000, offset=log_offset))
                summary = "".join(f"\n  {failure}" for failure in failures)
                raise ServerStartError(
                    f"tritonserver exited with status {status} while starting{summary}\n"
                    f"(log {self.log_path}):\n{self.log_tail(offset=log_offset)}"
                )
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2.0) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"tritonserver not ready after {self.ready_timeout:g} s (log {self.log_path}):\n"
                    f"{self.log_tail(offset=log_offset)}"
                )
            time.sleep(0.2)

    def _exited(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the process to exit, unreaped so that its group id stays ours."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._process.returncode is not None:
                return True
            info = os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if info is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _signal_group(self, signum: int) -> None:
        """Signal tritonserver's process group (it and its stubs) while its unreaped pid still owns the id."""
        assert self._process is not None
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signum)

    def _reap(self) -> int:
        """Collect the exit status, take down any stub left in the group, and remove its shared memory.

        Stubs outlive a tritonserver killed from outside. Linux does not reuse a pid while a process group
        of that id has members, so the group's remaining members are this server's stubs.
        """
        assert self._process is not None
        self._exited(float("inf"))
        self._signal_group(signal.SIGKILL)
        status = self._process.wait()
        _RUNNING.discard(self)
        deadline = time.monotonic() + 10.0
        while (stubs := _live_group_members(self._process.pid)) and time.monotonic() < deadline:
            for stub in stubs:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(stub, signal.SIGKILL)
            time.sleep(0.05)
        for region in _SHM_DIR.glob(f"{self._shm_prefix}*"):
            with contextlib.suppress(FileNotFoundError):
                region.unlink()
        return status
