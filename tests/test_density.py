"""Stochastic Lanczos quadrature against the dense spectrum: exact Gauss quadrature per probe, the moments of the
eigenvalue density, the outliers' locations; and the plot helper."""

import matplotlib
import pytest
import torch
from helpers import dense_hessian, make_problem

import eoslab
from eoslab.curvature import rademacher
from eoslab.density import Density, plot_density, slq
from eoslab.operators import HessianOperator

matplotlib.use("Agg")


def test_slq_is_gauss_quadrature_of_each_probe(problem64):
    """Σ τ_i θ_i^p = vᵀH^pv/‖v‖² exactly (to rounding) for p ≤ 2m − 1, with the very probes SLQ drew."""
    model, loss_fn, X, y = problem64
    H = dense_hessian(model, loss_fn, X, y)
    op = HessianOperator(model, loss_fn, X, y)
    density = slq(op, n_probes=4, steps=12, generator=torch.Generator().manual_seed(0))
    v = rademacher(4, op, torch.Generator().manual_seed(0)) / op.dim**0.5
    assert torch.allclose(density.weights.sum(-1), torch.ones(4, dtype=torch.float64), rtol=1e-12)
    scale = torch.linalg.eigvalsh(H).abs().max()
    for p in range(6):
        want = (v * (v @ torch.linalg.matrix_power(H, p))).sum(-1).mean().item()
        assert density.moment(p) == pytest.approx(want, rel=1e-8, abs=1e-10 * scale.item() ** p)


def test_density_moments_and_outliers_match_the_dense_spectrum():
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    lam = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, X, y))
    density = eoslab.spectral_density(
        model, loss_fn, X, y, n_probes=200, steps=30, generator=torch.Generator().manual_seed(1)
    )
    for p in (1, 2):  # (1/d) tr(H^p), Monte Carlo over 200 probes
        assert density.moment(p) == pytest.approx(lam.pow(p).mean().item(), rel=0.05)
    tops = density.nodes.sort(-1, descending=True).values
    assert torch.allclose(tops[:, 0], lam[-1].expand(200), rtol=1e-8)  # the outliers, found by every probe
    assert torch.allclose(tops[:, 1], lam[-2].expand(200), rtol=1e-6)
    assert density.nodes.min() >= lam[0] - 1e-9  # Ritz values lie inside the spectrum
    grid = torch.linspace(lam[0] - 1, lam[-1] + 1, 4001, dtype=torch.float64)
    phi = density.smooth(grid, sigma=0.05)
    assert (phi * (grid[1] - grid[0])).sum().item() == pytest.approx(1.0, rel=1e-6)  # a probability density
    assert "Density(n_probes=200, steps=30" in repr(density)


def test_plot_density_draws_the_smoothed_density():
    density = Density(torch.tensor([[0.0, 1.0, 5.0]], dtype=torch.float64), torch.tensor([[0.5, 0.3, 0.2]]).double())
    ax = plot_density(density, sigma=0.1)
    x, y = ax.lines[0].get_data()
    assert x.min() == pytest.approx(-0.5) and x.max() == pytest.approx(5.5)
    assert y.max() == pytest.approx(0.5 / (0.1 * (2 * torch.pi) ** 0.5), rel=1e-3)
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "eigenvalue λ"
