"""F5 — layer-wise edge of stability (Fox 2023, Ch. 3): full and per-layer sharpness, per-layer gradient norms, and
the step-size schemes of §3.3 with the preconditioned sharpness that explains them.

Layer sharpness λ_i = λmax of the Hessian block of (W_i, b_i), the other layers fixed; by Cauchy interlacing
λ_i ≤ λ. A step θ ← θ − P∇L with P = diag of per-parameter step sizes is stable on a quadratic iff
λmax(P^½ H P^½) < 2: with Fox's layer-wise 1/λ_{i,t} every diagonal block of P^½HP^½ has λmax 1, so the whole is
in [1, L] for L layers (H PSD); with 1/(2λ_{i,t}) in [½, L/2].
"""

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure

from eoslab.analysis import claim, normalized, second_half
from eoslab.papers import PAPERS
from eoslab.plotting import edge, hide_empty, line

ONSET = 0.95  # the edge is reached when λ·η/2 ≥ 0.95
EDGE_BAND = (0.95, 1.2)  # median λ·η/2 after the onset (tanh, relu)
SCHEMES = ("constant", "inv_initial", "inv_sharpness", "layerwise", "layerwise_c2", "ls")
LABELS = {
    "constant": "η = 2/25",
    "inv_initial": "1/λ₀",
    "inv_sharpness": "1/λ_t",
    "layerwise": "1/λ_(i,t)",
    "layerwise_c2": "1/(2λ_(i,t))",
    "ls": "LS (Armijo)",
}


def _name(runs: xr.Dataset, i: int) -> str:
    """The run's name in its family (the file stem without the config hash)."""
    return str(runs.run.values[i]).rsplit("-", 1)[0]


def _first(da: xr.DataArray, mask: xr.DataArray) -> int | None:
    steps = da.step.values[mask.values]
    return int(steps[0]) if len(steps) else None


def activation_summary(runs: xr.Dataset) -> list[dict[str, Any]]:
    """Per run: the onset step (first λ·η/2 ≥ 0.95), the median λ·η/2 after it, the final value, second-half
    medians of every layer's λ_i, the largest interlacing excess max_t,i (λ_i − λ)/λ, and each layer's largest
    gradient norm after the onset over its minimum before (the jump)."""
    full = normalized(runs, "sharpness")
    out = []
    for i in range(runs.sizes["run"]):
        s = full.isel(run=i).dropna("step")
        onset = _first(s, s >= ONSET)
        lam = runs["sharpness"].isel(run=i).sel(eig=1).dropna("step")
        layers = _own_layers(runs["layer_sharpness"].isel(run=i).dropna("step", how="all"))
        row: dict[str, Any] = {
            "run": _name(runs, i),
            "activation": str(runs["model.activation"].values[i]),
            "eta": float(runs["eta"].values[i]),
            "onset_step": onset,
            "median_after_onset": float(s.where(s.step >= onset).median()) if onset is not None else None,
            "second_half_median": float(second_half(s).median()),
            "final": float(s[-1]),
            "final_loss": float(runs["train_loss"].isel(run=i).dropna("step")[-1]),
            "layer_second_half_median": second_half(layers).median("step").values.tolist(),
            "full_second_half_median": float(second_half(lam).median()),
            "interlacing_excess": float(((layers - lam) / lam).max()),
        }
        first, last = row["layer_second_half_median"][0], row["layer_second_half_median"][-1]
        row["output_over_input"] = last / first if first > 0 else None  # a dead (ReLU) input layer has none
        if "layer_grad_norm" in runs and onset is not None and onset > 0:
            g = runs["layer_grad_norm"].isel(run=i).dropna("step", how="all")
            row["grad_norm_jump"] = (
                g.where(g.step >= onset).max("step") / g.where(g.step < onset).min("step")
            ).values.tolist()
        out.append(row)
    return out


def _own_layers(da: xr.DataArray) -> xr.DataArray:
    """One run's layers, input to output: runs of different depths are stacked on the union of layer names
    (sorted as strings, "10" before "2"), so drop the layers this run lacks and order the rest by module index."""
    da = da.dropna("layer", how="all")
    order = sorted(da.layer.values, key=lambda name: [int(p) if p.isdigit() else p for p in str(name).split(".")])
    return da.sel(layer=order)


def _scheme_name(name: str) -> tuple[str, str, int]:
    """(activation, scheme, seed) of a scheme run named ``<activation>-<scheme>[-seed<k>]`` (no suffix: seed 0)."""
    activation, rest = name.split("-", 1)
    scheme, _, seed = rest.partition("-seed")
    return activation, scheme, int(seed or 0)


def scheme_summary(runs: xr.Dataset) -> list[dict[str, Any]]:
    """Per scheme run: the loss at the last step, the fraction of steps that raised the full-batch loss
    (L(θ_{k+1}) > L(θ_k), from the loss of every step), and for the measured ones the preconditioned sharpness
    λmax(P^½HP^½): its maximum, its maximum after t = 0, and the first step where it exceeds 2."""
    out = []
    for i in range(runs.sizes["run"]):
        activation, scheme, seed = _scheme_name(_name(runs, i))
        loss = runs["train_loss"].isel(run=i).dropna("step")
        steps = runs["batch_loss"].isel(run=i).dropna("iteration").values
        row: dict[str, Any] = {
            "run": _name(runs, i),
            "activation": activation,
            "scheme": scheme,
            "seed": seed,
            "diverged": bool(runs["diverged"].values[i]),
            "last_step": int(loss.step[-1]),
            "final_loss": float(loss[-1]),
            "loss_rise_fraction": float((steps[1:] > steps[:-1]).mean()) if len(steps) > 1 else None,
        }
        if "preconditioned_sharpness" in runs:
            p = runs["preconditioned_sharpness"].isel(run=i).dropna("step")
            if p.size:
                row |= {
                    "preconditioned_max": float(p.max()),
                    "preconditioned_max_after_0": float(p.where(p.step > 0).max()),
                    "preconditioned_at_0": float(p.sel(step=0)),
                    "preconditioned_first_above_2": _first(p, p > 2),
                    "preconditioned_fraction_above_2": float((p > 2).mean()),
                }
        out.append(row)
    return out


SCHEME_CLAIMS = {
    "slower": (
        "1/λ_t is much slower than 1/λ_0: final loss of 1/λ_t over 1/λ_0's, every seed > 1",
        "inv_sharpness",
        "inv_initial",
    ),
    "c2_fixes": (
        "1/λ_(i,t) is too large and c = 2 fixes it: final loss of 1/(2λ_(i,t)) over 1/λ_(i,t)'s, every seed < 1",
        "layerwise_c2",
        "layerwise",
    ),
}
"""Fox's loss claims on the schemes (§3.3): name → (text, scheme, reference scheme); the value is the ratio of
the two final losses per seed (a diverged run's loss is infinite)."""

ASSERTED = {("c2_fixes", "relu")}
"""(claim, activation) pairs asserted on smoke: those that held at every seed of the smoke-scale probes (n = 500,
400 steps, seeds 0-2; docs/f5_layerwise_eos.md); the others are reported."""


def _loss(row: dict[str, Any]) -> float:
    return float("inf") if row["diverged"] else row["final_loss"]


def scheme_claims(schemes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per activation: Fox's two loss claims (:data:`SCHEME_CLAIMS`, each holding iff it holds at every seed),
    and the preconditioned sharpness of 1/λ_(i,t) and 1/(2λ_(i,t)) that explains them (reported)."""
    claims = []
    for act in sorted({r["activation"] for r in schemes}):
        seeds = sorted({r["seed"] for r in schemes if r["activation"] == act})
        for key, (text, scheme, reference) in SCHEME_CLAIMS.items():
            ratios = [
                _loss(_by(schemes, activation=act, scheme=scheme, seed=seed))
                / _loss(_by(schemes, activation=act, scheme=reference, seed=seed))
                for seed in seeds
            ]
            passed = all(r > 1 for r in ratios) if key == "slower" else all(r < 1 for r in ratios)
            claims.append(
                claim(f"{act}: {text} (seeds {seeds})", ratios, passed=passed, asserted=(key, act) in ASSERTED)
            )
        for scheme, label in (("layerwise", "1/λ_(i,t)"), ("layerwise_c2", "1/(2λ_(i,t))")):
            peaks = [
                _by(schemes, activation=act, scheme=scheme, seed=seed)["preconditioned_max_after_0"] for seed in seeds
            ]
            text = f"{act}: mechanism, {label}: max λmax(P^½HP^½) after t = 0 per seed (stable below 2)"
            claims.append(claim(text, peaks, asserted=False))
    return claims


def sweep_summary(runs: xr.Dataset, key: str) -> list[dict[str, Any]]:
    """Width or depth sweep: second-half medians of λ·η/2 and of every layer's λ_i·η/2; ``x`` the width or depth
    (None where every run has the same, so nothing to plot against)."""
    rows = activation_summary(runs)
    for row, i in zip(rows, range(runs.sizes["run"]), strict=True):
        row["x"] = float(runs[key].values[i]) if key in runs.coords else None
    return rows


def _by(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    (row,) = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return row


def summary(ds: Mapping[str, xr.Dataset], profile: str, tol: float) -> dict[str, Any]:
    """The figure's JSON: per-activation and per-scheme numbers, and the claims (``tol``: the solver tolerance)."""
    acts = activation_summary(ds["layerwise_eos"])
    schemes = scheme_summary(ds["step_schemes"])
    excess = max(r["interlacing_excess"] for r in acts)
    claims = [claim("every layer's sharpness ≤ the full sharpness: max (λ_i − λ)/λ ≤ 2·tol", excess, (None, 2 * tol))]
    for act in ("tanh", "relu"):
        r = _by(acts, activation=act)
        text = f"{act} reaches the edge: median λ·η/2 after the onset"
        claims.append(claim(text, r["median_after_onset"], EDGE_BAND))
    lin = _by(acts, activation="linear")
    claims.append(
        claim(
            "linear converges below the edge: final λ·η/2 < 0.95, never reaching it",
            lin["final"],
            (None, ONSET),
            passed=lin["onset_step"] is None and lin["final"] < ONSET,
        )
    )
    tanh = _by(acts, activation="tanh")
    claims.append(claim("tanh: output layer's λ_3 < 0.1 × input layer's λ_1", tanh["output_over_input"], (None, 0.1)))
    claims += scheme_claims(schemes)
    out = {
        "figure": "f5_layerwise_eos",
        "profile": profile,
        "paper": [PAPERS["fox"], PAPERS["vaswani"]],
        "solver_tol": tol,
        "activations": acts,
        "schemes": schemes,
        "claims": claims,
    }
    for family, key in (("layerwise_width", "model.width"), ("layerwise_depth", "model.depth")):
        if family in ds:
            out[family] = sweep_summary(ds[family], key)
    if "step_schemes_cifar10" in ds:
        out["step_schemes_cifar10"] = scheme_summary(ds["step_schemes_cifar10"])
    return out


def plot(ds: Mapping[str, xr.Dataset]) -> Figure:
    """Rows: full and layer sharpness ·η/2 per activation; layer gradient norms; the schemes' losses and
    preconditioned sharpness (the first two activations, the first seed); the width/depth sweeps where the profile
    has them."""
    acts = ds["layerwise_eos"]
    sweeps = [f for f in ("layerwise_width", "layerwise_depth") if f in ds]
    nrows = 3 + bool(sweeps)
    fig, axes = plt.subplots(nrows, 4, figsize=(14, 3.0 * nrows), layout="constrained", squeeze=False)
    layer_colors = sns.color_palette("colorblind", 10)
    order = sorted(range(acts.sizes["run"]), key=lambda i: ["linear", "relu", "tanh", "sigmoid"].index(
        str(acts["model.activation"].values[i])))  # fmt: skip
    for col, i in enumerate(order):
        run = acts.isel(run=i)
        eta = float(run["eta"])
        ax = axes[0, col]
        line(ax, run["sharpness"].sel(eig=1) * eta / 2, color="k", lw=2, label="full λ")
        for j, layer in enumerate(run.layer.values):
            line(ax, run["layer_sharpness"].sel(layer=layer) * eta / 2, color=layer_colors[j], label=f"layer {j + 1}")
        edge(ax)
        ax.set_title(f"{run['model.activation'].item()}, η = {eta:g}")
        ax.set_xlabel("step t")
        ax.set_ylabel("sharpness · η/2")
        ax = axes[1, col]
        for j, layer in enumerate(run.layer.values):
            line(ax, run["layer_grad_norm"].sel(layer=layer), color=layer_colors[j], label=f"layer {j + 1}")
        ax.set_yscale("log")
        ax.set_xlabel("step t")
        ax.set_ylabel("‖∇_(W_i,b_i) L‖")
    axes[0, 0].legend(fontsize=7, loc="center right")
    axes[1, 0].legend(fontsize=7)
    sch = ds["step_schemes"]
    names = [_scheme_name(_name(sch, i)) for i in range(sch.sizes["run"])]
    colors = dict(zip(SCHEMES, sns.color_palette("colorblind", len(SCHEMES)), strict=True))
    styles = dict(zip(SCHEMES, ["-", "--", "-.", ":", "-", "--"], strict=True))
    first_seed = min(seed for _, _, seed in names)
    for col, act in enumerate(sorted({a for a, _, _ in names})[:2]):  # two activations fit the row
        ax_loss, ax_pre = axes[2, 2 * col], axes[2, 2 * col + 1]
        for i, (a, scheme, seed) in enumerate(names):
            if a != act or seed != first_seed:
                continue
            style = {"color": colors[scheme], "linestyle": styles[scheme], "label": LABELS[scheme]}
            line(ax_loss, sch["train_loss"].isel(run=i), **style)
            if "preconditioned_sharpness" in sch and sch["preconditioned_sharpness"].isel(run=i).notnull().any():
                line(ax_pre, sch["preconditioned_sharpness"].isel(run=i), **style)
        ax_loss.set_yscale("log")
        ax_loss.set_title(f"Step-size schemes, {act} (seed {first_seed})")
        ax_loss.set_xlabel("step t")
        ax_loss.set_ylabel("training loss")
        ax_pre.axhline(2.0, color="0.3", ls="--", lw=1, label="stability limit 2")
        ax_pre.set_title(f"λmax(P^½HP^½), {act}")
        ax_pre.set_xlabel("step t")
        ax_pre.set_ylabel("preconditioned sharpness")
        ax_loss.legend(fontsize=7)
        ax_pre.legend(fontsize=7)
    for col, family in enumerate(sweeps):
        sw = ds[family]
        key = "model.width" if family == "layerwise_width" else "model.depth"
        for c, act in enumerate(("tanh", "relu")):
            ax = axes[3, 2 * col + c]
            rows = [r for r in sweep_summary(sw, key) if r["activation"] == act and r["x"] is not None]
            for eta in sorted({r["eta"] for r in rows}):
                layers = [(r["x"] + (key == "model.depth"), r["second_half_median"]) for r in rows if r["eta"] == eta]
                pts = sorted(layers)
                ax.plot(*zip(*pts, strict=True), "o-", label=f"full λ·η/2, η = {eta:g}")
            edge(ax)
            ax.set_xlabel("width (units)" if key == "model.width" else "Linear layers")
            ax.set_ylabel("second-half median λ·η/2")
            ax.set_title(f"{act}: {'width' if key == 'model.width' else 'depth'} sweep")
            ax.legend(fontsize=7)
    hide_empty(fig)
    fig.suptitle("Layer-wise edge of stability (Fox 2023, Ch. 3): synthetic regression, 3×10 MLP, full-batch GD")
    return fig
