"""Analytic toys through the public curvature API: the EoSS diagonal network, Zhu et al., Arora et al."""

import math

import pytest
import torch
from torch.func import functional_call, jacrev

import eoslab
from eoslab.losses import half_mse
from eoslab.models import DiagonalLinearNet, diagonal_net_data, scalar_net_eos_init
from eoslab.toys import (
    arora_loss,
    arora_trajectory,
    diagonal_net_sharpness,
    scalar_net_gd,
    scalar_net_grad,
    sqrt_gd_cycle,
)
from eoslab.toys import scalar_net_sharpness as scalar_sharpness

F64 = torch.float64


# ------------------------------------------ Andreyev & Beneventano App. C: diagonal linear network


@pytest.mark.parametrize("full", [True, False])
def test_diagonal_net_full_and_minibatch_sharpness(full):
    """f(x) = aᵀBx on z₁ = ((1,0), 1), z₂ = ((0,1), −1), loss (f − y)²/2, at a diagonal minimum a₁b₁ = 1,
    a₂b₂ = −1. There the residuals vanish, so H_i = ∇f_i ∇f_iᵀ (rank one, λ_i = ‖∇f_i‖²) and H = (H₁ + H₂)/2.

    Full B (parameters a, B): ∇f₁ = (∂a: Bx₁ = (b₁, 0); ∂B: a x₁ᵀ → B₁₁: a₁, B₂₁: a₂), so λ₁ = b₁² + a₁² + a₂²;
    likewise ∇f₂ = (∂a: (0, b₂); ∂B: B₁₂: a₁, B₂₂: a₂) and λ₂ = b₂² + a₁² + a₂². The two gradients have disjoint
    supports, hence are orthogonal. Diagonal B (parameters a, b): ∇f₁ = (b₁, 0, a₁, 0), λ_i = a_i² + b_i².
    FullBS = max(λ₁, λ₂)/2 and the average MiniBS over the two single-example batches is (λ₁ + λ₂)/2.
    """
    a1, a2 = 2.0, 0.8
    b1, b2 = 1 / a1, -1 / a2
    a = torch.tensor([a1, a2], dtype=F64)
    if full:
        model = DiagonalLinearNet(full=True, a=a, B=torch.tensor([[b1, 0.0], [0.0, b2]], dtype=F64))
        lam = (a1**2 + b1**2 + a2**2, a2**2 + b2**2 + a1**2)  # 4.89, 6.2025
    else:
        model = DiagonalLinearNet(full=False, a=a, b=torch.tensor([b1, b2], dtype=F64))
        lam = (a1**2 + b1**2, a2**2 + b2**2)  # 4.25, 2.2025
        assert min(lam) >= 2  # AM–GM: a_i² + b_i² ≥ 2|a_i b_i| = 2
    X, y = (t.to(F64) for t in diagonal_net_data())
    assert torch.equal(model(X), y)  # a minimum: zero loss

    # the hand-derived λ_i are the per-sample Gauss–Newton norms ‖∇f_i‖²
    params = {k: p.detach() for k, p in model.named_parameters()}
    J = jacrev(lambda p: functional_call(model, p, (X,)).squeeze(-1))(params)
    per_sample = sum(j.flatten(1).pow(2).sum(1) for j in J.values())
    torch.testing.assert_close(per_sample, torch.tensor(lam, dtype=F64), rtol=1e-14, atol=0)

    full_bs = eoslab.sharpness(model, half_mse, X, y, tol=1e-10)
    assert full_bs == pytest.approx(max(lam) / 2, rel=1e-10)
    top2 = eoslab.sharpness(model, half_mse, X, y, k=2, tol=1e-10)
    torch.testing.assert_close(top2, torch.tensor(sorted(lam, reverse=True), dtype=F64) / 2, rtol=1e-10, atol=0)

    batches = torch.tensor([[0], [1]])
    mini = eoslab.minibatch_sharpness(model, half_mse, X, y, batch_size=1, batches=batches, tol=1e-10)
    torch.testing.assert_close(mini.values, torch.tensor(lam, dtype=F64), rtol=1e-10, atol=0)
    assert mini.mean == pytest.approx((lam[0] + lam[1]) / 2, rel=1e-10)
    assert mini.mean >= full_bs  # Jensen
    # randomly drawn single-example batches land on one of the two values
    drawn = eoslab.minibatch_sharpness(
        model, half_mse, X, y, 1, 8, tol=1e-10, generator=torch.Generator().manual_seed(0)
    )
    assert all(min(abs(v - lam[0]), abs(v - lam[1])) < 1e-9 * max(lam) for v in drawn.values.tolist())


# ------------------------------------------------------------------ Zhu et al.: 4-layer scalar network


@pytest.mark.parametrize("w", [(2.0, 2.0, 0.5, 0.5), (1.0, 2.0, 0.25, 2.0), (-1.0, 4.0, -0.5, 0.5)])
def test_scalar_net_sharpness_at_a_minimum(w):
    """At w₁w₂w₃w₄ = 1 the Hessian of (1 − Πw)²/2 is ∇f∇fᵀ with ∂f/∂w_i = Πw/w_i = 1/w_i: λmax = Σ 1/w_i²."""
    w = torch.tensor(w, dtype=F64)
    assert w.prod().item() == 1.0
    assert scalar_sharpness(w) == pytest.approx((1 / w**2).sum().item(), rel=1e-10)


def test_scalar_net_gradient_against_autograd():
    w = torch.randn(5, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    w[0, 2] = 0.0  # products of the others: no division by w_i
    auto = torch.func.vmap(torch.func.grad(lambda v: 0.5 * (1 - v.prod()) ** 2))(w)
    torch.testing.assert_close(scalar_net_grad(w), auto, rtol=1e-14, atol=1e-14)
    lr = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5], dtype=F64)
    torch.testing.assert_close(scalar_net_gd(w, lr, 1), w - lr[:, None] * auto, rtol=1e-14, atol=1e-14)


def test_scalar_net_gd_ends_in_the_eos_band():
    """Zhu et al.'s theorem: from the EoS initialisation GD ends with sharpness in (2/η − 20η/3, 2/η);
    our reference run gives 19.954 for η = 0.1 (reached to 1e-3 within 2000 steps)."""
    eta = 0.1
    w0 = scalar_net_eos_init(eta=eta, delta=0.2, d0=0.8)
    assert scalar_sharpness(w0) < 2 / eta - 5  # starts far from the edge (not at a minimum: loss 0.065)
    w = scalar_net_gd(w0, eta, 2000)
    assert abs(1 - w.prod().item()) < 1e-4  # converged to a minimum
    final = scalar_sharpness(w)
    assert 2 / eta - 20 * eta / 3 < final < 2 / eta
    assert final == pytest.approx(19.954, abs=2e-3)
    assert final == pytest.approx((1 / w**2).sum().item(), rel=1e-4)


@pytest.mark.parametrize("delta", [-0.3, -0.5])
def test_scalar_net_below_the_edge_follows_gradient_flow(delta):
    """δ < 0: GD stays below the edge and ends near the gradient-flow minimum's sharpness 2√(c⁴ + 4) < 2/η."""
    eta = 0.1
    c = (eta**-2 - 4) ** 0.25 + delta
    w = scalar_net_gd(scalar_net_eos_init(eta=eta, delta=delta, d0=0.8), eta, 2000)
    assert scalar_sharpness(w) == pytest.approx(2 * math.sqrt(c**4 + 4), rel=2e-3)
    assert scalar_sharpness(w) < 2 / eta - 3


def test_diagonal_net_library_matches_the_closed_forms():
    for full in (False, True):
        r = diagonal_net_sharpness(2.0, 0.8, full)
        assert r["fullbs"] == pytest.approx(max(r["lambda1"], r["lambda2"]) / 2, rel=1e-10)
        assert r["avg_minibs"] == pytest.approx((r["lambda1"] + r["lambda2"]) / 2, rel=1e-10)
        assert max(r["lambda1"], r["lambda2"]) <= 2 * r["avg_minibs"] - 2


# ------------------------------------------------------------------ Arora et al.: L(x, y) = (1 + x²)y²


def test_arora_toy_steps():
    """One √L-GD step is y ← y − η√(1 + x²)·sign(y), x ← x − ηx|y|/√(1 + x²); one NGD step has length η."""
    x, y, eta = 3.0, 0.5, 0.1
    (_, (x1, y1)) = arora_trajectory("sqrt_gd", eta, (x, y), 1)
    assert y1 == pytest.approx(y - eta * math.sqrt(1 + x**2), rel=1e-9)
    assert x1 == pytest.approx(x - eta * x * y / math.sqrt(1 + x**2), rel=1e-9)
    path = arora_trajectory("ngd", 5.0, (14.7, -3.0), 3)
    assert torch.tensor(path[1:] - path[:-1]).norm(dim=1).tolist() == pytest.approx([5.0] * 3, rel=1e-12)
    assert arora_loss(torch.tensor(path[-1])) < arora_loss(torch.tensor(path[0]))


def test_sqrt_gd_two_cycle_small_lr_limits():
    """At η = 0.1: x contracts by 1 − η²/2 per step (two-step geometric mean, within 1e-3) and the 2-cycle's
    amplitude is η√(1 + x²)/2 (within 1 %); at η = 0.5 the two one-step factors are 0.898 and 0.835."""
    small = sqrt_gd_cycle(0.1)
    assert abs(small["x_factor_two_step"] - (1 - 0.1**2 / 2)) < 1e-3
    assert small["amplitude_max_rel_dev"] < 0.01
    large = sqrt_gd_cycle(0.5)
    assert large["x_factors_one_step"] == pytest.approx([0.898, 0.835], abs=1e-3)
