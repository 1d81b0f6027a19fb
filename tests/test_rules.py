"""Update rules as objects: momentum, Nesterov, RMSProp and Adam in the engine against torch.optim's own steps,
their preconditioner against a dense Hessian, their quadratic thresholds, resumption and refusals."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from helpers import dense_hessian

import eoslab.engine
from eoslab.cli import main
from eoslab.config import ConfigError, config_hash, validate
from eoslab.engine import build_problem, run
from eoslab.rules import RULES, build_rule
from eoslab.runfiles import Interrupted, OutputError, save_checkpoint

TINY = {
    "dtype": "float64",
    "data": {"name": "synthetic_regression", "n": 24, "d": 4, "n_test": 0},
    "model": {"name": "mlp", "width": 5, "depth": 1, "activation": "tanh"},
    "steps": 12,
    "measure": {"every": 1, "sharpness": False, "test": False, "tol": 1e-10},
    "checkpoint_every": 0,
}

TORCH = {
    "heavy_ball": ({"momentum": 0.8}, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8)),
    "nesterov": ({"momentum": 0.5}, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.5, nesterov=True)),
    "adam": ({"beta1": 0.9, "beta2": 0.99, "eps": 1e-8}, lambda p: torch.optim.Adam(p, 0.1, (0.9, 0.99), 1e-8)),
    "rmsprop": ({"beta2": 0.99, "eps": 1e-8}, lambda p: torch.optim.Adam(p, 0.1, (0.0, 0.99), 1e-8)),
}


@pytest.mark.parametrize("rule", list(TORCH))
def test_the_engine_steps_as_torch_optim_does(rule):
    """Training losses of 12 full-batch steps equal those of the torch.optim loop from the same θ0 (RMSProp with
    bias correction is Adam with β₁ = 0)."""
    keys, make = TORCH[rule]
    config = TINY | {"optimizer": {"rule": rule, "lr": 0.1, **keys}}
    ds = run(config)
    problem = build_problem(validate(config))
    model = problem.model
    opt = make(model.parameters())
    losses = []
    for _ in range(13):
        opt.zero_grad()
        loss = problem.loss_fn(model(problem.X), problem.Y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    np.testing.assert_allclose(ds.train_loss.values, losses, rtol=1e-12)
    assert (ds.lr_eff.values == 0.1).all()


@pytest.mark.parametrize(
    ("rule", "keys", "threshold"),
    [
        ("gd", {}, 2.0),
        ("heavy_ball", {"momentum": 0.9}, 3.8),
        ("nesterov", {"momentum": 0.5}, 1.5),
        ("adam", {"beta1": 0.9}, 38.0),
        ("rmsprop", {}, 2.0),
    ],
)
def test_thresholds(rule, keys, threshold):
    opt = validate(TINY | {"optimizer": {"rule": rule, "lr": 1.0, **keys}})["optimizer"]
    assert RULES[rule].threshold(opt) == pytest.approx(threshold, rel=1e-15)


@pytest.mark.parametrize(("rule", "momentum"), [("heavy_ball", 0.9), ("nesterov", 0.5)])
def test_momentum_on_a_quadratic_is_stable_exactly_below_its_threshold(rule, momentum):
    """L = ½λθ²: the rule's iterates shrink for ηλ = 0.98·threshold and grow for 1.02·threshold."""
    opt = validate(TINY | {"optimizer": {"rule": rule, "lr": 1.0, "momentum": momentum}})["optimizer"]
    for factor, grows in ((0.98, False), (1.02, True)):
        lam = factor * RULES[rule].threshold(opt)
        r = build_rule(opt, {"": ["w"]})
        theta, state = {"w": torch.tensor([1.0], dtype=torch.float64)}, r.init({"w": torch.zeros(1)})
        for _ in range(3000):
            theta = r.step(theta, {"w": lam * theta["w"]}, None, None, None, state)[0]
        assert (abs(theta["w"].item()) > 1) == grows


def test_adam_preconditioned_sharpness_matches_the_dense_hessian():
    """The run's λmax(D^½HD^½) at θ_t, D = η/((1 − β₁ᵗ)(√v̂ + ε)) with v updated with g_t, the step's own D."""
    config = TINY | {"optimizer": {"rule": "adam", "lr": 0.01, "eps": 1e-8}, "steps": 3}
    config["measure"] = config["measure"] | {"preconditioned": True}
    ds = run(config)
    problem = build_problem(validate(config))
    model, X, Y = problem.model, problem.X, problem.Y
    opt = torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-8)
    for t in range(1, 4):
        opt.zero_grad()
        problem.loss_fn(model(X), Y).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        d = []
        for p, g in zip(model.parameters(), grads, strict=True):
            v = opt.state[p]["exp_avg_sq"] * 0.999 + 0.001 * g**2 if opt.state[p] else 0.001 * g**2
            d.append((0.01 / ((1 - 0.9**t) * ((v / (1 - 0.999**t)).sqrt() + 1e-8))).reshape(-1))
        d = torch.cat(d).sqrt()
        H = dense_hessian(model, problem.loss_fn, X, Y)
        want = torch.linalg.eigvalsh(d[:, None] * H * d[None, :])[-1].item()
        assert float(ds.preconditioned_sharpness.values[t - 1]) == pytest.approx(want, rel=1e-7)
        opt.step()


def test_adam_resumes_bit_identical(tmp_path, monkeypatch):
    """Rule state (Adam's t, m, v) is checkpointed with the run: SIGTERM at a measurement, then the same command."""
    config = TINY | {"optimizer": {"rule": "adam", "lr": 0.01}, "steps": 20, "measure": TINY["measure"] | {"every": 5}}
    uninterrupted = run(config)
    real, calls = eoslab.engine.measure, []

    def measure(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(eoslab.engine, "measure", measure)
    out = tmp_path / "run.nc"
    with pytest.raises(Interrupted):
        run(config, out)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "run.nc.ckpt", weights_only=True)
    assert saved["state"]["rule"]["t"] == 11 and "warm" in saved["state"] and not saved["state"]["warm"]
    resumed = run(config, out)
    for name in uninterrupted.data_vars:
        np.testing.assert_array_equal(resumed[name].values, uninterrupted[name].values, err_msg=name)


def test_a_checkpoint_of_the_old_state_layout_is_refused_not_misread(tmp_path):
    """State fields of older code (``perm``, ``pos``, ``initial_sharpness``) under --resume-any-code: exit 3."""
    config = TINY | {"optimizer": {"lr": 0.01}}
    out = tmp_path / "run.nc"
    old = {"step": 3, "params": {}, "train_rng": None, "measure_rng": None, "perm": None, "pos": 0}
    save_checkpoint(tmp_path / "run.nc.ckpt", {"config_hash": config_hash(config), "code_hash": "old", "state": old})
    with pytest.raises(OutputError, match=r"run\.nc\.ckpt: its state has \['perm', 'pos'\], which this code does not"):
        run(config, out, resume_any_code=True)
    assert main(["run", "--json", json.dumps(config), "--out", str(out), "--quiet", "--resume-any-code"]) == 3
    assert not out.exists() and not (tmp_path / "run.nc.lock").exists()


def test_rule_keys_are_filled_for_their_rule_and_refused_for_others():
    opt = validate(TINY | {"optimizer": {"rule": "adam", "lr": 0.1}})["optimizer"]
    assert (opt["beta1"], opt["beta2"]) == (0.9, 0.999) and "momentum" not in opt
    assert "beta2" not in validate(TINY | {"optimizer": {"lr": 0.1}})["optimizer"]  # gd's configs hash as before
    with pytest.raises(ConfigError, match=r"optimizer: 'momentum' is not read by rule 'adam' \(its own keys: beta1"):
        validate(TINY | {"optimizer": {"rule": "adam", "lr": 0.1, "momentum": 0.9}})
    with pytest.raises(ConfigError, match=r"optimizer: 'beta1' is not read by rule 'rmsprop'"):
        validate(TINY | {"optimizer": {"rule": "rmsprop", "lr": 0.1, "beta1": 0.9}})
    with pytest.raises(ConfigError, match=r"optimizer\.momentum: 1 is greater than or equal to the maximum of 1"):
        validate(TINY | {"optimizer": {"rule": "heavy_ball", "lr": 0.1, "momentum": 1}})


def test_preconditioner_is_read_without_changing_the_state():
    problem = build_problem(validate(TINY | {"optimizer": {"lr": 0.1}}))
    params = {k: p.detach() for k, p in problem.model.named_parameters()}
    opt = validate(TINY | {"optimizer": {"rule": "adam", "lr": 0.1}})["optimizer"]
    rule = build_rule(opt, {"all": list(params)})
    state = rule.init(params)
    grads = {k: torch.ones_like(v) for k, v in params.items()}
    D = rule.preconditioner(params, grads, state)
    assert state["t"] == 0 and all((v == 0).all() for v in state["v"].values())
    expected = 0.1 / ((1 - 0.9) * (1 + 1e-12))  # v̂ = g² = 1 at t = 1
    assert all(torch.allclose(d, torch.full_like(d, expected), rtol=1e-14) for d in D.values())
