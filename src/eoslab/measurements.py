"""The run engine's measurements: a table of what a run config's ``measure`` section can switch on.

Each row of :data:`MEASUREMENTS` is ``(key, wanted, take)``: ``wanted(measure_section)`` says whether the config
asks for it, ``take(ctx)`` returns the variables it records (names from :data:`eoslab.store.VARIABLES`). Rows run
in table order, which fixes the order of the measurement generator's draws and so the numbers. Every row on the
full-batch Hessian shares the :class:`Context`'s one operator (one graph build per measurement step); rows that need
other data (mini-batches, per-example gradients) build their own. A new measurement is one function and one row.
"""

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from eoslab.curvature import (
    batch_directional,
    directional,
    eigs,
    gradient_moments,
    hutchinson,
    interaction,
    layer_eigs,
    layer_masks,
    minibatch_eigs,
    sample_batches,
    sampled_rho_b,
)
from eoslab.eigen import EigResult, lanczos, start_vector
from eoslab.noise_kernel import NTK_SCALE, critical_lr, noise_kernel_norm, ntk_eigenvalues
from eoslab.operators import HessianOperator, MiniBatchHessians, Params

Preconditioner = Callable[[Params, Callable | None], Params]
"""(g at θ, the curvature a schedule reads, or None) → D, the per-parameter step sizes of the rule's next step
(:meth:`eoslab.rules.Rule.preconditioner`)."""


@dataclass
class Context:
    """What a measurement sees at one step: the problem (``eoslab.engine.Problem``), θ, the validated ``measure``
    section, the warm-start store (previous eigenvectors, keyed by measurement), the measurement generator, and of
    the training: the step size η (``lr``), SGD's batch size, whether it samples with replacement, the loss's name
    and the rule's preconditioner."""

    problem: Any
    params: Params
    m: dict[str, Any]
    warm: dict[str, Tensor]
    gen: torch.Generator
    lr: float | None = None
    train_batch_size: int | None = None
    replace: bool = False
    loss: str | None = None
    preconditioner: Preconditioner | None = None

    @property
    def X(self) -> Tensor:
        """The examples of the full-batch measures (the first ``measure.subset``, default all)."""
        return self.problem.X[: self.m["subset"]]

    @property
    def Y(self) -> Tensor:
        return self.problem.Y[: self.m["subset"]]

    @property
    def solver(self) -> dict[str, Any]:
        """Lanczos options. The strict residual rule: a run warm-starts every measurement from the last eigenvectors,
        and at the edge of stability the top eigenvalues cross, so the old top vector converges to what is now the
        second eigenvalue; the eigenvalue rule's gap estimate then stops 1–4 % low in 2 products (smoke F1 run), the
        residual rule takes the products that reveal the new top one."""
        return {"tol": self.m["tol"], "max_iter": self.m["max_iter"], "generator": self.gen, "criterion": "residual"}

    @property
    def batch_size(self) -> int:
        """b of the mini-batch estimators: ``measure.batch_size``, default SGD's (estimators sample as SGD does:
        with replacement only for ``sampling: iid``)."""
        return self.m["batch_size"] or self.train_batch_size

    @cached_property
    def op(self) -> HessianOperator:
        """The full-batch Hessian operator at θ, built on first use and shared by every row."""
        return HessianOperator(
            self.problem.model, self.problem.loss_fn, self.X, self.Y, self.params, chunk_size=self.m["chunk_size"]
        )

    @cached_property
    def masks(self) -> dict[str, Tensor]:
        return layer_masks(self.op, self.problem.model)

    @cached_property
    def layer_eigs(self) -> EigResult:
        """λmax of every layer's Hessian block (one batched Lanczos, warm-started), shared by the rows."""
        res = layer_eigs(self.op, self.masks, v0=self.warm.get("layers"), **self.solver)
        self.warm["layers"] = res.vectors[:, 0]
        return res


def full_sharpness(ctx: Context) -> dict[str, Any]:
    """FullBS: the top-k eigenvalues of the full-batch Hessian, warm-started from the last eigenvectors."""
    res = eigs(ctx.op, ctx.m["top_k"], v0=ctx.warm.get("sharpness"), **ctx.solver)
    ctx.warm["sharpness"] = res.vectors  # (1, k, dim): start_vector sums the k vectors
    return {"sharpness": res.values[0], "sharpness_residual": res.residuals[0], "n_hvp": res.n_matvecs}


def directional_sharpness(ctx: Context) -> dict[str, Any]:
    """∇Lᵀ H ∇L / ‖∇L‖²."""
    return {"directional_sharpness": directional(ctx.op)}


def layer_sharpness(ctx: Context) -> dict[str, Any]:
    """λmax of every layer's Hessian block, all layers in one batched Lanczos."""
    return {"layer_sharpness": ctx.layer_eigs.values[:, 0]}


def _layer_curvature(ctx: Context) -> Callable:
    """The schedules' curvature read from this measurement's layer sharpness λ_{i,t} (``layerwise``)."""
    return lambda params, kind, state: {
        "layer_sharpness": dict(zip(ctx.masks, ctx.layer_eigs.values[:, 0].tolist(), strict=True))
    }


def preconditioned_sharpness(ctx: Context) -> dict[str, Any]:
    """λmax(D^½ H D^½) = η·λmax(P⁻¹H), D = ηP⁻¹ the per-parameter step sizes the rule's next step takes at θ_t
    (``layerwise``: η_k = lr/λ_{i,t} for the parameters k of layer i, with the λ_{i,t} of this measurement;
    ``constant``: lr·I; Adam: lr/((1 − β₁ᵗ)(√v̂ + ε)), :meth:`eoslab.rules.Rule.preconditioner`).

    A step θ − DH(θ − θ*) on a quadratic is stable iff this is below 2 (for Adam, (2 + 2β₁)/(1 − β₁); Cohen et al.
    2022, arXiv:2207.14484). For Fox's layer-wise 1/λ_{i,t} it lies in [1, L] for L layers (H PSD), for
    1/(2λ_{i,t}) in [½, L/2]."""
    if ctx.preconditioner is None:
        raise ValueError("preconditioned: needs the update rule's preconditioner (the tracker's optimizer= or lr=)")
    sizes = ctx.preconditioner(ctx.op.space.unflatten(ctx.op.gradient), _layer_curvature(ctx))
    d = ctx.op.space.flatten({k: sizes[k].to(v) for k, v in ctx.op.theta.items()}).sqrt()
    v0 = start_vector((d * ctx.op.gradient)[None], ctx.warm.get("preconditioned"), ctx.gen)
    res = lanczos(lambda V: d * ctx.op.matvec(d * V), v0, 1, ctx.m["tol"], ctx.m["max_iter"], ctx.gen)
    ctx.warm["preconditioned"] = res.vectors[:, 0]
    return {"preconditioned_sharpness": res.values[0, 0]}


def grad_norms(ctx: Context) -> dict[str, Any]:
    """‖∇L‖ and every layer's ‖∇_{θ_i} L‖."""
    g = ctx.op.gradient
    return {"grad_norm": g.norm().item(), "layer_grad_norm": [(g * M).norm().item() for M in ctx.masks.values()]}


def interaction_sharpness(ctx: Context) -> dict[str, Any]:
    """tr(H S_b), tr(S_b), tr(S_n), ‖H‖_{S_b} and ρ_b (sampled with standard errors, or exact)."""
    ia = interaction(
        ctx.op, ctx.X, ctx.Y, ctx.batch_size, ctx.m["interaction"], ctx.m["interaction_exact"], ctx.replace, ctx.gen
    )
    return {
        "tr_HS": ia.tr_HS,
        "tr_HS_se": ia.tr_HS_se,
        "tr_S": ia.tr_S,
        "tr_S_se": ia.tr_S_se,
        "tr_Sn": ia.tr_Sn,
        "interaction_sharpness": ia.sharpness,
        "interaction_sharpness_se": ia.sharpness_se,
        "rho": ia.rho,
        "rho_se": ia.rho_se,
    }


def hessian_trace(ctx: Context) -> dict[str, Any]:
    """Hutchinson's tr(H)."""
    est = hutchinson(ctx.op, ctx.m["trace"], ctx.gen)
    return {"hessian_trace": est.mean, "hessian_trace_se": est.se}


def minibatch(ctx: Context) -> dict[str, Any]:
    """MiniBS λmax(H_B) and Batch Sharpness g_BᵀH_Bg_B/‖g_B‖² of ``measure.minibatch`` fresh batches, and over the
    same batches the ratio of expectations E_B[g_BᵀH_Bg_B]/E_B[‖g_B‖²] = the ‖g_B‖²-weighted mean of the ratios
    (no extra products; Andreyev & Beneventano's published figures use the mean of ratios, ``batch_sharpness``)."""
    X, Y = ctx.problem.X, ctx.problem.Y
    idx = sample_batches(len(X), ctx.batch_size, ctx.m["minibatch"], ctx.replace, ctx.gen)
    mb = MiniBatchHessians(ctx.problem.model, ctx.problem.loss_fn, X[idx], Y[idx], ctx.params)
    res = minibatch_eigs(mb, **ctx.solver)  # fresh batches: each starts from its own gradient
    g = mb.gradients
    ratios, weights = batch_directional(mb, g), (g * g).sum(-1)
    return {
        "minibatch_sharpness": res.values[:, 0],
        "batch_sharpness": ratios,
        "batch_sharpness_of_means": ((ratios * weights).sum() / weights.sum()).item(),
    }


def noise_kernel(ctx: Context) -> dict[str, Any]:
    """Agarwala & Pennington's noise-kernel norm 𝒦 at the run's η and b, the stochastic edge η_c (𝒦 = 1), tr Θ and
    λmax(Θ), from the NTK spectrum on the full-batch examples, scaled to the loss stepped on (:data:`NTK_SCALE`)."""
    d = ctx.Y[0].numel()
    lam = ntk_eigenvalues(ctx.problem.model, ctx.X, ctx.params, ctx.m["chunk_size"]) * NTK_SCALE[ctx.loss](d)
    n, b = len(ctx.problem.X), ctx.batch_size
    return {
        "noise_kernel_norm": noise_kernel_norm(lam, ctx.lr, b, n, ctx.replace, d),
        "ntk_trace": lam.sum().item(),
        "ntk_max": lam[0].item(),
        "critical_lr": critical_lr(lam, b, n, ctx.replace, d),
    }


def lssr(ctx: Context) -> dict[str, Any]:
    """ρ = ρ_1 and, for b = 1, 2, 4, …, ≤ n, ρ_b = ‖∇L‖²/E‖g_b‖² exact (per-example gradients, pair counting) and by
    Monte Carlo over ``measure.lssr`` batches with its standard error, without and with (``_iid``) replacement."""
    n = len(ctx.X)
    sizes = [2**k for k in range(n.bit_length()) if 2**k <= n]
    moments = gradient_moments(ctx.op, ctx.X, ctx.Y)
    out: dict[str, Any] = {"rho_1": moments.rho, "lssr_batch_size": sizes}
    for replace, suffix in ((False, ""), (True, "_iid")):
        mc = [sampled_rho_b(ctx.op, ctx.X, ctx.Y, b, ctx.m["lssr"], replace, ctx.gen) for b in sizes]
        out[f"rho_b_exact{suffix}"] = [moments.rho_b(b, replace) for b in sizes]
        out[f"rho_b_mc{suffix}"] = [value for value, _ in mc]
        out[f"rho_b_mc_se{suffix}"] = [se for _, se in mc]
    return out


Wanted = Callable[[dict[str, Any]], bool]
MEASUREMENTS: list[tuple[str, Wanted, Callable[[Context], dict[str, Any]]]] = [
    ("sharpness", lambda m: m["sharpness"], full_sharpness),
    ("directional", lambda m: m["directional"], directional_sharpness),
    ("layers", lambda m: m["layers"], layer_sharpness),
    ("grad_norms", lambda m: m["grad_norms"], grad_norms),
    ("interaction", lambda m: bool(m["interaction"] or m["interaction_exact"]), interaction_sharpness),
    ("trace", lambda m: bool(m["trace"]), hessian_trace),
    ("minibatch", lambda m: bool(m["minibatch"]), minibatch),
    ("preconditioned", lambda m: m["preconditioned"], preconditioned_sharpness),
    ("noise_kernel", lambda m: m["noise_kernel"], noise_kernel),
    ("lssr", lambda m: bool(m["lssr"]), lssr),
]
"""(measure key, wanted(measure section), take(ctx)), run in this order."""


def take_measurements(ctx: Context) -> dict[str, Any]:
    """Every measurement the config switches on, in table order."""
    out: dict[str, Any] = {}
    for _, wanted, take in MEASUREMENTS:
        if wanted(ctx.m):
            out |= take(ctx)
    return out
