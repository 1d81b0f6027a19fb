"""Update rules, mini-batch sampling and step-size schedules: the functions, and the engine's first steps against
hand computations (autograd gradients, dense Hessians)."""

import itertools
import math

import numpy as np
import pytest
import torch
from helpers import dense_hessian
from torch.func import functional_call

import eoslab
from eoslab.config import validate
from eoslab.engine import State, build_problem, next_batch, run
from eoslab.optim import apply_step, grad_norm, rule_scale, step_sizes

# ---------------------------------------------------------------------------------------- the functions


def test_rule_scale():
    assert rule_scale("gd", 3.0, 2.0) == 1.0
    assert rule_scale("sgd", 3.0, 2.0) == 1.0
    assert rule_scale("ngd", 4.0, 2.0) == 0.25
    assert rule_scale("ngd", 0.0, 2.0, eps=1e-6) == 1e6  # guarded at a critical point
    assert rule_scale("sqrt_gd", 4.0, 2.25, eps=0.0) == pytest.approx(1 / 3, rel=1e-15)  # 1/(2·√2.25)
    assert rule_scale("sqrt_gd", 4.0, 2.5, loss_offset=0.25, eps=0.0) == pytest.approx(1 / 3, rel=1e-15)
    assert rule_scale("sqrt_gd", 4.0, 0.1, loss_offset=0.5, eps=1e-8) == pytest.approx(0.5e4)  # L < L*: 1/(2√ε)
    with pytest.raises(ValueError, match="adam"):
        rule_scale("adam", 1.0, 1.0)


LAYERS = {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"]}


def test_step_sizes():
    assert step_sizes("constant", 0.1, LAYERS) == dict.fromkeys(["0.weight", "0.bias", "2.weight", "2.bias"], 0.1)
    assert set(step_sizes("inv_initial_sharpness", 2.0, LAYERS, initial_sharpness=8.0).values()) == {0.25}
    assert set(step_sizes("inv_sharpness", 2.0, LAYERS, sharpness=5.0, initial_sharpness=8.0).values()) == {0.4}
    sizes = step_sizes("layerwise", 1.0, LAYERS, layer_sharpness={"0": 4.0, "2": 0.5})
    assert sizes == {"0.weight": 0.25, "0.bias": 0.25, "2.weight": 2.0, "2.bias": 2.0}
    with pytest.raises(ValueError, match="cosine"):
        step_sizes("cosine", 1.0, LAYERS)


def test_apply_step_and_grad_norm():
    params = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    grads = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[4.0]])}
    assert grad_norm(grads).item() == 5.0
    out = apply_step(params, grads, {"a": 0.5, "b": 0.25}, 2.0)
    torch.testing.assert_close(out["a"], torch.tensor([-2.0, 2.0]), rtol=0, atol=0)
    torch.testing.assert_close(out["b"], torch.tensor([[1.0]]), rtol=0, atol=0)
    assert params["a"][0] == 1.0  # not in place


def sgd_config(sampling: str, b: int) -> dict:
    return validate(
        {
            "data": {"name": "digits"},
            "model": {"name": "mlp", "width": 2, "depth": 0},
            "optimizer": {"rule": "sgd", "lr": 0.1, "batch_size": b, "sampling": sampling},
            "steps": 1,
        }
    )


def flat(batches) -> list[int]:
    return list(itertools.chain.from_iterable(batches))


def draws(sampling: str, n: int, b: int, count: int) -> list[list[int]]:
    state, gen, config = State(0, {}, None, None), torch.Generator().manual_seed(0), sgd_config(sampling, b)
    return [next_batch(state, n, config, gen).tolist() for _ in range(count)]


def test_next_batch_reshuffle_covers_every_example_once_per_epoch():
    n, b = 12, 3
    batches = draws("reshuffle", n, b, 4 * n // b)
    epochs = [flat(batches[e * 4 : (e + 1) * 4]) for e in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(n))
    assert epochs[0] != epochs[1] != epochs[2]  # a fresh permutation per epoch
    # n not a multiple of b: the remainder is dropped, batches within an epoch stay disjoint
    batches = draws("reshuffle", 10, 3, 9)
    for e in range(3):
        epoch = flat(batches[3 * e : 3 * e + 3])
        assert len(set(epoch)) == 9


def test_next_batch_subset_and_iid():
    n, b = 6, 3
    subset = draws("subset", n, b, 200)
    assert all(len(set(batch)) == b and all(0 <= i < n for i in batch) for batch in subset)
    assert len({tuple(sorted(batch)) for batch in subset}) == math.comb(n, b)  # fresh draws, all subsets seen
    iid = draws("iid", n, b, 200)
    assert all(len(batch) == b and all(0 <= i < n for i in batch) for batch in iid)
    repeats = sum(len(set(batch)) < b for batch in iid)
    assert 60 < repeats < 140  # P(some repeat) = 1 − (5·4)/36 = 4/9 with replacement
    counts = np.bincount(flat(iid), minlength=n)
    assert counts.min() > 70 and counts.max() < 130  # uniform, 100 expected each
    assert (
        next_batch(State(0, {}, None, None), n, validate({**sgd_config("iid", 2), "optimizer": {"lr": 1}}), None)
        is None
    )


# ---------------------------------------------------------------------------------------- the engine's steps


def engine_config(steps: int = 1, **optimizer) -> dict:
    return {
        "dtype": "float64",
        "data": {"name": "synthetic_regression", "n": 32, "d": 6, "n_test": 0},
        "model": {"name": "mlp", "width": 4, "depth": 1},
        "optimizer": {"lr": 0.05, **optimizer},
        "steps": steps,
        "measure": {"every": 1, "sharpness": False, "test": False, "tol": 1e-8, "max_iter": 100},
        "checkpoint_every": 0,
    }


def hand_loss_grad(problem, params, idx=None):
    """Loss and gradient by plain autograd (independent of the engine's torch.func path)."""
    X, Y = (problem.X, problem.Y) if idx is None else (problem.X[idx], problem.Y[idx])
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    loss = problem.loss_fn(functional_call(problem.model, theta, (X,)), Y)
    grads = torch.autograd.grad(loss, list(theta.values()))
    return loss.item(), dict(zip(theta, grads, strict=True))


def loss_at(problem, params) -> float:
    with torch.no_grad():
        return problem.loss_fn(functional_call(problem.model, params, (problem.X,)), problem.Y).item()


def first_step(config: dict):
    """(dataset of a 1-step run, the problem, θ0)."""
    ds = run(config)
    problem = build_problem(validate(config))
    return ds, problem, {k: p.detach() for k, p in problem.model.named_parameters()}


def check_step(ds, problem, theta0, lr_per_layer: dict[str, float], scale: float, idx=None):
    loss0, g = hand_loss_grad(problem, theta0, idx)
    gnorm = math.sqrt(sum(v.pow(2).sum().item() for v in g.values()))
    lr = {name: lr_per_layer[name.rsplit(".", 1)[0]] for name in theta0}
    theta1 = {k: theta0[k] - lr[k] * scale * g[k] for k in theta0}
    assert ds.batch_loss.values[0] == pytest.approx(loss0, rel=1e-12)
    assert ds.step_grad_norm.values[0] == pytest.approx(gnorm, rel=1e-12)
    assert ds.train_loss.sel(step=0).item() == pytest.approx(loss_at(problem, theta0), rel=1e-12)
    assert ds.train_loss.sel(step=1).item() == pytest.approx(loss_at(problem, theta1), rel=1e-12)
    expected = [lr_per_layer[layer] * scale for layer in ds.layer.values]
    np.testing.assert_allclose(ds.lr_eff.values[0], expected, rtol=1e-12)
    return loss0, gnorm


def test_gd_first_step():
    ds, problem, theta0 = first_step(engine_config())
    check_step(ds, problem, theta0, {"0": 0.05, "2": 0.05}, 1.0)
    assert list(ds.layer.values) == ["0", "2"]


def test_ngd_first_step():
    ds, problem, theta0 = first_step(engine_config(rule="ngd", lr=0.3))
    g = hand_loss_grad(problem, theta0)[1]
    gnorm = math.sqrt(sum(v.pow(2).sum().item() for v in g.values()))
    check_step(ds, problem, theta0, {"0": 0.3, "2": 0.3}, 1.0 / gnorm)  # θ1 = θ0 − η g/‖g‖


def test_sqrt_gd_first_step():
    config = engine_config(rule="sqrt_gd", lr=0.02, loss_offset=2.0, eps=1e-9)
    ds, problem, theta0 = first_step(config)
    loss0 = hand_loss_grad(problem, theta0)[0]
    assert loss0 > 2.0
    check_step(ds, problem, theta0, {"0": 0.02, "2": 0.02}, 1.0 / (2.0 * math.sqrt(loss0 - 2.0 + 1e-9)))


@pytest.mark.parametrize("sampling", ["subset", "iid", "reshuffle"])
def test_sgd_first_step(sampling):
    ds, problem, theta0 = first_step({**engine_config(rule="sgd", batch_size=5, sampling=sampling), "seed": 3})
    gen = torch.Generator().manual_seed(3)  # the training generator is seeded with the config's seed
    idx = torch.randint(32, (5,), generator=gen) if sampling == "iid" else torch.randperm(32, generator=gen)[:5]
    loss0, _ = check_step(ds, problem, theta0, {"0": 0.05, "2": 0.05}, 1.0, idx)
    assert loss0 != pytest.approx(ds.train_loss.sel(step=0).item(), rel=1e-3)  # a mini-batch loss


@pytest.mark.parametrize(
    ("sampling", "n", "b"), [("reshuffle", 8, 1), ("reshuffle", 6, 2), ("subset", 6, 2), ("iid", 6, 2)]
)
def test_engine_batches(sampling, n, b):
    """With a step too small to move θ, batch_loss[t] = L_{B_t}(θ0) identifies the batch B_t drawn by the engine."""
    config = engine_config(steps=60, rule="sgd", batch_size=b, sampling=sampling, lr=1e-300)
    config["data"]["n"], config["measure"]["every"] = n, 1000
    ds, problem, theta0 = first_step(config)
    with torch.no_grad():
        pred = functional_call(problem.model, theta0, (problem.X,))
        losses = 0.5 * ((pred - problem.Y) ** 2).sum(1)  # per-example half_mse
    candidates = list(itertools.combinations_with_replacement(range(n), b))
    means = np.array([losses[list(c)].mean().item() for c in candidates])
    assert np.diff(np.sort(means)).min() > 1e-9  # every multiset has its own loss
    batches = [candidates[np.abs(means - value).argmin()] for value in ds.batch_loss.values]
    for value, batch in zip(ds.batch_loss.values, batches, strict=True):
        assert value == pytest.approx(losses[list(batch)].mean().item(), rel=1e-12)
    repeats = sum(len(set(batch)) < b for batch in batches)
    if sampling == "reshuffle":
        per_epoch = n // b
        epochs = [sorted(flat(batches[e : e + per_epoch])) for e in range(0, 60 - per_epoch + 1, per_epoch)]
        assert all(epoch == list(range(n)) for epoch in epochs)
        assert len({tuple(batches[e : e + per_epoch]) for e in range(0, 60, per_epoch)}) > 1
    elif sampling == "subset":
        assert repeats == 0 and len(set(batches)) == math.comb(n, b)
    else:
        assert 3 <= repeats <= 20  # P(repeat) = 1/6 with replacement: 10 expected


# ---------------------------------------------------------------------------------------- schedules


def dense_layer_eigs(problem, theta0) -> dict[str, float]:
    model = problem.model
    out = {}
    for layer in ("0", "2"):
        H = dense_hessian(model, problem.loss_fn, problem.X, problem.Y, names=[f"{layer}.weight", f"{layer}.bias"])
        out[layer] = torch.linalg.eigvalsh(H)[-1].item()
    H = dense_hessian(model, problem.loss_fn, problem.X, problem.Y)
    out[""] = torch.linalg.eigvalsh(H)[-1].item()
    return out


def test_constant_schedule_all_rules():
    ds = run(engine_config(steps=4, rule="ngd", lr=0.3))
    np.testing.assert_allclose(ds.lr_eff.values, np.outer(0.3 / ds.step_grad_norm.values, [1, 1]), rtol=1e-14)
    ds = run(engine_config(steps=4, rule="sqrt_gd", lr=0.02, loss_offset=2.0, eps=0.0))
    expected = 0.02 / (2 * np.sqrt(ds.batch_loss.values - 2.0))
    np.testing.assert_allclose(ds.lr_eff.values, np.outer(expected, [1, 1]), rtol=1e-14)
    ds = run(engine_config(steps=4))
    assert (ds.lr_eff.values == 0.05).all()


def test_inv_initial_sharpness_schedule():
    ds, problem, theta0 = first_step(engine_config(steps=3, schedule="inv_initial_sharpness", lr=1.0))
    exact = dense_layer_eigs(problem, theta0)[""]
    lam0 = eoslab.sharpness(problem.model, problem.loss_fn, problem.X, problem.Y, tol=1e-8, max_iter=100)
    assert lam0 == pytest.approx(exact, rel=1e-9)
    np.testing.assert_allclose(ds.lr_eff.values, 1.0 / exact, rtol=1e-9)  # λ0 only, every step


def test_inv_sharpness_schedule():
    config = engine_config(steps=3, schedule="inv_sharpness", lr=1.5)
    config["measure"]["sharpness"] = True
    ds, problem, theta0 = first_step(config)
    exact = dense_layer_eigs(problem, theta0)[""]
    assert ds.lr_eff.values[0, 0] == pytest.approx(1.5 / exact, rel=1e-9)
    # η_t = lr/λ_t with λ_t the sharpness at the current θ_t (the engine's own measurement agrees)
    lam = ds.sharpness.sel(eig=1).values[:3]
    np.testing.assert_allclose(ds.lr_eff.values, np.outer(1.5 / lam, [1, 1]), rtol=1e-8)
    assert len(set(np.round(lam, 6))) == 3  # it does change
    check = first_step(engine_config(steps=1, schedule="inv_sharpness", lr=1.5))[0]
    check_step(check, problem, theta0, {"0": 1.5 / exact, "2": 1.5 / exact}, 1.0)


def test_layerwise_schedule():
    config = engine_config(steps=2, schedule="layerwise", lr=0.5)
    config["measure"]["layers"] = True
    ds, problem, theta0 = first_step(config)
    exact = dense_layer_eigs(problem, theta0)
    api = eoslab.layer_sharpness(
        problem.model, problem.loss_fn, problem.X, problem.Y, tol=1e-8, max_iter=100, criterion="residual"
    )
    for layer in ("0", "2"):
        assert api[layer] == pytest.approx(exact[layer], rel=1e-9)
        assert exact[layer] < exact[""]  # interlacing, and the layers differ from the full sharpness
    assert ds.lr_eff.sel(layer="0").values[0] == pytest.approx(0.5 / api["0"], rel=1e-9)
    assert ds.lr_eff.sel(layer="2").values[0] == pytest.approx(0.5 / api["2"], rel=1e-9)
    # step 1: η_i = lr/λ_i(θ1), the engine's layer sharpness measured at step 1
    np.testing.assert_allclose(ds.lr_eff.values[1], 0.5 / ds.layer_sharpness.sel(step=1).values, rtol=1e-8)
    check = first_step(engine_config(steps=1, schedule="layerwise", lr=0.5))[0]
    check_step(check, problem, theta0, {layer: 0.5 / exact[layer] for layer in ("0", "2")}, 1.0)
