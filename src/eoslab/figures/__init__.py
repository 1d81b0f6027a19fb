"""One module per figure family: its claim numbers (``summary``) and its plot, side by side.

``eoslab.figures.fN_<name>`` holds what the notebook ``notebooks/NN_<name>.ipynb`` calls: a function computing the
figure's summary (the numbers its claims are asserted on, written to ``figures/<profile>/<figure>.json``) from the
stacked runs, and the plotting function(s) of its panels. Shared helpers live in :mod:`eoslab.analysis` (selection,
normalisation by the edge) and :mod:`eoslab.plotting` (style, saving, reference lines).
"""

import os
from pathlib import Path
from typing import Any

from eoslab.pipeline import figure_runs, load_profile, repo_root


def notebook_inputs(
    figure: str, profile: str, runs: dict[str, list[str]] | None = None, out: str | None = None
) -> tuple[dict[str, Any], dict[str, list[str]], str]:
    """(profile, run files, output prefix) of a figure notebook, after moving to the repository root.

    Under papermill from the DAG, ``runs`` and ``out`` are given. By hand they come from the profile: the run files
    must exist (the error says how to make them or to switch to the smoke profile), and the figure goes to
    ``results/explore/<profile>/`` so that exploring never overwrites the DAG's ``figures/<profile>/``.
    """
    os.chdir(repo_root())
    pipeline = load_profile(profile)
    runs = runs or figure_runs(pipeline, figure)
    missing = [f for files in runs.values() for f in files if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} run file(s) of the {profile!r} profile are missing, e.g. {missing[0]}. Make them with "
            f"`snakemake --cores 2 all --config profile={profile}` (or `make figures PROFILE={profile}`), or set "
            'profile = "smoke" in the parameters cell after `make smoke`.'
        )
    return pipeline, runs, out or f"results/explore/{profile}/{figure}"
