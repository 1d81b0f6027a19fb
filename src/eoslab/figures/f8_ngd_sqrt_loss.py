"""F8 — normalized GD and GD on √L enter the edge of stability and then reduce λ₁ (Arora, Li & Panigrahi 2022).

The toy L(x, y) = (1 + x²)y² (their Fig. 1): √L-GD and NGD trajectories, the 2-cycle of y and the contraction of x
against their small-η limits. The network: GD pre-training, then NGD and √L-GD from the same saved parameters; the
EoS criterion η_eff·λ₁(∇²L) against steps (η_eff = η/‖∇L‖ for NGD, η/(2√L) for √L-GD) and λ₁ along the way.
NGD's stable 2-cycle is asymmetric (on a quadratic ‖∇L‖ alternates between two values whose sum is η·λ₁), so
its criterion is the two-step average η·λ₁/mean(‖∇L_t‖, ‖∇L_{t+1}‖); the pointwise value is shown for contrast.
"""

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from eoslab import plotting
from eoslab.analysis import claim
from eoslab.papers import PAPERS
from eoslab.toys import arora_loss, arora_trajectory, sqrt_gd_cycle

ENTRY = (1.8, 2.2)
"""The EoS is entered at the first measurement (t > 0) whose criterion lies in this window."""
RULES = {"ngd": "normalized GD", "sqrt_gd": "GD on √L"}


def toy_summary(etas: list[float], check_eta: float = 0.1) -> dict[str, Any]:
    """The two trajectories of Arora et al.'s Fig. 1, the small-η checks at ``check_eta`` and their degradation
    over ``etas`` (:func:`eoslab.toys.sqrt_gd_cycle`)."""
    return {
        "sqrt_gd_path": arora_trajectory("sqrt_gd", 0.5, (14.7, 3.0), 12).tolist(),
        "ngd_path": arora_trajectory("ngd", 5.0, (14.7, -3.0), 10).tolist(),
        "check": sqrt_gd_cycle(check_eta),
        "sweep": [sqrt_gd_cycle(eta) for eta in etas],
    }


def criterion(runs: xr.Dataset, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, criterion, pointwise) of run i at its measurement steps t < T: η_eff(t)·λ₁(t), for NGD the two-step
    η·λ₁(t)/mean(‖∇L_t‖, ‖∇L_{t+1}‖) (pointwise: η·λ₁(t)/‖∇L_t‖)."""
    r = runs.isel(run=i)
    lam = r.sharpness.sel(eig=1).dropna("step")
    steps = lam.step.values[lam.step.values < r.step_grad_norm.dropna("iteration").sizes["iteration"] - 1]
    lam = lam.sel(step=steps).values
    g = r.step_grad_norm.values
    pointwise = r.lr_eff.isel(layer=0).values[steps] * lam
    if str(r["optimizer.rule"].values) == "ngd":
        return steps, float(r.eta) * lam / ((g[steps] + g[steps + 1]) / 2), pointwise
    return steps, pointwise, pointwise


def network_summary(runs: xr.Dataset) -> list[dict[str, Any]]:
    """Per rule: the entry step, the criterion's median (and range) after entry, the pointwise median, λ₁ at the
    start, at entry and at the end, and the loss at the start and the end."""
    rows = []
    for i in range(runs.sizes["run"]):
        r = runs.isel(run=i)
        steps, crit, point = criterion(runs, i)
        inside = np.flatnonzero((steps > 0) & (crit >= ENTRY[0]) & (crit <= ENTRY[1]))
        k = int(inside[0]) if len(inside) else len(steps) - 1
        lam = r.sharpness.sel(eig=1).dropna("step")
        loss = r.train_loss.dropna("step")
        rows.append(
            {
                "rule": str(r["optimizer.rule"].values),
                "eta": float(r.eta),
                "entered": bool(len(inside)),
                "entry_step": int(steps[k]),
                "criterion_median": float(np.median(crit[k:])),
                "criterion_range": [float(crit[k:].min()), float(crit[k:].max())],
                "pointwise_median": float(np.median(point[k:])),
                "lambda1_start": float(lam[0]),
                "lambda1_entry": float(lam.sel(step=steps[k])),
                "lambda1_end": float(lam[-1]),
                "loss_start": float(loss[0]),
                "loss_end": float(loss[-1]),
            }
        )
    return rows


def summary(toy: dict[str, Any], rows: list[dict[str, Any]], profile: str) -> dict[str, Any]:
    """The figure's JSON: the toy and network numbers and the claims."""
    c = toy["check"]
    claims = [
        claim(
            f"toy √L-GD, η = {c['eta']:g}: |two-step x factor − (1 − η²/2)|",
            abs(c["x_factor_two_step"] - c["x_factor_limit"]),
            (None, 1e-3),
        ),
        claim(
            f"toy √L-GD, η = {c['eta']:g}: 2-cycle amplitude vs η√(1+x²)/2", c["amplitude_max_rel_dev"], (None, 0.01)
        ),
    ]
    for r in rows:
        name = RULES[r["rule"]] + (" (two-step)" if r["rule"] == "ngd" else "")
        claims += [
            claim(f"{name}: median η_eff·λ₁ after entry", r["criterion_median"], (1.9, 2.1)),
            claim(
                f"{RULES[r['rule']]}: λ₁ at the end below λ₁ at entry", r["lambda1_end"] / r["lambda1_entry"], (None, 1)
            ),
        ]
    return {
        "figure": "f8_ngd_sqrt_loss",
        "profile": profile,
        "paper": PAPERS["arora"],
        "toy": toy,
        "network": rows,
        "claims": claims,
    }


def plot(toy: dict[str, Any], runs: xr.Dataset) -> Figure:
    """(a) toy trajectories over the loss contours; (b) the toy's deviations from the small-η limits against η;
    (c) the EoS criterion against steps; (d) λ₁ against steps."""
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.5), layout="constrained")
    ax = axes[0, 0]
    xs, ys = np.meshgrid(np.linspace(0, 16, 200), np.linspace(-5, 5, 200))
    loss = arora_loss(np.stack([xs, ys], -1))
    ax.contour(xs, ys, np.log10(loss + 1e-3), levels=12, colors="0.75", linewidths=0.6)
    for key, label, color in (("sqrt_gd_path", "GD on √L, η = 0.5", "C0"), ("ngd_path", "NGD, η = 5", "C1")):
        path = np.asarray(toy[key])
        ax.plot(path[:, 0], path[:, 1], "o-", color=color, markersize=3, linewidth=1, label=label)
    ax.axhline(0, color="0.3", linestyle="--", linewidth=1, label="minima y = 0")
    ax.set(xlabel="x", ylabel="y", title="(a) L(x, y) = (1 + x²)y²")
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[0, 1]
    sweep = toy["sweep"]
    eta = [s["eta"] for s in sweep]
    ax.plot(
        eta,
        [abs(s["x_factor_two_step"] - s["x_factor_limit"]) for s in sweep],
        "o-",
        label="|√(x_{t+2}/x_t) − (1 − η²/2)|",
    )
    ax.plot(eta, [s["amplitude_max_rel_dev"] for s in sweep], "s--", label="amplitude / (η√(1+x²)/2) − 1")
    ax.plot(eta, [s["asymmetry"] for s in sweep], "^:", label="2-cycle asymmetry (set by the start)")
    ax.axhline(1e-3, color="C0", linewidth=0.8, linestyle="-.", label="1e-3 (x factor band)")
    ax.axhline(1e-2, color="C1", linewidth=0.8, linestyle="-.", label="1 % (amplitude band)")
    ax.axvline(toy["check"]["eta"], color="0.5", linewidth=0.8, label=f"checked at η = {toy['check']['eta']:g}")
    ax.set(xscale="log", yscale="log", xlabel="learning rate η", ylabel="deviation from the small-η limit")
    ax.set_xticks(eta, [f"{e:g}" for e in eta])
    ax.minorticks_off()
    ax.set_title("(b) toy √L-GD: small-η limits degrade with η")
    ax.legend(fontsize=7, loc="lower right")

    ax, ax2 = axes[1]
    for i in range(runs.sizes["run"]):
        steps, crit, point = criterion(runs, i)
        rule = str(runs["optimizer.rule"].values[i])
        color = "C1" if rule == "ngd" else "C0"
        ax.plot(steps, crit, color=color, label=RULES[rule] + (" (two-step)" if rule == "ngd" else ""))
        if rule == "ngd":
            ax.plot(steps, point, color=color, alpha=0.35, linewidth=0.8, label="normalized GD (pointwise)")
        plotting.line(ax2, runs.sharpness.isel(run=i, eig=0), color=color, label=RULES[rule])
    ax.axhline(2, color="0.3", linestyle="--", linewidth=1, label="EoS: η_eff·λ₁ = 2")
    ax.set(ylim=(0, 4), xlabel="step t (after GD pre-training)", ylabel="η_eff · λ₁(∇²L)")
    ax.set_title(f"(c) MLP on digits, η = {float(runs.eta[0]):g}: the EoS criterion")
    ax.legend(fontsize=7, loc="lower right")
    ax2.set(xlabel="step t (after GD pre-training)", ylabel="λ₁(∇²L)")
    ax2.set_title("(d) λ₁ falls along the manifold of minima")
    ax2.legend(fontsize=7)
    fig.suptitle("Normalized GD and GD on √L at the edge of stability")
    return fig
