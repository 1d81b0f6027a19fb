"""Runs started from another run's saved parameters (engine and pipeline), and 𝒦 as an engine measurement."""

import numpy as np
import pytest
import torch

import eoslab
from eoslab.config import ConfigError, config_hash
from eoslab.data import gaussian_linear_regression
from eoslab.engine import run
from eoslab.pipeline import family_runs, figure_runs, profile_runs, run_file

GD = {
    "dtype": "float64",
    "data": {"name": "digits", "n_train": 64, "n_test": 0},
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "optimizer": {"rule": "gd", "lr": 0.1},
    "steps": 20,
    "measure": {"every": 10, "sharpness": False},
    "checkpoint_every": 0,
}


def test_a_run_continues_from_the_saved_step(tmp_path):
    """GD for 20 steps = GD for 10, then 10 more from the saved θ₁₀ (exactly, in float64)."""
    source = run(GD | {"save_params": [0, 10]}, tmp_path / "source.nc")
    assert source.saved_params.dims == ("saved_step", "parameter")
    assert source.saved_step.values.tolist() == [0, 10]
    dependent = run(GD | {"steps": 10, "init": {"file": str(tmp_path / "source.nc"), "step": 10}})
    assert dependent.train_loss.sel(step=0) == source.train_loss.sel(step=10)
    assert dependent.train_loss.sel(step=10) == source.train_loss.sel(step=20)
    again = run(GD | {"steps": 10, "init": {"file": str(tmp_path / "source.nc"), "step": 0}})
    assert again.train_loss.sel(step=10) == source.train_loss.sel(step=10)


def test_bad_starting_points_are_config_errors(tmp_path):
    run(GD | {"save_params": [10]}, tmp_path / "source.nc")
    with pytest.raises(ConfigError, match=r"saved the parameters of steps \[10\], not 5"):
        run(GD | {"init": {"file": str(tmp_path / "source.nc"), "step": 5}})
    with pytest.raises(ConfigError, match=r"init\.file"):
        run(GD | {"init": {"file": str(tmp_path / "nope.nc"), "step": 5}})
    with pytest.raises(ConfigError, match="saved parameters"):
        run(
            GD
            | {
                "model": {"name": "mlp", "width": 9, "depth": 1},
                "init": {"file": str(tmp_path / "source.nc"), "step": 10},
            }
        )
    with pytest.raises(ConfigError, match=r"init\.step"):
        run(GD | {"init": {"file": str(tmp_path / "source.nc")}})
    with pytest.raises(ConfigError, match="resolved by the pipeline"):
        run(GD | {"init": {"from": "pre/gd", "step": 10}})


def profile(pre_lr=0.1, save=(10,), step=10):
    return {
        "families": {
            "pre": {
                "base": GD | {"save_params": list(save), "optimizer": {"rule": "gd", "lr": pre_lr}},
                "runs": {"gd": None},
            },
            "post": {
                "base": GD | {"optimizer": {"rule": "ngd", "lr": 0.01}, "init": {"from": "pre/gd", "step": step}},
                "runs": {"ngd": None},
            },
        },
        "figures": {"f": {"notebook": "99_f", "families": ["post"], "params": {}}},
    }


def test_the_pipeline_resolves_the_source_file_and_hashes_it():
    p = profile()
    pre, post = family_runs(p, "pre")["gd"], family_runs(p, "post")["ngd"]
    assert post["init"]["file"] == str(run_file("pre", "gd", pre))
    assert set(map(str, profile_runs(p))) == {post["init"]["file"], *figure_runs(p, "f")["post"]}
    changed = family_runs(profile(pre_lr=0.2), "post")["ngd"]
    assert config_hash(changed) != config_hash(post)
    with pytest.raises(ConfigError, match="saves steps"):
        family_runs(profile(step=5), "post")


def test_noise_kernel_measurement_on_linear_regression():
    """On linear regression Θ = JJᵀ/n exactly; the engine's 𝒦 and η_c match the library's on it."""
    config = {
        "dtype": "float64",
        "data": {"name": "gaussian_linear_regression", "D": 100, "P": 120},
        "model": {"name": "linear_regression"},
        "optimizer": {"rule": "sgd", "lr": 5.0, "batch_size": 5},
        "steps": 0,
        "measure": {"noise_kernel": True, "test": False},
    }
    ds = run(config)
    J = gaussian_linear_regression(D=100, P=120, dtype="float64").X
    lam = torch.linalg.eigvalsh(J @ J.T / 100)
    assert ds.noise_kernel_norm.item() == pytest.approx(eoslab.noise_kernel_norm(lam, 5.0, 5, 100), rel=1e-10)
    assert ds.critical_lr.item() == pytest.approx(9.502, abs=1e-3)
    assert ds.ntk_trace.item() == pytest.approx(lam.sum().item(), rel=1e-10)
    assert ds.ntk_max.item() == pytest.approx(lam.max().item(), rel=1e-10)
    summed = run(config | {"loss": "sum_mse"})  # twice the loss: twice the NTK, so η_c halves
    assert summed.critical_lr.item() == pytest.approx(ds.critical_lr.item() / 2, rel=1e-10)
    with pytest.raises(ConfigError, match="MSE"):
        run(config | {"loss": "cross_entropy", "data": {"name": "digits", "n_train": 32}})
    np.testing.assert_array_equal(ds.step.values, [0])
