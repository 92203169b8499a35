"""ufsim-serve: a real Triton 2.51 (nvidia-pytriton wheel) serving a ufsim model repository locally."""

from __future__ import annotations

from ufsim_serve.server import (
    ADMIN_HEADER,
    BACKEND_MODEL,
    RESTRICTED_PROTOCOLS,
    GrpcTls,
    LocalTriton,
    ServerStartError,
    build_backend_directory,
    command_line,
    free_port,
    load_failures,
    server_environment,
    tritonserver_binary,
)

__all__ = [
    "ADMIN_HEADER",
    "BACKEND_MODEL",
    "RESTRICTED_PROTOCOLS",
    "GrpcTls",
    "LocalTriton",
    "ServerStartError",
    "build_backend_directory",
    "command_line",
    "free_port",
    "load_failures",
    "server_environment",
    "tritonserver_binary",
]
