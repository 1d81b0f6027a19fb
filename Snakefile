# eoslab: one notebook per figure family, fed by cached runs.
#
#   snakemake --cores all all                          # the default profile (embedded data)
#   snakemake --cores 2 all --config profile=smoke     # CI's reduced profile
#   snakemake --cores 8 all --config profile=paper     # the papers' datasets and sizes (GPU)
#
# The figures, their notebooks and their runs are listed in config/<profile>.yaml; this file only wires them:
#   run     data/runs/<family>/<name>-<config hash>.nc   one job per file (`eoslab <family command>`, default run);
#           a run started from another run's saved parameters (init.from) has that run's file as its input
#   batch_<family>  the same files, for a family the profile's `batch` names: one job makes them all in turn
#           (`eoslab batch`), so a job's start-up (Python, torch, xarray: ~4 CPU s) is paid once for its many short
#           runs; the run rule does not match them. A killed batch job reruns whole (its runs are short by design).
#   figure  figures/<profile>/<figure>.{pdf,png,json}    papermill runs notebooks/<NN_name>.ipynb on the run files
#   report  figures/<profile>/index.html                 every figure, its paper and claims (eoslab.report)
# Jobs declare threads and resources and share nothing but files, so `--executor slurm` runs the same DAG.
# Parsing this file imports no torch: validated configs and the run files found intact are remembered in
# .snakemake/eoslab/ (keyed by the configs' text and the package's sources), so an unchanged DAG parses in ~1 s.
#
# Recovery: a killed `eoslab run` resumes from its checkpoint when rerun (partial results never sit at the run
# file's path); a run file that is unreadable, fails its checksums or is unfinished is moved to <file>.corrupt
# below and made again. After a killed Snakemake, `make figures` recovers on its own; by hand:
#   snakemake --unlock && snakemake --cores all all --rerun-incomplete   (profiles/default sets rerun-incomplete)
# A failed figure job restores the previous figure files (update() outputs) instead of deleting them.

import json
import shlex
import sys

from eoslab.pipeline import (
    batch_jobs,
    batch_runtime_request,
    family_pattern,
    family_resource,
    figure_runs,
    load_profile,
    profile_runs,
    runtime_request,
    set_aside_broken,
)

PROFILE = config.get("profile", "default")
P = load_profile(PROFILE, workflow.basedir)
RUNS = {str(path): run for path, run in profile_runs(P).items()}
BATCHES = batch_jobs(P)  # batched family -> its files (outputs), inputs and `eoslab batch` items
FIGURES = P["figures"]
PYTHON = shlex.quote(sys.executable)  # the interpreter running Snakemake: .venv/bin/snakemake works unactivated
for broken in set_aside_broken(RUNS, memo=f".snakemake/eoslab/intact-{PROFILE}.json"):
    print(f"eoslab: {broken} is unreadable, corrupt or unfinished: moved to {broken}.corrupt, it will be remade",
          file=sys.stderr)


def run_config(wc):
    return RUNS[f"data/runs/{wc.family}/{wc.run}.nc"]


def run_inputs(wc):
    source = run_config(wc).get("init", {}).get("file")
    return [source] if source else []


def run_command(wc):
    return P["families"][wc.family]["command"]


def run_resources(wc, key):
    return family_resource(P, wc.family, key)


def run_runtime(wc):
    """The profile's runtime (minutes) with headroom, or what an interrupted attempt measured (pipeline)."""
    out = f"data/runs/{wc.family}/{wc.run}.nc"
    return runtime_request(run_resources(wc, "runtime"), out, RUNS[out]["steps"])


def batch_runtime(family):
    """As run_runtime, the needs of the family's runs summed (pipeline.batch_runtime_request)."""
    files = BATCHES[family]["files"]
    return batch_runtime_request(family_resource(P, family, "runtime"), {out: RUNS[out]["steps"] for out in files})


def notebook_params(wc):
    params = {"runs": figure_runs(P, wc.figure), "out": f"figures/{PROFILE}/{wc.figure}", "profile": PROFILE}
    return shlex.quote(json.dumps(params | FIGURES[wc.figure]["params"]))


rule all:
    input:
        expand("figures/{profile}/{figure}.{ext}", profile=PROFILE, figure=FIGURES, ext=["pdf", "png", "json"]),
        f"figures/{PROFILE}/index.html",


rule report:
    input:
        json=expand("figures/{profile}/{figure}.json", profile=PROFILE, figure=FIGURES),
        png=expand("figures/{profile}/{figure}.png", profile=PROFILE, figure=FIGURES),
        notebooks=expand("results/{profile}/notebooks/{figure}.ipynb", profile=PROFILE, figure=FIGURES),
    output:
        f"figures/{PROFILE}/index.html",
    localrule: True
    shell:
        "{PYTHON} -m eoslab.report --profile {PROFILE} --out {output} {input.json}"


rule run:
    input:
        run_inputs,
    output:
        "data/runs/{family}/{run}.nc",
    wildcard_constraints:
        family=family_pattern(BATCHES),  # not a batched family's files: their batch job makes them
    params:
        command=run_command,
        config=lambda wc: shlex.quote(json.dumps(run_config(wc))),
    threads: P["threads"]
    resources:
        mem_mb=lambda wc: run_resources(wc, "mem_mb"),
        runtime=run_runtime,
    log:
        "logs/runs/{family}/{run}.log",
    benchmark:
        "logs/benchmarks/runs/{family}/{run}.tsv"
    shell:
        "{PYTHON} -m eoslab.cli {params.command} --json {params.config} --out {output} --threads {threads} --quiet 2> {log}"


for family, job in BATCHES.items():  # values reach the rule through strings and default arguments, not late binding

    rule:
        name:
            f"batch_{family}"
        input:
            job["inputs"],
        output:
            job["files"],
        params:
            batch_items=shlex.quote(json.dumps(job["items"])),
        threads: P["threads"]
        resources:
            mem_mb=family_resource(P, family, "mem_mb"),
            runtime=lambda wc, family=family: batch_runtime(family),
        log:
            f"logs/batches/{PROFILE}/{family}.log",
        benchmark:
            f"logs/benchmarks/batches/{PROFILE}/{family}.tsv"
        shell:
            "{PYTHON} -m eoslab.cli batch --json {params.batch_items} --threads {threads} --quiet 2> {log}"


rule figure:
    input:
        runs=lambda wc: [f for files in figure_runs(P, wc.figure).values() for f in files],
        notebook=lambda wc: f"notebooks/{FIGURES[wc.figure]['notebook']}.ipynb",
    output:
        pdf=update(f"figures/{PROFILE}/{{figure}}.pdf"),
        png=update(f"figures/{PROFILE}/{{figure}}.png"),
        json=update(f"figures/{PROFILE}/{{figure}}.json"),
        notebook=f"results/{PROFILE}/notebooks/{{figure}}.ipynb",
    params:
        notebook=notebook_params,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    log:
        f"logs/figures/{PROFILE}/{{figure}}.log",
    shell:
        "{PYTHON} -m eoslab.notebooks {input.notebook} {output.notebook} -y {params.notebook} --cwd . -k python3 > {log} 2>&1"
