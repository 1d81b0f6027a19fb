"""Test helpers: three small problems and dense Hessians (torch.func.hessian) to check the operators against."""

import torch
from torch import nn
from torch.func import functional_call, hessian

from eoslab.losses import cross_entropy, half_mse
from eoslab.operators import ParamSpace


def dense_hessian(model, loss_fn, X, y, names=None):
    """The dense Hessian of the batch-mean loss w.r.t. ``names`` (all parameters by default), in dict order."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    theta = {k: params[k] for k in (names or params)}
    space = ParamSpace(theta)

    def f(vec):
        return loss_fn(functional_call(model, params | space.unflatten(vec), (X,)), y)

    return hessian(f)(space.flatten(theta))


def make_problem(kind: str, dtype: torch.dtype):
    """(model, loss_fn, X, y) for 'tanh_mse' (MLP), 'relu_ce' (MLP, cross-entropy) or 'cnn_mse' (tiny CNN)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    if kind == "tanh_mse":
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
        X, y = torch.randn(24, 5, generator=g), torch.randn(24, 3, generator=g)
        loss_fn = half_mse
    elif kind == "relu_ce":
        model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
        X, y = torch.randn(24, 6, generator=g), torch.randint(0, 4, (24,), generator=g)
        loss_fn = cross_entropy
    else:
        model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
        X, y = torch.randn(16, 1, 6, 6, generator=g), torch.randn(16, 2, generator=g)
        loss_fn = half_mse
    model = model.to(dtype)
    X = X.to(dtype) if X.is_floating_point() else X
    y = y.to(dtype) if y.is_floating_point() else y
    return model, loss_fn, X, y


PROBLEMS = ["tanh_mse", "relu_ce", "cnn_mse"]

TINY_RUN = {
    "dtype": "float64",
    "data": {"name": "digits", "n_train": 32, "n_test": 8},
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "optimizer": {"lr": 0.1},
    "steps": 3,
    "measure": {"every": 1},
}
"""A run config that trains and measures in a fraction of a second (CLI and bad-input tests)."""

TINY_LIMIT = {
    "seed": 3,
    "dtype": "float32",
    "data": {"name": "synthetic_regression", "n": 20, "d": 3, "n_test": 0},
    "model": {"name": "mlp", "width": 3, "depth": 2, "activation": "tanh"},
    "loss": "mean_mse",
    "optimizer": {"rule": "gd"},
    "search": {"eta0": 1.0, "beta": 1.25, "T": 20, "R": 2},
}
"""A divergence search (``eoslab limit``) of a few dozen tiny trials (limit and batch tests)."""
