"""`eoslab sweep`: cells of one config in one process, one NetCDF with a ``cell`` dimension; configs checked first."""

import json

import numpy as np
import pytest

from eoslab.cli import main
from eoslab.config import ConfigError
from eoslab.engine import run
from eoslab.pipeline import COMMANDS
from eoslab.store import open_run
from eoslab.sweep import cell_config, validate_sweep

SWEEP = {
    "dtype": "float64",
    "data": {"name": "digits", "n_train": 64, "n_test": 32},
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "optimizer": {"rule": "sgd", "lr": 0.5, "batch_size": 8},
    "steps": 1000,
    "stop": {"examples": 80},
    "measure": {"every": 4},
    "checkpoint_every": 0,
    "sweep": {"grid": {"optimizer.lr": [0.1, 0.5], "seed": [0, 1]}},
}


def test_sweep_cells_equal_single_runs(tmp_path):
    out = tmp_path / "sweep.nc"
    assert main(["sweep", "--json", json.dumps(SWEEP), "--out", str(out), "--quiet"]) == 0
    ds = open_run(out)
    assert ds.sizes["cell"] == 4
    assert ds["optimizer.lr"].values.tolist() == [0.1, 0.1, 0.5, 0.5] and ds["seed"].values.tolist() == [0, 1, 0, 1]
    assert set(ds.stop_reason.values) == {"examples"} and (ds.stop_step == 10).all()  # ceil(80 / 8)
    assert (ds.examples_seen == 80).all() and ds.final_test_accuracy.attrs["long_name"]
    single = run(cell_config(validate_sweep(SWEEP), {"optimizer.lr": 0.5, "seed": 1}))
    assert ds.final_test_accuracy.values[3] == single.test_accuracy.values[-1]
    assert ds.final_sharpness.values[3] == single.sharpness.sel(eig=1).values[-1]
    assert np.unique(ds.final_train_loss.values).size == 4


@pytest.mark.parametrize(
    "change, key",
    [
        ({"sweep": {"grid": {"optimizer.lr": [0.1, -1.0]}}}, r"sweep\.grid: .*optimizer\.lr"),
        ({"sweep": {"grid": {"optimizer.lr": []}}}, r"sweep: grid\.optimizer\.lr"),
        ({"sweep": {"grid": {"optimizer.nesterov": [True]}}}, r"sweep\.grid: .*nesterov"),
        ({"sweep": None}, r"sweep"),
        ({"stop": {"examples": 0}}, r"stop\.examples"),
    ],
)
def test_bad_sweep_configs_name_the_key(change, key):
    config = {**SWEEP, **change}
    if change.get("sweep", 1) is None:
        del config["sweep"]
    with pytest.raises(ConfigError, match=key):
        COMMANDS["sweep"](config)
