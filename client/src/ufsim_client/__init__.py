"""ufsim-client: the thin gRPC client of the ufsim (LHCb ultra-fast simulation) Triton service.

Map of the package, in data-flow order:

- :mod:`ufsim_client.events`: :class:`Event` (validated particles of one event), species, ``n_tracks``.
- :mod:`ufsim_client.readers`: event sources (HepMC2/3, Pythia 8, particle gun, parquet).
- :mod:`ufsim_client.keys`: per-particle ``rng_key`` from (seed, event, particle index), SplitMix64.
- :mod:`ufsim_client.batching`: packing particles of many events into requests; restoring order.
- :mod:`ufsim_client.contract`: the tensors the client needs, checked against the server's metadata;
  the served repository's identity.
- :mod:`ufsim_client.endpoints`: server endpoints (``host:port``, ``grpcs://``), TLS, bearer tokens.
- :mod:`ufsim_client.transport`: :class:`ServerPool` (tritonclient gRPC, retries, fail-over).
- :mod:`ufsim_client.simulate`: :func:`simulate`, the loop with requests in flight, and its :class:`Summary`.
- :mod:`ufsim_client.ntuple`: output columns (LHCb-like names).
- :mod:`ufsim_client.writers`: atomic ROOT (uproot) and parquet writers, and an in-memory one.
- :mod:`ufsim_client.report`: markdown report with plots (``ufsim report``).
- :mod:`ufsim_client.extras`: optional dependencies with install hints.
- :mod:`ufsim_client.cli`: the ``ufsim`` command line.
- :mod:`ufsim_client.errors`: :class:`UfsimError` and its subclasses.
"""

from __future__ import annotations

from ufsim_client.endpoints import Endpoint, TlsSettings, Token, discover_token, parse_endpoint
from ufsim_client.errors import ContractError, InputError, ServerError, UfsimError
from ufsim_client.events import SIMULATED_PIDS, Event
from ufsim_client.keys import rng_keys
from ufsim_client.readers import generate_pythia, particle_gun, read_hepmc, read_parquet
from ufsim_client.simulate import Summary, simulate
from ufsim_client.transport import RetryPolicy, ServerPool
from ufsim_client.writers import MemoryWriter, OutputError, ParquetWriter, RootWriter, open_writer

__all__ = [
    "SIMULATED_PIDS",
    "ContractError",
    "Endpoint",
    "Event",
    "InputError",
    "MemoryWriter",
    "OutputError",
    "ParquetWriter",
    "RetryPolicy",
    "RootWriter",
    "ServerError",
    "ServerPool",
    "Summary",
    "TlsSettings",
    "Token",
    "UfsimError",
    "discover_token",
    "generate_pythia",
    "open_writer",
    "parse_endpoint",
    "particle_gun",
    "read_hepmc",
    "read_parquet",
    "rng_keys",
    "simulate",
]
