"""The Hessian's spectral density by stochastic Lanczos quadrature (SLQ), and a plot of it.

SLQ (Lin, Saad & Yang, “Approximating spectral densities of large matrices”, SIAM Review 2016, arXiv:1308.5467;
for networks Ghorbani, Krishnan & Xiao, “An Investigation into Neural Net Optimization via Hessian Eigenvalue
Density”, ICML 2019, arXiv:1901.10159, PyHessian's ``density()``): the density φ(λ) = (1/d) Σ_j δ(λ − λ_j) of the
d eigenvalues satisfies (1/d) tr f(H) = E_v[vᵀ f(H) v] for unit random v with E[vvᵀ] = I/d. For each of
``n_probes`` Rademacher probes, m Lanczos steps from v give T_m = S diag(θ) Sᵀ and the Gauss quadrature
vᵀ f(H) v ≈ Σ_i τ_i f(θ_i), τ_i = S_{1i}², exact for polynomials of degree ≤ 2m − 1. So φ ≈ mean_v Σ_i τ_i
δ(λ − θ_i): nodes θ and weights τ. The extreme nodes converge first: the outliers above the bulk (at the edge of
stability, λmax ≈ 2/η) are resolved in a few dozen steps, the bulk as a smoothed mass.
"""

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eoslab.batches import Data
from eoslab.checks import check_inputs
from eoslab.curvature import rademacher
from eoslab.eigen import lanczos
from eoslab.losses import LossFn
from eoslab.operators import HessianOperator, Params, Selection


@dataclass(frozen=True)
class Density:
    """SLQ nodes θ and weights τ, (n_probes, steps) each; every row's weights sum to 1."""

    nodes: Tensor
    weights: Tensor

    def moment(self, p: int) -> float:
        """The p-th moment of the density, (1/d) tr(H^p) ≈ mean_v Σ_i τ_i θ_i^p."""
        return (self.weights * self.nodes**p).sum(-1).mean().item()

    def smooth(self, grid: Tensor, sigma: float) -> Tensor:
        """φ on ``grid`` with every node a Gaussian of width ``sigma``: mean_v Σ_i τ_i N(λ; θ_i, σ²)."""
        z = (grid[:, None, None] - self.nodes) / sigma
        kernel = torch.exp(-0.5 * z**2) / (sigma * (2 * torch.pi) ** 0.5)
        return (self.weights * kernel).sum(-1).mean(-1)

    def __repr__(self) -> str:
        return (
            f"Density(n_probes={len(self.nodes)}, steps={self.nodes.shape[1]}, range=[{self.nodes.min():.4g}, "
            f"{self.nodes.max():.4g}], mean={self.moment(1):.4g})"
        )


def slq(op: HessianOperator, n_probes: int = 10, steps: int = 60, generator: torch.Generator | None = None) -> Density:
    """:class:`Density` of an operator: ``steps`` Lanczos steps (full reorthogonalisation) from each of ``n_probes``
    Rademacher probes, all probes batched (``steps`` products of ``n_probes`` rows)."""
    res = lanczos(op.matvec, rademacher(n_probes, op, generator), 1, 0.0, steps, generator)
    return Density(res.nodes, res.weights)


def spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    X: Data,
    y: Tensor | None = None,
    *,
    n_probes: int = 10,
    steps: int = 60,
    params: Params | None = None,
    names: Selection = None,
    chunk_size: int | None = None,
    curvature: str = "hessian",
    generator: torch.Generator | None = None,
) -> Density:
    """The spectral density of ∇²L (or of G with ``curvature="ggn"``) by stochastic Lanczos quadrature; arguments
    as for :func:`eoslab.curvature.top_eigenvalues`."""
    data = check_inputs(model, X, y, params, names, chunk_size, n_probes=n_probes, steps=steps)
    op = HessianOperator(model, loss_fn, data, None, params, names, curvature=curvature)
    return slq(op, n_probes, steps, generator)


def plot_density(density: Density, ax: Any = None, sigma: float | None = None, points: int = 1000) -> Any:
    """φ(λ) on a log scale (the bulk and the outliers both visible), ``sigma`` default 1/200 of the node range;
    returns the matplotlib axes."""
    import matplotlib.pyplot as plt

    lo, hi = density.nodes.min().item(), density.nodes.max().item()
    sigma = sigma or max(hi - lo, 1e-12) / 200
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, points, dtype=density.nodes.dtype)
    ax = ax or plt.subplots(figsize=(5, 3))[1]
    ax.semilogy(grid.numpy(), density.smooth(grid, sigma).clamp_min(1e-12).numpy())
    ax.set(xlabel="eigenvalue λ", ylabel="density φ(λ)", ylim=(1e-6, None))
    return ax
