"""The ``ufsim-export`` command line: check the spec, build the repository, train, validate."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .spec import SpecError, default_spec_path, load_spec

log = logging.getLogger("ufsim_export")
# Each subcommand imports its layer when it runs: `check` and `contract` need only the spec, while
# the writer, the trainings and the report import onnx, torch, scikit-learn or matplotlib (seconds).
DEFAULT_DATA = Path("../shared/data/lamarr-trk-2016MU")
GENERATOR_STEPS = ("tracking_resolution", "tracking_covariance", "rich", "muon", "global_pid")


def _check(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    for step in spec.steps:
        ins = ", ".join(r.name for r in step.inputs)
        outs = ", ".join(t.name for t in step.outputs)
        print(f"{step.name:22s} {step.kind:9s} {ins}  ->  {outs}")
    print(f"spec {args.spec}: {len(spec.steps)} steps, wiring OK")
    return 0


def _configs(args: argparse.Namespace) -> int:
    from .repository.writer import write_configs  # deferred: see the note above

    for path in write_configs(load_spec(args.spec), args.out):
        print(path)
    return 0


def _repository(args: argparse.Namespace) -> int:
    from .repository.writer import check_gbdt_implementation, write_repository  # deferred: see above

    try:
        check_gbdt_implementation(args.gbdt_implementation)
    except ValueError as err:
        print(f"ufsim-export: error: --gbdt-implementation: {err}", file=sys.stderr)
        return 2
    from .convert.verify import VerificationError  # deferred: see the note above

    try:
        out = write_repository(
            load_spec(args.spec),
            args.models,
            args.out,
            repository_version=args.version,
            gbdt_implementation=args.gbdt_implementation,
        )
    except VerificationError as err:
        print(f"ufsim-export: error: {err}\nnothing was written to {args.out}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training import pid, tracking  # deferred: see the note above

    start = time.perf_counter()
    tracking_steps = tuple(s for s in args.steps or tracking.STEPS if s in tracking.STEPS)
    pid_steps = tuple(s for s in args.steps or pid.STEPS if s in pid.STEPS)
    if args.only in (None, "tracking") and tracking_steps:
        if not args.data.is_dir():
            raise SystemExit(f"--data {args.data}: no such directory (the Lamarr 2016 tracking sample)")
        tracking.train(
            args.data, args.out, seed=args.seed, quick=args.quick, steps=tracking_steps, threads=args.threads
        )
    if args.only in (None, "pid") and pid_steps:
        pid.train(args.out, seed=args.seed, quick=args.quick, steps=pid_steps)
    print(f"training took {time.perf_counter() - start:.0f} s; models in {args.out}")
    return 0


def _reexport(args: argparse.Namespace) -> int:
    from .training import reexport  # deferred: see the note above

    for step in args.steps:
        if not (args.models / f"{step}.pt").is_file():
            print(f"ufsim-export: error: --models {args.models}: no {step}.pt to re-export", file=sys.stderr)
            return 2
    other = sorted(set(args.steps) - reexport.DISTILLED)
    if args.regression_precision and other:
        print(f"ufsim-export: error: --regression-precision: {', '.join(other)} has no regression stage; "
              f"accepted steps: {', '.join(sorted(reexport.DISTILLED))}", file=sys.stderr)  # fmt: skip
        return 2
    for step in args.steps:
        report = reexport.reexport(args.models, step, regression_precision=args.regression_precision)
        print(f"{step}: rewrote {args.models / f'{step}.onnx'} (max error {report.worst:.2g})")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from .validation.report import write_report  # deferred: see the note above

    print(f"wrote {write_report(args.data, args.models, args.out, quick=args.quick)}")
    return 0


def _contract(args: argparse.Namespace) -> int:
    from .repository.docs import contract_markdown  # deferred: see the note above

    print(contract_markdown(load_spec(args.spec)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="ufsim-export", description=__doc__)
    parser.add_argument("--spec", type=Path, default=default_spec_path(), help="pipeline spec YAML")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="validate the spec's wiring and print the steps").set_defaults(func=_check)
    p = sub.add_parser("configs", help="write only the config.pbtxt files")
    p.add_argument("--out", type=Path, default=Path("model_repository"))
    p.set_defaults(func=_configs)
    p = sub.add_parser(
        "repository", help="build the full Triton model repository (models, configs, ensemble)"
    )
    p.add_argument(
        "--models", type=Path, default=Path("export/models"), help="raw learnt models (<step>.onnx)"
    )
    p.add_argument("--out", type=Path, default=Path("model_repository"))
    p.add_argument("--version", default=None, help="repository version (default: hash of the models)")
    p.add_argument(
        "--gbdt-implementation",
        default=None,
        help="re-convert the GBDTs from <step>.pkl: 'native' (ONNX-ML TreeEnsemble, about 2x faster on CPU, "
        "CPU-only) or a Hummingbird implementation: perf_tree_trav, tree_trav, gemm "
        "(default: deploy <step>.onnx as trained)",
    )
    p.set_defaults(func=_repository)
    p = sub.add_parser("train", help="train the reference models from data and fixed seeds")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=Path("export/models"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["tracking", "pid"])
    p.add_argument(
        "--steps",
        nargs="+",
        choices=[step.name for step in load_spec(default_spec_path()).learnt_steps()],
        metavar="STEP",
        help="learnt steps of the spec to train (default: all; --only narrows to the tracking or PID ones)",
    )
    p.add_argument(
        "--threads", type=int, default=2, help="torch threads per generator fit (1: two trainings at once)"
    )
    p.add_argument("--quick", action="store_true", help="tiny subsample, few epochs (tests)")
    p.set_defaults(func=_train)
    p = sub.add_parser("reexport", help="rewrite the generators' ONNX from their <step>.pt (no retraining)")
    p.add_argument("--models", type=Path, default=Path("export/models"))
    p.add_argument("--steps", nargs="+", default=list(GENERATOR_STEPS), choices=GENERATOR_STEPS)
    p.add_argument(
        "--regression-precision", choices=("float32", "float64"), default=None,
        help="run the tracking generators' regression stage in this arithmetic (rewrites <step>.pt)",
    )  # fmt: skip
    p.set_defaults(func=_reexport)
    p = sub.add_parser("validate", help="write the validation report (export/reports/validation.md)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--models", type=Path, default=Path("export/models"))
    p.add_argument("--out", type=Path, default=Path("export/reports"))
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=_validate)
    sub.add_parser("contract", help="print the README's contract tables").set_defaults(func=_contract)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ufsim-export``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args))
    except (SpecError, FileNotFoundError) as err:
        print(f"ufsim-export: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
