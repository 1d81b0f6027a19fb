"""Divergence search (eoslab.limits, ``eoslab limit``): batched trials equal Algorithm 2 run one model at a time."""

import json

import pytest
import torch
from helpers import TINY_LIMIT
from torch.func import functional_call

from eoslab.cli import main
from eoslab.config import ConfigError
from eoslab.engine import build_problem
from eoslab.limits import _init, _samples, limit, run_trials, trial_seed, validate_limit
from eoslab.pipeline import COMMANDS
from eoslab.store import open_run

CONFIG = TINY_LIMIT
SGD = {"optimizer": {"rule": "sgd", "batch_size": 2, "sampling": "iid"}, "search": {**CONFIG["search"], "eta0": 0.3}}


def sequential(config: dict, eta: float, seed: int) -> int:
    """One trial the plain way: a fresh model, T steps of θ ← θ − η∇L_B; the step whose loss is non-finite or −1."""
    problem = build_problem(config)
    params = {k: v[0].clone().requires_grad_() for k, v in _init(problem, config, [seed]).items()}
    idx = _samples(config, len(problem.X), [seed])
    for j in range(config["search"]["T"]):
        X, Y = (problem.X, problem.Y) if idx is None else (problem.X[idx[0, j]], problem.Y[idx[0, j]])
        loss = problem.loss_fn(functional_call(problem.model, params, (X,)), Y)
        if not torch.isfinite(loss):
            return j + 1
        grads = torch.autograd.grad(loss, list(params.values()))
        with torch.no_grad():
            params = {k: (v - eta * g).requires_grad_() for (k, v), g in zip(params.items(), grads, strict=True)}
    return -1


@pytest.mark.parametrize("override", [{}, SGD], ids=["gd", "sgd"])
def test_scan_is_algorithm_2_trial_by_trial(override):
    config = validate_limit(CONFIG | override)
    ds = limit(config)
    s = config["search"]
    for r in range(s["R"]):
        rep = ds.where(ds.limit_repetition == r, drop=True)
        etas = rep.limit_eta.values
        k = len(etas)
        assert etas == pytest.approx([s["eta0"] * s["beta"] ** i for i in range(k)])
        assert rep.limit_diverged.values.tolist() == [0] * (k - 1) + [1]  # stops at the first divergence
        assert ds.limit_max_lr.values[r] == pytest.approx(etas[-1])
        for i in (0, k - 2, k - 1):  # the batched outcome equals a fresh sequential run with the recorded seed
            seed = trial_seed(config["seed"], r, i)
            assert int(rep.limit_seed.values[i]) == seed
            assert sequential(config, float(etas[i]), seed) == int(rep.limit_diverged_step.values[i])
    assert ds.attrs["max_lr"] == pytest.approx(ds.limit_max_lr.values.mean())
    assert ds.attrs["method"] == "scan" and ds.attrs["status"] == "complete"


def test_a_scan_drops_the_trials_above_a_groups_first_divergence():
    config = validate_limit(CONFIG)
    problem = build_problem(config)
    etas = torch.tensor([1.0, 50.0, 60.0, 1.0, 1.2])
    out = run_trials(problem, config, etas, [1, 2, 3, 4, 5], group=torch.tensor([0, 0, 0, 1, 1]))
    assert out[0] == -1 and out[1] > 0 and out[2] in (-2, out[1])  # dropped, unless it diverged at the same step
    assert out[3:].tolist() == [-1, -1]
    free = run_trials(problem, config, etas, [1, 2, 3, 4, 5])
    assert free[2] > 0 and free[:2].tolist() == out[:2].tolist()


def test_bisect_brackets_the_threshold_of_one_initialisation():
    """Least squares (f = xθ): the outcome is monotone in η and the threshold lies above the edge 2/λmax."""
    linear = {"model": {"name": "linear_regression", "init_scale": 1.0}}
    search = {**CONFIG["search"], "method": "bisect", "beta": 1.02, "eta0": 0.1}
    config = validate_limit(CONFIG | linear | {"search": search})
    ds = limit(config)
    problem = build_problem(config)
    edge = 2 / float(torch.linalg.eigvalsh(2 * problem.X.T @ problem.X / problem.Y.numel())[-1])
    for r in range(config["search"]["R"]):
        rep = ds.where(ds.limit_repetition == r, drop=True)
        assert len(set(rep.limit_seed.values.tolist())) == 1  # one fixed initialisation
        hi = float(ds.limit_max_lr.values[r])
        lo = float(rep.limit_eta.where(rep.limit_diverged == 0).max())
        assert 1 < hi / lo <= 1.02
        seed = int(rep.limit_seed.values[0])
        grid = torch.linspace(lo / 1.05, hi * 1.05, 12, dtype=torch.float64)
        out = run_trials(problem, config, grid, [seed] * len(grid))
        assert (out[grid <= lo] == -1).all() and (out[grid >= hi] > 0).all()  # a fine grid agrees: monotone
        assert edge < lo  # only NaN/inf counts: losses that grow slowly for T steps pass
    assert ds.attrs["n_trials"] < 40  # against ~log(hi/η₀)/log β ≈ 100 for a scan


@pytest.mark.parametrize(
    "search, key",
    [
        ({"eta0": -1.0}, "eta0"),
        ({"eta0": 0.1, "beta": 1.0}, "beta"),
        ({"eta0": 0.1, "method": "grid"}, "method"),
        ({"eta0": 0.1, "R": 0}, "R"),
        ({"eta0": 0.1, "steps": 5}, "steps"),
        ({"beta": 1.1}, "eta0"),
    ],
)
def test_bad_search_values_name_the_key(search, key):
    with pytest.raises(ConfigError, match=key):
        validate_limit(CONFIG | {"search": search})


def test_limit_needs_a_constant_gd_or_sgd_step():
    with pytest.raises(ConfigError, match=r"optimizer\.rule"):
        validate_limit(CONFIG | {"optimizer": {"rule": "ngd"}})
    with pytest.raises(ConfigError, match=r"optimizer\.rule: .* without state or factor \['gd', 'sgd'\], not 'adam'"):
        validate_limit(CONFIG | {"optimizer": {"rule": "adam"}})
    with pytest.raises(ConfigError, match=r"optimizer\.schedule"):
        validate_limit(CONFIG | {"optimizer": {"rule": "gd", "schedule": "inv_sharpness"}})


def test_cli_writes_the_file_and_exits_2_on_a_bad_search(tmp_path, capsys):
    out = tmp_path / "limits" / "lim.nc"
    config = CONFIG | {"search": {**CONFIG["search"], "R": 1}}
    assert main(["limit", "--json", json.dumps(config), "--out", str(out), "--quiet", "--set", "seed=4"]) == 0
    ds = open_run(out)
    assert json.loads(ds.attrs["config"]) == COMMANDS["limit"](config | {"seed": 4})
    assert ds.attrs["max_lr"] == pytest.approx(float(ds.limit_max_lr.values[0]))
    assert "max_lr" in capsys.readouterr().err
    assert main(["limit", "--json", json.dumps(config), "--out", str(out), "--set", "search.beta=0.5"]) == 2
    assert "search: beta" in capsys.readouterr().err
