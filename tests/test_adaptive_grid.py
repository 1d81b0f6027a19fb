"""The adaptive sweep axis grows the grid until every group's best cell lies strictly inside it."""

import math

import pytest
from helpers import TINY_RUN

from eoslab.adaptive_grid import SCHEMA, best_values, extension
from eoslab.config import ConfigError, check
from eoslab.sweep import run_sweep, validate_sweep

EXTEND = check({"key": "optimizer.lr"}, SCHEMA)


def grid(lrs, seeds=(0, 1)):
    return [{"optimizer.lr": lr, "seed": s} for lr in lrs for s in seeds]


def rows(points, score):
    return [{"final_test_accuracy": score(p), "diverged": math.isnan(score(p))} for p in points]


def test_best_values_per_group_and_diverged_cells_are_worst():
    points = grid([0.1, 0.2, 0.4])
    acc = {(0.1, 0): 0.5, (0.2, 0): 0.7, (0.4, 0): math.nan, (0.1, 1): 0.5, (0.2, 1): 0.6, (0.4, 1): 0.8}
    assert best_values(points, rows(points, lambda p: acc[p["optimizer.lr"], p["seed"]]), "optimizer.lr",
                       "final_test_accuracy") == [0.2, 0.4]  # fmt: skip


def test_extends_up_while_some_group_is_best_at_the_top_then_stops():
    points = grid([0.1, 0.2])
    rising = rows(points, lambda p: p["optimizer.lr"])  # the larger the better: the top is always best
    assert extension(EXTEND, points, rising, 0) == grid([0.4])
    assert extension(EXTEND, points, rising, EXTEND["rounds"]) == []  # the rounds are spent
    falling = rows(points, lambda p: -p["optimizer.lr"])
    assert extension(EXTEND, points, falling, 0) == grid([0.05])  # best at the bottom: one value below
    inside = grid([0.1, 0.2, 0.4])
    assert extension(EXTEND, inside, rows(inside, lambda p: -abs(p["optimizer.lr"] - 0.2)), 0) == []


def test_sweep_extends_until_the_best_is_inside():
    extend = {"key": "optimizer.lr", "by": "final_train_accuracy", "rounds": 2}
    config = TINY_RUN | {"name": "s", "sweep": {"grid": {"optimizer.lr": [0.001, 0.002]}, "extend": extend}}
    ds = run_sweep(config)
    lrs = sorted(set(ds["optimizer.lr"].values.tolist()))
    assert {0.001, 0.002} < set(lrs) and len(ds.cell) == len(lrs)
    with pytest.raises(ConfigError, match=r"^sweep\.extend\.key: 'seed' is not a key of sweep\.grid$"):
        validate_sweep(config | {"sweep": {"grid": {"optimizer.lr": [0.1]}, "extend": {"key": "seed"}}})
