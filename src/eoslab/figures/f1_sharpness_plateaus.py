"""F1: sharpness plateaus and the edge of stochastic stability (Andreyev & Beneventano, Figs. 1–2).

GD and SGD at several batch sizes, same η and initialisation. Per run: FullBS = λmax(∇²L), MiniBS = λmax(∇²L_B)
of fresh batches, their average, and Batch Sharpness E_B[g_BᵀH_Bg_B/‖g_B‖²], all ·η/2 (1 = the edge 2/η).
Claims: GD's FullBS sits at the edge; SGD's FullBS plateaus below it, rising with b; average MiniBS ≥ FullBS and
hovers at the edge (docs/f1_sharpness_plateaus.md).
"""

from itertools import pairwise
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from eoslab.analysis import (
    batch_size_of,
    claim,
    converged,
    mean,
    median,
    normalized,
    run_order,
    second_half,
    standard_error,
)
from eoslab.papers import PAPERS
from eoslab.plotting import CLOUD, QUANTITY, edge, grid, legend_below, line, run_label, style

FIGURE = "f1_sharpness_plateaus"
PAPER = PAPERS["eoss"]
Z = "minibs_minus_fullbs_min_z"


def plateau_rows(runs: xr.Dataset) -> list[dict[str, Any]]:
    """Per run: second-half mean and median of FullBS, average MiniBS and Batch Sharpness (all ·η/2), the most
    negative z-score (avg MiniBS − FullBS)/SE over all measurements, and the run's rule and batch size. A diverged
    run gets only its identity, ``diverged: True`` and ``diverged_step``: no plateau numbers."""
    full = normalized(runs, "sharpness")
    out = []
    for i, run in enumerate(runs.run.values):
        row: dict[str, Any] = {
            "run": str(run),
            "rule": str(runs["optimizer.rule"].values[i]) if "optimizer.rule" in runs.coords else None,
            "batch_size": batch_size_of(runs, i),
            "eta": float(runs["eta"].values[i]),
            "diverged": bool(runs["diverged"].values[i]),
        }
        if row["diverged"]:
            out.append(row | {"diverged_step": int(runs["diverged_step"].values[i])})
            continue
        row |= {
            "fullbs_mean": mean(second_half(full.isel(run=i))),
            "fullbs_median": median(second_half(full.isel(run=i))),
        }
        if "minibatch_sharpness" in runs:
            mini = normalized(runs, "minibatch_sharpness").isel(run=i)
            se = standard_error(runs, "minibatch_sharpness").isel(run=i)
            z = ((mini - full.isel(run=i)) / se).where(runs.step > 0)
            row |= {
                "avg_minibs_mean": mean(second_half(mini)),
                "batch_sharpness_mean": mean(second_half(normalized(runs, "batch_sharpness").isel(run=i))),
                Z: float(z.min(skipna=True)),
            }
        out.append(row)
    return out


def summary(runs: xr.Dataset, profile: str) -> dict[str, Any]:
    """The figure's JSON: per-run plateau numbers and the claims checked on them (tests/claims/test_f1_*.py)."""
    rows = plateau_rows(runs)
    kept = [r for r in rows if not r["diverged"]]
    gd = [r for r in kept if r["rule"] == "gd"]
    sgd = sorted((r for r in kept if r["batch_size"]), key=lambda r: r["batch_size"])
    plateaus = [r["fullbs_mean"] for r in sgd]
    claims = [
        claim("GD: second-half median of FullBS·η/2 (at the edge)", [r["fullbs_median"] for r in gd], (0.95, 1.15)),
        claim(
            "SGD: FullBS·η/2 plateau rises strictly with b (values by increasing b)",
            plateaus,
            passed=all(a < b for a, b in pairwise(plateaus)),
        ),
        claim("SGD: FullBS·η/2 plateau at the smallest b", plateaus[:1], (None, 0.7)),
        claim("SGD: every FullBS·η/2 plateau below the edge", plateaus, (None, 1.0)),
        claim(
            "SGD: min z of avg MiniBS − FullBS over all measurements",
            [r[Z] for r in sgd],
            (-3.0, None),
        ),
        claim(
            "SGD: second-half avg MiniBS·η/2 (hovers at the edge)", [r["avg_minibs_mean"] for r in sgd], (0.85, 1.15)
        ),
        claim(
            "SGD: second-half Batch Sharpness·η/2 at the edge (published version; reported, not asserted)",
            [r["batch_sharpness_mean"] for r in sgd],
            (0.85, 1.15),
            asserted=False,
        ),
    ]
    return {"figure": FIGURE, "profile": profile, "paper": PAPER, "runs": rows, "claims": claims}


def run_panel(ax: Axes, runs: xr.Dataset, i: int, top: float) -> None:
    """One run: the MiniBS cloud, average MiniBS, Batch Sharpness and FullBS (·η/2) against the step."""
    ax.set_ylim(0, 1.2 * top)
    if "minibatch_sharpness" in runs:
        cloud = runs["minibatch_sharpness"].isel(run=i) * runs["eta"].values[i] / 2
        ax.scatter(np.repeat(runs.step.values, cloud.sizes["batch_draw"]), cloud.values.ravel(), **CLOUD)
        for name in ("minibatch_sharpness", "batch_sharpness"):
            line(ax, normalized(runs, name).isel(run=i), **QUANTITY[name])
    line(ax, normalized(runs, "sharpness").isel(run=i), **QUANTITY["sharpness"])
    edge(ax)
    ax.set_title(run_label(runs, i))
    ax.set_xlabel("step t")
    ax.set_ylabel("sharpness · η/2")


def plateau_panel(ax: Axes, rows: list[dict[str, Any]]) -> None:
    """Second-half means of FullBS, average MiniBS and Batch Sharpness (·η/2) against b (GD at the right);
    diverged runs have none."""
    rows = [r for r in rows if not r["diverged"]]
    sgd = sorted((r for r in rows if r["batch_size"]), key=lambda r: r["batch_size"])
    gd_at = 2 * max((r["batch_size"] for r in sgd), default=1)
    rows = sgd + [r for r in rows if not r["batch_size"]]
    b = [r["batch_size"] or gd_at for r in rows]
    keys = [("sharpness", "fullbs_mean", "o")]
    if "avg_minibs_mean" in rows[0]:
        keys += [("minibatch_sharpness", "avg_minibs_mean", "s"), ("batch_sharpness", "batch_sharpness_mean", "^")]
    for name, key, marker in keys:
        ax.plot(b, [r.get(key, np.nan) for r in rows], marker=marker, **QUANTITY[name])
    edge(ax)
    ax.set_xscale("log", base=2)
    ax.set_xticks(b, [f"{int(x)}" if x != gd_at else "GD" for x in b])
    ax.set_xlabel("batch size b")
    ax.set_ylabel("second-half mean · η/2")
    ax.set_title("plateaus against b")


def plot(runs: xr.Dataset, summary: dict[str, Any]) -> Figure:
    """A grid: one panel per run (by increasing b, GD last), then the plateaus against b; one legend below."""
    style()
    order = run_order(runs)
    fig, axes = grid(len(order) + 1, ncols=3)
    kept = converged(runs)  # a diverged run does not stretch the shared axis
    top = float(normalized(kept, "sharpness").max())
    if "minibatch_sharpness" in kept:  # the cloud too, but for its outliers
        cloud = kept["minibatch_sharpness"] * kept["eta"] / 2
        top = max(top, float(cloud.quantile(0.99, skipna=True)))
    for ax, i in zip(axes, order, strict=False):
        run_panel(ax, runs, i, top)
    plateau_panel(axes[-1], summary["runs"])
    legend_below(fig, axes, ncols=5)
    fig.suptitle(f"Sharpness plateaus: GD at 2/η, SGD's FullBS below it, avg MiniBS at it (η = {float(runs.eta[0]):g})")
    return fig
