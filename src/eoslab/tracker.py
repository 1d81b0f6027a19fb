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
"""

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
from eoslab.losses import LossFn
from eoslab.measurements import Context, take_measurements
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
        **measure: Any,
    ):
        self.config = {
            "measure": check(measure, SCHEMA["properties"]["measure"], "measure"),
            "optimizer": {"batch_size": None, "sampling": "iid" if replace else "subset"},
        }
        if self.config["measure"]["minibatch"] and self.config["measure"]["batch_size"] is None:
            raise ValueError("minibatch=m needs batch_size=b: the mini-batch size of MiniBS and Batch Sharpness")
        with evaluation(model):
            self.data = check_inputs(model, X, y, chunk_size=self.config["measure"]["chunk_size"])
        by_index = [key for key in BY_INDEX if self.config["measure"][key]]
        if by_index and not self.data.is_tensor:
            raise ValueError(f"{', '.join(by_index)}: pick examples by index, so X and y must be tensors, not batches")
        self.problem = _Problem(model, loss_fn, *((X, y) if self.data.is_tensor else (None, None)))
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
        ctx = Context(self.problem, params, self.config, self.warm, self.generator)
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
