"""F4 — the linear-and-saturation scaling rule, LSSR (Lee & Jang §5.2, Fig. 5).

ρ_b = tr(S_n)/tr(S_b) = ‖∇L‖²/E‖g_b‖² obeys eq. 12, ρ_b = 1/[(γ_{n,b}/b)/ρ + 1 − γ_{n,b}/b] with ρ = ρ_1: ≈ bρ for
b ≪ 1/ρ (linear), → 1 for large b (saturation). Since IIR bounds ‖H‖_{S_b} by 2ρ_b/η, LSSR keeps ρ_b/η constant
across batch sizes; the comparison rules keep b/η (LSR) or √b/η (SRSR) constant.

Left: ρ_b at frozen parameters of a training run (eq. 12, exact from per-example gradients, Monte Carlo).
Right: test accuracy over (b, η) from sweeps (one file per b, cells η × seed; the η axis adaptive, grown until every
seed's best η is strictly inside), seed-averaged, best η per b with a bootstrap interval over seeds, the three rules
fitted to it in log2 (one constant each, residuals in octaves), and the cells' final sharpness·η/2.
"""

import json
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from eoslab.analysis import claim
from eoslab.curvature import rho_b
from eoslab.papers import PAPERS

SAMPLINGS = (("without replacement", ""), ("with replacement", "_iid"))


def rho_table(run: xr.Dataset) -> pd.DataFrame:
    """One row per (measured step t, b, sampling): ρ_1, eq. 12, exact, Monte Carlo and its SE, z = (MC − exact)/SE."""
    n = int(json.loads(run.attrs["config"])["data"]["n_train"])
    rows = []
    for t in run.step.values:
        at = run.sel(step=t)
        rho1 = float(at["rho_1"])
        for label, suffix in SAMPLINGS:
            for k, b in enumerate(at["lssr_batch_size"].values.astype(int)):
                exact = float(at[f"rho_b_exact{suffix}"][k])
                mc, se = float(at[f"rho_b_mc{suffix}"][k]), float(at[f"rho_b_mc_se{suffix}"][k])
                eq12 = float(rho_b(rho1, n, b, replace=bool(suffix)))
                z = (mc - exact) / se if se > 1e-12 * exact else 0.0  # b = n without replacement: no randomness
                rows.append(
                    {
                        "step": int(t),
                        "b": int(b),
                        "sampling": label,
                        "rho_1": rho1,
                        "eq12": eq12,
                        "exact": exact,
                        "mc": mc,
                        "se": se,
                        "z": z,
                        "rel_err_eq12": abs(eq12 - exact) / exact,
                    }
                )
    return pd.DataFrame(rows)


def grid_table(sweeps: list[xr.Dataset]) -> pd.DataFrame:
    """One row per cell of every sweep: b, η, seed, final test accuracy, final sharpness·η/2 (NaN if the cell
    diverged), stop reason."""
    rows = []
    for ds in sweeps:
        b = json.loads(ds.attrs["config"])["optimizer"]["batch_size"]
        for i in range(ds.sizes["cell"]):
            cell = ds.isel(cell=i)
            eta = float(cell["optimizer.lr"])
            diverged = bool(cell.diverged)  # a diverged cell has no final accuracy or sharpness (blank in the heatmap)
            rows.append(
                {
                    "b": b,
                    "eta": eta,
                    "seed": int(cell["seed"]),
                    "test_accuracy": np.nan if diverged else float(cell.final_test_accuracy),
                    "sharpness_edge": np.nan if diverged else float(cell.final_sharpness) * eta / 2,
                    "stop_reason": str(cell.stop_reason.values),
                    "examples": float(cell.examples_seen),
                    "diverged": diverged,
                }
            )
    return pd.DataFrame(rows)


def _slope(b: np.ndarray, eta: np.ndarray) -> float | None:
    return float(np.polyfit(np.log2(b), np.log2(eta), 1)[0]) if len(b) >= 2 else None


def best_eta(cells: pd.DataFrame) -> pd.Series:
    """b → the η of the highest accuracy (diverged cells, NaN, count as 0)."""
    acc = cells.assign(test_accuracy=cells.test_accuracy.fillna(0.0))
    return acc.loc[acc.groupby("b").test_accuracy.idxmax()].set_index("b").eta


def inside(cells: pd.DataFrame, best: pd.Series) -> dict[int, bool]:
    """b → whether the best η lies strictly inside that b's η grid (adaptive grids differ per b)."""
    grid = cells.groupby("b").eta.agg(["min", "max"])
    return {int(b): bool(grid.loc[b, "min"] < eta < grid.loc[b, "max"]) for b, eta in best.items()}


BOOTSTRAP = 2000  # resamples of the seeds
RULES = {"LSSR (ρ_b)": "rho_b", "LSR (b)": "b", "SRSR (√b)": "sqrt_b"}
"""The scaling rules compared: name → the column of :func:`rule_fits`'s table the best η is proportional to."""


def bootstrap_best_eta(cells: pd.DataFrame, rng: np.random.Generator) -> dict[int, list[float]]:
    """b → the 2.5 % and 97.5 % quantiles of the best η of the seed-mean accuracy over seeds resampled with
    replacement (:data:`BOOTSTRAP` resamples; a diverged cell counts as accuracy 0)."""
    acc = cells.assign(test_accuracy=cells.test_accuracy.fillna(0.0)).pivot_table(
        index="seed", columns=["b", "eta"], values="test_accuracy"
    )
    draws = rng.integers(0, len(acc), size=(BOOTSTRAP, len(acc)))
    means = acc.to_numpy()[draws].mean(axis=1)  # (resample, (b, eta) column)
    out = {}
    for b in acc.columns.get_level_values("b").unique():
        cols = np.flatnonzero(acc.columns.get_level_values("b") == b)
        etas = acc.columns.get_level_values("eta").to_numpy(float)[cols]
        best = etas[np.argmax(means[:, cols], axis=1)]
        out[int(b)] = np.quantile(best, [0.025, 0.975]).tolist()
    return out


def rule_fits(b: np.ndarray, best: np.ndarray, rho1: float, n: int) -> dict[str, dict[str, Any]]:
    """Each rule η* = c·r(b), r = ρ_b (eq. 12: LSSR), b (LSR) or √b (SRSR), fitted by least squares in log2:
    log2 c = mean(log2 η* − log2 r); the residuals log2 η* − log2(c·r) per b and their root mean square (in
    octaves: 1 = a factor 2)."""
    reference = {"rho_b": np.asarray(rho_b(rho1, n, b), dtype=float), "b": b, "sqrt_b": np.sqrt(b)}
    out = {}
    for name, column in RULES.items():
        gap = np.log2(best) - np.log2(reference[column])
        residuals = gap - gap.mean()
        out[name] = {
            "c": float(2 ** gap.mean()),
            "residuals": residuals.tolist(),
            "rms": float(np.sqrt(np.mean(residuals**2))),
        }
    return out


def _best_rule(fits: dict[str, dict[str, Any]]) -> str:
    return min(fits, key=lambda name: fits[name]["rms"])


def summary(rho_run: xr.Dataset, sweeps: list[xr.Dataset], profile: str) -> dict[str, Any]:
    """The figure's numbers: the ρ_b identities (asserted), the best η per b with its bootstrap interval and whether
    it lies strictly inside the grid (every b and seed), and the fits of LSSR, LSR and SRSR to it (reported)."""
    rho = rho_table(rho_run)
    cells = grid_table(sweeps)
    n = int(json.loads(rho_run.attrs["config"])["data"]["n_train"])
    # seed means; a cell with any diverged seed counts as diverged (NaN: blank in the heatmap, never the best η)
    mean = cells.groupby(["b", "eta"], as_index=False)[["test_accuracy", "sharpness_edge"]].mean(skipna=False)
    mean["test_accuracy_se"] = cells.groupby(["b", "eta"]).test_accuracy.sem().to_numpy()
    best = best_eta(mean)
    by_seed = {int(s): best_eta(c) for s, c in cells.groupby("seed")}
    per_seed = {s: v.tolist() for s, v in by_seed.items()}
    inside_per_seed = {s: inside(cells[cells.seed == s], v) for s, v in by_seed.items()}
    rho1 = float(rho.groupby("step").rho_1.first().median())
    b = best.index.to_numpy(float)
    fits = rule_fits(b, best.to_numpy(), rho1, n)
    fits_per_seed = {s: rule_fits(b, v.to_numpy(), rho1, n) for s, v in by_seed.items()}
    winner = _best_rule(fits)
    runner_up = sorted(fits, key=lambda name: fits[name]["rms"])[1]
    same_winner = all(_best_rule(f) == winner for f in fits_per_seed.values())
    all_inside = all(all(v.values()) for v in inside_per_seed.values())
    max_rel = float(rho.rel_err_eq12.max())
    max_z = float(rho.z.abs().max())
    claims = [
        claim(
            "eq. 12 from ρ_1 equals the exact ρ_b (max relative error, every b, t and sampling)", max_rel, (None, 1e-6)
        ),
        claim("Monte-Carlo ρ_b within 3 standard errors of the exact value (max |z|)", max_z, (None, 3.0)),
        claim(
            "every seed's best η lies strictly inside its b's η grid (the grid resolves the optimum)",
            [sum(v.values()) for v in inside_per_seed.values()],
            passed=all_inside,
        ),
        claim(
            f"best fit to the seed-mean best η: {winner} (rms residual in octaves, then {runner_up}'s; the same rule "
            f"best for every seed: {same_winner})",
            [fits[winner]["rms"], fits[runner_up]["rms"]],
            passed=same_winner,
            asserted=False,
        ),
    ]
    return {
        "figure": "f4_lssr",
        "profile": profile,
        "paper": PAPERS["iir"],
        "n": n,
        "rho_1_by_step": rho.groupby("step").rho_1.first().to_dict(),
        "inv_rho": 1 / rho1,
        "max_rel_err_eq12": max_rel,
        "max_abs_z_mc": max_z,
        "rho_b": rho.to_dict("records"),
        "batch_sizes": b.tolist(),
        "best_eta": best.tolist(),
        "best_eta_interval": bootstrap_best_eta(cells, np.random.default_rng(0)),
        "best_eta_per_seed": per_seed,
        "best_eta_inside_per_seed": inside_per_seed,
        "log2_slope_small_b": _slope(b[b <= 1 / rho1], best.to_numpy()[b <= 1 / rho1]),
        "fits": fits,
        "fits_per_seed": fits_per_seed,
        "best_rule": winner,
        "best_rule_every_seed": same_winner,
        "cells": mean.to_dict("records"),
        "stop_reasons": cells.stop_reason.value_counts().to_dict(),
        "examples_seen": cells.groupby("b").examples.max().to_dict(),
        "claims": claims,
    }


def _heatmap(ax, mean: pd.DataFrame, value: str, cmap: str, label: str, fig: Figure):
    table = mean.pivot(index="eta", columns="b", values=value)
    bs, etas = table.columns.to_numpy(float), table.index.to_numpy(float)
    mesh = ax.pcolormesh(np.arange(len(bs) + 1), np.arange(len(etas) + 1), table.to_numpy(), cmap=cmap, shading="flat")
    fig.colorbar(mesh, ax=ax, label=label)
    ax.set_xticks(np.arange(len(bs)) + 0.5, [f"{int(x)}" for x in bs])
    ax.set_yticks(np.arange(len(etas)) + 0.5, [f"{x:g}" for x in etas])
    ax.set(xlabel="batch size b (log scale)", ylabel="learning rate η (log scale)")
    return bs, etas, table


def plot(summary: dict[str, Any]) -> Figure:
    """(a) ρ_b against b; (b) the test-accuracy heatmap with the best η per b and LSSR/LSR/SRSR, each fitted to it;
    (c) the cells' final sharpness·η/2; (d) the best η per b, per seed and averaged (95 % bootstrap interval over
    seeds), with the fits."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 8), layout="constrained")
    (a, b), (c, d) = axes
    rho = pd.DataFrame(summary["rho_b"])
    steps = sorted(rho.step.unique())
    for (label, _), marker in zip(SAMPLINGS, ["o", "s"], strict=True):
        for color, t in zip(plt.cm.viridis(np.linspace(0, 0.85, len(steps))), steps, strict=True):
            sub = rho[(rho.sampling == label) & (rho.step == t)]
            style = "-" if marker == "o" else ":"
            a.plot(sub.b, sub.eq12, style, color=color, label=f"eq. 12, t={t}" if marker == "o" else None)
            a.errorbar(
                sub.b,
                sub.mc,
                yerr=3 * sub.se,
                fmt=marker,
                color=color,
                markersize=3,
                capsize=2,
                mfc="none" if marker == "s" else color,
            )
    a.plot([], [], "ko", markersize=3, label="Monte Carlo ±3 SE, without repl.")
    a.plot([], [], "k:", marker="s", mfc="none", markersize=3, label="with replacement (eq. 12 dotted)")
    a.set(
        xscale="log",
        yscale="log",
        xlabel="batch size b",
        ylabel="ρ_b = ‖∇L‖² / E‖g_b‖²",
        title="(a) ρ_b at frozen parameters",
    )
    a.set_xscale("log", base=2)
    a.legend(fontsize=7, loc="lower right")
    mean = pd.DataFrame(summary["cells"])
    bs, etas, _ = _heatmap(b, mean, "test_accuracy", "cividis", "test accuracy (seed mean)", fig)
    best = summary["best_eta"]
    xi = np.arange(len(bs)) + 0.5
    b.plot(xi, [list(etas).index(e) + 0.5 for e in best], "w*", markersize=12, markeredgecolor="k", label="best η")
    rho1 = 1 / summary["inv_rho"]
    reference = {"rho_b": rho_b(rho1, summary["n"], bs), "b": bs, "sqrt_b": np.sqrt(bs)}
    rules = {  # each rule fitted to the seed-mean best η (rule_fits): η* = c·r(b)
        f"{name}, rms {summary['fits'][name]['rms']:.2f} oct.": summary["fits"][name]["c"] * reference[column]
        for name, column in RULES.items()
    }
    to_y = lambda eta: np.interp(np.log2(eta), np.log2(etas), np.arange(len(etas))) + 0.5  # noqa: E731
    for (name, line), style in zip(rules.items(), ["-", "--", ":"], strict=True):
        b.plot(xi, to_y(line), style, color="tab:red", label=name)
    b.set_ylim(0, len(etas))
    b.set_title("(b) test accuracy over (b, η)")
    b.legend(fontsize=7, loc="upper left", framealpha=0.8)
    _heatmap(c, mean, "sharpness_edge", "viridis", "final sharpness · η/2 (seed mean)", fig)
    c.set_title("(c) final sharpness · η/2 (1 = 2/η)")
    per_seed = summary["best_eta_per_seed"]
    for seed, values in per_seed.items():
        d.plot(bs, values, "o", alpha=0.5, label=f"seed {seed}")
    interval = np.array([summary["best_eta_interval"][int(x)] for x in bs]).T
    d.errorbar(
        bs, best, yerr=np.abs(interval - best), fmt="k*-", markersize=10, capsize=3, label="seed mean, 95 % bootstrap"
    )
    for (name, line), style in zip(rules.items(), ["-", "--", ":"], strict=True):
        d.plot(bs, line, style, color="tab:red", label=name)
    d.axvline(summary["inv_rho"], color="0.5", linewidth=0.8, label="b = 1/ρ")
    d.set(
        xscale="log",
        yscale="log",
        ylim=(etas[0] / 1.5, etas[-1] * 1.5),
        xlabel="batch size b",
        ylabel="best learning rate η",
        title="(d) best η against b",
    )
    d.set_xscale("log", base=2)
    d.legend(fontsize=7, loc="lower right")
    fig.suptitle("Linear-and-saturation scaling rule: ρ_b and the best learning rate per batch size")
    return fig
