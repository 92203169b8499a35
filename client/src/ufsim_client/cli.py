"""The ``ufsim`` command line: ``simulate``, ``gun-spectra`` and ``report``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ufsim_client.endpoints import TlsSettings, discover_token, parse_endpoints
from ufsim_client.errors import ContractError, InputError, ServerError, UfsimError
from ufsim_client.events import Event
from ufsim_client.provenance import client_version, provenance
from ufsim_client.readers import (
    GunSpec,
    generate_pythia,
    parse_gun_spec,
    particle_gun,
    read_hepmc,
    read_parquet,
    spectra_from_pythia,
)
from ufsim_client.simulate import Summary, simulate
from ufsim_client.transport import RetryPolicy, ServerPool
from ufsim_client.writers import OutputError, Writer, open_writer

__all__ = ["main"]

log = logging.getLogger("ufsim_client")

_SEED_LIMIT = 2**64
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """SIGTERM or SIGHUP (batch systems, a closed terminal): handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_DEFERRED: list[int] = []
"""While it starts with 0, a stop signal is recorded here instead of raised (output being created)."""


def _stop(signum: int, frame: FrameType | None) -> None:
    if _DEFERRED and _DEFERRED[0] == 0:
        _DEFERRED.append(signum)
        return
    raise Stopped(signum)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if _DEFERRED and _DEFERRED[0] == 0:
        _DEFERRED.append(signum)
        return
    raise KeyboardInterrupt


def _raise_deferred() -> None:
    """Stop deferring signals; raise the first one that arrived meanwhile."""
    pending = _DEFERRED[1:]
    _DEFERRED.clear()
    if pending:
        raise KeyboardInterrupt if pending[0] == signal.SIGINT else Stopped(pending[0])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ufsim", description="LHCb ultra-fast simulation client for a Triton ufsim server."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {client_version()}")
    # -v/-q are accepted after the command too; absent there, the main parser's values stay.
    logging_options = argparse.ArgumentParser(add_help=False)
    for target in (parser, logging_options):
        target.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0 if target is parser else argparse.SUPPRESS,
            help="more log messages (-vv for debug); before or after the command",
        )
        target.add_argument(
            "-q",
            "--quiet",
            action="count",
            default=0 if target is parser else argparse.SUPPRESS,
            help="errors only; before or after the command",
        )
    commands = parser.add_subparsers(dest="command", required=True)

    sim = commands.add_parser(
        "simulate",
        parents=[logging_options],
        help="simulate events on one or more servers and write an ntuple",
    )
    sim.add_argument(
        "--server",
        action="append",
        metavar="HOST[:PORT]",
        help="Triton gRPC endpoint (port 8001 by default; grpcs://HOST[:PORT] for TLS, port 443); repeat "
        "for fail-over, tried in order (default: $UFSIM_SERVER, comma-separated)",
    )
    source = sim.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="HepMC2/HepMC3 ASCII file(s), or a parquet particle table (.parquet)",
    )
    source.add_argument(
        "--pythia",
        nargs="?",
        const="default",
        metavar="CARD",
        help="generate with Pythia 8 in-process; CARD is a settings file (default: 13 TeV min bias)",
    )
    source.add_argument(
        "--gun",
        metavar="SPEC",
        help="particle gun, e.g. 'pid=211/321,p=2000:100000,eta=2:5,n=50' or spectra.npz",
    )
    sim.add_argument("--events", type=int, metavar="N", help="events to simulate (all of --input by default)")
    sim.add_argument(
        "--redecay",
        type=int,
        metavar="PDG",
        help="with --pythia: ReDecay, the underlying event generated once and this particle re-decayed",
    )
    sim.add_argument(
        "--redecay-times",
        type=int,
        default=10,
        metavar="N",
        help="with --redecay: events made from each underlying event (default 10)",
    )
    sim.add_argument("--seed", type=int, required=True, metavar="S", help="job seed (rng keys, generators)")
    sim.add_argument("--output", type=Path, required=True, metavar="FILE", help="ntuple, .root or .parquet")
    sim.add_argument("--batch-size", type=int, default=8192, help="particles per request (default 8192)")
    sim.add_argument("--in-flight", type=int, default=4, help="requests in flight (default 4)")
    sim.add_argument("--model", default="pipeline", help="ensemble name (default pipeline)")
    sim.add_argument(
        "--crossing",
        choices=("event", "file"),
        default="file",
        help="HepMC: one event per file (a bunch crossing of several collisions, as LHCb writes them; "
        "default) or one per GenEvent",
    )
    sim.add_argument(
        "--retry-timeout",
        type=float,
        default=300.0,
        help="seconds to keep retrying a request across servers (default 300)",
    )
    sim.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for a first answer from any server before giving up (default 30)",
    )
    sim.add_argument(
        "--tls-ca", type=Path, metavar="PEM", help="CA bundle for grpcs:// (default: system CAs)"
    )
    sim.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="client certificate for grpcs:// (with --tls-key)"
    )
    sim.add_argument("--tls-key", type=Path, metavar="PEM", help="client certificate key for grpcs://")
    sim.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="bearer token file for grpcs:// (default: WLCG discovery: BEARER_TOKEN, BEARER_TOKEN_FILE, "
        "$XDG_RUNTIME_DIR/bt_u<uid>, /tmp/bt_u<uid>)",
    )
    sim.add_argument("--tree", default="ufsim", help="TTree name for ROOT output (default ufsim)")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")

    spectra = commands.add_parser(
        "gun-spectra", parents=[logging_options], help="sample production spectra from Pythia once, for --gun"
    )
    spectra.add_argument(
        "--pythia", default="default", metavar="CARD", help="Pythia settings file (default card)"
    )
    spectra.add_argument("--events", type=int, default=2000, metavar="N", help="Pythia events (default 2000)")
    spectra.add_argument("--seed", type=int, default=1, metavar="S")
    spectra.add_argument("--output", type=Path, required=True, metavar="FILE", help="histogram file (.npz)")

    report = commands.add_parser(
        "report", parents=[logging_options], help="markdown report with plots from an ntuple"
    )
    report.add_argument(
        "ntuple", type=Path, nargs="+", help="ntuple written by 'ufsim simulate'; two to compare (B over A)"
    )
    report.add_argument("--output", type=Path, required=True, metavar="DIR")
    report.add_argument("--tree", default="ufsim", help="TTree name for ROOT input (default ufsim)")
    return parser


def _events(args: argparse.Namespace, gun: GunSpec | None) -> Iterator[Event]:
    if args.input:
        files: list[Path] = args.input
        if files[0].suffix.lower() in (".parquet", ".pq"):
            yield from read_parquet(files[0], max_events=args.events)
        else:
            yield from read_hepmc(files, max_events=args.events, crossing=args.crossing)
    elif gun is not None:
        yield from particle_gun(gun, seed=args.seed, n_events=args.events)
    else:
        yield from generate_pythia(
            args.pythia,
            seed=args.seed,
            n_events=args.events,
            redecay=args.redecay,
            redecay_times=args.redecay_times,
        )


def _source_kind(args: argparse.Namespace) -> str:
    if args.input:
        return "parquet" if args.input[0].suffix.lower() in (".parquet", ".pq") else "hepmc"
    return "gun" if args.gun else "pythia"


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse invalid numbers at once, naming the option and what is accepted."""
    if not 0 <= args.seed < _SEED_LIMIT:
        raise InputError("seed", f"expected an integer 0 <= seed < 2**64, not {args.seed}")
    for name in ("batch_size", "in_flight"):
        if getattr(args, name) < 1:
            raise InputError(name.replace("_", "-"), f"expected an integer >= 1, not {getattr(args, name)}")
    for name in ("retry_timeout", "connect_timeout"):
        value = getattr(args, name)
        if not value > 0 or value == float("inf"):
            raise InputError(name.replace("_", "-"), f"expected a finite number of seconds > 0, not {value}")


def _simulate(args: argparse.Namespace) -> int:
    # Check what can be checked before contacting a server or creating the output.
    _check_arguments(args)
    endpoints = parse_endpoints(args.server)
    tls = TlsSettings(args.tls_ca, args.tls_cert, args.tls_key)
    token = discover_token(args.token_file)
    if args.events is not None and args.events < 1:
        raise InputError("events", f"expected a positive number of events, not {args.events}")
    if args.events is None and not args.input:
        raise InputError("events", "--events N is required with --pythia and --gun")
    if args.input:
        missing = [str(f) for f in args.input if not f.is_file()]
        if missing:
            raise InputError("input", f"no such file(s): {missing}")
        tables = [f for f in args.input if f.suffix.lower() in (".parquet", ".pq")]
        if tables and len(args.input) > 1:
            raise InputError("input", "pass one parquet table alone (several would repeat event numbers)")
    if args.redecay is not None and args.pythia is None:
        raise InputError("redecay", "--redecay works with --pythia (in-process generation) only")
    if args.redecay_times < 1:
        raise InputError("redecay_times", f"expected --redecay-times >= 1, not {args.redecay_times}")
    gun = parse_gun_spec(args.gun) if args.gun else None
    record = provenance(
        seed=args.seed,
        inputs=args.input or [p for p in (args.pythia, args.gun) if p and Path(p).is_file()],
        command_line=[Path(sys.argv[0]).name, *(sys.argv[1:] if args.argv is None else args.argv)],
        source=_source_kind(args),
        crossing=args.crossing if args.input else None,
        redecay={"pdg": args.redecay, "times": args.redecay_times} if args.redecay is not None else None,
    )
    options = {"tree": args.tree} if args.output.suffix.lower() == ".root" else {}
    retry = RetryPolicy(total_timeout=args.retry_timeout, connect_timeout=args.connect_timeout)
    with ServerPool(endpoints, model=args.model, retry=retry, tls=tls, token=token) as pool:
        # A stop signal while the temporary output is being created waits until someone owns it.
        _DEFERRED[:] = [0]
        try:
            writer = open_writer(args.output, **options)
        except BaseException:
            _DEFERRED.clear()
            raise
        try:
            _raise_deferred()
            summary = _run(args, gun, pool, writer, record)
        except BaseException:
            writer.abort()
            raise
    sys.stdout.write(f"ufsim: wrote {args.output}: {summary}\n")
    return 0


def _run(
    args: argparse.Namespace, gun: GunSpec | None, pool: ServerPool, writer: Writer, record: dict[str, Any]
) -> Summary:
    return simulate(
        _events(args, gun),
        pool,
        writer,
        seed=args.seed,
        batch_size=args.batch_size,
        max_in_flight=args.in_flight,
        total_events=args.events,
        progress=not args.no_progress,
        model=args.model,
        provenance=record,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 3 server failure)."""
    args = _parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)
    level = logging.ERROR if args.quiet else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    previous = {}
    if threading.current_thread() is threading.main_thread():  # handlers can only be set there
        previous = {s: signal.signal(s, _stop) for s in _STOP_SIGNALS}
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupt)
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "gun-spectra":
            spectra = spectra_from_pythia(args.pythia, seed=args.seed, n_events=args.events)
            spectra.save(args.output)
            sys.stdout.write(f"ufsim: wrote {args.output} ({int(spectra.counts.sum())} particles)\n")
            return 0
        from ufsim_client.report import write_report

        path = write_report(args.ntuple, args.output, tree=args.tree)
        sys.stdout.write(f"ufsim: wrote {path}\n")
        return 0
    except (InputError, OutputError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    except (ServerError, ContractError, UfsimError) as err:
        log.error("%s", err)
        return 3
    except KeyboardInterrupt:
        log.error("interrupted; no output written")
        return 130
    except Stopped as stopped:
        log.error("stopped by %s; no output written", stopped)
        return 128 + stopped.signum
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
