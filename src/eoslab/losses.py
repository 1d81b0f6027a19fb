"""Losses as plain functions ``loss(pred, target) -> batch-mean scalar``.

Sharpness is the top eigenvalue of the Hessian of *exactly* the loss you step on, so the normalisation matters:
the same network has a 2x larger Hessian under ``sum_mse`` than under ``half_mse`` and a d-times smaller one under
``mean_mse``. Learning rates convert as η_half ≡ 2·η_sum ≡ (2/d)·η_mean (paper-spec §0).

Every loss here averages over examples: L_B = (1/|B|) Σ_{i∈B} ℓ_i. The curvature core relies on that to accumulate
full-batch quantities over data chunks, L = Σ_c (|c|/n) L_c.

MSE is written out explicitly rather than with ``F.mse_loss``: torch.func's ``jvp(grad(...))`` fails on the latter
("ZeroTensors are immutable").
"""

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def half_mse(pred: Tensor, target: Tensor) -> Tensor:
    """ℓ_i = ½‖f_i − y_i‖², summed over outputs, averaged over examples (Cohen et al.; seed 000 smoke runs)."""
    return 0.5 * ((pred - target) ** 2).flatten(1).sum(1).mean()


def sum_mse(pred: Tensor, target: Tensor) -> Tensor:
    """ℓ_i = ‖f_i − y_i‖², summed over outputs, averaged over examples (the EoSS repository; Arora et al.)."""
    return ((pred - target) ** 2).flatten(1).sum(1).mean()


def mean_mse(pred: Tensor, target: Tensor) -> Tensor:
    """L = (1/(n·d)) Σ_i ‖f_i − y_i‖²: ``torch.nn.MSELoss()`` (Fox, seed 003)."""
    return ((pred - target) ** 2).mean()


def cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    """ℓ_i = −log softmax(f_i)[y_i] with integer labels, averaged over examples."""
    return F.cross_entropy(pred, target)


LOSSES: dict[str, LossFn] = {
    "half_mse": half_mse,
    "sum_mse": sum_mse,
    "mean_mse": mean_mse,
    "cross_entropy": cross_entropy,
}


def get_loss(name: str) -> LossFn:
    """The loss registered as ``name`` (one of ``LOSSES``)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {sorted(LOSSES)}")
    return LOSSES[name]
