# eoslab: one notebook per figure family, fed by cached runs.
#
#   snakemake --cores all all                          # the default profile (embedded data)
#   snakemake --cores 2 all --config profile=smoke     # CI's reduced profile
#   snakemake --cores 8 all --config profile=paper     # the papers' datasets and sizes (GPU)
#
# The figures, their notebooks and their runs are listed in config/<profile>.yaml; this file only wires them:
#   run     data/runs/<family>/<name>-<config hash>.nc   one job per file (`eoslab <family command>`, default run);
#           a run started from another run's saved parameters (init.from) has that run's file as its input
#   figure  figures/<profile>/<figure>.{pdf,png,json}    papermill runs notebooks/<NN_name>.ipynb on the run files
# Jobs declare threads and resources and share nothing but files, so `--executor slurm` runs the same DAG.

import json
import shlex

from eoslab.pipeline import figure_runs, load_profile, profile_runs

PROFILE = config.get("profile", "default")
P = load_profile(PROFILE, workflow.basedir)
RUNS = {str(path): run for path, run in profile_runs(P).items()}
FIGURES = P["figures"]


def run_config(wc):
    return RUNS[f"data/runs/{wc.family}/{wc.run}.nc"]


def run_inputs(wc):
    source = run_config(wc).get("init", {}).get("file")
    return [source] if source else []


def run_command(wc):
    return P["families"][wc.family]["command"]


def run_resources(wc, key):
    family = P["families"][wc.family]
    return family.get("resources", {}).get(key, P["resources"][key])


def notebook_params(wc):
    params = {"runs": figure_runs(P, wc.figure), "out": f"figures/{PROFILE}/{wc.figure}", "profile": PROFILE}
    return shlex.quote(json.dumps(params | FIGURES[wc.figure]["params"]))


rule all:
    input:
        expand("figures/{profile}/{figure}.{ext}", profile=PROFILE, figure=FIGURES, ext=["pdf", "png", "json"]),


rule run:
    input:
        run_inputs,
    output:
        "data/runs/{family}/{run}.nc",
    params:
        command=run_command,
        config=lambda wc: shlex.quote(json.dumps(run_config(wc))),
    threads: P["threads"]
    resources:
        mem_mb=lambda wc: run_resources(wc, "mem_mb"),
        runtime=lambda wc: run_resources(wc, "runtime"),
    log:
        "logs/runs/{family}/{run}.log",
    benchmark:
        "logs/benchmarks/runs/{family}/{run}.tsv"
    shell:
        "eoslab {params.command} --json {params.config} --out {output} --threads {threads} --quiet 2> {log}"


rule figure:
    input:
        runs=lambda wc: [f for files in figure_runs(P, wc.figure).values() for f in files],
        notebook=lambda wc: f"notebooks/{FIGURES[wc.figure]['notebook']}.ipynb",
    output:
        pdf=f"figures/{PROFILE}/{{figure}}.pdf",
        png=f"figures/{PROFILE}/{{figure}}.png",
        json=f"figures/{PROFILE}/{{figure}}.json",
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
        "papermill {input.notebook} {output.notebook} -y {params.notebook} --cwd . -k python3 > {log} 2>&1"
