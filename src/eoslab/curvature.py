"""Curvature measurements of the edge-of-stability papers, on any ``nn.Module`` and batch-mean loss.

Common arguments: ``model``, ``loss_fn(pred, y)`` returning the batch-mean loss L (the Hessian is of exactly that
function, see :mod:`eoslab.losses`; any other loss, e.g. ``nn.MSELoss()``, gets their shape check), data ``X, y``
(or, for the full-batch functions, ``X`` an iterable of (X, y) batches such as a DataLoader, ``y`` omitted: the
loss is weighted by batch size, so the result is the one-tensor result, see :mod:`eoslab.batches`); ``params`` (a
dict overriding the module's parameter values: every parameter), ``names`` (the parameters to differentiate, the
others held fixed: by default **those with ``requires_grad``**, as an optimizer would train them; a list of names, a
regular expression or a predicate on the name, see :func:`eoslab.operators.select`), ``curvature`` ("hessian", or
"ggn" for the generalized Gauss–Newton matrix, :class:`eoslab.operators.GaussNewtonGraph`), ``chunk_size`` (bounds
memory: examples
per chunk for full-batch quantities, each Hessian-vector product then rebuilds one chunk's gradient graph at a time,
~1.7× the time per product; without it one graph of all n examples is built once and reused: on a 2.4 M-parameter
MLP with n = 8192, peak memory 1009 MB unchunked against 557 MB with ``chunk_size=1024``). Eigenvalues are
returned to the relative accuracy ``tol`` (default 1e-3; see :mod:`eoslab.eigen`). Mini-batches are drawn by
:func:`sample_batches`: b distinct examples (without replacement, γ_{n,b} = (n−b)/(n−1)) or b i.i.d. examples
(with replacement, γ = 1), independently for each of the m batches. Arguments are checked before any compute
(:mod:`eoslab.checks`), and attention runs through kernels that can be differentiated twice
(:func:`eoslab.operators.differentiable_attention`).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn
from torch.func import grad, vmap

from eoslab.batches import Batches, Data
from eoslab.checks import check_inputs
from eoslab.eigen import EigResult, lanczos, short_lanczos, start_vector
from eoslab.losses import LossFn
from eoslab.operators import (
    HessianOperator,
    MiniBatchHessians,
    Params,
    Selection,
    differentiable_attention,
    objective,
    select,
    split_params,
)


@dataclass(frozen=True)
class Estimate:
    """A Monte-Carlo mean over m draws: ``values`` (m,), ``mean`` and its standard error ``se`` = std/√m."""

    values: Tensor

    @property
    def mean(self) -> float:
        return self.values.mean().item()

    @property
    def se(self) -> float:
        m = self.values.numel()
        return self.values.std().item() / m**0.5 if m > 1 else float("nan")

    def __repr__(self) -> str:
        return f"Estimate({self.mean:.6g} ± {self.se:.2g} (se), m={self.values.numel()})"


def sample_batches(
    n: int, batch_size: int, n_batches: int, replace: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    """(m, b) example indices: each row b distinct indices (``replace=False``) or b i.i.d. uniform ones."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, n={n}], got {batch_size}")
    if replace:
        return torch.randint(n, (n_batches, batch_size), generator=generator)
    return torch.stack([torch.randperm(n, generator=generator)[:batch_size] for _ in range(n_batches)])


def eigs(
    op: HessianOperator,
    k: int = 1,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
) -> EigResult:
    """The k largest eigenpairs of a Hessian operator by Lanczos; ``v0`` ((dim,) or (k, dim)) warm-starts."""
    warm = None if v0 is None else v0.reshape(1, -1, op.dim)
    v = start_vector(op.gradient[None], warm, generator)
    return lanczos(op.matvec, v, k, tol, max_iter, generator, criterion)


def top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    X: Data,
    y: Tensor | None = None,
    k: int = 1,
    *,
    params: Params | None = None,
    names: Selection = None,
    chunk_size: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
    curvature: str = "hessian",
) -> EigResult:
    """The k largest eigenpairs of the full-batch Hessian ∇²L(θ) by Lanczos (``EigResult`` with m = 1).

    ``tol`` bounds the relative residual ‖Hv − λv‖ ≤ tol·|λ|, so each eigenvalue is within tol·|λ| of one of H's
    (``EigResult.errors``) and the eigenvectors are accurate; ``criterion="eigenvalue"`` stops on the sharper gap
    bound r²/δ instead (a few products fewer; it can miss a close eigenvalue above, see :mod:`eoslab.eigen`).
    ``v0`` warm-starts from earlier eigenvectors ((dim,) or (k, dim)), e.g. the previous
    measurement's.
    """
    data = check_inputs(model, X, y, params, names, chunk_size, k=k, tol=tol, max_iter=max_iter)
    op = HessianOperator(model, loss_fn, data, None, params, names, curvature=curvature)
    return eigs(op, k, tol, max_iter, v0, generator, criterion)


def sharpness(
    model: nn.Module, loss_fn: LossFn, X: Data, y: Tensor | None = None, k: int = 1, **options
) -> float | Tensor:
    """Full-batch sharpness λmax(∇²L(θ)) ("FullBS", Andreyev & Beneventano); with k > 1 the top-k eigenvalues.

    L = (1/n) Σ_i ℓ_i over all of (X, y). Options as for :func:`top_eigenvalues`.
    """
    values = top_eigenvalues(model, loss_fn, X, y, k, **options).values[0]
    return values.item() if k == 1 else values


def minibatch_eigs(
    op: MiniBatchHessians,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
    vectors: bool = False,
) -> EigResult:
    """λmax(H_{B_j}) for every batch of the stacked operator, all problems at once by the Lanczos recurrence alone
    (:func:`~eoslab.eigen.short_lanczos`: three (m, dim) tensors in memory, not an m × steps × dim basis);
    ``vectors=True`` also forms the eigenvectors, at twice the products.

    ``v0`` ((dim,), (k, dim) or (m, dim)) warm-starts every batch; by default each starts from its own gradient g_B
    (plus noise). A warm start from other batches' eigenvectors (the previous measurement's) saves nothing: on an MLP
    at the edge of stability it took 17–21 products against 16–21 from g_B.
    """
    warm = None
    if v0 is not None:
        warm = v0.expand(op.m, op.dim) if v0.dim() == 1 or v0.shape[0] != op.m else v0
    return short_lanczos(
        op.matvec, start_vector(op.gradients, warm, generator), tol, max_iter, generator, criterion, vectors
    )


def minibatch_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    batch_size: int,
    n_batches: int = 20,
    *,
    batches: Tensor | None = None,
    replace: bool = False,
    params: Params | None = None,
    names: Selection = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
    curvature: str = "hessian",
) -> Estimate:
    """Mini-batch sharpness λmax(∇²L_B(θ)) for m batches ("MiniBS"); ``.mean`` is the average MiniBS.

    L_B = (1/b) Σ_{i∈B} ℓ_i. E_B[λmax(H_B)] ≥ λmax(E_B H_B) = λmax(H) by convexity of λmax (Andreyev &
    Beneventano, Lemma 1). All m Lanczos problems run together on the stacked block-diagonal operator; ``batches``
    fixes the (m, b) indices, otherwise they are drawn by :func:`sample_batches`.
    """
    sizes = {"batch_size": batch_size, "n_batches": n_batches, "tol": tol, "max_iter": max_iter}
    X, y = check_inputs(model, X, y, params, names, **sizes).tensors("minibatch_sharpness")
    if batches is None:
        batches = sample_batches(len(X), batch_size, n_batches, replace, generator)
    op = MiniBatchHessians(model, loss_fn, X[batches], y[batches], params, names, curvature)
    return Estimate(minibatch_eigs(op, tol, max_iter, v0, generator, criterion).values[:, 0])


def batch_directional(op: MiniBatchHessians, g: Tensor | None = None) -> Tensor:
    """g_Bᵀ H_B g_B / ‖g_B‖² for every batch of the stacked operator (one HVP per batch). ``g``: the (m, dim)
    ``op.gradients`` where the caller holds them already (each access of that property flattens a new copy)."""
    g = op.gradients if g is None else g
    return (g * op.matvec(g)).sum(-1) / (g * g).sum(-1)


def batch_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    batch_size: int,
    n_batches: int = 20,
    *,
    batches: Tensor | None = None,
    replace: bool = False,
    params: Params | None = None,
    names: Selection = None,
    generator: torch.Generator | None = None,
    curvature: str = "hessian",
) -> Estimate:
    """Batch Sharpness E_B[g_Bᵀ H_B g_B / ‖g_B‖²], g_B and H_B on the same mini-batch (Andreyev & Beneventano).

    The expectation is outside the ratio; one HVP per batch, all batches at once.
    """
    sizes = {"batch_size": batch_size, "n_batches": n_batches}
    X, y = check_inputs(model, X, y, params, names, **sizes).tensors("batch_sharpness")
    if batches is None:
        batches = sample_batches(len(X), batch_size, n_batches, replace, generator)
    op = MiniBatchHessians(model, loss_fn, X[batches], y[batches], params, names, curvature)
    return Estimate(batch_directional(op))


def directional(op: HessianOperator) -> float:
    """∇Lᵀ H ∇L / ‖∇L‖² of a full-batch operator (its gradient comes with it)."""
    g = op.gradient
    return ((g @ op.matvec(g)) / (g @ g)).item()


def directional_sharpness(model: nn.Module, loss_fn: LossFn, X: Data, y: Tensor | None = None, **options) -> float:
    """Full-batch directional sharpness ∇Lᵀ H ∇L / ‖∇L‖² (Andreyev & Beneventano eq. 2; Lee & Jang's
    ‖H‖_{S_n} for GD). Options: ``params``, ``names``, ``chunk_size``, ``curvature`` (see the module docstring)."""
    data = check_inputs(model, X, y, options.get("params"), options.get("names"), options.pop("chunk_size", None))
    return directional(HessianOperator(model, loss_fn, data, **options))


def layers(model: nn.Module, names: Selection = None) -> dict[str, list[str]]:
    """Module name → the differentiated parameters it owns directly (e.g. "0" → ["0.weight", "0.bias"]).

    Only the parameters ``names`` selects (default: those with ``requires_grad``, :func:`eoslab.operators.select`)
    count, so a frozen layer is no layer. Modules sharing a parameter (tied weights, e.g. a language model's output
    layer reusing its embedding) are one layer, named for all of them joined by "+" (e.g. "embed+head"), with the
    shared parameter once, under its ``named_parameters`` name.
    """
    chosen = set(select(model, names))
    canonical = {id(p): k for k, p in model.named_parameters()}
    groups: list[tuple[list[str], list[str]]] = []  # (module names, parameter names), in module order
    for name, module in model.named_modules():
        own = [canonical[id(p)] for p in module.parameters(recurse=False) if canonical[id(p)] in chosen]
        if not own:
            continue
        shared = [i for i, (_, params) in enumerate(groups) if set(params) & set(own)]
        modules = [m for i in shared for m in groups[i][0]] + [name]
        params = list(dict.fromkeys([k for i in shared for k in groups[i][1]] + own))
        at = shared[0] if shared else len(groups)
        groups = [g for i, g in enumerate(groups) if i not in shared]
        groups.insert(at, (modules, params))
    return {"+".join(modules): params for modules, params in groups}


def layer_masks(op: HessianOperator, model: nn.Module) -> dict[str, Tensor]:
    """Layer name → 0/1 mask over the operator's flat parameter vector selecting that layer's entries (the layers
    of the operator's parameters, :func:`layers`)."""
    masks = {}
    for layer, names in layers(model, list(op.theta)).items():
        tree = {k: torch.full_like(v, float(k in names)) for k, v in op.theta.items()}
        masks[layer] = op.space.flatten(tree)
    return masks


def layer_eigs(
    op: HessianOperator,
    masks: dict[str, Tensor],
    tol: float = 1e-3,
    max_iter: int = 100,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
) -> EigResult:
    """λmax of every diagonal block H_ii = P_i H P_iᵀ at once, with the full operator's reused graph.

    Row i of the batched problem is the operator v ↦ M_i H M_i v (M_i the layer's mask), whose spectrum is that
    of H_ii plus zeros: one vmapped HVP of the full operator per Lanczos step serves every layer. ``v0`` is
    (n_layers, dim), e.g. the previous call's vectors.
    """
    M = torch.stack(list(masks.values()))
    warm = None if v0 is None else v0.reshape(len(M), -1) * M + 1e-3 * M  # keep every block's start non-zero
    v = start_vector(M * op.gradient, warm, generator) * M
    return lanczos(lambda V: M * op.matvec(M * V), v, 1, tol, max_iter, generator, criterion)


def layer_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    X: Data,
    y: Tensor | None = None,
    *,
    params: Params | None = None,
    names: Selection = None,
    chunk_size: int | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
    criterion: str = "residual",
    curvature: str = "hessian",
) -> dict[str, float]:
    """Layer sharpness λmax(∇²_{(W_i, b_i)} L) for every layer i, others fixed (Fox, Ch. 3).

    By Cauchy interlacing each is ≤ the full sharpness. Returns layer name → value (max(λmax(H_ii), 0)); the layers
    are those of :func:`layers` (frozen parameters are no layer, tied ones one block named for every module).
    """
    data = check_inputs(model, X, y, params, names, chunk_size, tol=tol, max_iter=max_iter)
    op = HessianOperator(model, loss_fn, data, None, params, names, curvature=curvature)
    masks = layer_masks(op, model)
    values = layer_eigs(op, masks, tol, max_iter, generator=generator, criterion=criterion).values[:, 0]
    return dict(zip(masks, values.tolist(), strict=True))


@dataclass(frozen=True)
class InteractionSharpness:
    """Lee & Jang's quantities for batch size b: tr(H S_b), tr(S_b), tr(S_n) = ‖∇L‖², with S_b = E[g_b g_bᵀ].

    ``sharpness`` = ‖H‖_{S_b} = tr(H S_b)/tr(S_b) (interaction-aware sharpness) and ``rho`` = ρ_b = tr(S_n)/tr(S_b);
    the IIR bound reads ‖H‖_{S_b} ≤ 2ρ_b/η. ``*_se`` are standard errors (0 for the exact computation); the
    ratios' by the delta method.
    """

    tr_HS: float
    tr_S: float
    tr_Sn: float
    tr_HS_se: float = 0.0
    tr_S_se: float = 0.0
    sharpness_se: float = 0.0
    rho_se: float = 0.0

    @property
    def sharpness(self) -> float:
        return self.tr_HS / self.tr_S

    @property
    def rho(self) -> float:
        return self.tr_Sn / self.tr_S

    def __repr__(self) -> str:
        return (
            f"InteractionSharpness(‖H‖_S={self.sharpness:.6g} ± {self.sharpness_se:.2g}, ρ={self.rho:.4g} ± "
            f"{self.rho_se:.2g}, tr(HS)={self.tr_HS:.6g}, tr(S)={self.tr_S:.6g}, tr(S_n)={self.tr_Sn:.6g})"
        )


def gamma(n: int, batch_size: ArrayLike, replace: bool) -> ArrayLike:
    """γ_{n,b} = (n − b)/(n − 1) without replacement, 1 with replacement (Lee & Jang): C_b = (γ/b)(S_1 − S_n)."""
    return 1.0 if replace else (n - batch_size) / (n - 1)


def quadratic_forms(op: HessianOperator, rows: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """gᵀHg and ‖g‖² of every row g, consuming ``rows`` ((c, dim) blocks) one block at a time.

    Memory holds one block and its c vmapped HVPs, never all rows: vmapping hundreds of HVPs at once is also
    slower (memory-bound) than blocks of ~16 (``benchmarks/exact_traces.py``).
    """
    gHg, gg = [], []
    for g in rows:
        gHg.append((g * op.matvec(g)).sum(-1))
        gg.append((g * g).sum(-1))
    return torch.cat(gHg), torch.cat(gg)


def batch_gradients(op: HessianOperator, X: Tensor, y: Tensor, batches: Tensor, chunk: int = 16) -> Iterator[Tensor]:
    """g_B = ∇L_B at the operator's θ for every row of ``batches`` ((m, b) example indices), as (≤ chunk, dim)
    blocks (vmap of grad); ``batches`` = arange(n)[:, None] gives the per-example gradients g_i = ∇ℓ_i."""
    fn = vmap(grad(op.f), in_dims=(None, 0, 0))
    for i in batches.split(chunk):
        with differentiable_attention():
            g = fn(op.theta, X[i], y[i])
        yield op.space.flatten(g, batch_dims=1)


def per_example(n: int) -> Tensor:
    """The (n, 1) "batches" of single examples."""
    return torch.arange(n)[:, None]


def interaction(
    op: HessianOperator,
    X: Tensor | Batches,
    y: Tensor | None,
    batch_size: int,
    n_batches: int = 100,
    exact: bool = False,
    replace: bool = False,
    generator: torch.Generator | None = None,
    grad_chunk: int = 16,
) -> InteractionSharpness:
    """tr(H S_b), tr(S_b), tr(S_n) with the full-batch operator ``op`` over the same (X, y).

    Sampled (default): m mini-batch gradients g_b, tr(H S_b) ≈ mean g_bᵀ H g_b and tr(S_b) ≈ mean ‖g_b‖².
    ``exact=True``: from the n per-example gradients g_i, with γ = γ_{n,b},
    tr(S_b) = (γ/b)·(1/n)Σ‖g_i‖² + (1 − γ/b)‖∇L‖² and tr(H S_b) = (γ/b)·(1/n)Σ g_iᵀHg_i + (1 − γ/b)∇LᵀH∇L
    (n + 1 HVPs). Either way the gradients are streamed ``grad_chunk`` rows at a time: memory O(grad_chunk·dim), never
    O(n·dim). The exact computation also reads ``X`` as :class:`~eoslab.batches.Batches` (a loader), batch by batch.
    """
    data = X if isinstance(X, Batches) else Batches(X, y)
    g_full = op.gradient
    gg = (g_full @ g_full).item()
    if exact:
        rows = (g for Xb, yb in data.pairs() for g in batch_gradients(op, Xb, yb, per_example(len(Xb)), grad_chunk))
        gHg_i, gg_i = quadratic_forms(op, rows)
        c = gamma(data.n, batch_size, replace) / batch_size
        gHg = (g_full @ op.matvec(g_full)).item()
        return InteractionSharpness(c * gHg_i.mean().item() + (1 - c) * gHg, c * gg_i.mean().item() + (1 - c) * gg, gg)
    X, y = data.tensors("interaction_sharpness (sampled; exact=True reads batches)")
    idx = sample_batches(len(X), batch_size, n_batches, replace, generator)
    a, s = quadratic_forms(op, batch_gradients(op, X, y, idx, grad_chunk))
    m = len(a)
    ratio = a.mean() / s.mean()
    # delta method for a ratio of means: Var(ā/s̄) ≈ Var(a − r·s)/(m·s̄²)
    s_se = (s.std() / m**0.5).item()
    return InteractionSharpness(
        a.mean().item(),
        s.mean().item(),
        gg,
        tr_HS_se=(a.std() / m**0.5).item(),
        tr_S_se=s_se,
        sharpness_se=((a - ratio * s).std() / (m**0.5 * s.mean())).item(),
        rho_se=gg / s.mean().item() * s_se / s.mean().item(),
    )


def interaction_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    X: Data,
    y: Tensor | None,
    batch_size: int,
    n_batches: int = 100,
    *,
    exact: bool = False,
    replace: bool = False,
    params: Params | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
    grad_chunk: int = 16,
) -> InteractionSharpness:
    """Interaction-aware sharpness ‖H‖_{S_b} = tr(H S_b)/tr(S_b) with the full-batch H (Lee & Jang).

    See :func:`interaction` for the sampled and the exact computation; ``exact=True`` also takes ``X`` an iterable of
    (X, y) batches (``y`` None), the sampled one needs tensors.
    """
    counts = {"batch_size": batch_size, "n_batches": n_batches, "grad_chunk": grad_chunk}
    data = check_inputs(model, X, y, params, None, chunk_size, **counts)
    if not exact:
        data.tensors("interaction_sharpness (sampled; exact=True reads batches)")
    op = HessianOperator(model, loss_fn, data, None, params)
    return interaction(op, data, None, batch_size, n_batches, exact, replace, generator, grad_chunk)


def rho_b(rho: float, n: int, batch_size: ArrayLike, replace: bool = False) -> np.ndarray:
    """ρ_b = 1 / [(γ_{n,b}/b)/ρ + 1 − γ_{n,b}/b] (Lee & Jang eq. 12, the LSSR curve) from ρ = ρ_1 = tr(S_n)/tr(S_1).

    ≈ bρ/γ for small b (linear), → 1 for large b (saturation); γ_{n,b} as in :func:`gamma`, for an array of b.
    """
    b = np.asarray(batch_size, dtype=float)
    c = gamma(n, b, replace) / b
    return 1.0 / (c / rho + 1.0 - c)


@dataclass(frozen=True)
class GradientMoments:
    """Per-example gradient moments at θ: n, ‖∇L‖² = tr(S_n), m2 = (1/n)Σ‖g_i‖² = tr(S_1) and ‖Σ_i g_i‖²."""

    n: int
    tr_Sn: float
    m2: float
    sum_sq: float

    @property
    def rho(self) -> float:
        """ρ = ρ_1 = tr(S_n)/tr(S_1)."""
        return self.tr_Sn / self.m2

    def second_moment(self, batch_size: int, replace: bool = False) -> float:
        """E‖g_b‖² by counting pairs: (1/b)·m2 + (1 − 1/b)·E[g_iᵀg_j], the two indices of a pair distinct
        (mean over i ≠ j: (‖Σg_i‖² − n·m2)/(n(n−1))) or independent (‖Σg_i‖²/n²)."""
        n = self.n
        cross = self.sum_sq / n**2 if replace else (self.sum_sq - n * self.m2) / (n * (n - 1))
        return self.m2 / batch_size + (1 - 1 / batch_size) * cross

    def rho_b(self, batch_size: int, replace: bool = False) -> float:
        """ρ_b = ‖∇L‖²/E‖g_b‖², exact."""
        return self.tr_Sn / self.second_moment(batch_size, replace)


def gradient_moments(op: HessianOperator, X: Tensor, y: Tensor, grad_chunk: int = 16) -> GradientMoments:
    """:class:`GradientMoments` from the per-example gradients, streamed ``grad_chunk`` at a time (no HVPs)."""
    total, m2 = torch.zeros_like(op.gradient), 0.0
    for g in batch_gradients(op, X, y, per_example(len(X)), grad_chunk):
        total += g.sum(0)
        m2 += (g * g).sum().item()
    g_full = op.gradient
    return GradientMoments(len(X), (g_full @ g_full).item(), m2 / len(X), (total @ total).item())


def sampled_rho_b(
    op: HessianOperator,
    X: Tensor,
    y: Tensor,
    batch_size: int,
    n_batches: int,
    replace: bool = False,
    generator: torch.Generator | None = None,
    grad_chunk: int = 16,
) -> tuple[float, float]:
    """Monte-Carlo ρ_b = ‖∇L‖² / mean_j ‖g_{B_j}‖² over m sampled batches, and its standard error (delta method)."""
    idx = sample_batches(len(X), batch_size, n_batches, replace, generator)
    s = torch.cat([(g * g).sum(-1) for g in batch_gradients(op, X, y, idx, grad_chunk)])
    gg = (op.gradient @ op.gradient).item()
    mean = s.mean().item()
    return gg / mean, gg / mean * (s.std() / n_batches**0.5).item() / mean


def rademacher(n: int, op: HessianOperator, generator: torch.Generator | None = None) -> Tensor:
    """n random sign vectors (n, dim), in the operator's dtype and on its device."""
    return torch.randint(0, 2, (n, op.dim), generator=generator).to(op.gradient) * 2 - 1


def hutchinson(op: HessianOperator, n_probes: int = 100, generator: torch.Generator | None = None) -> Estimate:
    """Hutchinson's estimate of tr(H) = E_v[vᵀHv] with Rademacher probes v (all probes vmapped)."""
    v = rademacher(n_probes, op, generator)
    return Estimate((v * op.matvec(v)).sum(-1))


def hutchpp(op: HessianOperator, n_probes: int = 99, generator: torch.Generator | None = None) -> Estimate:
    """Hutch++ (Meyer, Musco, Musco & Woodruff, “Hutch++: Optimal Stochastic Trace Estimation”, 2021,
    arXiv:2010.09649): tr(H) = tr(QᵀHQ) + tr((I − QQᵀ) H (I − QQᵀ)), Q an orthonormal basis of H S for k = m/3
    Rademacher probes S, the second term by Hutchinson with k probes projected off Q; m = ``n_probes`` products.

    The top of the spectrum (a Hessian's outliers) is taken exactly, so the error falls like 1/m where Hutchinson's
    falls like 1/√m. ``benchmarks/trace_estimators.py``, a 1,507-parameter MLP trained by GD to the edge: relative
    error 1.4e-3 at 120 products against Hutchinson's 3.0e-2 (which would need ~56,000); at initialisation, where
    no outliers stand out, and below ~60 products it is no better than Hutchinson. ``values`` are tr(QᵀHQ) + each
    remainder probe's quadratic form: their mean is the estimate, ``se`` the remainder's standard error (given Q).
    """
    k = n_probes // 3
    if k < 1:
        raise ValueError(f"n_probes must be ≥ 3 for Hutch++ (a third each for S, Q and the remainder), got {n_probes}")
    Q = torch.linalg.qr(op.matvec(rademacher(k, op, generator)).T).Q.T
    G = rademacher(n_probes - 2 * k, op, generator)
    G = G - (G @ Q.T) @ Q
    return Estimate((Q * op.matvec(Q)).sum() + (G * op.matvec(G)).sum(-1))


TRACE_ESTIMATORS = {"hutchinson": hutchinson, "hutch++": hutchpp}
"""``method=`` of :func:`hessian_trace`."""


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    X: Data,
    y: Tensor | None = None,
    n_probes: int = 100,
    *,
    params: Params | None = None,
    names: Selection = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
    method: str = "hutchinson",
    curvature: str = "hessian",
) -> Estimate:
    """tr(∇²L) by Hutchinson, or ``method="hutch++"`` (:func:`hutchpp`), with ``n_probes`` products (of a layer's
    block with ``names``)."""
    if method not in TRACE_ESTIMATORS:
        raise ValueError(f"method must be one of {sorted(TRACE_ESTIMATORS)}, got {method!r}")
    data = check_inputs(model, X, y, params, names, chunk_size, n_probes=n_probes)
    op = HessianOperator(model, loss_fn, data, None, params, names, curvature=curvature)
    return TRACE_ESTIMATORS[method](op, n_probes, generator)


def gradient_norms(
    model: nn.Module,
    loss_fn: LossFn,
    X: Data,
    y: Tensor | None = None,
    params: Params | None = None,
    names: Selection = None,
) -> dict:
    """‖∇_{θ_i} L‖ for every layer i (:func:`layers`), and "" (the root module's name) → ‖∇L‖ (of the parameters
    ``names``, default those with ``requires_grad``)."""
    data = check_inputs(model, X, y, params, names)
    theta, frozen = split_params(model, params, names)
    fn = grad(objective(model, loss_fn, frozen))
    g: dict[str, Tensor] = {}
    for w, Xc, yc in data:
        with differentiable_attention():
            gc = fn(theta, Xc, yc)
        g = {k: g.get(k, 0.0) + w * v for k, v in gc.items()}
    sq = {k: v.pow(2).sum() for k, v in g.items()}
    out = {layer: sum(sq[k] for k in names).sqrt().item() for layer, names in layers(model, list(theta)).items()}
    return out | {"": sum(sq.values()).sqrt().item()}
