"""Losses as plain functions ``loss(pred, target) -> batch-mean scalar``.

Sharpness is the top eigenvalue of the Hessian of *exactly* the loss you step on, so the normalisation matters:
the same network has a 2x larger Hessian under ``sum_mse`` than under ``half_mse`` and a d-times smaller one under
``mean_mse``. Learning rates convert as η_half ≡ 2·η_sum ≡ (2/d)·η_mean (see docs/README.md, conventions).

Every loss here averages over examples: L_B = (1/|B|) Σ_{i∈B} ℓ_i. The curvature core relies on that to accumulate
full-batch quantities over data chunks, L = Σ_c (|c|/n) L_c.

Every loss checks its shapes and says what it expected: broadcasting (n, 1) predictions against (n,) targets
would silently give a different loss, and a Hessian of the wrong function. Any other ``loss_fn`` given to the
curvature functions from ``torch.nn`` (e.g. ``nn.MSELoss()``) gets the same check through :func:`shape_checked`.

MSE is written out explicitly rather than with ``F.mse_loss``: torch.func's ``jvp(grad(...))`` fails on the latter
("ZeroTensors are immutable").
"""

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def same_shape(name: str, pred: Tensor, target: Tensor) -> None:
    """Raise unless predictions and regression targets have the same shape (no broadcasting)."""
    if pred.shape != target.shape:
        hint = (
            " (targets of shape (n,) for a one-output model: use y[:, None])" if pred.shape[:-1] == target.shape else ""
        )
        raise ValueError(
            f"{name}: predictions have shape {tuple(pred.shape)} but targets {tuple(target.shape)}; expected the "
            f"same shape (n, outputs){hint}"
        )


def half_mse(pred: Tensor, target: Tensor) -> Tensor:
    """ℓ_i = ½‖f_i − y_i‖², summed over outputs, averaged over examples (Cohen et al.)."""
    same_shape("half_mse", pred, target)
    return 0.5 * ((pred - target) ** 2).flatten(1).sum(1).mean()


def sum_mse(pred: Tensor, target: Tensor) -> Tensor:
    """ℓ_i = ‖f_i − y_i‖², summed over outputs, averaged over examples (the EoSS repository; Arora et al.)."""
    same_shape("sum_mse", pred, target)
    return ((pred - target) ** 2).flatten(1).sum(1).mean()


def mean_mse(pred: Tensor, target: Tensor) -> Tensor:
    """L = (1/(n·d)) Σ_i ‖f_i − y_i‖²: ``torch.nn.MSELoss()`` (Fox)."""
    same_shape("mean_mse", pred, target)
    return ((pred - target) ** 2).mean()


def cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    """ℓ_i = −log softmax(f_i)[y_i] with integer labels y (n,) for logits f (n, classes), averaged over examples."""
    if pred.dim() != 2 or target.shape != pred.shape[:1] or target.is_floating_point():
        raise ValueError(
            f"cross_entropy: expected logits (n, classes) and integer labels (n,), got logits of shape "
            f"{tuple(pred.shape)} and labels of shape {tuple(target.shape)} and dtype {target.dtype}"
        )
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


def shape_checked(loss_fn: LossFn) -> LossFn:
    """A loss of ``torch.nn`` (a loss module such as ``nn.MSELoss()``, or a function of ``torch.nn.functional``)
    refusing, with :func:`same_shape`'s message, floating targets whose shape differs from the predictions' (torch
    only warns, then broadcasts). Other functions are returned as they are: this module's check themselves, and a
    function of your own may use targets of any shape (call :func:`same_shape` in it)."""
    is_torch_loss = isinstance(loss_fn, nn.modules.loss._Loss) or getattr(loss_fn, "__module__", "") == F.__name__
    if not is_torch_loss:
        return loss_fn
    name = getattr(loss_fn, "__name__", type(loss_fn).__name__)

    def checked(pred: Tensor, target: Tensor) -> Tensor:
        if target.is_floating_point():
            same_shape(name, pred, target)
        return loss_fn(pred, target)

    return checked
