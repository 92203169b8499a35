"""Optional dependencies, imported lazily in one place; each function names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "hist",
    "hist_intervals",
    "matplotlib_pyplot",
    "mplhep",
    "pyarrow",
    "pyarrow_parquet",
    "pyhepmc",
    "pythia8mc",
    "uproot",
]


def _load(module: str, extra: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"{module!r} is needed for this feature; install it with\n"
            f"    pip install 'ufsim-client[{extra}]'\nor\n    pip install {package}"
        ) from err


def pyhepmc() -> ModuleType:
    """pyhepmc, for HepMC2/HepMC3 ASCII input (extra ``hepmc``)."""
    return _load("pyhepmc", "hepmc", "pyhepmc")


def pythia8mc() -> ModuleType:
    """Pythia 8 bindings, for in-process generation (extra ``pythia``)."""
    return _load("pythia8mc", "pythia", "pythia8mc==8.317.2")


def uproot() -> ModuleType:
    """uproot, for ROOT TTree output (extra ``root``)."""
    return _load("uproot", "root", "uproot")


def pyarrow() -> ModuleType:
    """pyarrow, for parquet input and output (extra ``parquet``)."""
    return _load("pyarrow", "parquet", "pyarrow")


def pyarrow_parquet() -> ModuleType:
    """pyarrow.parquet (extra ``parquet``)."""
    pyarrow()
    return _load("pyarrow.parquet", "parquet", "pyarrow")


def matplotlib_pyplot() -> ModuleType:
    """matplotlib.pyplot on the non-interactive Agg backend, for ``ufsim report`` (extra ``report``)."""
    matplotlib = _load("matplotlib", "report", "matplotlib")
    matplotlib.use("Agg")
    return _load("matplotlib.pyplot", "report", "matplotlib")


def hist() -> ModuleType:
    """hist (boost-histogram), for ``ufsim report`` (extra ``report``)."""
    return _load("hist", "report", "hist")


def hist_intervals() -> ModuleType:
    """hist.intervals (binomial intervals; needs scipy), for ``ufsim report`` (extra ``report``)."""
    _load("scipy.stats", "report", "scipy")
    return _load("hist.intervals", "report", "hist")


def mplhep() -> ModuleType:
    """mplhep (LHCb plot style, histogram drawing), for ``ufsim report`` (extra ``report``)."""
    matplotlib_pyplot()
    return _load("mplhep", "report", "mplhep")
