"""The run cache: one NetCDF file per run, written atomically, and a loader for many runs.

Schema (every variable carries ``long_name`` and ``units``; :data:`VARIABLES` is the single source):

- dims: ``step`` (measurement steps t), ``iteration`` (every training step), ``eig`` (1..k), ``batch_draw``
  (mini-batches of an estimator), ``layer`` (module names, e.g. "0", "2"), ``lssr_b`` (the batch sizes of the ρ_b
  measurements); a sweep's file (:mod:`eoslab.sweep`) has one dimension ``cell``.
- global attrs: ``config`` (the validated run config, JSON), ``config_hash``, ``eoslab_version``, ``git_commit``,
  ``torch_version``, ``device``, ``seed``, ``eta`` (optimizer.lr), ``wall_time_s``, ``status``
  ("running" while a run flushes partial results, then "complete" or "diverged"), ``diverged`` (0/1),
  ``diverged_step`` (−1 if not), ``last_finite_loss``, ``stop_reason`` ("steps", "examples", "train_loss" or
  "diverged") and ``stop_step`` (the last step reached).

Only the variables a run measured are present. :func:`open_runs` stacks runs along a ``run`` dimension.
"""

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "train_loss": (("step",), "full-batch training loss L(θ)", "1"),
    "train_accuracy": (("step",), "training accuracy", "1"),
    "test_loss": (("step",), "test loss", "1"),
    "test_accuracy": (("step",), "test accuracy", "1"),
    "sharpness": (("step", "eig"), "top eigenvalues of the full-batch Hessian (FullBS = eig 1)", "1"),
    "sharpness_residual": (("step", "eig"), "Lanczos residual ‖Hv − λv‖", "1"),
    "n_hvp": (("step",), "Hessian-vector products spent on FullBS", "count"),
    "minibatch_sharpness": (("step", "batch_draw"), "λmax(∇²L_B) of each mini-batch (MiniBS)", "1"),
    "batch_sharpness": (("step", "batch_draw"), "g_Bᵀ H_B g_B / ‖g_B‖² of each mini-batch", "1"),
    "directional_sharpness": (("step",), "∇Lᵀ H ∇L / ‖∇L‖² (full batch)", "1"),
    "layer_sharpness": (("step", "layer"), "λmax of the layer's Hessian block", "1"),
    "grad_norm": (("step",), "‖∇L‖ (full batch)", "1"),
    "layer_grad_norm": (("step", "layer"), "‖∇_{θ_i} L‖ of the layer (full batch)", "1"),
    "tr_HS": (("step",), "tr(H S_b) = E_b[g_bᵀ H g_b]", "1"),
    "tr_HS_se": (("step",), "standard error of tr(H S_b)", "1"),
    "tr_S": (("step",), "tr(S_b) = E_b‖g_b‖²", "1"),
    "tr_S_se": (("step",), "standard error of tr(S_b)", "1"),
    "tr_Sn": (("step",), "tr(S_n) = ‖∇L‖²", "1"),
    "interaction_sharpness": (("step",), "‖H‖_{S_b} = tr(H S_b)/tr(S_b)", "1"),
    "interaction_sharpness_se": (("step",), "standard error of ‖H‖_{S_b}", "1"),
    "rho": (("step",), "ρ_b = tr(S_n)/tr(S_b)", "1"),
    "rho_se": (("step",), "standard error of ρ_b", "1"),
    "hessian_trace": (("step",), "tr(H), Hutchinson estimate", "1"),
    "hessian_trace_se": (("step",), "standard error of the Hutchinson estimate", "1"),
    "batch_loss": (("iteration",), "loss of the batch stepped on", "1"),
    "step_grad_norm": (("iteration",), "‖g‖ of the gradient stepped on", "1"),
    "lr_eff": (("iteration", "layer"), "effective step size η_k·s of the layer's parameters", "1"),
    "rho_1": (("step",), "ρ = ρ_1 = tr(S_n)/tr(S_1) = ‖∇L‖²/mean_i ‖∇ℓ_i‖²", "1"),
    "lssr_batch_size": (("step", "lssr_b"), "batch size b of the ρ_b measurements", "count"),
    "rho_b_exact": (("step", "lssr_b"), "ρ_b = ‖∇L‖²/E‖g_b‖², exact, sampling without replacement", "1"),
    "rho_b_mc": (("step", "lssr_b"), "ρ_b, Monte Carlo, without replacement", "1"),
    "rho_b_mc_se": (("step", "lssr_b"), "standard error of the Monte-Carlo ρ_b, without replacement", "1"),
    "rho_b_exact_iid": (("step", "lssr_b"), "ρ_b = ‖∇L‖²/E‖g_b‖², exact, sampling with replacement", "1"),
    "rho_b_mc_iid": (("step", "lssr_b"), "ρ_b, Monte Carlo, with replacement", "1"),
    "rho_b_mc_se_iid": (("step", "lssr_b"), "standard error of the Monte-Carlo ρ_b, with replacement", "1"),
    "final_train_loss": (("cell",), "training loss at the cell's last measurement", "1"),
    "final_train_accuracy": (("cell",), "training accuracy at the cell's last measurement", "1"),
    "final_test_loss": (("cell",), "test loss at the cell's last measurement", "1"),
    "final_test_accuracy": (("cell",), "test accuracy at the cell's last measurement", "1"),
    "final_sharpness": (("cell",), "λmax of the full-batch Hessian at the cell's last measurement", "1"),
    "stop_step": (("cell",), "the cell's last step", "count"),
    "examples_seen": (("cell",), "examples seen: steps × b (full batch: × n)", "count"),
    "diverged": (("cell",), "1 if the cell diverged", "1"),
}


def to_dataset(
    measured: Mapping[str, list[Any]],
    per_iteration: Mapping[str, list[Any]],
    layers: list[str],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """Build the run's Dataset from per-measurement lists (``measured["step"]`` the steps) and per-step lists."""
    coords: dict[str, Any] = {
        "step": np.asarray(measured.get("step", []), dtype=np.int64),
        "iteration": np.arange(len(per_iteration.get("batch_loss", [])), dtype=np.int64),
        "layer": np.asarray(layers, dtype=str),
    }
    data_vars = {}
    for name, values in {**measured, **per_iteration}.items():
        if name == "step":
            continue
        dims, long_name, units = VARIABLES[name]
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 1 and len(dims) == 2:  # no measurement yet: an empty (0, 0) block
            array = array.reshape(len(array), 0)
        data_vars[name] = xr.Variable(dims, array, {"long_name": long_name, "units": units})
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
    for dim in ("eig", "batch_draw"):
        if dim in ds.dims:
            ds = ds.assign_coords({dim: np.arange(ds.sizes[dim]) + (dim == "eig")})
    return ds


def write_atomic(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` to ``path`` through a temporary file in the same folder and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.1}} → {"optimizer.lr": 0.1}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out |= flatten_config(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def open_run(path: str | Path) -> xr.Dataset:
    """One run's Dataset, loaded into memory (the file is closed again)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def open_runs(paths: Iterable[str | Path]) -> xr.Dataset:
    """Many runs stacked along ``run`` (outer join on steps: shorter or diverged runs are NaN-padded).

    Coordinates on ``run``: the file stem (``run``), every config key whose value differs between the runs
    (dotted, e.g. ``optimizer.batch_size``; GD's missing batch size is NaN), ``eta``, ``diverged``,
    ``diverged_step`` and ``status``.
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"run files missing (make them with `make figures` or snakemake): {missing}")
    if not paths:
        raise ValueError("open_runs: no run files given")
    runs = [open_run(p) for p in paths]
    configs = [flatten_config(json.loads(ds.attrs["config"])) for ds in runs]
    keys = sorted({k for c in configs for k in c})
    varying = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]
    coords: dict[str, Any] = {"run": [p.stem for p in paths]}
    for key in varying:
        values = [c.get(key) for c in configs]
        numeric = all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values)
        coords[key] = ("run", [np.nan if v is None else v for v in values] if numeric else [str(v) for v in values])
    for attr in ("eta", "diverged", "diverged_step", "status"):
        coords[attr] = ("run", [ds.attrs[attr] for ds in runs])
    # drop the runs' global attrs (now coordinates) but keep every variable's long_name and units
    stacked = xr.concat(
        [ds.drop_attrs(deep=False) for ds in runs], dim="run", join="outer", combine_attrs="drop_conflicts"
    )
    return stacked.assign_coords(coords)
