"""The update rules' step factors and step-size schedules, as plain functions on parameter dicts (the rule
objects that use them are :mod:`eoslab.rules`).

One step is θ_k ← θ_k − η_k · s · g_k for every parameter tensor k, where g = ∇L_B (B the full batch for GD),
η_k the step size of k's layer (:func:`step_sizes`) and s the rule's scale (:func:`rule_scale`):

- ``gd``/``sgd``: s = 1.
- ``ngd`` (normalized GD, Arora, Li & Panigrahi 2022): s = 1/‖g‖, so the effective step is η/‖∇L‖.
- ``sqrt_gd`` (GD on √(L − L*), Arora, Li & Panigrahi 2022): ∇√(L − L*) = ∇L / (2√(L − L*)), so s = 1/(2√(L − L* + ε)).
- ``armijo`` ("LS" in Fox's thesis: the stochastic Armijo line search of Vaswani et al. 2019, "Painless
  Stochastic Gradient", reset option 1, on the batch stepped on, here the full batch): s = η_t/lr with η_t from
  :func:`armijo_step` (constants :data:`ARMIJO`); ``lr`` is the initial step size η_{−1}.
- ``heavy_ball``, ``nesterov``, ``rmsprop``, ``adam``: s = 1 with their own direction (:mod:`eoslab.rules`).

Step-size schedules (Fox 2023, §3.3), with ``lr`` the numerator: ``constant`` η = lr; ``inv_initial_sharpness``
η = lr/λ_0; ``inv_sharpness`` η_t = lr/λ_t; ``layerwise`` η_{i,t} = lr/λ_{i,t} for layer i. The thesis's scaled
layer-wise step 1/(c·λ_{i,t}) is ``layerwise`` with lr = 1/c.
"""

import math
from collections.abc import Callable

from torch import Tensor

from eoslab.operators import Params

SCALES: dict[str, Callable[[float, float, float, float], float]] = {
    "gd": lambda grad_norm, loss, loss_offset, eps: 1.0,
    "sgd": lambda grad_norm, loss, loss_offset, eps: 1.0,
    "ngd": lambda grad_norm, loss, loss_offset, eps: 1.0 / max(grad_norm, eps),
    "sqrt_gd": lambda grad_norm, loss, loss_offset, eps: 1.0 / (2.0 * math.sqrt(max(loss - loss_offset, 0.0) + eps)),
}
"""Rule → its scalar factor s(‖g‖, L, L*, ε) (see the module docstring); the rule objects are :mod:`eoslab.rules`."""


def rule_scale(rule: str, grad_norm: float, loss: float, loss_offset: float = 0.0, eps: float = 1e-12) -> float:
    """The factor s multiplying η·g in one step of ``rule`` (see the module docstring)."""
    if rule not in SCALES:
        raise ValueError(f"update rule {rule!r} has no scalar step factor; those that do: {sorted(SCALES)}")
    return SCALES[rule](grad_norm, loss, loss_offset, eps)


ARMIJO = {"c": 0.1, "beta": 0.9, "gamma": 2.0, "eta_max": 10.0, "max_backtracks": 100}
"""Vaswani et al.'s defaults (their ``Sls``): Armijo constant c, backtracking factor β, reset growth γ, cap η_max."""


def armijo_step(
    loss_at: Callable[[Params], float], params: Params, grads: Params, loss: float, previous: float
) -> float:
    """One Armijo line search: start at η = min(γ·η_prev, η_max) (reset option 1 with one batch per epoch) and
    shrink η ← β·η until L_B(θ − η g) ≤ L_B(θ) − c·η‖g‖² (at most ``max_backtracks`` times, then the last η).

    On L = ½aθ² the condition reads (1 − ηa)² ≤ 1 − 2cηa, i.e. η ≤ 2(1 − c)/a: the accepted step is the first
    γη_prev·βʲ below it."""
    c, beta = ARMIJO["c"], ARMIJO["beta"]
    g2 = float(grad_norm(grads)) ** 2
    eta = min(ARMIJO["gamma"] * previous, ARMIJO["eta_max"])
    for _ in range(ARMIJO["max_backtracks"]):
        trial = loss_at(apply_step(params, grads, dict.fromkeys(params, eta), 1.0))
        if trial <= loss - c * eta * g2:
            break
        eta *= beta
    return eta


def step_sizes(
    schedule: str,
    lr: float,
    layer_params: dict[str, list[str]],
    sharpness: float | None = None,
    initial_sharpness: float | None = None,
    layer_sharpness: dict[str, float] | None = None,
) -> dict[str, float]:
    """Parameter name → step size η_k under ``schedule`` (see the module docstring)."""
    if schedule == "constant":
        per_layer = dict.fromkeys(layer_params, lr)
    elif schedule == "inv_initial_sharpness":
        per_layer = dict.fromkeys(layer_params, lr / initial_sharpness)
    elif schedule == "inv_sharpness":
        per_layer = dict.fromkeys(layer_params, lr / sharpness)
    elif schedule == "layerwise":
        per_layer = {layer: lr / layer_sharpness[layer] for layer in layer_params}
    else:
        raise ValueError(f"unknown step-size schedule {schedule!r}")
    return {name: per_layer[layer] for layer, names in layer_params.items() for name in names}


def apply_step(params: Params, grads: Params, sizes: dict[str, float], scale: float) -> Params:
    """θ_k − η_k·s·g_k for every parameter k."""
    return {k: v - (sizes[k] * scale) * grads[k] for k, v in params.items()}


def grad_norm(grads: Params) -> Tensor:
    """‖g‖ over all parameter tensors."""
    return sum(g.pow(2).sum() for g in grads.values()).sqrt()
