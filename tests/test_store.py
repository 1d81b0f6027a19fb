"""The NetCDF run cache: schema and attributes round-trip, stacking runs, atomic writes."""

import errno
import json
import math
import os
import re
import stat

import h5py
import numpy as np
import pytest
import torch
import xarray as xr

import eoslab
from eoslab.config import config_hash, validate
from eoslab.engine import run
from eoslab.store import (
    VARIABLES,
    RunFileError,
    file_checksum,
    flatten_config,
    open_run,
    open_runs,
    to_dataset,
    write_atomic,
)


def base(**changes) -> dict:
    return {
        "name": "store-test",
        "dtype": "float64",
        "data": {"name": "digits", "n_train": 32, "n_test": 8},
        "model": {"name": "mlp", "width": 4, "depth": 1},
        "optimizer": {"lr": 0.1},
        "steps": 4,
        "measure": {"every": 2},
        **changes,
    }


EVERYTHING = base(
    optimizer={"rule": "sgd", "lr": 0.05, "batch_size": 8},
    steps=6,
    measure={
        "every": 3,
        "top_k": 2,
        "minibatch": 3,
        "directional": True,
        "layers": True,
        "grad_norms": True,
        "interaction": 4,
        "trace": 3,
        "preconditioned": True,
        "noise_kernel": True,
        "lssr": 3,
    },
    save_params=[6],
)


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "everything.nc"
    returned = run(EVERYTHING, path)
    return path, returned, open_run(path)


def test_round_trip_attributes(everything):
    _, returned, ds = everything
    config = validate(EVERYTHING)
    assert json.loads(ds.attrs["config"]) == config
    assert ds.attrs["config_hash"] == config_hash(EVERYTHING) == config_hash(json.loads(ds.attrs["config"]))
    assert ds.attrs["torch_version"] == torch.__version__
    assert ds.attrs["eoslab_version"] == eoslab.__version__
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", ds.attrs["git_commit"])
    assert ds.attrs["device"] == "cpu" and ds.attrs["seed"] == 0 and ds.attrs["eta"] == 0.05
    assert ds.attrs["status"] == "complete" and ds.attrs["diverged"] == 0 and ds.attrs["diverged_step"] == -1
    assert ds.attrs["wall_time_s"] > 0
    assert ds.attrs["last_finite_loss"] == ds.batch_loss.values[-1]
    assert set(ds.attrs) == set(returned.attrs)
    for key, value in returned.attrs.items():
        assert ds.attrs[key] == value, key


def test_round_trip_variables(everything):
    _, returned, ds = everything
    measured = {k for k, (dims, *_) in VARIABLES.items() if dims != ("cell",)}  # ("cell",): sweeps (test_sweep.py)
    assert set(ds.data_vars) == measured  # with every measurement switched on, every variable is there
    for name, var in ds.data_vars.items():
        dims, long_name, units = VARIABLES[name]
        assert var.dims == dims, name
        assert var.attrs["long_name"] == long_name and var.attrs["units"] == units, name
        assert var.dtype == np.float64
        np.testing.assert_array_equal(var.values, returned[name].values, err_msg=name)
    assert list(ds.step.values) == [0, 3, 6]
    assert list(ds.iteration.values) == list(range(6))
    assert list(ds.eig.values) == [1, 2] and list(ds.batch_draw.values) == [0, 1, 2]
    assert list(ds.layer.values) == ["0", "2"]
    assert (ds.sharpness.sel(eig=1) >= ds.sharpness.sel(eig=2)).all()
    assert np.isfinite(ds.to_array()).all()
    assert (ds.lr_eff == 0.05).all()


def test_open_runs_stacks_with_config_coordinates(everything, tmp_path):
    path, _, _ = everything
    gd = tmp_path / "gd.nc"
    run(base(), gd)
    ds = open_runs(p for p in [gd, path])  # any iterable, generators too
    assert ds.sizes["run"] == 2 and list(ds.run.values) == ["gd", "everything"]
    np.testing.assert_array_equal(ds["optimizer.lr"].values, [0.1, 0.05])
    np.testing.assert_array_equal(ds["eta"].values, [0.1, 0.05])
    bs = ds["optimizer.batch_size"].values
    assert math.isnan(bs[0]) and bs[1] == 8  # GD has no batch size
    assert list(ds["optimizer.rule"].values) == ["gd", "sgd"]
    assert list(ds["steps"].values) == [4, 6]
    assert list(ds["status"].values) == ["complete", "complete"] and list(ds["diverged"].values) == [0, 0]
    for constant in ("data.name", "model.width", "dtype", "seed", "name", "loss"):
        assert constant not in ds.coords
    # outer join on steps; variables the GD run did not measure are NaN for it
    assert list(ds.step.values) == [0, 2, 3, 4, 6]
    assert np.isnan(ds.train_loss.sel(run="gd", step=6)) and np.isnan(ds.train_loss.sel(run="everything", step=2))
    assert ds.train_loss.sel(run="gd", step=4) == open_run(gd).train_loss.sel(step=4)
    assert np.isnan(ds.minibatch_sharpness.sel(run="gd")).all()
    assert np.isfinite(ds.minibatch_sharpness.sel(run="everything", step=3)).all()
    # the variables keep their metadata, the runs' global attributes became coordinates
    assert ds.train_loss.attrs == {"long_name": VARIABLES["train_loss"][1], "units": "1"}
    assert ds.minibatch_sharpness.attrs["long_name"] == VARIABLES["minibatch_sharpness"][1]
    assert "config" not in ds.attrs
    with pytest.raises(ValueError, match="no run files"):
        open_runs([])


def test_flatten_config():
    assert flatten_config({"a": 1, "b": {"c": 2, "d": {"e": None}}}) == {"a": 1, "b.c": 2, "b.d.e": None}


def small_dataset(value: float) -> xr.Dataset:
    return to_dataset({"step": [0, 1], "train_loss": [value, value / 2]}, {}, ["0"], {"status": "complete"})


def test_write_atomic_mode_and_no_temp_files(tmp_path):
    old = os.umask(0o077)  # even under a strict umask the cache is world-readable
    try:
        path = tmp_path / "sub" / "run.nc"
        write_atomic(small_dataset(1.0), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["run.nc"]
    write_atomic(small_dataset(3.0), path)  # replaces
    assert open_run(path).train_loss.values.tolist() == [3.0, 1.5]
    assert [p.name for p in path.parent.iterdir()] == ["run.nc"]


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "run.nc"
    write_atomic(small_dataset(1.0), path)
    before = path.read_bytes()

    def full_disk(fd):  # the bytes went to the temporary file, but the disk is full when they are flushed
        raise OSError(errno.ENOSPC, "disk full")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(small_dataset(2.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]
    assert open_run(path).train_loss.values.tolist() == [1.0, 0.5]
    # a dataset that cannot be serialised at all fails the same way
    bad = small_dataset(2.0)
    bad.attrs["nested"] = {"not": "serialisable"}
    with pytest.raises((TypeError, ValueError)):
        write_atomic(bad, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["run.nc"]


def test_to_dataset_without_measurements():
    ds = to_dataset({}, {}, ["0", "2"], {"status": "diverged"})
    assert ds.sizes["step"] == 0 and ds.sizes["iteration"] == 0 and not ds.data_vars


ATTRS = {
    "int": 3,
    "negative": -1,
    "float": 0.1,
    "nan": math.nan,
    "text": "complete",
    "float32": np.float32(0.25),
    "one-element list": [7],
    "list": [1, 2, 3],
}


@pytest.mark.parametrize("key", list(ATTRS))
def test_every_kind_of_global_attribute_passes_its_checksum_after_a_round_trip_and_fails_when_changed(key, tmp_path):
    ds = to_dataset({"step": [0], "train_loss": [1.0]}, {}, ["0"], {key: ATTRS[key], "status": "complete"})
    write_atomic(ds, tmp_path / "a.nc")
    back = open_run(tmp_path / "a.nc")
    assert set(back.attrs) == {key, "status"}
    assert file_checksum(back.attrs, {"v": "1"}) == file_checksum(ds.attrs, {"v": "1"})
    changed = "other" if isinstance(ATTRS[key], str) else np.nan_to_num(np.asarray(ATTRS[key]) + 1)
    write_atomic(ds, tmp_path / "b.nc")

    with h5py.File(tmp_path / "b.nc", "r+") as f:
        f.attrs[key] = changed
    with pytest.raises(RunFileError, match="global attributes fail their checksum"):
        open_run(tmp_path / "b.nc")
