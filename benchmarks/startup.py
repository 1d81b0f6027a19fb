"""Fixed cost of one DAG job and of one DAG parse: a fresh `eoslab run` process on a tiny config against
`import torch` alone, and `snakemake -n` on the smoke profile with and without its validation memo.

    python benchmarks/startup.py [--repeats 5]

Every DAG job is a new Python process (Snakemake runs `eoslab run --json CONFIG --out FILE --threads N --quiet`), so
what it pays before and around its first step is paid once per run file. Each command runs ``--repeats`` times in
fresh interpreters, round-robin; the table reports the median CPU seconds (user + system of the child process, so
other load on the machine does not count) and the wall seconds. The tiny job (digits, 32 examples, a width-4 MLP,
3 steps, FullBS measured at every step, NetCDF written) costs milliseconds of compute: its time is the fixed cost.
`snakemake -n` is paid by every `make`, every dry run and, on SLURM, every job: "memo warm" is the usual case (configs
and code unchanged since the last parse), "memo cold" the first parse after an edit (validates every run config).
Two rows give the floors and the figure jobs' start: `snakemake -n` on a one-rule Snakefile (what Snakemake costs
before any of our DAG) and `--help` of papermill's command line started as `python -m papermill` (before) and as
`python -m eoslab.notebooks` (the figure rule's, after: jsonschema loaded without `rfc3987_syntax`).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TINY = {
    "dtype": "float64",
    "data": {"name": "digits", "n_train": 32, "n_test": 8},
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "optimizer": {"lr": 0.1},
    "steps": 3,
    "measure": {"every": 1},
}


ROOT = Path(__file__).resolve().parents[1]
MEMO = ROOT / ".snakemake" / "eoslab" / "profile-smoke.json"
JOB, PARSE = "eoslab run (tiny job, NetCDF written)", "snakemake -n all, smoke (memo warm)"
FLOOR = "snakemake -n, a one-rule Snakefile"


def commands(out: Path) -> dict[str, tuple[list[str], Callable[[], None] | None]]:
    """Name → (command, what to do before each timing); ``out`` is a file name in a scratch folder."""
    eoslab = [sys.executable, "-m", "eoslab.cli"]
    snakemake = [str(Path(sys.executable).parent / "snakemake"), "-n", "all", "--config", "profile=smoke", "--quiet"]
    parse = [*snakemake, "rules", "-s", str(ROOT / "Snakefile"), "-d", str(ROOT)]
    one_rule = out.with_name("Snakefile")
    one_rule.write_text("rule all:\n    input: []\n")
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], None),
        "import torch": ([sys.executable, "-c", "import torch"], None),
        "import eoslab.engine": ([sys.executable, "-c", "import eoslab.engine"], None),
        JOB: ([*eoslab, "run", "--json", json.dumps(TINY), "--out", str(out), "--threads", "1", "--quiet"], None),
        "snakemake -n all, smoke (memo cold)": (parse, lambda: MEMO.unlink(missing_ok=True)),
        PARSE: (parse, None),
        FLOOR: ([*snakemake, "rules", "-s", str(one_rule), "-d", str(out.parent)], None),
        "python -m papermill --help": ([sys.executable, "-m", "papermill", "--help"], None),
        "python -m eoslab.notebooks --help (figure jobs)": ([sys.executable, "-m", "eoslab.notebooks", "--help"], None),
    }


def cost(cmd: list[str], before_run: Callable[[], None] | None = None) -> tuple[float, float]:
    """(CPU seconds of the child, wall seconds) of one run of ``cmd``."""
    if before_run is not None:
        before_run()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(Path(tmp) / "run.nc")
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
        for _ in range(args.repeats):
            for name, (cmd, before_run) in cmds.items():
                samples[name].append(cost(cmd, before_run))
    cpu = {k: statistics.median(c for c, _ in v) for k, v in samples.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in samples.items()}
    print(f"median of {args.repeats} fresh processes each, 1 thread; load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':48s} {'CPU s':>7s} {'wall s':>7s}")
    for k in cmds:
        print(f"{k:48s} {cpu[k]:7.2f} {wall[k]:7.2f}")
    extra = cpu[JOB] - cpu["import torch"]
    for ok, what in [
        (extra <= 0.4, f"a job's fixed cost beyond `import torch`: {extra:.2f} CPU s (target <= 0.4)"),
        (
            wall[PARSE] <= 1.5,
            f"a DAG parse, memo warm: {wall[PARSE]:.2f} wall s (target <= 1.5; Snakemake alone {wall[FLOOR]:.2f})",
        ),
    ]:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")


if __name__ == "__main__":
    main()
