"""Fox's step-size schemes: the Armijo line search ("LS") and the preconditioned sharpness λmax(P^½HP^½),
checked in closed form on a quadratic and against dense Hessians."""

import math

import numpy as np
import pytest
import torch
from helpers import dense_hessian

from eoslab.config import ConfigError, validate
from eoslab.curvature import layers
from eoslab.engine import build_problem, run
from eoslab.optim import ARMIJO, armijo_step

TINY = {
    "dtype": "float64",
    "data": {"name": "synthetic_regression", "n": 40, "d": 3, "n_test": 0},
    "model": {"name": "mlp", "width": 3, "depth": 2, "activation": "tanh"},
    "loss": "mean_mse",
    "steps": 0,
    "measure": {"every": 1, "layers": True, "preconditioned": True, "tol": 1e-8, "test": False},
    "checkpoint_every": 0,
}


@pytest.mark.parametrize("a, previous", [(10.0, 1.0), (3.0, 0.05), (0.1, 8.0)])
def test_armijo_accepts_the_first_backtracked_step_below_2_1_minus_c_over_a(a, previous):
    """L = ½aθ²: L(θ − ηaθ) ≤ L(θ) − cη(aθ)² ⇔ η ≤ 2(1 − c)/a; the search starts at min(γη_prev, η_max)."""
    theta = {"w": torch.tensor([1.5], dtype=torch.float64)}

    def loss_at(p):
        return float(0.5 * a * p["w"].pow(2).sum())

    eta = armijo_step(loss_at, theta, {"w": a * theta["w"]}, loss_at(theta), previous)
    start = min(ARMIJO["gamma"] * previous, ARMIJO["eta_max"])
    j = max(0, math.ceil(math.log(2 * (1 - ARMIJO["c"]) / a / start) / math.log(ARMIJO["beta"]) - 1e-12))
    assert eta == pytest.approx(start * ARMIJO["beta"] ** j, rel=1e-12)
    assert eta <= 2 * (1 - ARMIJO["c"]) / a < eta / ARMIJO["beta"] or j == 0


def test_the_armijo_rule_decreases_the_loss_by_the_armijo_condition_every_step():
    ds = run(TINY | {"optimizer": {"rule": "armijo", "lr": 1.0}, "steps": 30, "measure": {"every": 10}})
    loss, g, eta = ds.batch_loss.values, ds.step_grad_norm.values, ds.lr_eff.values[:, 0]
    assert (ds.lr_eff.values == eta[:, None]).all()  # one step size for every layer
    assert np.all(loss[1:] <= loss[:-1] - ARMIJO["c"] * eta[:-1] * g[:-1] ** 2 + 1e-12)
    assert loss[-1] < 0.5 * loss[0] and len(set(eta.round(12))) > 1


@pytest.mark.parametrize("schedule, lr", [("layerwise", 1.0), ("layerwise", 0.5), ("constant", 0.3)])
def test_preconditioned_sharpness_matches_the_dense_hessian(schedule, lr):
    config = TINY | {"optimizer": {"lr": lr, "schedule": schedule}}
    ds = run(config)
    problem = build_problem(validate(config))
    X, Y = problem.X, problem.Y
    H = dense_hessian(problem.model, problem.loss_fn, X, Y)
    sizes, start = [], 0
    for i, names in enumerate(layers(problem.model).values()):
        n = sum(dict(problem.model.named_parameters())[k].numel() for k in names)
        block = torch.linalg.eigvalsh(H[start : start + n, start : start + n])[-1]
        assert float(ds.layer_sharpness.values[0, i]) == pytest.approx(float(block), rel=1e-6)
        sizes.append(torch.full((n,), lr / float(block) if schedule == "layerwise" else lr, dtype=H.dtype))
        start += n
    d = torch.cat(sizes).sqrt()
    expected = torch.linalg.eigvalsh(d[:, None] * H * d[None, :])[-1]
    assert float(ds.preconditioned_sharpness.values[0]) == pytest.approx(float(expected), rel=1e-6)
    if schedule == "layerwise":  # its diagonal blocks lr·H_ii/λ_i have λmax = lr, so by interlacing λmax ≥ lr
        assert float(expected) >= lr * (1 - 1e-9)


def test_preconditioned_needs_a_schedule_it_can_read():
    with pytest.raises(ConfigError, match="preconditioned"):
        validate(TINY | {"optimizer": {"lr": 1.0, "schedule": "inv_sharpness"}})
