"""Server endpoints, TLS settings and bearer tokens: parsed and checked before anything is contacted.

An endpoint is ``HOST``, ``HOST:PORT``, ``[IPv6]:PORT``, ``grpc://HOST[:PORT]`` (plain gRPC, port
8001 by default) or ``grpcs://HOST[:PORT]`` / ``https://HOST[:PORT]`` (gRPC over TLS, port 443 by
default). ``UFSIM_SERVER`` holds a comma- or space-separated list when ``--server`` is not given.

Bearer tokens are found as WLCG bearer token discovery says: ``BEARER_TOKEN``, then the file named by
``BEARER_TOKEN_FILE``, then ``$XDG_RUNTIME_DIR/bt_u<uid>``, then ``/tmp/bt_u<uid>``; an explicit token
file overrides them all. A token is sent only over TLS.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ufsim_client.errors import InputError

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "Endpoint",
    "TlsSettings",
    "Token",
    "discover_token",
    "parse_endpoint",
    "parse_endpoints",
]

DEFAULT_PORT = 8001
"""Triton's gRPC port, used when an endpoint has no port."""

DEFAULT_TLS_PORT = 443
"""Port of a ``grpcs://``/``https://`` endpoint without a port (a gateway)."""

_TLS_SCHEMES = ("grpcs", "https")
_ACCEPTED = "HOST[:PORT], grpc://HOST[:PORT] or grpcs://HOST[:PORT] (TLS)"


@dataclass(frozen=True)
class Endpoint:
    """One Triton gRPC endpoint; ``tls`` for gRPC over TLS."""

    host: str
    port: int
    tls: bool = False

    @property
    def target(self) -> str:
        """``host:port`` as gRPC wants it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"grpcs://{self.target}" if self.tls else self.target


def parse_endpoint(text: str) -> Endpoint:
    """Parse one endpoint (see the module docstring).

    Raises:
        InputError: field ``server``, saying what is accepted, for anything else (HTTP URLs, paths,
            spaces, ports outside 1..65535, a missing host).
    """
    raw = text.strip()

    def bad(reason: str) -> InputError:
        return InputError("server", f"{text!r}: {reason}; expected {_ACCEPTED}")

    if not raw or any(c.isspace() for c in raw):
        raise bad("empty or contains spaces")
    scheme = ""
    if "://" in raw:
        scheme, raw = raw.split("://", 1)
        scheme = scheme.lower()
        if scheme == "http":
            raise bad("http:// is Triton's HTTP/REST protocol, the client speaks gRPC")
        if scheme not in ("grpc", *_TLS_SCHEMES):
            raise bad(f"unknown scheme {scheme}://")
    parts = urlsplit(f"//{raw}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise bad("a server is a host and a port, without path, query or user")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port must be a number between 1 and 65535") from None
    host = parts.hostname
    if not host:
        raise bad("no host")
    if port == 0:
        raise bad("the port must be a number between 1 and 65535")
    tls = scheme in _TLS_SCHEMES
    return Endpoint(host, port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), tls)


def parse_endpoints(values: Sequence[str] | None, environ: Mapping[str, str] | None = None) -> list[Endpoint]:
    """Endpoints from ``--server`` values, else from ``UFSIM_SERVER`` (comma or space separated).

    Raises:
        InputError: field ``server`` when neither gives an endpoint, or one is invalid.
    """
    env = os.environ if environ is None else environ
    texts = list(values or [])
    if not texts:
        texts = env.get("UFSIM_SERVER", "").replace(",", " ").split()
    if not texts:
        raise InputError("server", f"no server: give --server {_ACCEPTED}, or set UFSIM_SERVER")
    return [parse_endpoint(t) for t in texts]


@dataclass(frozen=True)
class TlsSettings:
    """Client TLS: CA bundle (default: the system's), optional client certificate and key (PEM files)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        for field, path in (
            ("tls-ca", self.ca_file),
            ("tls-cert", self.cert_file),
            ("tls-key", self.key_file),
        ):
            if path is not None and not Path(path).is_file():
                raise InputError(field, f"no such file: {str(path)!r}")
        if (self.cert_file is None) != (self.key_file is None):
            raise InputError(
                "tls-cert", "a client certificate needs its key: give both --tls-cert and --tls-key"
            )

    def roots(self) -> str | None:
        """The CA bundle to verify servers with: ``ca_file``, else the system's (None: gRPC's own)."""
        if self.ca_file is not None:
            return str(self.ca_file)
        system = ssl.get_default_verify_paths().cafile
        return system if system and Path(system).is_file() else None


@dataclass(frozen=True)
class Token:
    """A bearer token and where it was found (named in authentication errors, never the token)."""

    value: str
    source: str

    def header(self) -> dict[str, str]:
        """The gRPC metadata that carries it."""
        return {"authorization": f"Bearer {self.value}"}


def _read_token(path: Path, source: str) -> Token:
    try:
        value = path.read_text().strip()
    except OSError as err:
        raise InputError(
            "token", f"cannot read the bearer token file {str(path)!r} ({source}): {err.strerror}"
        ) from None
    if not value or any(c.isspace() for c in value):
        raise InputError("token", f"the bearer token file {str(path)!r} ({source}) holds no single token")
    return Token(value, f"{source} {path}")


def discover_token(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Token | None:
    """The bearer token by WLCG discovery (module docstring); None when there is none."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return _read_token(Path(explicit), "--token-file")
    if value := env.get("BEARER_TOKEN", "").strip():
        return Token(value, "BEARER_TOKEN")
    if path := env.get("BEARER_TOKEN_FILE"):
        return _read_token(Path(path), "BEARER_TOKEN_FILE")
    name = f"bt_u{os.getuid()}"
    for folder, source in ((env.get("XDG_RUNTIME_DIR"), "$XDG_RUNTIME_DIR"), ("/tmp", "/tmp")):
        if folder and (Path(folder) / name).is_file():
            return _read_token(Path(folder) / name, source)
    return None
