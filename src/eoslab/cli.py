"""Command line: ``eoslab run CONFIG.yaml --out RUN.nc [--set key=value ...]``, ``eoslab limit`` (a divergence
search, :mod:`eoslab.limits`), ``eoslab sweep`` (many short runs in one process, :mod:`eoslab.sweep`),
``eoslab batch`` and ``eoslab config``.

``eoslab batch ITEMS`` (a file, '-' or --json: a list of ``{command: run|limit|sweep, config: {...}, out: FILE}``)
makes the items in turn in one process, each file exactly as its single command would, so the fixed start-up of a
job (Python, torch, xarray: ~4 CPU s) is paid once for many short runs: the pipeline makes every file of a family
named in a profile's ``batch`` this way, one job per family. Every item's config and ``out`` are checked before any
compute; the first item that fails or is interrupted stops the batch with its exit status, its line naming the item
(``item k/N FILE``). Snakemake reruns a killed batch job whole (a run's checkpoint still resumes it): its runs are
short by design.

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
from collections.abc import Callable, Iterator
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


Item = tuple[str, dict[str, Any], str]
"""One file to make: (command, validated config, output path)."""

ITEM_KEYS = ("command", "config", "out")


def _items(args: argparse.Namespace) -> list[Item]:
    """``eoslab batch``'s items, each config validated by its command's validator and each ``out`` checked
    (:func:`eoslab.runfiles.check_out`, no two alike), before any compute: ``ConfigError`` naming the item and key."""
    from eoslab.config import ConfigError, parse_yaml, read_yaml
    from eoslab.pipeline import COMMANDS
    from eoslab.runfiles import check_out

    if args.json is not None:
        raw = parse_yaml(args.json, "items")
    elif args.config == "-":
        raw = parse_yaml(sys.stdin.read(), "items")
    elif args.config is None:
        raise ConfigError("give a file of items, '-' for standard input, or --json")
    else:
        raw = read_yaml(args.config)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"items: (top level): must be a non-empty list of {{{', '.join(ITEM_KEYS)}}} mappings")
    items: list[Item] = []
    written: dict[str, int] = {}
    for k, item in enumerate(raw, 1):
        at = f"item {k}/{len(raw)}"
        if not isinstance(item, dict):
            raise ConfigError(f"{at}: must be a mapping with keys {list(ITEM_KEYS)}, not {type(item).__name__}")
        unknown, missing = [key for key in item if key not in ITEM_KEYS], [key for key in ITEM_KEYS if key not in item]
        if unknown or missing:
            key, problem = (unknown[0], "unknown key") if unknown else (missing[0], "missing")
            raise ConfigError(f"{at}: {key}: {problem}; an item has the keys {', '.join(ITEM_KEYS)}")
        command, config, out = (item[key] for key in ITEM_KEYS)
        if command not in COMMANDS:
            raise ConfigError(f"{at}: command: {command!r} is not one of {sorted(COMMANDS)}")
        if not isinstance(out, str) or not out:
            raise ConfigError(f"{at}: out: {out!r} is not a file path")
        at = f"{at} {out}"
        if not isinstance(config, dict):
            raise ConfigError(f"{at}: config: must be a mapping of keys to values, not {type(config).__name__}")
        try:
            config = COMMANDS[command](config)
            path = str(check_out(out, key="out").resolve())
        except ConfigError as error:
            raise ConfigError(f"{at}: {error}") from error
        if path in written:
            raise ConfigError(f"{at}: out: item {written[path]} writes it too")
        written[path] = k
        items.append((command, config, out))
    return items


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
        ("batch", "make many run/limit/sweep files in turn in one process (start-up paid once)"),
        ("config", "print the validated config and hash"),
    ]
    for name, help_text in commands:
        p = sub.add_parser(name, help=help_text)
        if name == "batch":
            p.add_argument(
                "config", nargs="?", help="YAML/JSON list of {command, config, out}, or - for standard input"
            )
            p.add_argument("--json", help="the items as a JSON/YAML string instead of a file")
        else:
            p.add_argument("config", nargs="?", help="YAML/JSON run config, or - for standard input")
            p.add_argument("--json", help="the config as a JSON/YAML string instead of a file")
            p.add_argument(
                "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optimizer.lr=0.1"
            )
        if name in (*JOBS, "batch"):
            if name != "batch":
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


def _run(config: dict[str, Any], out: str, args: argparse.Namespace) -> str:
    from eoslab.engine import run

    ds = run(config, out, quiet=args.quiet, resume_any_code=args.resume_any_code, wait=not args.no_wait)
    return f"{ds.attrs['status']} after {ds.attrs['wall_time_s']:.1f} s"


def _limit(config: dict[str, Any], out: str, args: argparse.Namespace) -> str:
    from eoslab.limits import limit

    ds = limit(config, out)
    return f"max_lr {ds.attrs['max_lr']:.5g} ({ds.attrs['n_trials']} trials)"


def _sweep(config: dict[str, Any], out: str, args: argparse.Namespace) -> str:
    from eoslab.sweep import run_sweep

    ds = run_sweep(config, out, quiet=args.quiet)
    return f"{ds.sizes['cell']} cells after {ds.attrs['wall_time_s']:.1f} s"


JOBS: dict[str, Callable[[dict[str, Any], str, argparse.Namespace], str]] = {
    "run": _run,
    "limit": _limit,
    "sweep": _sweep,
}
"""Command that makes a file (the keys of :data:`eoslab.pipeline.COMMANDS`) → the function making it from a
validated config, the output path and the parsed arguments, returning the line's summary (after ``FILE:``)."""


def _start(threads: int | None) -> None:
    """Check ``--threads``, keep freed memory in the heap (before torch allocates) and set torch's threads."""
    from eoslab.config import ConfigError

    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise ConfigError(f"--threads: {threads} is not a number of threads in [1, {MAX_THREADS}]")
    from eoslab.allocator import keep_freed_memory

    keep_freed_memory()
    import torch

    if threads is not None:
        torch.set_num_threads(threads)


def _main(args: argparse.Namespace) -> int:
    from eoslab.config import ConfigError, config_hash
    from eoslab.runfiles import Interrupted, check_out, exit_status

    batch = args.command == "batch"
    try:
        if args.command == "config" and args.template:
            from eoslab.template import template

            print(template(), end="")
            return 0
        if batch:
            items = _items(args)
        else:
            config = _config(args)
            if args.command == "config":
                print(json.dumps({"config_hash": config_hash(config), "config": config}, indent=2, sort_keys=True))
                return 0
            check_out(args.out)  # a folder, FIFO or device is refused before any compute
            items = [(args.command, config, args.out)]
        _start(args.threads)
    except (ConfigError, OSError) as error:
        print(f"eoslab: error: {error}", file=sys.stderr)
        return exit_status(error)
    for k, (command, config, out) in enumerate(items, 1):
        label = f"item {k}/{len(items)} {out}" if batch else out
        try:
            summary = JOBS[command](config, out, args)
        except (ConfigError, Interrupted, OSError) as error:
            what = "interrupted" if isinstance(error, Interrupted) else "error"
            print(f"eoslab: {what}: {f'{label}: ' if batch else ''}{error}", file=sys.stderr)
            return exit_status(error)
        print(f"{label}: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
