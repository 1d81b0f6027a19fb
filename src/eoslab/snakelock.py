"""Snakemake's lock on a working folder, and whether its owner is gone: what ``make figures`` checks before it runs
``snakemake --unlock`` after a killed Snakemake.

Snakemake locks a folder with files under ``.snakemake/locks/`` that name no process, and ``--unlock`` removes them
whoever holds them; unlocking beside a live Snakemake (``make smoke`` running) would let two write one set of
outputs. A lock is stale when no Snakemake process works in the folder: none whose command line runs snakemake
(``.../bin/snakemake ...`` or ``python -m snakemake ...``) and whose working directory is the folder (Linux ``/proc``).

``python -m eoslab.snakelock [FOLDER]``: exit 0 if FOLDER (default: the current one) holds a stale lock to remove,
1 if it holds none or its owner is alive (its pids named on standard error).
"""

import os
import sys
from pathlib import Path


def _runs_snakemake(argv: list[str]) -> bool:
    """Whether a command line is Snakemake itself (not a shell whose script mentions it)."""
    head = [os.path.basename(a) for a in argv[:3]]
    if head[:1] == ["snakemake"]:
        return True
    return (
        bool(head) and head[0].startswith("python") and (head[1:2] == ["snakemake"] or argv[1:3] == ["-m", "snakemake"])
    )


def snakemake_pids(folder: str | Path) -> list[int]:
    """The processes running Snakemake with ``folder`` as their working directory (those this user may inspect)."""
    here = os.path.realpath(folder)
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = proc.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
            if _runs_snakemake(argv) and os.path.realpath(os.readlink(proc / "cwd")) == here:
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or another user's
            continue
    return sorted(found)


def locks(folder: str | Path) -> list[Path]:
    """Snakemake's lock files in ``folder``."""
    return sorted(Path(folder, ".snakemake", "locks").glob("*.lock"))


def main(argv: list[str] | None = None) -> int:
    folder = (argv if argv is not None else sys.argv[1:]) or ["."]
    if not locks(folder[0]):
        return 1
    live = snakemake_pids(folder[0])
    if live:
        print(
            f"eoslab: Snakemake (pid {', '.join(map(str, live))}) works in {folder[0]}: its lock stays", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
