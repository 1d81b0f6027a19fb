"""Input checks at the entry of the public curvature functions: wrong inputs fail with a message, not a wrong number.

- **Training-mode BatchNorm and Dropout are refused.** The Hessian is of a fixed function of θ. In training mode
  BatchNorm normalises by the statistics of whatever batch or chunk the function sees (and updates its running
  statistics, which torch.func cannot do), and Dropout draws a new random mask at every call, so "the" Hessian is
  undefined: one random mask in one function, vmap's randomness error in another. eoslab measures the deterministic
  network, ``model.eval()``: Dropout off, BatchNorm with its running statistics (held fixed, like every buffer).
- **Parameters and data share one floating dtype** (a float64 model with float32 data, or the reverse, is named).
- Shapes of predictions and targets are checked by the losses of :mod:`eoslab.losses` themselves.
"""

from torch import Tensor, nn

from eoslab.operators import Params

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


def check_inputs(model: nn.Module, X: Tensor, y: Tensor, params: Params | None = None) -> None:
    """All the entry checks of the public curvature functions."""
    check_mode(model)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} examples but y has {len(y)}")
    check_dtypes(model, X, y, params)
