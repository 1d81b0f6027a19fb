"""F0 — the analytic toys: closed-form checks of the EoS quantities, as a figure.

- Andreyev & Beneventano (EoSS) App. C, the diagonal linear network f(x) = aᵀBx on z₁ = ((1, 0), 1),
  z₂ = ((0, 1), −1): at every minimum a₁b₁ = 1, a₂b₂ = −1 the per-sample Hessians are rank one with orthogonal
  eigenvectors, so FullBS = max(λ₁, λ₂)/2, the average MiniBS (b = 1) is λ = (λ₁ + λ₂)/2, λ_i ≥ 2 and max λ_i ≤ 2λ − 2.
- Zhu et al.'s scalar network ½(1 − w₁w₂w₃w₄)²: GD from their edge-of-stability initialisation ends with sharpness
  Σ 1/w_i² in (2/η − 20η/3, 2/η); started below the balance (δ < 0) it ends at the gradient-flow value 2√(c⁴ + 4).
"""

import itertools
import math
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from eoslab.analysis import claim
from eoslab.models import scalar_net_eos_init
from eoslab.papers import PAPERS
from eoslab.toys import diagonal_net_sharpness, scalar_net_gd, scalar_net_sharpness

A_GRID = (0.4, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0)
DELTAS = (0.05, 0.2, 0.5, 1.0)
D0 = (0.8, 1.2)
BELOW = (-0.5, -0.3)


def diagonal_net_summary(grid: tuple[float, ...] = A_GRID) -> list[dict[str, float]]:
    """FullBS, average MiniBS and λ₁, λ₂ at every diagonal minimum a ∈ grid², for B diagonal and full."""
    return [diagonal_net_sharpness(a1, a2, full) for full in (False, True) for a1, a2 in itertools.product(grid, grid)]


def scalar_net_summary(etas: list[float], steps: int) -> list[dict[str, Any]]:
    """GD for ``steps`` steps from every (η, δ, d₀) of the EoS initialisation (and δ < 0), all runs at once: the final
    sharpness (eoslab's Lanczos at the final w), the loss, and the band or the gradient-flow value it is checked on."""
    cases = [(eta, delta, d0) for eta in etas for delta in DELTAS + BELOW for d0 in D0]
    w0 = torch.stack([scalar_net_eos_init(eta, delta, d0) for eta, delta, d0 in cases])
    w = scalar_net_gd(w0, torch.tensor([c[0] for c in cases], dtype=torch.float64), steps)
    rows = []
    for (eta, delta, d0), wi in zip(cases, w, strict=True):
        c = (eta**-2 - 4) ** 0.25 + delta
        rows.append(
            {
                "eta": eta,
                "delta": delta,
                "d0": d0,
                "sharpness_initial": scalar_net_sharpness(scalar_net_eos_init(eta, delta, d0)),
                "sharpness": scalar_net_sharpness(wi),
                "loss": 0.5 * (1 - wi.prod().item()) ** 2,
                "band": [2 / eta - 20 * eta / 3, 2 / eta],
                "gradient_flow": 2 * math.sqrt(c**4 + 4),
            }
        )
    return rows


def summary(diag: list[dict[str, float]], scalar: list[dict[str, Any]], steps: int, profile: str) -> dict[str, Any]:
    """The figure's JSON: every toy number and the claims."""
    lam_max = np.array([max(r["lambda1"], r["lambda2"]) for r in diag])
    lam_min = np.array([min(r["lambda1"], r["lambda2"]) for r in diag])
    avg = np.array([r["avg_minibs"] for r in diag])
    full = np.array([r["fullbs"] for r in diag])
    eos = [r for r in scalar if r["delta"] > 0]
    below = [r for r in scalar if r["delta"] < 0]
    claims = [
        claim(
            "diagonal net: max |FullBS − max λ_i/2| / FullBS",
            float(np.abs(full / (lam_max / 2) - 1).max()),
            (None, 1e-9),
        ),
        claim(
            "diagonal net: max |avg MiniBS − (λ₁ + λ₂)/2| / avg MiniBS",
            float(np.abs(avg / ((lam_max + lam_min) / 2) - 1).max()),
            (None, 1e-9),
        ),
        claim("diagonal net: min λ_i (≥ 2, AM–GM)", float(lam_min.min()), (2 - 1e-12, None)),
        claim(
            "diagonal net: max (max λ_i − (2·avg MiniBS − 2))", float((lam_max - (2 * avg - 2)).max()), (None, 1e-12)
        ),
    ]
    for eta in sorted({r["eta"] for r in eos}, reverse=True):
        values = [r["sharpness"] for r in eos if r["eta"] == eta]
        lo, hi = 2 / eta - 20 * eta / 3, 2 / eta
        claims.append(claim(f"scalar net, η = {eta:g}: final sharpness in (2/η − 20η/3, 2/η)", values, (lo, hi)))
    claims.append(
        claim(
            "scalar net, δ < 0: final sharpness / gradient-flow value 2√(c⁴ + 4)",
            [r["sharpness"] / r["gradient_flow"] for r in below],
            asserted=False,
        )
    )
    return {
        "figure": "f0_analytic_toys",
        "profile": profile,
        "paper": [PAPERS["eoss"], PAPERS["zhu"]],
        "steps": steps,
        "diagonal_net": diag,
        "scalar_net": scalar,
        "claims": claims,
    }


def plot(diag: list[dict[str, float]], scalar: list[dict[str, Any]]) -> Figure:
    """(a) FullBS against the average MiniBS at the diagonal net's minima, with the bounds λ/2 ≤ FullBS ≤ λ − 1;
    (b) the scalar net's distance below the edge, (2/η − λ)/(20η/3), against η: the band is (0, 1) (log axis, so the
    edge itself, 0, is drawn at its bottom)."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), layout="constrained")
    ax = axes[0]
    for full, marker, color in ((False, "o", "C0"), (True, "s", "C1")):
        rows = [r for r in diag if r["full"] == full]
        ax.scatter(
            [r["avg_minibs"] for r in rows],
            [r["fullbs"] for r in rows],
            marker=marker,
            color=color,
            s=16,
            label="B diagonal (4 parameters)" if not full else "B full 2×2 (6 parameters)",
        )
    lam = np.linspace(2, max(r["avg_minibs"] for r in diag), 100)
    ax.plot(lam, lam - 1, "--", color="0.3", label="FullBS = λ − 1 (max λ_i = 2λ − 2)")
    ax.plot(lam, lam / 2, ":", color="0.3", label="FullBS = λ/2 (λ₁ = λ₂)")
    ax.set(xlabel="average MiniBS λ = (λ₁ + λ₂)/2", ylabel="FullBS = max(λ₁, λ₂)/2")
    ax.set_title("(a) diagonal linear network at its minima")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    etas = sorted({r["eta"] for r in scalar})
    eos, below = [r for r in scalar if r["delta"] > 0], [r for r in scalar if r["delta"] < 0]
    groups = ((eos, "o", "C0", "EoS start, δ > 0"), (below, "v", "C2", "below the balance, δ < 0"))
    for rows, marker, color, label in groups:
        gap = [(2 / r["eta"] - r["sharpness"]) / (20 * r["eta"] / 3) for r in rows]
        ax.scatter([r["eta"] for r in rows], gap, marker=marker, color=color, s=14, alpha=0.6, label=label)
    ax.axhspan(1e-3, 1, color="C0", alpha=0.15, label="Zhu et al.'s band (2/η − 20η/3, 2/η)")
    ax.axhline(1e-3, color="0.3", linestyle="--", linewidth=1, label="2/η (at 0)")
    ax.set(xscale="log", yscale="log", xlabel="learning rate η", ylabel="(2/η − final sharpness) / (20η/3)")
    ax.set_ylim(1e-3, 1e3)
    ax.set_xticks(etas, [f"{eta:g}" for eta in etas])
    ax.minorticks_off()
    ax.set_title("(b) Zhu et al.'s scalar network ½(1 − w₁w₂w₃w₄)²")
    ax.legend(fontsize=7, loc="lower center")
    fig.suptitle("Analytic toys: mini-batch vs full-batch sharpness, and GD's final sharpness at the edge")
    return fig
