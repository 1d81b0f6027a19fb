"""The run engine end to end: determinism, checkpoint/resume (also across a SIGKILL), divergence as a result,
the measurement schedule. Tiny float64 problems; the quadratic (linear regression) is checked in closed form."""

import math
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

import eoslab.engine
from eoslab.cli import main
from eoslab.config import validate
from eoslab.engine import build_problem, is_measure_step, run
from eoslab.store import open_run


def assert_same_run(a, b):
    """Identical variables and coordinates (exact), identical attributes except the wall time."""
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.variables:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        assert a[name].dims == b[name].dims
    assert {k: v for k, v in a.attrs.items() if k != "wall_time_s"} == {
        k: v for k, v in b.attrs.items() if k != "wall_time_s"
    }


# every random draw of the engine: SGD reshuffling, mini-batch estimators, sampled tr(H S_b), Hutchinson probes,
# Lanczos start vectors, and the warm starts carried between measurements
RANDOM = {
    "dtype": "float64",
    "data": {"name": "digits", "n_train": 64, "n_test": 16},
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "optimizer": {
        "rule": "sgd",
        "lr": 1.0,
        "batch_size": 8,
        "sampling": "reshuffle",
        "schedule": "inv_initial_sharpness",
    },
    "steps": 30,
    "measure": {"every": 5, "minibatch": 3, "layers": True, "interaction": 3, "trace": 2, "directional": True},
    "checkpoint_every": 0,
}


def test_same_config_same_numbers(tmp_path):
    a = run(RANDOM, tmp_path / "a.nc")
    b = run(RANDOM, tmp_path / "b.nc")
    assert_same_run(a, b)
    assert_same_run(open_run(tmp_path / "a.nc"), a)
    assert len(set(a.batch_loss.values)) == 30  # it did train on changing batches
    c = run({**RANDOM, "seed": 1})
    assert not np.array_equal(a.batch_loss.values, c.batch_loss.values)  # the seed matters


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    steps = 120  # ~1 s of training after the first checkpoint (step 5): the kill lands well before the end
    config = {
        **RANDOM,
        "steps": steps,
        "measure": {**RANDOM["measure"], "every": 10},
        "checkpoint_every": 5,
        "flush_every": 0,
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out, ckpt = tmp_path / "out" / "run.nc", tmp_path / "out" / "run.nc.ckpt"
    command = [sys.executable, "-m", "eoslab.cli", "run", str(path), "--out", str(out), "--threads", "1"]

    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()  # killed mid-run, not finished
    assert ckpt.exists()
    saved = torch.load(ckpt, weights_only=False)["state"]
    assert 5 <= saved["step"] < steps and saved["step"] % 5 == 0
    assert not out.exists()  # flush_every 0: nothing before the end

    # the same command again: resumes from the checkpoint (the progress bar starts there) and finishes
    rerun = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uninterrupted = run(config)  # meanwhile, in this process
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    start = re.search(rf"(\d+)/{steps}\b", err)
    assert start is not None and int(start.group(1)) == saved["step"], err
    assert not ckpt.exists() and not list(out.parent.glob("*.tmp"))
    resumed = open_run(out)
    assert resumed.attrs["status"] == "complete"
    assert_same_run(resumed, uninterrupted)
    assert list(resumed.step.values) == list(range(0, steps + 1, 10))


class Crash(RuntimeError):
    pass


def crash_at_measurement(monkeypatch, k: int):
    """Make the k-th call of the engine's measure() raise (as if the process died there)."""
    real, calls = eoslab.engine.measure, []

    def measure(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(eoslab.engine, "measure", measure)


def test_resume_in_process_and_stale_checkpoints(tmp_path, monkeypatch):
    config = {**RANDOM, "checkpoint_every": 4, "flush_every": 2}
    out = tmp_path / "run.nc"
    ckpt = tmp_path / "run.nc.ckpt"
    crash_at_measurement(monkeypatch, 4)  # measurements at 0, 5, 10, 15: crash at t = 15
    with pytest.raises(Crash):
        run(config, out)
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=False)["state"]["step"] == 12
    assert not out.exists()  # partial results never sit at the final path
    partial = open_run(tmp_path / "run.nc.partial")  # flushed after the second measurement
    assert partial.attrs["status"] == "running" and list(partial.step.values) == [0, 5]

    loaded_at = []
    real_load = eoslab.engine._load_checkpoint

    def spy(*args):
        state = real_load(*args)
        loaded_at.append(None if state is None else state.step)
        return state

    monkeypatch.setattr(eoslab.engine, "_load_checkpoint", spy)
    resumed = run(config, out)
    assert loaded_at == [12]
    assert not ckpt.exists() and not (tmp_path / "run.nc.partial").exists()
    assert_same_run(resumed, run(config))

    # a checkpoint of another config is ignored (and replaced)
    crash_at_measurement(monkeypatch, 4)
    with pytest.raises(Crash):
        run(config, out)
    monkeypatch.undo()
    other = {**config, "optimizer": {**config["optimizer"], "lr": 0.5}}
    assert_same_run(run(other, out), run(other))
    assert not ckpt.exists()


def test_checkpoint_into_a_new_folder_and_no_flush(tmp_path):
    out = tmp_path / "new" / "folder" / "run.nc"
    ds = run({**RANDOM, "steps": 6, "checkpoint_every": 2, "flush_every": 0}, out)
    assert out.exists() and not (out.parent / "run.nc.ckpt").exists()
    assert_same_run(open_run(out), ds)


def test_measurement_schedule():
    measure = {"every": 10, "early_every": 2, "early_until": 6, "layers": True}
    config = validate({**RANDOM, "steps": 25, "measure": measure})
    expected = [0, 2, 4, 6, 10, 20, 25]
    assert [t for t in range(26) if is_measure_step(t, config)] == expected
    ds = run({**config, "measure": {**config["measure"], "sharpness": False, "minibatch": 0}})
    assert list(ds.step.values) == expected and ds.sizes["iteration"] == 25
    assert "sharpness" not in ds and "minibatch_sharpness" not in ds and "layer_sharpness" in ds


def test_dense_windows_add_measurements():
    windows = [{"from": 13, "until": 17, "every": 2}, {"from": 21, "until": 22, "every": 1}]
    config = validate({**RANDOM, "steps": 25, "measure": {"every": 10, "windows": windows}})
    assert [t for t in range(26) if is_measure_step(t, config)] == [0, 10, 13, 15, 17, 20, 21, 22, 25]


@pytest.mark.parametrize(
    "rule, stop, reason, last",
    [
        ("sgd", {"examples": 100}, "examples", 13),  # ceil(100 / 8)
        ("gd", {"examples": 200}, "examples", 4),  # ceil(200 / 64): GD sees n = 64 examples per step
        ("sgd", {"examples": 10**6}, "steps", 30),
        ("sgd", {"train_loss": 1e9}, "train_loss", 0),  # checked at every measurement, t = 0 included
    ],
)
def test_stopping_rule(rule, stop, reason, last):
    optimizer = {"rule": rule, "lr": 0.5} | ({"batch_size": 8} if rule == "sgd" else {})
    measure = {"every": 5, "batch_size": 8, "test": False}
    config = {**RANDOM, "optimizer": optimizer, "measure": measure, "stop": stop}
    ds = run(config)
    assert ds.attrs["stop_reason"] == reason and ds.attrs["stop_step"] == last
    assert ds.step.values[-1] == last and ds.sizes["iteration"] == last


def test_train_loss_target_stops_at_the_first_measurement_below_it():
    config = {**RANDOM, "optimizer": {"rule": "sgd", "lr": 0.5, "batch_size": 8}, "measure": {"every": 5}}
    free = run(config)
    target = float(free.train_loss.sel(step=15)) + 1e-12
    first = int(free.step[free.train_loss < target][0])
    stopped = run({**config, "stop": {"train_loss": target}})
    assert 0 < first <= 15 and stopped.attrs["stop_step"] == first and stopped.attrs["stop_reason"] == "train_loss"
    np.testing.assert_array_equal(stopped.train_loss.values, free.train_loss.sel(step=slice(0, first)).values)


# ------------------------------------------------------------------------------------- divergence: a quadratic


QUADRATIC = {
    "dtype": "float64",
    "data": {"name": "gaussian_linear_regression", "D": 100, "P": 120},
    "model": {"name": "linear_regression"},
    "loss": "half_mse",
    "steps": 150,
    "measure": {"every": 10, "tol": 1e-9, "max_iter": 200, "test": False},
    "checkpoint_every": 0,
}


@pytest.fixture(scope="module")
def quadratic():
    """J, y and λmax(H) for H = JᵀJ/D (the exact Hessian of L = ‖Jθ − y‖²/(2D)), and the closed-form losses."""
    problem = build_problem(validate({**QUADRATIC, "optimizer": {"lr": 1.0}}))
    J, y = problem.X, problem.Y
    D = len(J)
    lam = torch.linalg.eigvalsh(J.T @ J / D)[-1].item()
    assert (problem.model.theta == 0).all()

    def losses(eta: float, steps: int) -> np.ndarray:
        """L(θ_t) of GD from θ0 = 0: the residual z = Jθ − y follows z_{t+1} = (I − η JJᵀ/D) z_t."""
        A = torch.eye(D, dtype=J.dtype) - eta * J @ J.T / D
        z, out = -y, []
        for _ in range(steps + 1):
            out.append((z.pow(2).sum() / (2 * D)).item())
            z = A @ z
        return np.array(out)

    return lam, losses


def test_stable_quadratic(quadratic):
    lam, losses = quadratic
    eta = 0.9 * 2 / lam
    ds = run({**QUADRATIC, "optimizer": {"lr": eta}})
    assert ds.attrs["status"] == "complete" and ds.attrs["diverged"] == 0 and ds.attrs["diverged_step"] == -1
    np.testing.assert_allclose(ds.sharpness.sel(eig=1).values, lam, rtol=1e-6, atol=0)
    exact = losses(eta, 150)
    np.testing.assert_allclose(ds.train_loss.values, exact[ds.step.values], rtol=1e-9)
    np.testing.assert_allclose(ds.batch_loss.values, exact[:150], rtol=1e-9)
    assert ds.train_loss.values[-1] < ds.train_loss.values[0]


def test_diverging_quadratic_is_a_result(quadratic, tmp_path, capsys):
    lam, losses = quadratic
    eta = 1.1 * 2 / lam
    exact = losses(eta, 150)
    first_over = int(np.argmax(exact > 1e8))  # divergence.max_loss default
    assert 10 < first_over < 150
    path = tmp_path / "quadratic.yaml"
    path.write_text(yaml.safe_dump({**QUADRATIC, "optimizer": {"lr": eta}}))
    out = tmp_path / "diverged.nc"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert "diverged" in capsys.readouterr().err
    ds = open_run(out)
    assert ds.attrs["status"] == "diverged" and ds.attrs["diverged"] == 1
    assert ds.attrs["diverged_step"] == first_over
    assert ds.attrs["last_finite_loss"] == pytest.approx(exact[first_over - 1], rel=1e-9)
    assert math.isfinite(ds.attrs["last_finite_loss"])
    assert ds.sizes["iteration"] == first_over and ds.step.values[-1] == first_over // 10 * 10
    np.testing.assert_allclose(ds.batch_loss.values, exact[:first_over], rtol=1e-9)
    np.testing.assert_allclose(ds.sharpness.sel(eig=1).values, lam, rtol=1e-6)


def test_divergence_at_the_final_measurement(quadratic):
    """The last step has no update; its measurement alone sees the divergence: recorded, other variables NaN."""
    lam, losses = quadratic
    eta = 1.1 * 2 / lam
    first_over = int(np.argmax(losses(eta, 150) > 1e8))
    ds = run({**QUADRATIC, "optimizer": {"lr": eta}, "steps": first_over})
    assert ds.attrs["status"] == "diverged" and ds.attrs["diverged_step"] == first_over
    assert ds.step.values[-1] == first_over and ds.train_loss.values[-1] > 1e8
    assert np.isnan(ds.sharpness.values[-1]).all() and np.isfinite(ds.sharpness.values[:-1]).all()


def test_divergence_to_inf_without_max_loss(quadratic):
    lam, _ = quadratic
    ds = run({**QUADRATIC, "optimizer": {"lr": 100 / lam}, "divergence": {"max_loss": None}, "steps": 400})
    k = ds.attrs["diverged_step"]
    assert ds.attrs["status"] == "diverged" and 0 < k < 400
    assert math.isfinite(ds.attrs["last_finite_loss"]) and ds.attrs["last_finite_loss"] > 1e250
    assert ds.attrs["last_finite_loss"] == ds.batch_loss.values[-1] and ds.sizes["iteration"] == k


def test_divergence_at_step_zero(tmp_path):
    out = tmp_path / "run.nc"
    ds = run({**QUADRATIC, "optimizer": {"lr": 1.0}, "divergence": {"max_loss": 1e-3}}, out)
    assert ds.attrs["diverged_step"] == 0 and math.isnan(ds.attrs["last_finite_loss"])
    assert ds.sizes["step"] == 0 and ds.sizes["iteration"] == 0
    assert open_run(out).attrs["status"] == "diverged"


@pytest.mark.parametrize("max_loss", [None, 1e6])
def test_deferred_divergence_check_equals_the_per_step_one(quadratic, monkeypatch, max_loss):
    """Constant-η GD/SGD read the loss back every SYNC_EVERY steps (no per-step device sync); a run diverging
    between two reads is cut back to exactly what the per-step check records."""
    lam, _ = quadratic
    config = {**QUADRATIC, "optimizer": {"lr": 4 / lam}, "divergence": {"max_loss": max_loss}, "steps": 400}
    config["measure"] = {**QUADRATIC["measure"], "every": 1000}  # measured at t = 0 only: reads come from the sync
    assert eoslab.engine.SYNC_EVERY > 1
    deferred = run(config)
    monkeypatch.setattr(eoslab.engine, "SYNC_EVERY", 1)
    per_step = run(config)
    k = per_step.attrs["diverged_step"]
    assert 0 < k < 400 and deferred.attrs["diverged_step"] == k
    assert deferred.attrs["last_finite_loss"] == per_step.attrs["last_finite_loss"]
    for name in ("batch_loss", "step_grad_norm", "lr_eff"):
        assert deferred[name].equals(per_step[name])
    assert deferred.sizes["iteration"] == k
