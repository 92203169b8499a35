"""``python -m ufsim_export.testing --out DIR``: train the small stand-in models (tests, benchmarks)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..spec import default_spec_path, load_spec
from .toy import train_toy_models


def main(argv: Sequence[str] | None = None) -> int:
    """Write the raw toy models and manifests for every learnt step of the spec."""
    parser = argparse.ArgumentParser(prog="python -m ufsim_export.testing", description=__doc__)
    parser.add_argument("--spec", type=Path, default=default_spec_path(), help="pipeline spec YAML")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"wrote {train_toy_models(args.out, spec=load_spec(args.spec), seed=args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
