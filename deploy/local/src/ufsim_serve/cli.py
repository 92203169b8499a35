"""``ufsim-serve``: run the local Triton on a model repository in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ufsim_serve.server import LocalTriton, ServerStartError

_CHECKOUT_REPOSITORY = Path(__file__).resolve().parents[4] / "model_repository"

DESCRIPTION = """\
Serve a ufsim model repository with a real Triton Inference Server 2.51 (the tritonserver binary of the
nvidia-pytriton wheel) on this machine, no containers. Models with backend "onnxruntime" run in ufsim's
Python-based ONNX Runtime backend; ensembles run in Triton core. The server listens on 127.0.0.1, and the
command returns once it has stopped: Ctrl-C (SIGINT) or SIGTERM shuts it down cleanly."""

EPILOG = """\
Arguments after `--` go to tritonserver unchanged and override ufsim-serve's own flags, for example
  ufsim-serve -- --log-verbose=1 --model-control-mode=explicit --load-model=pipeline
  ufsim-serve -- --grpc-address=0.0.0.0 --http-address=0.0.0.0    (serve other machines)
Exit status: 0 once stopped by SIGINT/SIGTERM, 1 when the server fails to start or dies,
2 for bad arguments."""


class _Shutdown(Exception):
    """Raised in the main thread by the SIGINT/SIGTERM handler."""


def _default_repository() -> Path:
    """``./model_repository`` when present, else the source checkout's ``model_repository/``."""
    local = Path("model_repository")
    return local if local.is_dir() else _CHECKOUT_REPOSITORY


def build_parser() -> argparse.ArgumentParser:
    """The ``ufsim-serve`` argument parser (the arguments before ``--``)."""
    parser = argparse.ArgumentParser(
        prog="ufsim-serve",
        usage="ufsim-serve [options] [-- TRITONSERVER_ARGS ...]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="Triton model repository (default: ./model_repository, else the checkout's model_repository/)",
    )
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0 = any free)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000; 0 = any free)")
    parser.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002; 0 = any free)"
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=Path("ufsim-serve.log"),
        help="file receiving tritonserver's output (default ./ufsim-serve.log, appended to)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for /v2/health/ready before giving up (default 180)",
    )
    return parser


def _raise_shutdown(signum: int, frame: FrameType | None) -> None:
    raise _Shutdown(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the server, report its endpoints, and stop it cleanly on SIGINT/SIGTERM."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in arguments:
        split = arguments.index("--")
        arguments, extra = arguments[:split], arguments[split + 1 :]
    parser = build_parser()
    args = parser.parse_args(arguments)
    repository = args.model_repository or _default_repository()
    if not repository.is_dir():
        parser.error(f"model repository {repository} is not a directory (give --model-repository)")
    for name in ("grpc_port", "http_port", "metrics_port"):
        if not 0 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 65535")

    server = LocalTriton(
        repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_path=args.log_file.resolve(),
        extra_args=extra,
        ready_timeout=args.ready_timeout,
    )
    previous = {s: signal.signal(s, _raise_shutdown) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"ufsim-serve: serving {repository.resolve()}, log {server.log_path}", flush=True)
        server.start()
        print(
            f"ufsim-serve: ready, pid {server.pid}: grpc {server.grpc_url}, http {server.http_url}, "
            f"metrics {server.metrics_url}",
            flush=True,
        )
        while server.running:
            time.sleep(0.5)
        status = server.stop()
        print(
            f"ufsim-serve: tritonserver exited unexpectedly with status {status}; "
            f"last lines of {server.log_path}:\n{server.log_tail()}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except _Shutdown as received:
        print(f"ufsim-serve: {received}, shutting down", flush=True)
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        status = server.stop()
        print(f"ufsim-serve: tritonserver stopped (status {status})", flush=True)
        return 0
    except ServerStartError as error:
        print(f"ufsim-serve: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        server.close()


if __name__ == "__main__":
    sys.exit(main())
