"""F2: the two phases of progressive sharpening (Andreyev & Beneventano §4, Fig. 3).

A grid of (η, b): FullBS and average MiniBS against steps t and against "time" ηt. Claims: in phase 1 every run
sharpens along one curve in ηt; in phase 2 the FullBS curves separate by b while average MiniBS stays together,
and FullBS sharpens faster for larger b (docs/f2_progressive_sharpening.md).
"""

from itertools import pairwise
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from eoslab.analysis import at_time, claim, converged, normalized, run_order, slope, spread
from eoslab.papers import PAPERS
from eoslab.plotting import QUANTITY, edge, grid, legend_below, line, run_label, run_styles, style

FIGURE = "f2_progressive_sharpening"
PAPER = PAPERS["eoss"]


def phase_summary(
    runs: xr.Dataset, compare_at: float, phase1: tuple[float, float], phase2: tuple[float, float]
) -> dict[str, Any]:
    """The two phases of progressive sharpening on the ηt axis.

    - ``phase1_max_rel_dev``: over ηt in ``phase1``, the largest (max − min)/mean of the raw FullBS λ across all
      runs (the paper's collapse is of λ against ηt, whatever η);
    - at ηt = ``compare_at`` (phase 2), FullBS and average MiniBS (·η/2) of the SGD runs at the first η and their
      spreads across b;
    - ``phase2_slope``: the slope of FullBS·η/2 against ηt over ``phase2``, per SGD run.

    Diverged runs are left out.
    """
    runs = converged(runs)
    grid_t = np.linspace(*phase1, 9)
    curves = xr.concat([at_time(runs, "sharpness", t, per_edge=False) for t in grid_t], dim="eta_t")
    rel_dev = float(((curves.max("run") - curves.min("run")) / curves.mean("run")).max())
    sgd = [i for i in run_order(runs) if np.isfinite(float(runs["optimizer.batch_size"].values[i]))]
    base_eta = float(runs["eta"].values[sgd[0]])
    sub = runs.isel(run=[i for i in sgd if float(runs["eta"].values[i]) == base_eta])
    full_at = at_time(sub, "sharpness", compare_at)
    mini_at = at_time(sub, "minibatch_sharpness", compare_at)
    return {
        "phase1_window": list(phase1),
        "phase1_max_rel_dev": rel_dev,
        "compare_at_eta_t": compare_at,
        "eta": base_eta,
        "batch_sizes": [float(b) for b in sub["optimizer.batch_size"].values],
        "fullbs_at": full_at.values.tolist(),
        "avg_minibs_at": mini_at.values.tolist(),
        "fullbs_spread": spread(full_at),
        "avg_minibs_spread": spread(mini_at),
        "phase2_window": list(phase2),
        "phase2_slope": slope(sub, "sharpness", phase2).values.tolist(),
    }


def summary(
    runs: xr.Dataset, profile: str, compare_at: float, phase1: tuple[float, float], phase2: tuple[float, float]
) -> dict[str, Any]:
    """The figure's JSON: :func:`phase_summary` and the claims checked on it (tests/claims/test_f2_*.py)."""
    s = phase_summary(runs, compare_at, phase1, phase2)
    slopes = [s["phase2_slope"][i] for i in np.argsort(s["batch_sizes"])]
    claims = [
        claim(
            "phase 1: max relative spread of FullBS across all runs on the ηt axis",
            s["phase1_max_rel_dev"],
            (None, 0.15),
        ),
        claim(
            f"phase 2 (ηt = {compare_at:g}): spread across b of avg MiniBS / spread of FullBS",
            s["avg_minibs_spread"] / s["fullbs_spread"],
            (None, 1.0),
            passed=s["avg_minibs_spread"] < s["fullbs_spread"],
        ),
        claim(
            "phase 2: slope of FullBS·η/2 against ηt rises with b (values by increasing b)",
            slopes,
            passed=all(a < b for a, b in pairwise(slopes)),
        ),
    ]
    return {"figure": FIGURE, "profile": profile, "paper": PAPER} | s | {"claims": claims}


def curves_panel(ax: Axes, runs: xr.Dataset, name: str, x: str, order: list[int], eta0: float) -> None:
    """``name``·η₀/2 of the runs ``order`` against ``x`` = "t" or "eta_t", one style per run, each η's edge."""
    da = normalized(runs, name, per_edge=False) * eta0 / 2
    for style_, i in zip(run_styles(len(order)), order, strict=True):
        scale = float(runs["eta"].values[i]) if x == "eta_t" else 1.0
        line(ax, da.isel(run=i), scale, label=run_label(runs, i), linewidth=1.4, **style_)
    for eta in sorted({float(e) for e in runs["eta"].values}, reverse=True):
        edge(ax, f"2/η, η = {eta:g}", at=eta0 / eta, linestyle=(0, (6, 3)) if eta == eta0 else (0, (1, 2)))
    ax.set_xlabel("ηt (learning rate × step)" if x == "eta_t" else "step t")
    ax.set_ylabel(f"sharpness · η₀/2 (η₀ = {eta0:g})")
    ax.set_title(f"{QUANTITY[name]['label']} against {'ηt' if x == 'eta_t' else 't'}")


def plot(runs: xr.Dataset, summary: dict[str, Any]) -> Figure:
    """2 × 2 grid: FullBS | avg MiniBS (columns) against t | ηt (rows), in units of the first η's edge, with the
    phase-1 window and the phase-2 comparison time; one legend below."""
    style()
    order = run_order(runs)
    eta0 = summary["eta"]
    fig, axes = grid(4, ncols=2, size=(4.6, 3.2), sharey=True)
    for k, (x, name) in enumerate([(x, n) for x in ("t", "eta_t") for n in ("sharpness", "minibatch_sharpness")]):
        curves_panel(axes[k], runs, name, x, order, eta0)
    for ax in axes[2:]:
        ax.axvspan(*summary["phase1_window"], color="0.88", zorder=-1, label="phase-1 window (claim i)")
        ax.axvline(
            summary["compare_at_eta_t"],
            color="0.4",
            linestyle="-.",
            linewidth=1,
            label=f"ηt = {summary['compare_at_eta_t']:g}: phase-2 comparison (claim ii)",
        )
    legend_below(fig, axes, ncols=4)
    fig.suptitle("Progressive sharpening: one curve in ηt (phase 1), then FullBS separates by b (phase 2)")
    return fig
