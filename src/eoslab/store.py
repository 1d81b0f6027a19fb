"""The run cache: one NetCDF file per run, written atomically, and a loader for many runs.

Schema (every variable carries ``long_name`` and ``units``; :data:`VARIABLES` is the single source):

- dims: ``step`` (measurement steps t), ``iteration`` (every training step), ``eig`` (1..k), ``batch_draw``
  (mini-batches of an estimator), ``layer`` (module names, e.g. "0", "2"), ``lssr_b`` (the batch sizes of the ρ_b
  measurements); a sweep's file (:mod:`eoslab.sweep`) has one dimension ``cell``.
- global attrs: ``config`` (the validated run config, JSON), ``config_hash``, ``eoslab_version``, ``git_commit``,
  ``torch_version``, ``device``, ``seed``, ``eta`` (optimizer.lr), ``wall_time_s``, ``status``
  ("running" while a run flushes partial results, then "complete" or "diverged"), ``diverged`` (0/1),
  ``diverged_step`` (−1 if not) and ``last_finite_loss``; ``code_hash``/``git_dirty`` (the code that made it).
  ``stop_reason`` ("steps", "examples", "train_loss" or "diverged") and ``stop_step`` (the last step reached).
- every variable carries a ``checksum`` attribute (SHA-256 of its values), and the file a global ``checksum`` of
  its attributes and of every variable's checksum, with ``format_version`` (:data:`FORMAT_VERSION`). Opening a file
  verifies all of them, and that ``config_hash`` is the hash of ``config`` and of the file's name
  (``<name>-<hash>.nc``): an edited status, a deleted checksum or a file copied to another run's path is refused.

Only the variables a run measured are present. :func:`open_runs` stacks finished runs along a ``run`` dimension.
Files are written whole: serialised in memory, written to a unique temporary sibling, fsynced, renamed over the
target and the folder fsynced, so a crash, a kill or a full disk never leaves a half-written file at the path.
"""

import hashlib
import json
import os
import re
import tempfile
import warnings
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
    "batch_sharpness_of_means": (("step",), "E_B[g_Bᵀ H_B g_B] / E_B[‖g_B‖²] over the same mini-batches", "1"),
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
    "preconditioned_sharpness": (("step",), "λmax(P^½ H P^½), P = diag of the schedule's step sizes", "1"),
    "noise_kernel_norm": (("step",), "noise-kernel norm 𝒦 = (βη/d) Σ λ_α/(2 − ηλ_α), λ_α of the loss's NTK", "1"),
    "ntk_trace": (("step",), "tr Θ of the NTK scaled to the loss (the Gauss–Newton trace)", "1"),
    "ntk_max": (("step",), "λmax of the NTK scaled to the loss (the Gauss–Newton sharpness)", "1"),
    "critical_lr": (("step",), "η_c with 𝒦(η_c) = 1 at the run's batch size (the stochastic edge)", "1"),
    "saved_params": (("saved_step", "parameter"), "flat parameter vector θ saved at the step (init.file)", "1"),
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
    saved: Mapping[int, list[float]] | None = None,
) -> xr.Dataset:
    """Build the run's Dataset from per-measurement lists (``measured["step"]`` the steps) and per-step lists,
    plus ``saved`` parameter vectors by step (variable ``saved_params``, coordinate ``saved_step``)."""
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
    if saved:
        coords["saved_step"] = np.asarray(list(saved), dtype=np.int64)
        dims, long_name, units = VARIABLES["saved_params"]
        values = np.asarray(list(saved.values()), dtype=np.float64)
        data_vars["saved_params"] = xr.Variable(dims, values, {"long_name": long_name, "units": units})
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs))
    for dim in ("eig", "batch_draw"):
        if dim in ds.dims:
            ds = ds.assign_coords({dim: np.arange(ds.sizes[dim]) + (dim == "eig")})
    return ds


FINISHED = ("complete", "diverged")
"""The ``status`` of a finished run; "running" marks the partial results a run flushes to ``<out>.partial``."""

REBUILD = "rebuild it with `snakemake --cores 1 {path}` (add --config profile=NAME) or `eoslab run`"


class RunFileError(OSError):
    """A run file that cannot be used: unreadable, corrupt (a checksum fails) or not a finished run."""


def temp_name(path: Path) -> str:
    """A unique temporary sibling of ``path`` (``.<name>.<random>.tmp``; :func:`stale_temps` finds them)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return tmp


def stale_temps(path: Path) -> list[Path]:
    """Temporary siblings of ``path`` left by a killed writer."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` whole or not at all: a unique temporary sibling, fsync, ``os.replace``, fsync of
    the folder (mode 0644). On failure the temporary file is removed and the previous file is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def checksum(values: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of an array's values: its bytes, or its strings for text coordinates."""
    values = np.asarray(values)
    if values.dtype.kind in "OUS":  # text comes back from the file as objects: hash the strings
        kind, raw = "text", "\0".join(map(str, values.ravel())).encode()
    else:
        kind, raw = values.dtype.str, np.ascontiguousarray(values).tobytes()
    return hashlib.sha256(f"{kind}{values.shape}".encode() + raw).hexdigest()[:16]


FORMAT_VERSION = 2
"""The run-file layout: 2 checksums the global attributes too. A file of another version is refused (and the
pipeline remakes it)."""


def _plain(value: Any) -> list:
    """An attribute as JSON-able values, the same before writing and after reading (numpy scalars, 1-element arrays,
    booleans as integers)."""
    array = np.atleast_1d(np.asarray(value))
    if array.dtype.kind in "OUS":
        return [str(v) for v in array.ravel()]
    return array.astype(int if array.dtype.kind == "b" else array.dtype).ravel().tolist()


def file_checksum(attrs: Mapping[str, Any], variables: Mapping[str, str]) -> str:
    """SHA-256 (16 hex digits) of the global attributes (without ``checksum``) and every variable's checksum."""
    plain = {k: _plain(v) for k, v in attrs.items() if k != "checksum"}
    text = json.dumps([plain, sorted(variables.items())], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_checksums(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of ``ds`` whose every variable (coordinates too) has a ``checksum`` attribute and whose global
    attributes carry ``format_version`` and the :func:`file_checksum`."""
    ds = ds.copy()
    for var in ds.variables.values():
        var.attrs = {**var.attrs, "checksum": checksum(var.values)}
    ds.attrs = {k: v for k, v in ds.attrs.items() if k != "checksum"} | {"format_version": FORMAT_VERSION}
    ds.attrs["checksum"] = file_checksum(ds.attrs, {k: v.attrs["checksum"] for k, v in ds.variables.items()})
    return ds


def write_atomic(ds: xr.Dataset, path: str | Path) -> None:
    """Write ``ds`` with checksums to ``path`` atomically (serialised in memory, then :func:`write_bytes_atomic`:
    HDF5 never writes to the disk itself, so a full disk is an ``OSError`` here, not a crash in the library)."""
    data = with_checksums(ds).to_netcdf(engine="h5netcdf")
    write_bytes_atomic(bytes(data), path)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 0.1}} → {"optimizer.lr": 0.1}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out |= flatten_config(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


_NAMED_HASH = re.compile(r".*-([0-9a-f]{12})\.nc(\..*)?")
"""A pipeline file name, ``<name>-<config hash>.nc`` (or its ``.partial``)."""


def open_run(path: str | Path) -> xr.Dataset:
    """One run's Dataset, loaded into memory (the file is closed again), its checksums verified (and dropped).

    ``RunFileError`` names the file and how to rebuild it if it is not a regular file, cannot be read, is of
    another :data:`FORMAT_VERSION`, lacks a checksum or fails one (a variable, or the global attributes: an edited
    ``status``), or if its ``config_hash`` is not the hash of its ``config`` or of its name (``<name>-<hash>.nc``).
    """
    path = Path(path)
    rebuild = REBUILD.format(path=path)
    if path.exists() and not path.is_file():
        raise RunFileError(f"{path}: not a regular file (a folder, FIFO or device); {rebuild}")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except FileNotFoundError:
        raise
    except Exception as error:  # h5py/h5netcdf raise OSError, ValueError, KeyError... on a damaged file
        raise RunFileError(f"{path}: not a readable run file ({' '.join(str(error).split())}); {rebuild}") from error
    version = ds.attrs.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise RunFileError(f"{path}: run-file format {version} (this eoslab reads {FORMAT_VERSION}); {rebuild}")
    sums = {}
    for name, var in ds.variables.items():
        sums[name] = var.attrs.pop("checksum", None)
        if sums[name] is None or checksum(var.values) != sums[name]:
            why = "has no checksum" if sums[name] is None else "fails its checksum"
            raise RunFileError(f"{path}: variable {name!r} {why} (corrupt); {rebuild}")
    expected = ds.attrs.pop("checksum", None)
    if expected is None or file_checksum(ds.attrs | {"format_version": version}, sums) != expected:
        why = "have no checksum" if expected is None else "fail their checksum (edited or corrupt)"
        raise RunFileError(f"{path}: the global attributes {why}; {rebuild}")
    _check_config_hash(path, ds.attrs)
    return ds


def _check_config_hash(path: Path, attrs: Mapping[str, Any]) -> None:
    """``config_hash`` is the hash of ``config`` and, for a pipeline file, the one in the file's name."""
    from eoslab.config import digest  # lazily: the config module imports the models

    recorded = attrs.get("config_hash")
    if "config" in attrs and digest(json.loads(attrs["config"])) != recorded:
        raise RunFileError(f"{path}: config_hash {recorded} is not the hash of its config; {REBUILD.format(path=path)}")
    named = _NAMED_HASH.fullmatch(path.name)
    if named and named[1] != recorded:
        raise RunFileError(
            f"{path}: holds the run of config {recorded}, not {named[1]} as its name says (a copied file?); "
            f"{REBUILD.format(path=path)}"
        )


def is_intact(path: str | Path, partial: bool = False) -> bool:
    """Whether ``path`` exists, opens, passes its checksums and holds a finished run (any run with ``partial``)."""
    try:
        status = open_run(path).attrs.get("status")
    except (RunFileError, FileNotFoundError):
        return False
    return partial or status in FINISHED


def open_runs(paths: Iterable[str | Path], partial: bool = False) -> xr.Dataset:
    """Many runs stacked along ``run`` (outer join on steps: shorter or diverged runs are NaN-padded).

    Coordinates on ``run``: the file stem (``run``), every config key whose value differs between the runs
    (dotted, e.g. ``optimizer.batch_size``; GD's missing batch size is NaN), ``eta``, ``diverged``,
    ``diverged_step`` and ``status``. Only finished runs (status complete or diverged) are accepted unless
    ``partial``; a ``RunFileError`` names the file otherwise. Runs made by different code are stacked with a
    warning.
    """
    paths = [Path(p) for p in paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"run files missing (make them with `make figures` or snakemake): {missing}")
    if not paths:
        raise ValueError("open_runs: no run files given")
    runs = [open_run(p) for p in paths]
    for path, ds in zip(paths, runs, strict=True):
        if not partial and ds.attrs.get("status") not in FINISHED:
            raise RunFileError(
                f"{path}: status {ds.attrs.get('status')!r} is not a finished run (partial results); "
                f"{REBUILD.format(path=path)}, or pass partial=True to look at it"
            )
    codes = {ds.attrs.get("code_hash") for ds in runs} - {None}
    if len(codes) > 1:
        warnings.warn(f"runs made by {len(codes)} different versions of eoslab's code: {sorted(codes)}", stacklevel=2)
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
