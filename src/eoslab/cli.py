"""Command line: ``eoslab run CONFIG.yaml --out RUN.nc [--set key=value ...]``, ``eoslab limit`` (a divergence
search, :mod:`eoslab.limits`), ``eoslab sweep`` (many short runs in one process, :mod:`eoslab.sweep`) and
``eoslab config``.

Fits Snakemake and Unix habits: the config comes from a file, '-' (standard input) or --json; the result goes
to --out; errors go to standard error as one line naming the key or the file. Exit status: 0 done (a diverged
run too: divergence is a result, recorded in the file), 2 bad input (config, data files, --out a folder),
3 an I/O error (output not writable, full disk, another process writing --out with --no-wait), 128 + n when
interrupted by signal n (SIGTERM 143, SIGINT 130) after checkpointing, or at once on a second signal (the last
checkpoint stays): the same command resumes. Every interrupt is one line, never a traceback.
torch is imported only once a command runs, so --help and --version are instant.
"""

import argparse
import json
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from eoslab import __version__


def _config(args: argparse.Namespace) -> dict:
    from eoslab.config import ConfigError, load_config
    from eoslab.pipeline import COMMANDS

    validator = COMMANDS[args.command if args.command in COMMANDS else "run"]
    if args.json is not None:
        return load_config(text=args.json, overrides=args.set, validator=validator)
    if args.config == "-":
        return load_config(text=sys.stdin.read(), overrides=args.set, validator=validator)
    if args.config is None:
        raise ConfigError("give a config file, '-' for standard input, or --json (--template prints an example)")
    return load_config(args.config, overrides=args.set, validator=validator)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eoslab",
        description="Train and measure one edge-of-stability run from a config; validate configs.",
        epilog="examples:\n  eoslab config --template > run.yaml\n"
        "  eoslab run run.yaml --out run.nc --set optimizer.lr=0.05",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = [
        ("run", "train and measure one run"),
        ("limit", "divergence search: the largest constant step size (Algorithm 2 of Fox 2023)"),
        ("sweep", "run every cell of a sweep config in one process (many short runs)"),
        ("config", "print the validated config and hash"),
    ]
    for name, help_text in commands:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", nargs="?", help="YAML/JSON run config, or - for standard input")
        p.add_argument("--json", help="the config as a JSON/YAML string instead of a file")
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optimizer.lr=0.1"
        )
        if name in ("run", "limit", "sweep"):
            p.add_argument("--out", required=True, help="NetCDF file to write (atomically)")
            p.add_argument("--threads", type=int, help="torch threads (Snakemake passes {threads})")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
            p.add_argument(
                "--resume-any-code", action="store_true", help="resume a checkpoint written by other eoslab code"
            )
            p.add_argument(
                "--no-wait", action="store_true", help="fail (exit 3) if another process writes --out, do not wait"
            )
        else:
            p.add_argument("--template", action="store_true", help="print a commented config with every default")
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda message, *_, **__: f"eoslab: warning: {message}\n"
    with _stop_on_signals():
        try:
            return _main(args)
        except _Stopped as stop:
            name = signal.Signals(stop.signum).name
            print(f"eoslab: interrupted: {name}: stopped at once; {STOPPED}", file=sys.stderr)
            return 128 + stop.signum


STOPPED = "files written so far are whole, the same command resumes"


class _Stopped(BaseException):
    """SIGTERM or SIGINT outside a run's checkpointing loop (loading torch, the config, the data), or a second one
    inside it. A BaseException, as KeyboardInterrupt: no ``except Exception`` on the way takes it for a bad file."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: Any) -> NoReturn:
    raise _Stopped(signum)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGINT stop the command at once with :class:`_Stopped` (a run's own handler takes
    the first signal of its loop: it checkpoints). Files are written whole, so what was written stays usable."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


MAX_THREADS = 4096
"""The most torch threads ``--threads`` may ask for (torch takes a 32-bit count)."""


def _main(args: argparse.Namespace) -> int:
    from eoslab.config import ConfigError, config_hash
    from eoslab.runfiles import Interrupted, check_out, exit_status

    try:
        if args.command == "config" and args.template:
            from eoslab.template import template

            print(template(), end="")
            return 0
        config = _config(args)
        if args.command == "config":
            print(json.dumps({"config_hash": config_hash(config), "config": config}, indent=2, sort_keys=True))
            return 0
        check_out(args.out)  # a folder, FIFO or device is refused before any compute
        if args.threads is not None and not 1 <= args.threads <= MAX_THREADS:
            raise ConfigError(f"--threads: {args.threads} is not a number of threads in [1, {MAX_THREADS}]")
        from eoslab.allocator import keep_freed_memory

        keep_freed_memory()
        import torch

        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.command == "limit":
            from eoslab.limits import limit

            ds = limit(config, args.out)
            print(f"{args.out}: max_lr {ds.attrs['max_lr']:.5g} ({ds.attrs['n_trials']} trials)", file=sys.stderr)
            return 0
        if args.command == "sweep":
            from eoslab.sweep import run_sweep

            ds = run_sweep(config, args.out, quiet=args.quiet)
            print(f"{args.out}: {ds.sizes['cell']} cells after {ds.attrs['wall_time_s']:.1f} s", file=sys.stderr)
            return 0
        from eoslab.engine import run

        ds = run(config, args.out, quiet=args.quiet, resume_any_code=args.resume_any_code, wait=not args.no_wait)
    except (ConfigError, Interrupted, OSError) as error:
        what = "interrupted" if isinstance(error, Interrupted) else "error"
        print(f"eoslab: {what}: {error}", file=sys.stderr)
        return exit_status(error)
    print(f"{args.out}: {ds.attrs['status']} after {ds.attrs['wall_time_s']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
