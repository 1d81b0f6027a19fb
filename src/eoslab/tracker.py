"""Edge-of-stability quantities inside your own training loop, warm-started from one measurement to the next.

    tracker = eoslab.SharpnessTracker(model, half_mse, X, y, minibatch=20, batch_size=32, layers=True)
    for t in range(steps):
        ...  # your optimizer step
        if t % 50 == 0:
            m = tracker.measure()  # {"sharpness": λmax, "minibatch_sharpness": Estimate, ...}

The tracker takes the same measurements as the run engine (the rows of :data:`eoslab.measurements.MEASUREMENTS`),
switched on by the keys of a run config's ``measure`` section, and keeps their last eigenvectors: between two
nearby θ the top eigenvectors barely move, so each Lanczos solve starts next to its answer (see
``benchmarks/tracker_cost.py`` for what that saves against a cold call).

A model with BatchNorm or Dropout is measured in eval mode (the deterministic network: BatchNorm with its running
statistics, Dropout off): each measurement switches it to ``eval()`` and gives every module its own training flag
back afterwards, so the tracker can sit in a training loop that never calls ``eval()`` itself.

Inside an Adam loop, ``SharpnessTracker(..., preconditioned=True, optimizer=opt)`` reads Adam's preconditioner
P = (1 − β₁ᵗ)·diag(√v̂ + ε) from ``opt.state`` and measures λmax(D^½HD^½) = η·λmax(P⁻¹H), D = ηP⁻¹ (full-batch Adam
holds it at (2 + 2β₁)/(1 − β₁) = 38 for β₁ = 0.9; Cohen et al., "Adaptive Gradient Methods at the Edge of
Stability", 2022, arXiv:2207.14484).
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from eoslab.batches import Data
from eoslab.checks import check_inputs
from eoslab.config import SCHEMA, check
from eoslab.curvature import Estimate
from eoslab.losses import LOSSES, LossFn
from eoslab.measurements import Context, take_measurements
from eoslab.noise_kernel import NTK_SCALE
from eoslab.operators import HessianOperator, Params

BY_INDEX = ("minibatch", "interaction", "interaction_exact", "noise_kernel", "lssr", "subset")
"""Measurements that pick examples by index: they need X and y as tensors, not an iterable of batches."""


@contextmanager
def evaluation(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` inside; every module's own training flag restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training


def _adam(group: dict[str, Any], state: dict[str, Tensor]) -> Tensor:
    """η/((1 − β₁ᵗ)(√v̂ + ε)) of ``torch.optim.Adam``/``AdamW`` (v̂ = v/(1 − β₂ᵗ), t its step count)."""
    (b1, b2), t = group["betas"], float(state["step"])
    return group["lr"] / ((1 - b1**t) * ((state["exp_avg_sq"] / (1 - b2**t)).sqrt() + group["eps"]))


def _rmsprop(group: dict[str, Any], state: dict[str, Tensor]) -> Tensor:
    """η/(√v + ε) of ``torch.optim.RMSprop`` (no bias correction)."""
    return group["lr"] / (state["square_avg"].sqrt() + group["eps"])


def _sgd(group: dict[str, Any], state: dict[str, Tensor]) -> float:
    """η of ``torch.optim.SGD`` (momentum leaves P = I)."""
    return group["lr"]


OPTIMIZERS: dict[type, Any] = {
    torch.optim.Adam: _adam,
    torch.optim.AdamW: _adam,
    torch.optim.RMSprop: _rmsprop,
    torch.optim.SGD: _sgd,
}
"""torch optimizer class → D = ηP⁻¹ of one parameter from its param group and state."""


def optimizer_preconditioner(optimizer: torch.optim.Optimizer, model: nn.Module) -> Params:
    """Parameter name → D = ηP⁻¹ (a tensor shaped like the parameter) from a torch optimizer's current state."""
    read = OPTIMIZERS[type(optimizer)]
    names = {id(p): k for k, p in model.named_parameters()}
    out: Params = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in names:
                raise ValueError("optimizer: it holds a parameter that is not the tracked model's")
            state = optimizer.state.get(p, {})
            if type(optimizer) is not torch.optim.SGD and not state:
                raise ValueError("optimizer: no state yet; measure the preconditioned sharpness after its first step")
            out[names[id(p)]] = torch.as_tensor(read(group, state), dtype=p.dtype, device=p.device).expand(p.shape)
    missing = sorted(set(names.values()) - set(out))
    if missing:
        raise ValueError(f"optimizer: does not hold the model's parameter(s) {missing}")
    return out


@dataclass(frozen=True)
class _Problem:
    model: nn.Module
    loss_fn: LossFn
    X: Tensor | None
    Y: Tensor | None


class SharpnessTracker:
    """Stateful FullBS (and optionally MiniBS, Batch Sharpness, layer sharpness, ...) of ``model`` on (X, y).

    ``measure`` takes the keys of a run config's ``measure`` section (``eoslab config --template``), e.g.
    ``top_k=1`` (FullBS eigenvalues), ``minibatch=20`` with ``batch_size=32`` (MiniBS λmax(H_B) and Batch Sharpness
    E_B[g_BᵀH_Bg_B/‖g_B‖²] over 20 fresh batches of 32), ``layers=True``, ``directional=True``, ``tol``,
    ``chunk_size``, ``subset``. ``replace=True`` draws mini-batches with replacement. ``seed`` seeds the batches and
    the cold start. Model and data are checked once here (see :mod:`eoslab.checks`); each measurement runs in eval
    mode (module docstring). The full-batch measurements also take ``X`` an iterable of (X, y) batches (a DataLoader,
    ``y`` omitted; :mod:`eoslab.batches`); those of :data:`BY_INDEX` need tensors. The parameters measured are those
    with ``requires_grad`` when ``measure`` is called.
    ``preconditioned=True`` needs ``optimizer=`` (a ``torch.optim`` Adam, AdamW, RMSprop or SGD
    instance over the model's parameters: D = ηP⁻¹ is read from its state at every call) or ``lr=η`` (D = ηI);
    ``noise_kernel=True`` needs ``lr`` and ``batch_size`` and a loss of :data:`eoslab.losses.LOSSES`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        X: Data,
        y: Tensor | None = None,
        *,
        replace: bool = False,
        seed: int = 0,
        lr: float | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        **measure: Any,
    ):
        self.measure_section = m = check(measure, SCHEMA["properties"]["measure"], "measure")
        if m["minibatch"] and m["batch_size"] is None:
            raise ValueError("minibatch=m needs batch_size=b: the mini-batch size of MiniBS and Batch Sharpness")
        if optimizer is not None and type(optimizer) not in OPTIMIZERS:
            names = ", ".join(c.__name__ for c in OPTIMIZERS)
            raise ValueError(f"optimizer: reads the preconditioner of {names}, not {type(optimizer).__name__}")
        if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr: must be a positive number, not {lr!r}")
        if m["preconditioned"] and optimizer is None and lr is None:
            raise ValueError("preconditioned=True needs optimizer= (its preconditioner) or lr= (D = lr·I)")
        self.loss = next((name for name, fn in LOSSES.items() if fn is loss_fn), None)
        if m["noise_kernel"] and (lr is None or m["batch_size"] is None or self.loss not in NTK_SCALE):
            raise ValueError("noise_kernel=True needs lr=η, batch_size=b and an MSE loss of eoslab.losses")
        with evaluation(model):
            self.data = check_inputs(model, X, y, chunk_size=m["chunk_size"])
        by_index = [key for key in BY_INDEX if m[key]]
        if by_index and not self.data.is_tensor:
            raise ValueError(f"{', '.join(by_index)}: pick examples by index, so X and y must be tensors, not batches")
        self.problem = _Problem(model, loss_fn, *((X, y) if self.data.is_tensor else (None, None)))
        self.lr, self.replace, self.optimizer = lr, replace, optimizer
        self.warm: dict[str, Tensor] = {}
        device = next(self.data.pairs())[0].device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.history: list[dict[str, Any]] = []

    def measure(self, params: Params | None = None, step: int | None = None) -> dict[str, Any]:
        """Measure at θ = ``params`` (default: the model's current parameters); warm-started from the last call.

        Returns (and appends to ``history``) a dict: ``sharpness`` (λmax; a tensor of the top-k for top_k > 1),
        ``n_hvp`` (Hessian-vector products of that solve), and, when switched on, ``minibatch_sharpness`` and
        ``batch_sharpness`` (:class:`~eoslab.curvature.Estimate`), ``layer_sharpness`` (layer name → λmax),
        ``directional_sharpness``, ... (``step`` is stored with it).
        """
        model = self.problem.model
        if params is None:
            params = {k: p.detach() for k, p in model.named_parameters()}
        ctx = Context(
            self.problem,
            params,
            self.measure_section,
            self.warm,
            self.generator,
            lr=self.lr,
            replace=self.replace,
            loss=self.loss,
            preconditioner=self._preconditioner,
        )
        if not self.data.is_tensor:
            ctx.op = HessianOperator(model, self.problem.loss_fn, self.data, None, params)
        out: dict[str, Any] = {"step": step}
        with evaluation(model):
            taken = take_measurements(ctx)
        for name, value in taken.items():
            if name == "sharpness":
                value = value[0].item() if value.numel() == 1 else value
            elif name in ("minibatch_sharpness", "batch_sharpness"):
                value = Estimate(value)
            elif name == "layer_sharpness":
                value = dict(zip(ctx.masks, value.tolist(), strict=True))
            out[name] = value
        self.history.append(out)
        return out

    __call__ = measure

    def _preconditioner(self, grads: Params, curvature: Any) -> Params:
        """D = ηP⁻¹: the optimizer's (from its state now), else lr·I."""
        if self.optimizer is not None:
            return optimizer_preconditioner(self.optimizer, self.problem.model)
        return {k: torch.full_like(g, self.lr) for k, g in grads.items()}
