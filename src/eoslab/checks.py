"""Input checks at the entry of the public curvature functions: wrong inputs fail with a message, not a wrong number.

- **Training-mode BatchNorm and Dropout are refused.** The Hessian is of a fixed function of θ. In training mode
  BatchNorm normalises by the statistics of whatever batch or chunk the function sees (and updates its running
  statistics, which torch.func cannot do), and Dropout draws a new random mask at every call, so "the" Hessian is
  undefined: one random mask in one function, vmap's randomness error in another. eoslab measures the deterministic
  network, ``model.eval()``: Dropout off, BatchNorm with its running statistics (held fixed, like every buffer).
- **Parameters and data share one floating dtype** (a float64 model with float32 data, or the reverse, is named).
- **Arguments are checked before any compute**, each refusal one ``ValueError`` naming the argument: empty data,
  non-finite parameters or data, a ``params`` dict that does not give every parameter, a model without (trainable)
  parameters, counts below 1 (``k``, ``n_batches``, ``max_iter``, ...), ``k`` above the number of parameters,
  ``batch_size`` above the number of examples.
- Shapes of predictions and targets are checked by the losses of :mod:`eoslab.losses` themselves, and for any other
  ``loss_fn`` by :func:`eoslab.losses.shape_checked`.
"""

from typing import Any

import torch
from torch import Tensor, nn

from eoslab.batches import Batches, Data
from eoslab.operators import Params, Selection, split_params

COUNTS = ("k", "n_batches", "batch_size", "max_iter", "n_probes", "grad_chunk", "steps")
"""Arguments that count something and must be integers ≥ 1."""

STOCHASTIC = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.AlphaDropout)


def check_mode(model: nn.Module) -> None:
    """Refuse modules whose output depends on the batch or on randomness in training mode (BatchNorm, Dropout)."""
    offending = [
        f"{name or '<root>'} ({type(m).__name__})"
        for name, m in model.named_modules()
        if m.training and isinstance(m, STOCHASTIC)
    ]
    if offending:
        raise ValueError(
            f"{', '.join(offending)} in training mode: the Hessian would depend on the batch statistics or on a "
            "random dropout mask. Call model.eval() first: eoslab measures the deterministic network (Dropout off, "
            "BatchNorm with its running statistics)."
        )


def check_dtypes(model: nn.Module, X: Tensor, y: Tensor, params: Params | None = None) -> None:
    """Parameters, X and floating targets y must share one floating dtype; say which is which when they don't."""
    values = params.values() if params is not None else [p for _, p in model.named_parameters()]
    dtypes = {v.dtype for v in values if v.is_floating_point()}
    if len(dtypes) > 1:
        raise TypeError(f"the model's parameters mix dtypes {sorted(map(str, dtypes))}: use one, e.g. model.double()")
    if not dtypes:
        return
    (dtype,) = dtypes
    for name, data in (("X", X), ("y", y)):
        if data.is_floating_point() and data.dtype != dtype:
            raise TypeError(
                f"the model's parameters are {dtype} but {name} is {data.dtype}: convert one to the other, "
                f"e.g. {name} = {name}.to({dtype}) or model.to({data.dtype})"
            )


def check_finite(what: str, value: Tensor) -> None:
    """Refuse NaN or ±inf in a floating tensor (they would surface later as an eigh or Lanczos error)."""
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{what} has non-finite values (NaN or ±inf)")


def check_arguments(**arguments: Any) -> None:
    """Counts (:data:`COUNTS`) are integers ≥ 1 and ``tol`` is positive; None means "not given"."""
    for name, value in arguments.items():
        if value is None:
            continue
        if name in COUNTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
        if name == "tol" and not value > 0:
            raise ValueError(f"tol must be positive, got {value!r}")


def check_inputs(
    model: nn.Module,
    X: Data,
    y: Tensor | None = None,
    params: Params | None = None,
    names: Selection = None,
    chunk_size: int | None = None,
    **arguments: Any,
) -> Batches:
    """All the entry checks of the public curvature functions, before any compute; returns the data as
    :class:`~eoslab.batches.Batches` (a loader is read once here). ``arguments`` are the counts and ``tol``."""
    check_mode(model)
    check_arguments(**arguments)
    theta, _ = split_params(model, params, names)
    values = params if params is not None else {k: p.detach() for k, p in model.named_parameters()}
    for key, value in values.items():
        check_finite(f"params[{key!r}]" if params is not None else f"the model's parameter {key!r}", value)
    data = Batches(X, y, chunk_size)
    for Xb, yb in data.pairs():
        check_dtypes(model, Xb, yb, params)
        check_finite("X", Xb)
        check_finite("y", yb)
    dim = sum(v.numel() for v in theta.values())
    if arguments.get("k") is not None and arguments["k"] > dim:
        raise ValueError(f"k={arguments['k']} exceeds the number of parameters differentiated ({dim})")
    if arguments.get("batch_size") is not None and arguments["batch_size"] > data.n:
        raise ValueError(f"batch_size={arguments['batch_size']} exceeds the number of examples n={data.n}")
    return data
