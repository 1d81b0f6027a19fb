"""Analytic toys computed in closed form or by a few thousand vectorised steps (seconds, no run engine).

- Andreyev & Beneventano (EoSS) App. C's diagonal linear network at its minima: FullBS against the average MiniBS.
- Zhu et al.'s 4-layer scalar network f = ½(1 − w₁w₂w₃w₄)²: GD from the edge-of-stability initialisation.
- Arora, Li & Panigrahi's L(x, y) = (1 + x²)y² under normalized GD and GD on √L.
"""

import math

import numpy as np
import torch
from torch import Tensor

import eoslab
from eoslab.losses import half_mse
from eoslab.models import DiagonalLinearNet, diagonal_net_data
from eoslab.optim import rule_scale

F64 = torch.float64

# ---------------------------------------------------------------------------------------------------------
# Diagonal linear network (Andreyev & Beneventano, App. C)
# ---------------------------------------------------------------------------------------------------------


def diagonal_net_minimum(a1: float, a2: float, full: bool) -> DiagonalLinearNet:
    """The diagonal minimum a₁b₁ = 1, a₂b₂ = −1 with a = (a₁, a₂) (B = diag(b) in the full 2×2 B or as b)."""
    a, b = torch.tensor([a1, a2], dtype=F64), torch.tensor([1 / a1, -1 / a2], dtype=F64)
    return DiagonalLinearNet(full=True, a=a, B=torch.diag(b)) if full else DiagonalLinearNet(full=False, a=a, b=b)


def diagonal_net_eigenvalues(a1: float, a2: float, full: bool) -> tuple[float, float]:
    """The per-sample Hessians' eigenvalues λ_i = ‖∇f_i‖² at that minimum: a_i² + b_i² (+ a_j² with the full B)."""
    lam = [a1**2 + a1**-2, a2**2 + a2**-2]
    return (lam[0] + a2**2, lam[1] + a1**2) if full else (lam[0], lam[1])


def diagonal_net_sharpness(a1: float, a2: float, full: bool) -> dict[str, float]:
    """FullBS and the average MiniBS (b = 1, both single-example batches) measured by eoslab's Lanczos at the minimum,
    with the closed forms λ₁, λ₂ (FullBS = max λ_i/2, avg MiniBS = (λ₁ + λ₂)/2)."""
    model = diagonal_net_minimum(a1, a2, full)
    X, y = (t.to(F64) for t in diagonal_net_data())
    gen = torch.Generator().manual_seed(0)  # Lanczos start vectors: deterministic numbers
    mini = eoslab.minibatch_sharpness(
        model, half_mse, X, y, 1, batches=torch.tensor([[0], [1]]), tol=1e-12, generator=gen
    )
    lam1, lam2 = diagonal_net_eigenvalues(a1, a2, full)
    return {
        "a1": a1,
        "a2": a2,
        "full": full,
        "lambda1": lam1,
        "lambda2": lam2,
        "fullbs": eoslab.sharpness(model, half_mse, X, y, tol=1e-12, generator=gen),
        "avg_minibs": mini.mean,
    }


# ---------------------------------------------------------------------------------------------------------
# Zhu et al.'s scalar network
# ---------------------------------------------------------------------------------------------------------


def scalar_net_grad(w: Tensor) -> Tensor:
    """∇ of ½(1 − Πw)² for each row of w (…, 4): −(1 − Πw)·Π_{j≠i} w_j (products of the others, no division)."""
    ones = torch.ones_like(w[..., :1])
    left = torch.cumprod(torch.cat([ones, w[..., :-1]], -1), -1)
    right = torch.cumprod(torch.cat([ones, w[..., 1:].flip(-1)], -1), -1).flip(-1)
    return -(1 - w.prod(-1, keepdim=True)) * left * right


def scalar_net_gd(w: Tensor, lr: Tensor | float, steps: int) -> Tensor:
    """``steps`` GD steps on ½(1 − Πw)² for every row of w (…, 4) at once, with per-row learning rates ``lr``."""
    lr = torch.as_tensor(lr, dtype=w.dtype)[..., None] if torch.as_tensor(lr).dim() else lr
    for _ in range(steps):
        w = w - lr * scalar_net_grad(w)
    return w


def scalar_net_sharpness(w: Tensor) -> float:
    """λmax of the Hessian of ½(1 − Πw)² at w (one row), by eoslab's Lanczos (Σ 1/w_i² at a minimum)."""
    X, y = torch.zeros(1, 1, dtype=w.dtype), torch.ones(1, 1, dtype=w.dtype)
    model = eoslab.models.ScalarNet4(w=w.clone())
    return eoslab.sharpness(model, half_mse, X, y, tol=1e-12, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------------------
# Arora, Li & Panigrahi's toy L(x, y) = (1 + x²) y²
# ---------------------------------------------------------------------------------------------------------


def arora_loss(w: Tensor) -> Tensor:
    """L(x, y) = (1 + x²)y²: its minima are the line y = 0, where λ₁(∇²L) = 2(1 + x²) falls as |x| falls."""
    return (1 + w[..., 0] ** 2) * w[..., 1] ** 2


def arora_trajectory(rule: str, lr: float, start: tuple[float, float], steps: int, eps: float = 0.0) -> np.ndarray:
    """(steps + 1, 2) iterates (x, y) of ``rule`` ("ngd": θ ← θ − η∇L/‖∇L‖, "sqrt_gd": θ ← θ − η∇√L) on
    :func:`arora_loss`, the gradient by autograd and the step scale from :func:`eoslab.optim.rule_scale`."""
    w = torch.tensor(start, dtype=F64)
    path = [w]
    for _ in range(steps):
        w = w.detach().requires_grad_(True)
        loss = arora_loss(w)
        (g,) = torch.autograd.grad(loss, w)
        w = (w - lr * rule_scale(rule, g.norm().item(), loss.item(), eps=eps) * g).detach()
        path.append(w)
    return torch.stack(path).numpy()


def sqrt_gd_cycle(lr: float, start: tuple[float, float] = (14.7, 3.0), steps: int | None = None) -> dict[str, float]:
    """√L-GD on the toy after it has entered its 2-cycle (default 4/η steps), against the small-η limits:

    - the two-step geometric mean of x's contraction factor √(x_{t+2}/x_t) against 1 − η²/2 (and the one-step
      factors, which alternate around it);
    - the cycle amplitude, half the peak-to-peak (|y_t| + |y_{t+1}|)/2, against η√(1 + x²)/2 averaged over the two
      steps (largest relative deviation over the last 10 pairs);
    - the cycle's asymmetry (|y_t| − |y_{t+1}|)/(|y_t| + |y_{t+1}|) at the end: y flips by η√(1 + x_t²) exactly, so
      any |y| below that 2-cycles, and the asymmetry set by the start is conserved to first order in η: |y_t|
      itself equals η√(1 + x²)/2 only on the symmetric cycle.
    """
    path = arora_trajectory("sqrt_gd", lr, start, steps or math.ceil(4 / lr))
    x, y = path[-11:, 0], np.abs(path[-11:, 1])
    limit = lr * np.sqrt(1 + x**2) / 2
    amplitude, predicted = (y[1:] + y[:-1]) / 2, (limit[1:] + limit[:-1]) / 2
    return {
        "eta": lr,
        "x_factor_two_step": float(np.sqrt(x[-1] / x[-3])),
        "x_factor_limit": 1 - lr**2 / 2,
        "x_factors_one_step": [float(x[-2] / x[-3]), float(x[-1] / x[-2])],
        "amplitude_max_rel_dev": float(np.abs(amplitude / predicted - 1).max()),
        "asymmetry": float(abs(y[-1] - y[-2]) / (y[-1] + y[-2])),
    }
