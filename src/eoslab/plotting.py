"""Shared figure style and the plots of the figure notebooks (seaborn on matplotlib, PDF + PNG).

Every panel plots quantities normalised by the edge (x·η/2; the dashed line at 1 is 2/η), so runs with different
learning rates share one axis.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from eoslab.analysis import converged, normalized


def style() -> None:
    """The project's look: seaborn's ticks theme, paper context, colour-blind palette."""
    sns.set_theme(context="paper", style="ticks", palette="colorblind", font_scale=1.1)
    plt.rcParams.update(
        {"figure.dpi": 110, "savefig.bbox": "tight", "axes.spines.top": False, "axes.spines.right": False}
    )


def save(fig: Figure, prefix: str | Path, summary: dict[str, Any] | None = None) -> list[Path]:
    """Write ``<prefix>.pdf`` and ``<prefix>.png`` (and ``<prefix>.json`` with ``summary``); returns the paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_suffix(".pdf"), prefix.with_suffix(".png")]
    fig.savefig(paths[0])
    fig.savefig(paths[1], dpi=150)
    if summary is not None:
        paths.append(prefix.with_suffix(".json"))
        paths[-1].write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return paths


def edge(ax: Axes, label: str = "2/η") -> None:
    """The edge of stability, at 1 on the normalised axis."""
    ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label=label, zorder=0)


def run_label(runs: xr.Dataset, i: int) -> str:
    """'GD' or 'SGD b=…' (with η when the runs' learning rates differ), marked '(diverged at t=k)' if it did."""
    b = runs["optimizer.batch_size"].values[i] if "optimizer.batch_size" in runs.coords else np.nan
    label = "GD" if np.isnan(b) else f"SGD b={int(b)}"
    if "optimizer.lr" in runs.coords:
        label += f", η={float(runs['eta'].values[i]):g}"
    if "diverged" in runs.coords and runs["diverged"].values[i]:
        label += f" (diverged at t={int(runs['diverged_step'].values[i])})"
    return label


def palette(n: int) -> list:
    """``n`` sequential colours (small batch light → full batch dark)."""
    return sns.color_palette("viridis_r", n)


def sharpness_panels(runs: xr.Dataset, order: Sequence[int], extra: int = 0) -> tuple[Figure, np.ndarray]:
    """One panel per run: FullBS, per-batch MiniBS (cloud), average MiniBS and Batch Sharpness against t;
    plus ``extra`` empty panels on the right. Returns the figure and its axes."""
    n = len(order) + extra
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False, layout="constrained")
    full = normalized(runs, "sharpness")
    kept = converged(runs)  # a diverged run does not stretch the shared axis
    top = float(
        max(
            normalized(kept, "sharpness").max(),
            normalized(kept, "minibatch_sharpness").max() if "minibatch_sharpness" in kept else 0,
        )
    )
    for ax, i in zip(axes[0][: len(order)], order, strict=True):
        ax.set_ylim(0, 1.25 * top)
        if "minibatch_sharpness" in runs:
            cloud = runs["minibatch_sharpness"].isel(run=i) * runs["eta"].values[i] / 2
            xs = np.repeat(runs.step.values, cloud.sizes["batch_draw"])
            ax.scatter(xs, cloud.values.ravel(), s=3, color="tab:orange", alpha=0.15, linewidths=0)
            line(ax, normalized(runs, "minibatch_sharpness").isel(run=i), color="tab:orange", label="avg MiniBS")
            line(ax, normalized(runs, "batch_sharpness").isel(run=i), color="tab:green", label="Batch Sharpness")
        line(ax, full.isel(run=i), color="tab:blue", linewidth=2, label="FullBS")
        edge(ax)
        ax.set_title(run_label(runs, i))
        ax.set_xlabel("step t")
    axes[0, 0].set_ylabel("sharpness · η/2")
    axes[0, len(order) - 1].legend(loc="lower right", fontsize=8)
    return fig, axes[0]


def line(ax: Axes, da: xr.DataArray, scale: float = 1.0, **kwargs) -> None:
    """One run's curve against step·``scale``, skipping the steps it did not measure (runs are outer-joined)."""
    da = da.dropna("step")
    ax.plot(da.step.values * scale, da.values, **kwargs)


def plateau_vs_batch(ax: Axes, summary: list[dict[str, Any]]) -> None:
    """Second-half means of FullBS, average MiniBS and Batch Sharpness against the batch size (GD at the right)."""
    summary = [r for r in summary if not r["diverged"]]
    sgd = sorted((r for r in summary if r["batch_size"]), key=lambda r: r["batch_size"])
    gd_at = 2 * max((r["batch_size"] for r in sgd), default=1)
    rows = sgd + [r for r in summary if not r["batch_size"]]
    b = [r["batch_size"] or gd_at for r in rows]
    ax.plot(b, [r["fullbs_mean"] for r in rows], "o-", label="FullBS")
    if "avg_minibs_mean" in rows[0]:
        ax.plot(b, [r["avg_minibs_mean"] for r in rows], "s-", label="avg MiniBS")
        ax.plot(b, [r["batch_sharpness_mean"] for r in rows], "^-", label="Batch Sharpness")
    edge(ax)
    ax.set_xscale("log", base=2)
    ax.set_xticks(b, [f"{int(x)}" if x != gd_at else "GD" for x in b])
    ax.set_xlabel("batch size b")
    ax.set_ylabel("second-half mean · η/2")
    ax.legend(fontsize=8)


def curves(ax: Axes, runs: xr.Dataset, name: str, x: str, order: Sequence[int], **kwargs) -> None:
    """Raw ``name`` of the runs ``order`` against ``x`` = "t" (step) or "eta_t" (ηt), one colour per run, with
    each learning rate's 2/η as a dotted line."""
    da = normalized(runs, name, per_edge=False)
    etas = sorted({float(e) for e in runs["eta"].values})
    styles = dict(zip(etas, ["-", "--", "-.", ":"], strict=False))
    for color, i in zip(palette(len(order)), order, strict=True):
        eta = float(runs["eta"].values[i])
        scale = eta if x == "eta_t" else 1.0
        line(ax, da.isel(run=i), scale, color=color, linestyle=styles[eta], label=run_label(runs, i), **kwargs)
    for eta in etas:
        ax.axhline(2 / eta, color="0.3", linestyle=styles[eta], linewidth=0.8, zorder=0)
    ax.set_xlabel("ηt" if x == "eta_t" else "step t")
