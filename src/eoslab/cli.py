"""Command line: ``eoslab run CONFIG.yaml --out RUN.nc [--set key=value ...]`` and ``eoslab config``.

Fits Snakemake and Unix habits: the config comes from a file, '-' (standard input) or --json; the result goes
to --out; errors go to standard error with exit status 2 for a bad config; a diverged run exits 0 (divergence is
a result, recorded in the file). torch is imported only once a command runs, so --help and --version are instant.
"""

import argparse
import json
import sys
from importlib.metadata import version


def _config(args: argparse.Namespace) -> dict:
    from eoslab.config import ConfigError, load_config

    if args.json is not None:
        return load_config(text=args.json, overrides=args.set)
    if args.config == "-":
        return load_config(text=sys.stdin.read(), overrides=args.set)
    if args.config is None:
        raise ConfigError("give a config file, '-' for standard input, or --json (--template prints an example)")
    return load_config(args.config, overrides=args.set)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="eoslab",
        description="Train and measure one edge-of-stability run from a config; validate configs.",
        epilog="examples:\n  eoslab config --template > run.yaml\n"
        "  eoslab run run.yaml --out run.nc --set optimizer.lr=0.05",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('eoslab')}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in [("run", "train and measure one run"), ("config", "print the validated config and hash")]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", nargs="?", help="YAML/JSON run config, or - for standard input")
        p.add_argument("--json", help="the config as a JSON/YAML string instead of a file")
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. optimizer.lr=0.1"
        )
        if name == "run":
            p.add_argument("--out", required=True, help="NetCDF file to write (atomically)")
            p.add_argument("--threads", type=int, help="torch threads (Snakemake passes {threads})")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        else:
            p.add_argument("--template", action="store_true", help="print a commented config with every default")
    args = parser.parse_args(argv)
    from eoslab.config import ConfigError, config_hash

    try:
        if args.command == "config" and args.template:
            from eoslab.template import template

            print(template(), end="")
            return 0
        config = _config(args)
        if args.command == "config":
            print(json.dumps({"config_hash": config_hash(config), "config": config}, indent=2, sort_keys=True))
            return 0
        import torch

        from eoslab.engine import run

        if args.threads:
            torch.set_num_threads(args.threads)
        ds = run(config, args.out, quiet=args.quiet)
    except (ConfigError, FileNotFoundError) as error:
        print(f"eoslab: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {ds.attrs['status']} after {ds.attrs['wall_time_s']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
