"""The project's one visual language (seaborn on matplotlib, PDF + PNG + JSON), used by every figure module.

- Units: quantities normalised by the edge, x·η/2, so the dashed reference line at 1 is 2/η and runs with
  different learning rates share one axis (:func:`eoslab.analysis.normalized`).
- Colours: the Okabe–Ito colour-blind-safe palette; each quantity keeps one colour and one line style
  (:data:`QUANTITY`), ordered runs get light→dark colours plus markers and dashes (:func:`run_styles`), so every
  curve stays distinguishable in grey.
- Layout: a grid of panels (:func:`grid`), one legend below them (:func:`legend_below`), every reference line
  labelled in it, every axis labelled with its unit, a title on every figure.
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

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
"""Okabe & Ito's colour-blind-safe palette (blue, orange, bluish green, vermillion, purple, sky blue, yellow)."""

QUANTITY: dict[str, dict[str, Any]] = {
    "sharpness": {"color": "#0072B2", "linestyle": "-", "linewidth": 2.0, "label": "FullBS"},
    "minibatch_sharpness": {"color": "#D55E00", "linestyle": "--", "linewidth": 1.5, "label": "avg MiniBS"},
    "batch_sharpness": {"color": "#009E73", "linestyle": ":", "linewidth": 1.8, "label": "Batch Sharpness"},
}
"""One look per quantity in every figure: colour AND line style, so the curves stay apart in grey."""

CLOUD = {"s": 4, "color": "#E69F00", "alpha": 0.25, "linewidths": 0, "label": "MiniBS (each batch)"}
"""The per-batch MiniBS scatter."""

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DASHES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1))]


def style() -> None:
    """The project's look: seaborn's ticks theme, paper context, the Okabe–Ito palette, no top/right spines."""
    sns.set_theme(context="paper", style="ticks", palette=OKABE_ITO, font_scale=1.1)
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.bbox": "tight",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "legend.frameon": False,
        }
    )


def grid(n: int, ncols: int = 3, size: tuple[float, float] = (3.4, 2.8), **kwargs) -> tuple[Figure, np.ndarray]:
    """A figure with ``n`` panels in rows of ``ncols`` (unused cells removed); returns the figure and a flat array
    of the ``n`` axes."""
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows + 0.8), squeeze=False, layout="constrained", **kwargs
    )
    for ax in axes.flat[n:]:
        ax.remove()
    return fig, axes.flat[:n]


def legend_below(fig: Figure, axes: Sequence[Axes], ncols: int = 4) -> None:
    """One legend for the whole figure, below the panels (off the data): every labelled artist, once."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    legend = fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=ncols)
    for handle in legend.legend_handles:
        if hasattr(handle, "set_sizes"):  # scatter clouds: a visible dot in the legend
            handle.set_sizes([25])
            handle.set_alpha(0.8)


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


def edge(ax: Axes, label: str = "2/η (edge of stability)", at: float = 1.0, **kwargs) -> None:
    """The edge of stability as a labelled reference line, at 1 on the normalised axis (``at`` elsewhere)."""
    ax.axhline(at, color="0.3", linestyle=kwargs.pop("linestyle", (0, (6, 3))), linewidth=1, label=label, zorder=0)


def run_label(runs: xr.Dataset, i: int) -> str:
    """'GD' or 'SGD b=…' (with η when the runs' learning rates differ), marked '(diverged at t=k)' if it did."""
    b = runs["optimizer.batch_size"].values[i] if "optimizer.batch_size" in runs.coords else np.nan
    label = "GD" if np.isnan(b) else f"SGD b={int(b)}"
    if "optimizer.lr" in runs.coords:
        label += f", η={float(runs['eta'].values[i]):g}"
    if "diverged" in runs.coords and runs["diverged"].values[i]:
        label += f" (diverged at t={int(runs['diverged_step'].values[i])})"
    return label


def run_styles(n: int) -> list[dict[str, Any]]:
    """Line styles of ``n`` ordered runs (e.g. by batch size): viridis sampled far apart (light → dark, so the
    order survives in grey) plus a marker and a dash pattern each, so neighbours differ by more than a shade."""
    colors = sns.color_palette("viridis_r", n + 1)[1:] if n > 1 else ["#0072B2"]
    return [
        {"color": c, "marker": MARKERS[i % len(MARKERS)], "linestyle": DASHES[i % len(DASHES)], "markevery": 0.12}
        for i, c in enumerate(colors)
    ]


def palette(n: int) -> list:
    """The colours of :func:`run_styles`."""
    return [s["color"] for s in run_styles(n)]


def line(ax: Axes, da: xr.DataArray, scale: float = 1.0, **kwargs) -> None:
    """One run's curve against step·``scale``, skipping the steps it did not measure (runs are outer-joined)."""
    da = da.dropna("step")
    ax.plot(da.step.values * scale, da.values, **kwargs)


def hide_empty(fig: Figure) -> None:
    """Hide the panels of a grid that nothing was drawn on (a profile without some runs)."""
    for ax in fig.axes:
        if not ax.has_data():
            ax.set_visible(False)
