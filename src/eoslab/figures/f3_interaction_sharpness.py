"""F3 — interaction-aware sharpness and implicit interaction regularisation (Lee & Jang, Figs. 1, 3, 4).

With S_b = E[g_b g_bᵀ] the second moment of the mini-batch gradient and H the full-batch Hessian, the
interaction-aware sharpness is ‖H‖_{S_b} = tr(H S_b)/tr(S_b) and ρ_b = tr(S_n)/tr(S_b) = ‖∇L‖²/E‖g_b‖². SGD is
unstable in expectation when tr(H S_b)/tr(S_n) > 2/η, i.e. ‖H‖_{S_b} > 2ρ_b/η (IIR: implicit interaction
regularisation keeps ‖H‖_{S_b} ≤ 2ρ_b/η). For GD ρ_n = 1 and ‖H‖_{S_n} = ∇LᵀH∇L/‖∇L‖² (the directional sharpness).
The runs measure the traces exactly from per-example gradients (``measure.interaction_exact``).
"""

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from eoslab import plotting
from eoslab.analysis import claim, normalized
from eoslab.papers import PAPERS


def _batch(runs: xr.Dataset, i: int) -> float:
    b = float(runs["optimizer.batch_size"].values[i]) if "optimizer.batch_size" in runs.coords else np.nan
    return b


def _series(runs: xr.Dataset, name: str, i: int) -> xr.DataArray:
    return normalized(runs, name).isel(run=i).dropna("step")


def gd_onset(runs: xr.Dataset, i: int) -> dict[str, Any]:
    """One GD run's onset: t_cross, the first measured step with ‖H‖·η/2 ≥ 1; ‖H‖_{S_n}·η/2 at the last
    measurement before it and its maximum over the next ``window`` steps; t_jump, the first step after t_cross with
    ‖H‖_{S_n}·η/2 ≥ 0.8; and the medians of ‖H‖·η/2 and ‖H‖_{S_n}·η/2 over t ≥ t_jump (after onset)."""
    full, inter = _series(runs, "sharpness", i), _series(runs, "directional_sharpness", i)
    steps = full.step.values
    t_cross = int(steps[np.argmax(full.values >= 1.0)]) if (full.values >= 1.0).any() else None
    out: dict[str, Any] = {"run": str(runs.run.values[i]), "eta": float(runs["eta"].values[i]), "t_cross": t_cross}
    if t_cross is None:
        return out
    after = inter.where(inter.step > t_cross, drop=True)
    jumped = after.where(after >= 0.8, drop=True)
    t_jump = int(jumped.step.values[0]) if jumped.size else None
    out |= {
        "directional_before_cross": float(inter.where(inter.step < t_cross, drop=True).values[-1]),
        "directional_max_after_cross": float(after.max()),
        "t_jump": t_jump,
        "jump_delay_steps": None if t_jump is None else t_jump - t_cross,
        "window_every": int(np.diff(after.step.values[:2])[0]) if after.size > 1 else None,
    }
    if t_jump is not None:
        out |= {
            "median_directional_after_onset": float(inter.where(inter.step >= t_jump).median()),
            "median_sharpness_after_onset": float(full.where(full.step >= t_jump).median()),
            "level_raw": float(inter.where(inter.step >= t_jump).median() * 2 / out["eta"]),
        }
    return out


def sgd_iir(runs: xr.Dataset, i: int, window_from: int) -> dict[str, Any]:
    """One SGD run over t ≥ ``window_from``: the median, min and max of ‖H‖_{S_b}·η/(2ρ_b), the median level
    ‖H‖_{S_b} (raw and ·η/2), the median ρ_b and the median ‖H‖·η/2."""
    eta = float(runs["eta"].values[i])
    inter = runs["interaction_sharpness"].isel(run=i)
    rho = runs["rho"].isel(run=i)
    late = runs.step >= window_from
    ratio = (inter * eta / (2 * rho)).where(late).dropna("step")
    return {
        "run": str(runs.run.values[i]),
        "batch_size": _batch(runs, i),
        "eta": eta,
        "n_measurements": int(ratio.size),
        "median_ratio": float(ratio.median()),
        "min_ratio": float(ratio.min()),
        "max_ratio": float(ratio.max()),
        "level_raw": float(inter.where(late).median()),
        "level": float(inter.where(late).median() * eta / 2),
        "median_rho": float(rho.where(late).median()),
        "median_sharpness": float(_series(runs, "sharpness", i).where(late).median()),
    }


def summary(runs: xr.Dataset, profile: str, window_from: int) -> dict[str, Any]:
    """The figure's numbers and claims (GD onset and level; SGD's IIR ratio and level against b)."""
    gd = [gd_onset(runs, i) for i in range(runs.sizes["run"]) if np.isnan(_batch(runs, i))]
    sgd = sorted(
        (sgd_iir(runs, i, window_from) for i in range(runs.sizes["run"]) if not np.isnan(_batch(runs, i))),
        key=lambda r: r["batch_size"],
    )
    base_eta = sgd[0]["eta"] if sgd else gd[0]["eta"]
    gd_base = [r for r in gd if r["eta"] == base_eta]
    levels = [r["level_raw"] for r in sgd] + [r.get("level_raw", np.nan) for r in gd_base]
    claims = []
    for r in gd:
        claims += [
            claim(
                f"GD η={r['eta']:g}: median ‖H‖_(S_n)·η/2 after onset",
                r.get("median_directional_after_onset"),
                (0.95, 1.05),
            ),
            claim(f"GD η={r['eta']:g}: median ‖H‖·η/2 after onset", r.get("median_sharpness_after_onset"), (1.0, None)),
            claim(
                f"GD η={r['eta']:g}: ‖H‖_(S_n)·η/2 at the last measurement before ‖H‖ crosses 2/η",
                r.get("directional_before_cross"),
                (None, 0.1),
            ),
            claim(
                f"GD η={r['eta']:g}: max ‖H‖_(S_n)·η/2 in the window after the crossing",
                r.get("directional_max_after_cross"),
                (0.8, None),
            ),
            claim(
                f"GD η={r['eta']:g}: steps from ‖H‖ crossing 2/η to ‖H‖_(S_n)·η/2 ≥ 0.8 (paper: a few)",
                r.get("jump_delay_steps"),
                asserted=False,
            ),
        ]
    for r in sgd:
        band = (0.85, 1.25) if r["batch_size"] < 32 else (0.9, 1.1)
        claims.append(
            claim(f"SGD b={r['batch_size']:g}: median ‖H‖_(S_b)·η/(2ρ_b), t ≥ {window_from}", r["median_ratio"], band)
        )
    claims.append(
        claim(
            "level of ‖H‖_(S_b) rises strictly with b (SGD b ascending, then GD)",
            levels,
            passed=bool(np.all(np.diff(levels) > 0)),
        )
    )
    return {
        "figure": "f3_interaction_sharpness",
        "profile": profile,
        "paper": PAPERS["iir"],
        "window_from": window_from,
        "gd": gd,
        "sgd": sgd,
        "levels_by_b": levels,
        "claims": claims,
    }


def plot(runs: xr.Dataset, summary: dict[str, Any]) -> Figure:
    """(a) GD: ‖H‖·η/2 and ‖H‖_{S_n}·η/2 against t; (b) the dense window around the onset; (c) SGD's
    ‖H‖_{S_b}·η/(2ρ_b) against t; (d) the level ‖H‖_{S_b}·η/2 against b beside ρ_b (the IIR bound 2ρ_b/η ·η/2)."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 7), layout="constrained")
    (a, b), (c, d) = axes
    gd = [i for i in range(runs.sizes["run"]) if np.isnan(_batch(runs, i))]
    styles = ["-", "--", ":"]
    for style, i in zip(styles, gd, strict=False):
        eta = float(runs["eta"].values[i])
        for ax in (a, b) if i == gd[0] else (a,):
            plotting.line(
                ax, _series(runs, "sharpness", i), color="tab:blue", linestyle=style, label=f"‖H‖, GD η={eta:g}"
            )
            plotting.line(
                ax,
                _series(runs, "directional_sharpness", i),
                color="tab:red",
                linestyle=style,
                marker="." if ax is b else None,
                label=f"‖H‖_(S_n), GD η={eta:g}",
            )
    first = summary["gd"][0]
    if first.get("t_cross") is not None:
        b.set_xlim(first["t_cross"] - 60, first["t_cross"] + 2.5 * (first.get("jump_delay_steps") or 60))
        b.axvline(first["t_cross"], color="0.5", linewidth=0.8, label="‖H‖ crosses 2/η")
    for ax, title in ((a, "(a) GD"), (b, f"(b) GD η={first['eta']:g}: onset (dense window)")):
        plotting.edge(ax)
        ax.set(title=title, xlabel="step t", ylabel="sharpness · η/2")
    a.legend(fontsize=7, loc="lower right")
    b.legend(fontsize=7, loc="lower right")
    sgd = sorted((i for i in range(runs.sizes["run"]) if not np.isnan(_batch(runs, i))), key=lambda i: _batch(runs, i))
    for color, i in zip(plotting.palette(len(sgd)), sgd, strict=True):
        ratio = runs["interaction_sharpness"].isel(run=i) * runs["eta"].values[i] / (2 * runs["rho"].isel(run=i))
        plotting.line(c, ratio, color=color, marker="o", markersize=3, label=f"SGD b={int(_batch(runs, i))}")
    c.axvspan(summary["window_from"], float(runs.step.max()), color="0.92", zorder=-1, label="median window")
    plotting.edge(c, "IIR bound 2ρ_b/η")
    c.set(title="(c) SGD: ‖H‖_(S_b) against its bound", xlabel="step t", ylabel="‖H‖_(S_b) · η/(2ρ_b)")
    c.legend(fontsize=7, loc="lower right")
    rows = summary["sgd"]
    bs = [r["batch_size"] for r in rows]
    gd_x = 2 * max(bs)
    gd_level = [r for r in summary["gd"] if r["eta"] == rows[0]["eta"] and "level_raw" in r]
    xs = bs + [gd_x] * len(gd_level)
    d.plot(
        xs,
        [r["level"] for r in rows] + [r["level_raw"] * r["eta"] / 2 for r in gd_level],
        "o-",
        label="level ‖H‖_(S_b)·η/2 (median)",
    )
    d.plot(xs, [r["median_rho"] for r in rows] + [1.0] * len(gd_level), "s--", label="bound ρ_b = (2ρ_b/η)·η/2")
    plotting.edge(d)
    d.set_xscale("log", base=2)
    d.set_xticks(xs, [f"{int(x)}" for x in bs] + ["GD"] * len(gd_level))
    d.set(title=f"(d) level against b (η={rows[0]['eta']:g})", xlabel="batch size b", ylabel="· η/2")
    d.legend(fontsize=7, loc="upper left")
    fig.suptitle("Interaction-aware sharpness ‖H‖_(S_b) = tr(HS_b)/tr(S_b) at the edge of stability")
    return fig
