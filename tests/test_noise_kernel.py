"""The noise-kernel norm 𝒦 against brute force: the renewal kernel's sum, ρ(A + B), the exact second-moment map
enumerated over every batch, SGD Monte Carlo; the NTK spectrum against a dense Jacobian."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

import eoslab
from eoslab.data import gaussian_linear_regression
from eoslab.models import LinearRegression
from eoslab.noise_kernel import (
    mean_square_critical_lr,
    mean_square_rate,
    moment_matrices,
    renewal_kernel,
    second_moment_step,
    sgd_beta,
    sgd_linear_regression,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def regression():
    """Agarwala & Pennington's Fig. 1 setup: D = 100 examples, P = 120 Gaussian features, B = 5."""
    data = gaussian_linear_regression(D=100, P=120, seed=0, dtype=F64)
    ntk = data.X @ data.X.T / 100
    return data.X, data.y, ntk, torch.linalg.eigvalsh(ntk)


def test_beta():
    assert sgd_beta(100, 5) == pytest.approx(95 / (5 * 99))
    assert sgd_beta(100, 5, replace=True) == 0.2
    assert sgd_beta(100, 100) == 0  # the full batch has no noise


@pytest.mark.parametrize("replace", [False, True])
def test_norm_is_the_sum_of_the_renewal_kernel_and_a_perron_eigenvalue(regression, replace):
    *_, lam = regression
    eta = 7.0
    k = eoslab.noise_kernel_norm(lam, eta, 5, 100, replace)
    direct = renewal_kernel(lam, eta, 5, 100, np.arange(50_000), replace).sum()
    assert k == pytest.approx(direct, rel=1e-9)
    A, B = moment_matrices(lam, eta, 5, 100, replace)
    perron = np.linalg.eigvals(np.linalg.solve(np.eye(len(lam)) - A, B)).real.max()
    assert k == pytest.approx(perron, rel=1e-10)
    assert k == pytest.approx(sgd_beta(100, 5, replace) * eta * lam.sum().item() / 2, rel=0.2)  # ≈ (βη/2) tr Θ


@pytest.mark.parametrize("replace", [False, True])
def test_critical_lr_is_where_rho_of_a_plus_b_crosses_one(regression, replace):
    *_, lam = regression
    eta_c = eoslab.critical_lr(lam, 5, 100, replace)
    assert eta_c == pytest.approx(9.152 if replace else 9.502, abs=1e-3)  # the reference derivation's numbers
    assert eoslab.noise_kernel_norm(lam, eta_c, 5, 100, replace) == pytest.approx(1, abs=1e-12)
    for factor, side in [(1.0, 0), (0.9, -1), (1.1, 1)]:
        A, B = moment_matrices(lam, factor * eta_c, 5, 100, replace)
        rho = np.abs(np.linalg.eigvals(A + B)).max()
        assert abs(rho - 1) < 1e-6 if side == 0 else np.sign(rho - 1) == side
    assert eta_c < 2 / lam.max().item() / 5  # far below the deterministic edge


def test_norm_increases_with_lr_and_is_infinite_past_the_edge(regression):
    *_, lam = regression
    edge = 2 / lam.max().item()
    k = eoslab.noise_kernel_norm(lam, np.linspace(0, edge * 0.999, 50), 5, 100)
    assert k[0] == 0 and np.all(np.diff(k) > 0)
    assert eoslab.noise_kernel_norm(lam, edge * 1.01, 5, 100) == math.inf


@pytest.mark.parametrize("replace", [False, True])
def test_second_moment_map_is_the_average_over_every_batch(replace):
    """E over all C(n, b) subsets (or all n^b ordered i.i.d. draws) of z′z′ᵀ, z′ = z − (η/b)·J J_Bᵀ z_B."""
    n, P, b, eta = 6, 4, 2, 0.7
    g = torch.Generator().manual_seed(1)
    J, z = torch.randn(n, P, generator=g, dtype=F64), torch.randn(n, generator=g, dtype=F64)
    ntk = J @ J.T / n
    batches = itertools.product(range(n), repeat=b) if replace else itertools.combinations(range(n), b)
    outer = []
    for batch in batches:
        idx = torch.tensor(batch)
        z2 = z - eta / b * J @ (J[idx].T @ z[idx])
        outer.append(torch.outer(z2, z2))
    exact = torch.stack(outer).mean(0)
    torch.testing.assert_close(second_moment_step(torch.outer(z, z), ntk, eta, b, replace), exact)


def test_exact_mean_square_threshold_is_close_to_the_kernel_one(regression):
    _, _, ntk, lam = regression
    eta_c = eoslab.critical_lr(lam, 5, 100)
    exact = mean_square_critical_lr(ntk, 5)
    assert mean_square_rate(ntk, exact, 5) == pytest.approx(1, abs=1e-7)
    assert exact == pytest.approx(9.248, abs=1e-2)  # the high-dimensional approximation is within 3 %
    assert 0.95 < exact / eta_c < 1


def test_sgd_with_the_full_batch_is_gd(regression):
    J, y, ntk, _ = regression
    eta, steps = 20.0, 30
    loss = sgd_linear_regression(J, y, torch.tensor([eta]), batch_size=100, steps=steps, seeds=2)
    z = -y[:, 0]
    for _ in range(steps):
        z = z - eta * ntk @ z
    torch.testing.assert_close(loss, torch.full((2, 1), 0.5 * z.pow(2).mean().item(), dtype=F64))


def test_sgd_converges_below_and_diverges_above_the_critical_lr(regression):
    J, y, _, lam = regression
    eta_c = eoslab.critical_lr(lam, 5, 100)
    loss = sgd_linear_regression(J, y, torch.tensor([0.9, 1.1]) * eta_c, 5, 3000, seeds=2)
    assert torch.all(loss[:, 0] < 1e-4) and torch.all(loss[:, 1] > 1e3)


def dense_ntk(model, X):
    params = {k: p.detach() for k, p in model.named_parameters()}
    J = jacrev(lambda p: functional_call(model, p, (X,)).reshape(-1))(params)
    J = torch.cat([j.reshape(j.shape[0], -1) for j in J.values()], dim=1)
    return J @ J.T / len(X)


@pytest.mark.parametrize("width, chunk", [(3, None), (3, 5), (40, 7)])  # P < n·d (JᵀJ route) and P > n·d
def test_ntk_eigenvalues_against_a_dense_jacobian(width, chunk):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 3)).to(F64)
    X = torch.randn(16, 4, dtype=F64)
    dense = torch.linalg.eigvalsh(dense_ntk(model, X)).flip(0)
    got = eoslab.ntk_eigenvalues(model, X, chunk_size=chunk)
    m = min(48, sum(p.numel() for p in model.parameters()))
    assert got.shape == (m,)
    torch.testing.assert_close(got, dense[:m].clamp_min(0), atol=1e-12, rtol=1e-10)


def test_multi_output_norm_equals_the_single_output_one():
    """d independent copies of a regression: Θ repeats each eigenvalue d times, and 𝒦 divides by d."""
    data = gaussian_linear_regression(D=30, P=40, seed=2, dtype=F64)
    one = eoslab.ntk_eigenvalues(LinearRegression(40, 1, init_scale=1.0).to(F64), data.X)
    three = eoslab.ntk_eigenvalues(LinearRegression(40, 3, init_scale=1.0).to(F64), data.X)
    torch.testing.assert_close(three[::3], one)
    k1 = eoslab.noise_kernel_norm(one, 10.0, 4, 30)
    assert eoslab.noise_kernel_norm(three, 10.0, 4, 30, outputs=3) == pytest.approx(k1, rel=1e-12)
