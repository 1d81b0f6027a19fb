"""F6 — divergence limits (Fox 2023, Ch. 4): the first diverging constant step size, Tables 4.1 and 4.2.

The thesis's Algorithm 2 (``eoslab limit``, :mod:`eoslab.limits`) on its synthetic regression (n = 100, 3×10 MLP,
nn.MSELoss): for GD (η₀ = 0.1) and SGD with b = 1 (η₀ = 0.01), T = 100 steps, β = 1.01, max_lr = the mean over R
repetitions of the first η whose loss becomes NaN/±inf. The thesis's tables sit next to ours with the ratio; the
bisection (one fixed initialisation per repetition) runs on the same settings for comparison.
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from eoslab.analysis import claim
from eoslab.papers import PAPERS
from eoslab.plotting import hide_empty
from eoslab.store import open_run

ACTIVATIONS = ("linear", "tanh", "relu", "sigmoid")
THESIS = {
    "gd": {"linear": 0.38433, "tanh": 3.12765, "relu": 2.26166, "sigmoid": 12.58223},
    "sgd": {"linear": 0.05842, "tanh": 1.44604, "relu": 0.19952, "sigmoid": 9.17098},
}
"""Fox's Table 4.1 (GD) and Table 4.2 (SGD, b = 1): mean first diverging η over R = 10 repetitions."""
BAND = 0.25  # ours within ±25 % of the thesis (linear, tanh, sigmoid)
AGREE = 0.05  # scan and bisection within 5 % on sigmoid GD
SWEEPS = {"limits_width": "model.width", "limits_depth": "model.depth", "limits_n": "data.n"}


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        out |= _flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value}
    return out


def load(paths: Sequence[str]) -> list[dict[str, Any]]:
    """One row per limit file: its flattened config, max_lr, its spread over repetitions, trials and runtime."""
    rows = []
    for path in paths:
        ds = open_run(path)
        reps = ds.limit_max_lr.values
        rows.append(
            _flat(json.loads(ds.attrs["config"]))
            | {
                "max_lr": float(ds.attrs["max_lr"]),
                "max_lr_std": float(ds.attrs["max_lr_std"]),
                "min": float(np.min(reps)),
                "max": float(np.max(reps)),
                "repetitions": reps.tolist(),
                "n_trials": int(ds.attrs["n_trials"]),
                "cpu_time_s": float(ds.attrs["cpu_time_s"]),
            }
        )
    return rows


def _pick(rows: list[dict[str, Any]], activation: str) -> dict[str, Any]:
    (row,) = [r for r in rows if r["model.activation"] == activation]
    return row


def tables(runs: Mapping[str, Sequence[str]]) -> dict[str, list[dict[str, Any]]]:
    """Per rule ("gd", "sgd"): our scan next to the thesis and to our bisection, one row per activation."""
    out = {}
    for rule in ("gd", "sgd"):
        scan, bis = load(runs[f"limits_{rule}"]), load(runs[f"limits_bisect_{rule}"])
        out[rule] = [
            {
                "activation": act,
                "ours": _pick(scan, act)["max_lr"],
                "ours_std": _pick(scan, act)["max_lr_std"],
                "ours_min": _pick(scan, act)["min"],
                "ours_max": _pick(scan, act)["max"],
                "ours_repetitions": _pick(scan, act)["repetitions"],
                "thesis": THESIS[rule][act],
                "ratio": _pick(scan, act)["max_lr"] / THESIS[rule][act],
                "bisect": _pick(bis, act)["max_lr"],
                "bisect_gap": _pick(bis, act)["max_lr"] / _pick(scan, act)["max_lr"] - 1,
                "scan_trials": _pick(scan, act)["n_trials"],
                "scan_cpu_s": _pick(scan, act)["cpu_time_s"],
                "bisect_trials": _pick(bis, act)["n_trials"],
                "bisect_cpu_s": _pick(bis, act)["cpu_time_s"],
                "R": _pick(scan, act)["search.R"],
            }
            for act in ACTIVATIONS
        ]
    return out


def sweeps(runs: Mapping[str, Sequence[str]]) -> dict[str, list[dict[str, Any]]]:
    """Figs. 4.2–4.4 (default profile): max_lr against width, depth (Linear layers) or n, per activation."""
    out = {}
    for family, key in SWEEPS.items():
        if family in runs:
            rows = load(runs[family])
            out[family] = [
                {"activation": r["model.activation"], "x": r[key] + (key == "model.depth"), "max_lr": r["max_lr"]}
                for r in sorted(rows, key=lambda r: (r["model.activation"], r[key]))
            ]
    return out


def summary(runs: Mapping[str, Sequence[str]], profile: str) -> dict[str, Any]:
    """The figure's JSON: both tables with the thesis's numbers and ratios, the sweeps, and the claims."""
    tab = tables(runs)
    v = {rule: {r["activation"]: r for r in rows} for rule, rows in tab.items()}
    claims = []
    for rule, name in (("gd", "Table 4.1 (GD)"), ("sgd", "Table 4.2 (SGD, b = 1)")):
        for act in ("linear", "tanh", "sigmoid"):
            claims.append(claim(f"{name}, {act}: ours / thesis within ±25 %", v[rule][act]["ratio"], (0.75, 1.25)))
        order = [v[rule][a]["ours"] for a in ("sigmoid", "tanh", "linear")]
        claims.append(claim(f"{name}: sigmoid > tanh > linear", order, passed=bool(order[0] > order[1] > order[2])))
        relu_lin = [v[rule]["relu"]["ours"], v[rule]["linear"]["ours"]]
        claims.append(claim(f"{name}: relu > linear", relu_lin, passed=bool(relu_lin[0] > relu_lin[1])))
        relu = v[rule]["relu"]
        inside = relu["ours_min"] <= relu["thesis"] <= relu["ours_max"]
        claims.append(
            claim(
                f"{name}, relu: the thesis's {relu['thesis']:g} lies within our repetitions' range "
                "(asserted only where it does: relu's threshold swings with the initialisation)",
                relu["thesis"],
                (relu["ours_min"], relu["ours_max"]),
                asserted=inside,
            )
        )
    tanh_relu = [v["sgd"]["tanh"]["ours"], v["sgd"]["relu"]["ours"]]
    claims.append(claim("Table 4.2: tanh > relu for SGD", tanh_relu, passed=bool(tanh_relu[0] > tanh_relu[1])))
    below = [v["sgd"][a]["ours"] / v["gd"][a]["ours"] for a in ACTIVATIONS]
    claims.append(claim("SGD (b = 1) below GD for every activation: SGD/GD", below, (None, 1.0 - 1e-12)))
    claims.append(
        claim("sigmoid GD: bisection within 5 % of the scan", v["gd"]["sigmoid"]["bisect_gap"], (-AGREE, AGREE))
    )
    for rule in ("gd", "sgd"):
        for act in ACTIVATIONS:
            if (rule, act) != ("gd", "sigmoid"):
                gap = v[rule][act]["bisect_gap"]
                claims.append(claim(f"{rule} {act}: bisection / scan − 1 (reported)", gap, asserted=False))
    sw = sweeps(runs)
    for family, label in (("limits_width", "width 1 → 100"),):
        for act in ("linear", "sigmoid"):
            rows = [r for r in sw.get(family, []) if r["activation"] == act]
            if rows:
                change = abs(rows[-1]["max_lr"] - rows[0]["max_lr"])
                text = f"{act}: max_lr changes by < 0.3 over {label} (Fox §4, reported)"
                claims.append(claim(text, change, (None, 0.3), asserted=False))
    return {
        "figure": "f6_divergence_limits",
        "profile": profile,
        "paper": PAPERS["fox"],
        "tables": tab,
        "sweeps": sw,
        "claims": claims,
    }


def plot(summary: Mapping[str, Any]) -> Figure:
    """Tables 4.1/4.2 as bars (ours: mean, repetitions as dots; the thesis: hatched), ours/thesis with the ±25 %
    band and scan vs bisection, and the sweeps where the profile has them."""
    n_sweeps = len(summary["sweeps"])
    ncols = 2 if n_sweeps == 0 else 3
    nrows = 2 if n_sweeps == 0 else 3 if n_sweeps > 2 else 2
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained", squeeze=False)
    colors = sns.color_palette("colorblind", 4)
    x = np.arange(len(ACTIVATIONS))
    for ax, (rule, title) in zip(axes[0], (("gd", "Table 4.1: GD"), ("sgd", "Table 4.2: SGD, b = 1")), strict=False):
        rows = summary["tables"][rule]
        ax.bar(x - 0.2, [r["ours"] for r in rows], 0.4, color=colors[0], label="ours (scan, mean)")
        ax.bar(x + 0.2, [r["thesis"] for r in rows], 0.4, color="white", edgecolor=colors[1], hatch="//",
               label="Fox (2023)")  # fmt: skip
        for i, r in enumerate(rows):
            ax.plot([i - 0.2] * len(r["ours_repetitions"]), r["ours_repetitions"], "k.", ms=4,
                    label="repetitions" if i == 0 else None)  # fmt: skip
            ax.plot(i - 0.2, r["bisect"], marker="D", color=colors[2], ms=5, ls="none",
                    label="bisection (mean)" if i == 0 else None)  # fmt: skip
        ax.set_yscale("log")
        ax.set_xticks(x, ACTIVATIONS)
        ax.set_ylabel("first diverging step size η")
        ax.set_title(title)
        ax.legend(fontsize=7, loc="upper left")
    ax = axes[1, 0]
    for k, (rule, marker) in enumerate((("gd", "o"), ("sgd", "s"))):
        rows = summary["tables"][rule]
        ax.plot(x + 0.1 * (k - 0.5), [r["ratio"] for r in rows], marker, color=colors[k], label=rule.upper())
    ax.axhspan(1 - BAND, 1 + BAND, color="0.85", zorder=0, label="±25 % band")
    ax.axhline(1.0, color="0.3", ls="--", lw=1, label="thesis")
    ax.set_xticks(x, ACTIVATIONS)
    ax.set_ylabel("ours / thesis")
    ax.set_title("Ratio to the thesis")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    for k, (rule, marker) in enumerate((("gd", "o"), ("sgd", "s"))):
        rows = summary["tables"][rule]
        ax.plot(x + 0.1 * (k - 0.5), [r["bisect"] / r["ours"] for r in rows], marker, color=colors[k],
                label=rule.upper())  # fmt: skip
    ax.axhspan(1 - AGREE, 1 + AGREE, color="0.85", zorder=0, label="±5 %")
    ax.axhline(1.0, color="0.3", ls="--", lw=1)
    ax.set_xticks(x, ACTIVATIONS)
    ax.set_ylabel("bisection / scan")
    ax.set_title("Fixed initialisation vs fresh draws")
    ax.legend(fontsize=7)
    spare = [a for row in axes for a in row if not a.has_data()]
    labels = {"limits_width": "width (units per layer)", "limits_depth": "Linear layers", "limits_n": "examples n"}
    for ax, (family, rows) in zip(spare, summary["sweeps"].items(), strict=False):
        for act, color in zip(ACTIVATIONS, colors, strict=True):
            pts = [(r["x"], r["max_lr"]) for r in rows if r["activation"] == act]
            ax.plot(*zip(*pts, strict=True), "o-", color=color, label=act)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(labels[family])
        ax.set_ylabel("first diverging η (GD)")
        ax.set_title(f"Sweep: {labels[family]}")
        ax.legend(fontsize=7)
    hide_empty(fig)
    fig.suptitle("Divergence limits of GD and SGD (Fox 2023, Tables 4.1–4.2)")
    return fig
