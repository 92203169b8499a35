"""The `ufsim` command through the chart's real Envoy gateway (TLS + JWT) in front of a local Triton:
a valid bearer token gives the same ntuple as a direct run; a missing, expired or wrong-audience token
makes it exit non-zero saying that authentication failed, and where."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from helm_support import ROOT, render, with_overrides
from test_gateway import ISSUER, SECRET, _b64url, _jwks, running_envoy

from ufsim_serve import LocalTriton

pytestmark = pytest.mark.triton

UFSIM = str(Path(sys.executable).with_name("ufsim"))
JOB = ["--gun", "pid=211/-321/13/2212,p=2000:100000,n=15", "--events", "6", "--seed", "11", "--no-progress"]


def _token(audience: str = "ufsim", expires_in: int = 3600) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "test"}).encode())
    claims = {"iss": ISSUER, "aud": audience, "sub": "grid-job", "exp": int(time.time()) + expires_in}
    payload = _b64url(json.dumps(claims).encode())
    signature = hmac.new(SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def _ufsim(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    sources = os.pathsep.join(str(ROOT / p / "src") for p in ("client", "export", "deploy/local"))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEARER_TOKEN") and k != "UFSIM_SERVER"}
    return subprocess.run(
        [UFSIM, "simulate", *args], env={**clean, "PYTHONPATH": sources, **env},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def served(toy_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTriton]:
    folder = tmp_path_factory.mktemp("gateway-triton")
    with LocalTriton(toy_repository, log_path=folder / "triton.log") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(
    gateway_values: dict[str, Any],
    served: LocalTriton,
    certificate: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """grpcs://127.0.0.1:PORT of a live gateway with TLS and JWT (inline JWKS), no rate limit."""
    auth = {"issuer": ISSUER, "audiences": ["ufsim"], "jwks": {"uri": "", "inline": _jwks()}}
    values = with_overrides(gateway_values, {"gateway": {"rateLimit": {"enabled": False}, "auth": auth}})
    with running_envoy(render(values), served, certificate, tmp_path_factory.mktemp("envoy")) as ports:
        yield f"grpcs://127.0.0.1:{ports['grpc']}"


def test_valid_token_through_the_gateway_gives_the_direct_ntuple(
    served: LocalTriton, gateway: str, certificate: Path, tmp_path: Path
) -> None:
    direct = _ufsim({}, "--server", served.grpc_url, *JOB, "--output", str(tmp_path / "direct.parquet"))
    assert direct.returncode == 0, direct.stderr
    (tmp_path / "token").write_text(_token() + "\n")
    through = _ufsim(
        {"BEARER_TOKEN_FILE": str(tmp_path / "token"), "UFSIM_SERVER": gateway},
        *JOB, "--tls-ca", str(certificate / "ca.crt"), "--output", str(tmp_path / "gateway.parquet"),
    )  # fmt: skip
    assert through.returncode == 0, through.stderr
    a, b = pq.read_table(tmp_path / "direct.parquet"), pq.read_table(tmp_path / "gateway.parquet")
    assert a.num_rows == 90
    assert a.equals(b)
    da, db = (pq.read_metadata(tmp_path / f).metadata for f in ("direct.parquet", "gateway.parquet"))
    # ARROW:schema embeds the schema-level metadata (the ufsim record below); fields and units here.
    assert a.schema.remove_metadata().equals(b.schema.remove_metadata(), check_metadata=True)
    assert set(da) == set(db)
    pa, pb = json.loads(da[b"ufsim"]), json.loads(db[b"ufsim"])
    assert pa["server"]["repository"] == pb["server"]["repository"]
    # How each run was made differs only in when and through which endpoint it ran.
    for record in (pa, pb):
        del record["created"], record["command_line"], record["server"]["urls"]
    assert pa == pb


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (None, "UNAUTHENTICATED"),
        (_token(expires_in=-600), "UNAUTHENTICATED"),
        (_token(audience="another-service"), "PERMISSION_DENIED"),
    ],
    ids=["missing", "expired", "wrong-audience"],
)
def test_bad_token_fails_saying_authentication_failed_and_where(
    gateway: str, certificate: Path, tmp_path: Path, token: str | None, status: str
) -> None:
    if token is None and Path(f"/tmp/bt_u{os.getuid()}").exists():
        pytest.skip(f"/tmp/bt_u{os.getuid()} exists on this machine: a token would be found")
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    if token is not None:
        env["BEARER_TOKEN"] = token
    done = _ufsim(env, "--server", gateway, *JOB, "--tls-ca", str(certificate / "ca.crt"),
                  "--output", str(tmp_path / "out.parquet"))  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert f"authentication failed at {gateway}" in done.stderr
    assert status in done.stderr
    assert ("no bearer token was found" in done.stderr) == (token is None)
    assert not (tmp_path / "out.parquet").exists()
    assert token is None or token not in done.stderr, "the token must never be printed"
