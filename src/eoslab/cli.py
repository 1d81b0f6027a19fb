"""Command line: ``eoslab run CONFIG.yaml --out RUN.nc [--set key=value ...]`` and ``eoslab config``.

Fits Snakemake and Unix habits: the config comes from a file, ``-`` (standard input) or ``--json``; the result goes
to ``--out``; errors go to standard error with exit status 2 for a bad config; a diverged run exits 0 (divergence is
a result, recorded in the file).
"""

import argparse
import json
import sys

from eoslab.config import ConfigError, config_hash, load_config


def _config(args: argparse.Namespace) -> dict:
    if args.json is not None:
        return load_config(text=args.json, overrides=args.set)
    if args.config == "-":
        return load_config(text=sys.stdin.read(), overrides=args.set)
    if args.config is None:
        raise ConfigError("give a config file, '-' for standard input, or --json")
    return load_config(args.config, overrides=args.set)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eoslab", description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        if args.command == "config":
            print(json.dumps({"config_hash": config_hash(config), "config": config}, indent=2, sort_keys=True))
            return 0
        import torch  # lazily, like the engine: `eoslab config` and --help need neither

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
