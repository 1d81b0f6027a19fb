"""F9: momentum and adaptive methods at the edge of stability (Cohen et al. 2021 §5; Cohen et al. 2022).

Full-batch heavy-ball momentum (β = 0.5, 0.9), Nesterov momentum, RMSProp and Adam. Every rule has a quadratic
stability threshold c for η·λmax(P⁻¹H) = λmax(D^½HD^½), D = ηP⁻¹ the step's per-parameter step sizes
(:meth:`eoslab.rules.Rule.threshold`): heavy ball 2 + 2β, Nesterov (2 + 2β)/(1 + 2β), RMSProp 2 and Adam
(2 + 2β₁)/(1 − β₁), P = (1 − β₁ᵗ)·diag(√v̂ + ε). The normalised quantity q = η·λmax(P⁻¹H)/c is λmax·η/(2 + 2β)
for heavy ball, λmax·η(1 + 2β)/(2 + 2β) for Nesterov, λmax(P⁻¹H)·η/2 for RMSProp and λmax(P⁻¹H)(1 − β₁)η/(2 + 2β₁)
for Adam: 1 is the edge. The raw λmax·η/2 (GD's normalisation) is reported beside it: for the adaptive rules it is
not pinned. Claims: the median of q from the onset (first measurement t > 0 with q ≥ :data:`ONSET`; at t = 0 the
adaptive rules' first step, with v̂ = g², is sign-like and q ≈ 5) on, over the regular measurement grid (the dense
window resolves the onset), lies in :data:`BANDS` (docs/f9_momentum_adaptive.md).
"""

import json
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from eoslab.analysis import claim
from eoslab.papers import PAPERS
from eoslab.plotting import edge
from eoslab.rules import RULES, Adam

FIGURE = "f9_momentum_adaptive"
PAPER = [PAPERS["cohen"], PAPERS["cohen_adaptive"]]
ONSET = 0.95
"""The onset is the first measurement after t = 0 whose normalised quantity q reaches this."""
BANDS = {"momentum": (0.95, 1.1), "adaptive": (0.9, 1.15)}
"""Band of the median of q after the onset, by kind of rule; Adam's raw λmax·η/2 must lie outside the adaptive one."""
NAMES = {"heavy_ball": "heavy ball", "nesterov": "Nesterov", "rmsprop": "RMSProp", "adam": "Adam"}


def kind(opt: dict[str, Any]) -> str:
    """ "adaptive" for the rules with a diagonal preconditioner P (RMSProp, Adam), else "momentum"."""
    return "adaptive" if issubclass(RULES[opt["rule"]], Adam) else "momentum"


def label(opt: dict[str, Any]) -> str:
    """E.g. 'heavy ball β=0.9, η=0.2' or 'Adam, η=0.002'."""
    beta = f" β={opt['momentum']:g}" if "momentum" in opt else ""
    return f"{NAMES[opt['rule']]}{beta}, η={opt['lr']:g}"


def normalised(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, q, raw λmax·η/2) of one run at its measurements: q = η·λmax(P⁻¹H)/c, from the preconditioned
    sharpness where measured (adaptive rules), else η·λmax (P = I)."""
    opt = json.loads(ds.attrs["config"])["optimizer"]
    lam = ds.sharpness.sel(eig=1).dropna("step")
    pre = ds.preconditioned_sharpness.dropna("step") if "preconditioned_sharpness" in ds else opt["lr"] * lam
    return lam.step.values, pre.values / RULES[opt["rule"]].threshold(opt), lam.values * opt["lr"] / 2


def rows(runs: dict[str, xr.Dataset]) -> list[dict[str, Any]]:
    """Per run: rule, η, β/β₁, threshold c, onset step, median, range of q and median raw λmax·η/2 after the onset
    on the regular grid (every ``measure.every`` steps), the number of those measurements and the loss."""
    out = []
    for name, ds in runs.items():
        config = json.loads(ds.attrs["config"])
        opt = config["optimizer"]
        steps, q, raw = normalised(ds)
        reached = np.flatnonzero((q >= ONSET) & (steps > 0))
        onset = int(steps[reached[0]]) if len(reached) else None
        after = (steps >= (onset if onset is not None else steps[-1] + 1)) & (steps % config["measure"]["every"] == 0)
        loss = ds.train_loss.dropna("step").values
        out.append(
            {
                "run": name,
                "rule": opt["rule"],
                "kind": kind(opt),
                "label": label(opt),
                "eta": opt["lr"],
                "beta": opt.get("momentum", opt.get("beta1")),
                "threshold": RULES[opt["rule"]].threshold(opt),
                "onset_step": onset,
                "q_median": float(np.median(q[after])) if after.any() else None,
                "q_range": [float(q[after].min()), float(q[after].max())] if after.any() else None,
                "raw_median": float(np.median(raw[after])) if after.any() else None,
                "n_after": int(after.sum()),
                "loss_start": float(loss[0]),
                "loss_end": float(loss[-1]),
                "diverged": bool(ds.attrs["diverged"]),
            }
        )
    return out


def summary(runs: dict[str, xr.Dataset], profile: str) -> dict[str, Any]:
    """The figure's JSON: every run's numbers and the claims."""
    table = rows(runs)
    claims = []
    for r in table:
        claims.append(
            claim(
                f"{r['label']}: median of η·λmax(P⁻¹H)/{r['threshold']:.4g} after onset",
                r["q_median"],
                BANDS[r["kind"]],
            )
        )
    for r in table:
        if r["rule"] == "adam":
            lo, hi = BANDS["adaptive"]
            outside = r["raw_median"] is not None and not lo <= r["raw_median"] <= hi
            claims.append(
                claim(f"{r['label']}: raw λmax·η/2 after onset is not at 2/η", r["raw_median"], None, outside)
            )
    return {"figure": FIGURE, "profile": profile, "paper": PAPER, "runs": table, "claims": claims}


def plot(runs: dict[str, xr.Dataset], summary: dict[str, Any]) -> Figure:
    """(a) q of the momentum runs; (b) q of the adaptive runs; (c) raw λmax·η/2 of every run (log); (d) loss."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), layout="constrained")
    (ax_m, ax_a), (ax_raw, ax_loss) = axes
    for i, (row, ds) in enumerate(zip(summary["runs"], runs.values(), strict=True)):
        steps, q, raw = normalised(ds)
        color = f"C{i}"
        (ax_m if row["kind"] == "momentum" else ax_a).plot(steps, q, color=color, label=row["label"])
        ax_raw.plot(steps, raw, color=color, label=row["label"])
        loss = ds.train_loss.dropna("step")
        ax_loss.plot(loss.step.values, loss.values, color=color, label=row["label"])
        if row["onset_step"] is not None:
            (ax_m if row["kind"] == "momentum" else ax_a).axvline(row["onset_step"], color=color, lw=0.6, ls=":")
    for ax, title in (
        (ax_m, "(a) momentum: λmax·η/(2 + 2β)  (Nesterov: ·(1 + 2β))"),
        (ax_a, "(b) adaptive: λmax(P⁻¹H)·(1 − β₁)η/(2 + 2β₁)  (RMSProp: ·η/2)"),
    ):
        edge(ax, "the rule's threshold (edge of stability)")
        ax.set(xlabel="step t", ylabel="η·λmax(P⁻¹H) / threshold", ylim=(0, 1.6), title=title)
        ax.legend(fontsize=7, loc="lower right")
    edge(ax_raw)
    ax_raw.set(xlabel="step t", ylabel="λmax(∇²L)·η/2", yscale="log", title="(c) raw sharpness: not pinned for Adam")
    ax_raw.legend(fontsize=7)
    ax_loss.set(xlabel="step t", ylabel="training loss", yscale="log", title="(d) full-batch training loss")
    fig.suptitle("Momentum and adaptive methods at the edge of stability")
    return fig
