"""F7 — the stochastic edge of stability (Agarwala & Pennington 2024): the noise-kernel norm 𝒦.

Linear regression (their Fig. 1: B = 5, D = 100, P = 120, Gaussian J): 𝒦(η) and ρ(A + B) against η, the stochastic
edge η_c (𝒦 = 1) far below 2/λmax, and Monte-Carlo SGD that converges below η_c and diverges above it. Networks
(their Figs. 3–5): an MLP on digits trained by small-batch SGD at several η/b, 𝒦_t from the NTK spectrum (engine
measurement ``noise_kernel``) and λmax at the end. The 𝒦 formula is our derivation for linear regression
(:mod:`eoslab.noise_kernel`), checked here by brute force and Monte Carlo; the paper's equations were not available.
"""

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure

from eoslab import plotting
from eoslab.analysis import claim
from eoslab.data import gaussian_linear_regression
from eoslab.noise_kernel import (
    critical_lr,
    mean_square_critical_lr,
    moment_matrices,
    noise_kernel_norm,
    sgd_linear_regression,
)
from eoslab.papers import PAPERS

SCHEMES = {"without_replacement": False, "with_replacement": True}
CONVERGED, DIVERGED = 1e-6, 10.0
"""Final-loss thresholds of the Monte Carlo (the paper saturates its plot at 10)."""
K = r"$\mathcal{K}$"
"""𝒦 in plot labels (mathtext: the default font has no script K)."""


def linear_regression_summary(
    factors: list[float],
    seeds: int = 3,
    steps: int = 10_000,
    D: int = 100,
    P: int = 120,
    batch_size: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Per sampling scheme: η_c, 𝒦 and ρ(A + B) at η_c, the exact mean-square threshold, 𝒦 and ρ(A + B) on a grid of
    η up to 2/λmax, and the final SGD loss (saturated at 10) of ``seeds`` runs at each η = factor·η_c."""
    data = gaussian_linear_regression(D, P, seed, dtype=torch.float64)
    ntk = data.X @ data.X.T / D
    lam = torch.linalg.eigvalsh(ntk).numpy()
    edge = 2 / lam.max()
    out: dict[str, Any] = {"D": D, "P": P, "B": batch_size, "steps": steps, "seeds": seeds, "factors": factors}
    out |= {"ntk_trace": float(lam.sum()), "edge": float(edge)}
    for name, replace in SCHEMES.items():
        eta_c = critical_lr(lam, batch_size, D, replace)
        grid = np.geomspace(0.01 * eta_c, 0.995 * edge, 80)
        rho = [np.abs(np.linalg.eigvals(sum(moment_matrices(lam, eta, batch_size, D, replace)))).max() for eta in grid]
        lrs = torch.tensor(factors, dtype=torch.float64) * eta_c
        loss = sgd_linear_regression(data.X, data.y, lrs, batch_size, steps, seeds, replace, seed=seed)
        out[name] = {
            "eta_c": eta_c,
            "eta_c_over_edge": eta_c / edge,
            "K_at_eta_c": noise_kernel_norm(lam, eta_c, batch_size, D, replace),
            "rho_at_eta_c": float(
                np.abs(np.linalg.eigvals(sum(moment_matrices(lam, eta_c, batch_size, D, replace)))).max()
            ),
            "exact_eta_c": mean_square_critical_lr(ntk, batch_size, replace),
            "eta_grid": grid.tolist(),
            "K_grid": noise_kernel_norm(lam, grid, batch_size, D, replace).tolist(),
            "rho_grid": [float(r) for r in rho],
            "final_loss": loss.clamp_max(DIVERGED).tolist(),
        }
    return out


def network_summary(runs: xr.Dataset) -> list[dict[str, Any]]:
    """Per network run: b, η, η/b, 𝒦 at the start, its maximum and final value, the final η_c and λmax·η/2 (the
    deterministic edge at 1), the final loss and whether the run diverged."""
    rows = []
    for i, run in enumerate(runs.run.values):
        r = runs.isel(run=i)
        k = r.noise_kernel_norm.dropna("step")
        b, eta = int(r["optimizer.batch_size"]), float(r.eta)
        rows.append(
            {
                "run": str(run),
                "batch_size": b,
                "eta": eta,
                "eta_over_b": eta / b,
                "K_initial": float(k[0]),
                "K_max": float(k.max()),
                "K_final": float(k[-1]),
                "eta_c_final": float(r.critical_lr.dropna("step")[-1]),
                "sharpness_final_per_edge": float(r.sharpness.sel(eig=1).dropna("step")[-1]) * eta / 2,
                "train_loss_final": float(r.train_loss.dropna("step")[-1]),
                "diverged": bool(r.diverged),
            }
        )
    return rows


def cluster_spread(rows: list[dict[str, Any]]) -> dict[str, float]:
    """η/b → max/min of the final 𝒦 over the non-diverged runs sharing that η/b (Agarwala & Pennington: the final
    𝒦 is set by η/b)."""
    out = {}
    for ratio in sorted({r["eta_over_b"] for r in rows}):
        ks = [r["K_final"] for r in rows if r["eta_over_b"] == ratio and not r["diverged"]]
        if len(ks) > 1:
            out[f"{ratio:g}"] = max(ks) / min(ks)
    return out


def summary(linear: dict[str, Any], rows: list[dict[str, Any]], profile: str) -> dict[str, Any]:
    """The figure's JSON: both panels' numbers and the claims."""
    claims = []
    for name in SCHEMES:
        s = linear[name]
        loss = np.asarray(s["final_loss"])
        at = {f: loss[:, s_i] for s_i, f in enumerate(linear["factors"])}
        claims += [
            claim(f"𝒦(η_c) = 1 ({name})", abs(s["K_at_eta_c"] - 1), (None, 1e-6)),
            claim(f"ρ(A + B) = 1 at η_c ({name})", abs(s["rho_at_eta_c"] - 1), (None, 1e-6)),
            claim(f"SGD converges at 0.95 η_c, every seed ({name})", at[0.95].tolist(), (None, CONVERGED)),
            claim(f"SGD diverges at 1.05 η_c, every seed ({name})", at[1.05].tolist(), (DIVERGED, None)),
            claim(f"𝒦 increases with η ({name})", float(np.diff(s["K_grid"]).min()), (0, None)),
            claim(f"η_c/(2/λmax) ({name})", s["eta_c_over_edge"], (None, 1), asserted=False),
            claim(f"exact mean-square threshold / η_c ({name})", s["exact_eta_c"] / s["eta_c"], asserted=False),
        ]
    spread = cluster_spread(rows)
    claims.append(
        claim("final 𝒦 clusters by η/b: max/min over runs of equal η/b", list(spread.values()), asserted=False)
    )
    return {
        "figure": "f7_stochastic_eos",
        "profile": profile,
        "paper": PAPERS["stochastic_eos"],
        "linear_regression": linear,
        "network": rows,
        "network_cluster_spread": spread,
        "claims": claims,
    }


def plot(linear: dict[str, Any], runs: xr.Dataset, rows: list[dict[str, Any]]) -> Figure:
    """(a) 𝒦 and ρ(A + B) against η; (b) the Monte-Carlo final loss against η/η_c; (c) 𝒦_t of the networks;
    (d) final 𝒦 and λmax·η/2 of the networks against η/b."""
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.5), layout="constrained")
    ax = axes[0, 0]
    for (name, s), color in zip(((n, linear[n]) for n in SCHEMES), ("C0", "C1"), strict=True):
        label = name.replace("_", " ")
        ax.plot(s["eta_grid"], s["K_grid"], color=color, label=f"{K}, {label}")
        ax.plot(s["eta_grid"], s["rho_grid"], color=color, linestyle=":", label=f"ρ(A + B), {label}")
        ax.axvline(s["eta_c"], color=color, linestyle="-.", linewidth=0.8, label=f"η_c = {s['eta_c']:.3g}")
    ax.axvline(linear["edge"], color="0.3", linestyle="--", linewidth=1, label=f"2/λmax = {linear['edge']:.3g}")
    ax.axhline(1, color="0.6", linewidth=0.8, zorder=0)
    ax.set(xscale="log", yscale="log", ylim=(1e-2, 1e2), xlabel="learning rate η", ylabel=f"{K}, ρ(A + B)")
    ax.set_title(f"(a) linear regression, B={linear['B']}, D={linear['D']}, P={linear['P']}")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[0, 1]
    for (name, s), color, marker in zip(((n, linear[n]) for n in SCHEMES), ("C0", "C1"), "os", strict=True):
        loss = np.asarray(s["final_loss"])
        for j in range(loss.shape[0]):
            ax.scatter(
                linear["factors"],
                loss[j],
                color=color,
                marker=marker,
                s=18,
                alpha=0.7,
                label=name.replace("_", " ") if j == 0 else None,
            )
    ax.axvline(1, color="0.3", linestyle="-.", linewidth=1, label=f"η_c ({K} = 1)")
    ax.set(yscale="log", xlabel="η / η_c", ylabel=f"loss after {linear['steps']} steps (saturated at 10)")
    ax.set_title(f"(b) SGD Monte Carlo, {linear['seeds']} seeds per η")
    ax.legend(fontsize=7, loc="center left")

    ratios = sorted({r["eta_over_b"] for r in rows})
    colors = dict(zip(ratios, plotting.palette(len(ratios)), strict=True))
    styles = {1: "-", 2: "--", 4: ":", 8: "-."}
    ax = axes[1, 0]
    for i, r in enumerate(rows):
        plotting.line(
            ax,
            runs.noise_kernel_norm.isel(run=i),
            color=colors[r["eta_over_b"]],
            linestyle=styles.get(r["batch_size"], "-"),
            marker="x" if r["diverged"] else ".",
            markersize=6 if r["diverged"] else 3,
            label=f"b={r['batch_size']}, η={r['eta']:g}" + (" (diverged)" if r["diverged"] else ""),
        )
    ax.axhline(1, color="0.3", linestyle="--", linewidth=1, label=f"{K} = 1")
    ax.set(yscale="log", ylim=(None, 20), xlabel="step t", ylabel=r"noise-kernel norm $\mathcal{K}_t$")
    ax.set_title(f"(c) MLP on digits, SGD: {K} during training")
    ax.legend(fontsize=6.5, ncol=3, loc="upper center")

    ax = axes[1, 1]
    for b in sorted({r["batch_size"] for r in rows}):
        sub = [r for r in rows if r["batch_size"] == b and not r["diverged"]]
        x = [r["eta_over_b"] for r in sub]
        ax.plot(x, [r["K_final"] for r in sub], "o" + styles.get(b, "-"), color="C0", label=f"final {K}, b={b}")
        ax.plot(
            x,
            [r["sharpness_final_per_edge"] for r in sub],
            "s" + styles.get(b, "-"),
            color="C2",
            mfc="none",
            label=f"final λmax·η/2, b={b}",
        )
    plotting.edge(ax, f"edge ({K} = 1, λmax = 2/η)")
    ax.set(xscale="log", ylim=(0, 1.3), xlabel="η / b (diverged runs left out)", ylabel="final value (1 = edge)")
    ax.set_xticks(ratios, [f"{x:g}" for x in ratios])
    ax.minorticks_off()
    ax.set_title(f"(d) final {K} and λmax against η/b")
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle(f"The stochastic edge of stability: the noise-kernel norm {K}")
    return fig
