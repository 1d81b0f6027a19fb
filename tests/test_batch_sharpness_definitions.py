"""The ``minibatch`` measurement row records both definitions of Batch Sharpness over the same batches: the mean of
ratios E_B[g_BᵀH_Bg_B/‖g_B‖²] (Andreyev & Beneventano's published figures) and the ratio of means
E_B[g_BᵀH_Bg_B]/E_B[‖g_B‖²], each checked against dense Hessians of the drawn batches."""

import pytest
import torch
from helpers import dense_hessian

from eoslab.config import validate
from eoslab.curvature import sample_batches
from eoslab.engine import build_problem
from eoslab.measurements import Context, minibatch
from eoslab.operators import HessianOperator

CONFIG = {
    "dtype": "float64",
    "data": {"name": "digits", "n_train": 48, "n_test": 0},
    "model": {"name": "mlp", "width": 6, "depth": 1},
    "optimizer": {"rule": "sgd", "lr": 0.1, "batch_size": 4},
    "steps": 1,
    "measure": {"minibatch": 5, "tol": 1e-10},
}


def test_both_definitions_match_dense_hessians_of_the_same_batches():
    config = validate(CONFIG)
    problem = build_problem(config)
    params = {k: p.detach() for k, p in problem.model.named_parameters()}
    ctx = Context(problem, params, config["measure"], {}, torch.Generator().manual_seed(3), train_batch_size=4)
    out = minibatch(ctx)
    batches = sample_batches(48, 4, 5, False, torch.Generator().manual_seed(3))  # the row's first draw
    gHg, gg = [], []
    for idx in batches:
        X, Y = problem.X[idx], problem.Y[idx]
        g = HessianOperator(problem.model, problem.loss_fn, X, Y, params).gradient
        gHg.append(g @ dense_hessian(problem.model, problem.loss_fn, X, Y) @ g)
        gg.append(g @ g)
    gHg, gg = torch.stack(gHg), torch.stack(gg)
    assert out["batch_sharpness"].tolist() == pytest.approx((gHg / gg).tolist(), rel=1e-8)
    assert out["batch_sharpness_of_means"] == pytest.approx((gHg.mean() / gg.mean()).item(), rel=1e-8)
    assert out["batch_sharpness_of_means"] != pytest.approx(out["batch_sharpness"].mean().item(), rel=1e-3)
