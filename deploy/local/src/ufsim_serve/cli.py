"""``ufsim-serve``: run the local Triton on a model repository in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from ufsim_serve.server import (
    ADMIN_HEADER,
    RESTRICTED_PROTOCOLS,
    GrpcTls,
    LocalTriton,
    ServerStartError,
    is_loopback,
)

_CHECKOUT_REPOSITORY = Path(__file__).resolve().parents[4] / "model_repository"

DESCRIPTION = """\
Serve a ufsim model repository with a real Triton Inference Server 2.51 (the tritonserver binary of the
nvidia-pytriton wheel) on this machine, no containers. Models with backend "onnxruntime" run in ufsim's
Python-based ONNX Runtime backend; ensembles run in Triton core. The server listens on 127.0.0.1 (gRPC on
--host with TLS to serve other machines), and the command returns once it has stopped: Ctrl-C (SIGINT) or
SIGTERM shuts it down cleanly, and a backend stub that dies stops it with status 1 (Triton would keep
answering ready while requests to that model hang). Shared memory, model repository, logging and trace
protocols answer only requests carrying the admin key (--admin-key-file), known to nobody by default."""

EPILOG = f"""\
Arguments after `--` go to tritonserver unchanged and override ufsim-serve's own flags, for example
  ufsim-serve -- --log-verbose=1 --model-control-mode=explicit --load-model=pipeline
Addresses are not among them: serve other machines with
  ufsim-serve --host HOST --tls-cert server.crt --tls-key server.key [--tls-ca clients-ca.crt]
which puts gRPC over TLS on HOST (HTTP and metrics stay on 127.0.0.1: Triton's HTTP has no TLS).
The restricted protocols ({", ".join(RESTRICTED_PROTOCOLS)}) need the header {ADMIN_HEADER}: KEY
(gRPC metadata triton-grpc-protocol-{ADMIN_HEADER}).
Exit status: 0 once stopped by SIGINT/SIGTERM, 1 when the server fails to start, dies or loses a
backend stub, 2 for bad arguments."""

_ADDRESS_FLAGS = ("--grpc-address", "--http-address", "--metrics-address")


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
        "--host",
        default="127.0.0.1",
        help="address gRPC listens on (default 127.0.0.1); others than loopback need --tls-cert/--tls-key",
    )
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="gRPC server certificate (TLS)")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="gRPC server private key (TLS)")
    parser.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="CA of client certificates: clients must present one"
    )
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        metavar="FILE",
        help="file holding the key that opens the restricted protocols (default: a random key nobody knows)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for /v2/health/ready before giving up (default 180)",
    )
    return parser


def _tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GrpcTls | None:
    """The gRPC TLS settings; refuses to serve other machines without them."""
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        if args.tls_ca is not None:
            parser.error("--tls-ca needs --tls-cert and --tls-key")
        if not is_loopback(args.host):
            parser.error(
                f"--host {args.host} would serve other machines without TLS: give --tls-cert and --tls-key "
                "(or put the Helm chart's gateway in front)"
            )
        return None
    for option in ("tls_cert", "tls_key", "tls_ca"):
        path = getattr(args, option)
        if path is not None and not path.is_file():
            parser.error(f"--{option.replace('_', '-')} {path}: no such file")
    ca = None if args.tls_ca is None else args.tls_ca.resolve()
    return GrpcTls(args.tls_cert.resolve(), args.tls_key.resolve(), ca)


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
    for flag in extra:
        if flag.split("=", 1)[0] in _ADDRESS_FLAGS:
            parser.error(f"{flag.split('=', 1)[0]} after `--` is not accepted: use --host (with TLS)")
    tls = _tls(parser, args)
    admin_key = None
    if args.admin_key_file is not None:
        try:
            admin_key = args.admin_key_file.read_text().strip()
        except OSError as err:
            parser.error(f"--admin-key-file {args.admin_key_file}: {err.strerror}")
        if len(admin_key) < 16 or any(c.isspace() or c in ",:=" for c in admin_key):
            parser.error(
                "--admin-key-file must hold one key of at least 16 characters without , : = or spaces"
            )

    server = LocalTriton(
        repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        log_path=args.log_file.resolve(),
        extra_args=extra,
        ready_timeout=args.ready_timeout,
        admin_key=admin_key,
        grpc_address=args.host,
        tls=tls,
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
            if dead := server.dead_stubs():
                names = ", ".join(f"{model} (pid {pid})" for pid, model in dead.items())
                print(
                    f"ufsim-serve: the backend stub of {names} died; Triton would still answer ready while "
                    "requests to it hang, so the server is stopped (restart it)",
                    file=sys.stderr,
                    flush=True,
                )
                server.stop()
                return 1
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
