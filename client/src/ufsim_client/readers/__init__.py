"""Event sources: each yields :class:`~ufsim_client.events.Event` objects with their numbers.

- :mod:`~ufsim_client.readers.hepmc`: HepMC2/HepMC3 ASCII files (pyhepmc).
- :mod:`~ufsim_client.readers.pythia`: Pythia 8 in-process (pythia8mc).
- :mod:`~ufsim_client.readers.gun`: particle gun, flat or from production spectra.
- :mod:`~ufsim_client.readers.parquet`: parquet tables of particles.
"""

from __future__ import annotations

from ufsim_client.readers.gun import GunSpec, Spectra, parse_gun_spec, particle_gun, spectra_from_pythia
from ufsim_client.readers.hepmc import read_hepmc
from ufsim_client.readers.parquet import PARQUET_COLUMNS, read_parquet
from ufsim_client.readers.pythia import DEFAULT_CARD, generate_pythia

__all__ = [
    "DEFAULT_CARD",
    "PARQUET_COLUMNS",
    "GunSpec",
    "Spectra",
    "generate_pythia",
    "parse_gun_spec",
    "particle_gun",
    "read_hepmc",
    "read_parquet",
    "spectra_from_pythia",
]
