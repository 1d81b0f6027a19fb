"""``eoslab sweep``: many short runs of one config in one process, one NetCDF with a ``cell`` dimension.

A sweep config is a run config plus a ``sweep`` section, ``{"grid": {dotted key: [values]}}``: one cell per point
of the grid's Cartesian product (e.g. every learning rate × seed for one batch size), each an ordinary
:func:`eoslab.engine.run` without a file. The process and torch start once per sweep rather than once per cell.
Each cell's final numbers (losses and accuracies at its last measurement, the full-batch sharpness there, its stop
step and reason, examples seen, divergence) are written with the grid's values as ``cell`` coordinates. Use the run
config's ``stop`` section for one stopping rule across cells. An interrupted sweep (SIGTERM, Ctrl-C) keeps its
finished cells in ``<out>.partial`` and the same command resumes from the next cell.
"""

import itertools
import json
import math
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eoslab import adaptive_grid
from eoslab.config import ConfigError, _obj, check, digest, set_key, validate
from eoslab.engine import build_problem, run
from eoslab.pipeline import merge
from eoslab.runfiles import Interrupted, RunFiles, caught_signals, claimed, provenance, write_run
from eoslab.store import VARIABLES, is_intact, open_run

SCHEMA = _obj(
    {
        "grid": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "array", "minItems": 1}},
        "extend": {"type": "object", "description": "an adaptive axis (eoslab.adaptive_grid)"},
    },
    ("grid",),
)


def cells(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid's points in order (last key fastest), each a dict dotted key → value."""
    grid = config["sweep"]["grid"]
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def cell_config(config: Mapping[str, Any], cell: Mapping[str, Any]) -> dict[str, Any]:
    """The validated run config of one cell: the sweep's run config with the cell's values set."""
    over: dict[str, Any] = {}
    for key, value in cell.items():
        set_key(over, key, value)
    base = {k: v for k, v in config.items() if k != "sweep"}
    return validate(merge(base, over) | {"name": f"{base['name']}-" + "-".join(f"{k}{v}" for k, v in cell.items())})


def validate_sweep(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated sweep config (run config with defaults + ``sweep``); every cell's config is validated too, and a
    bad value raises ``ConfigError`` naming the key."""
    config = dict(config)
    if "sweep" not in config:
        raise ConfigError("sweep: missing section {grid: {dotted key: [values]}}")
    out = validate({k: v for k, v in config.items() if k != "sweep"}) | {
        "sweep": check(config["sweep"], SCHEMA, "sweep")
    }
    if "extend" in out["sweep"]:
        extend = out["sweep"]["extend"] = check(out["sweep"]["extend"], adaptive_grid.SCHEMA, "sweep.extend")
        if extend["key"] not in out["sweep"]["grid"]:
            raise ConfigError(f"sweep.extend.key: {extend['key']!r} is not a key of sweep.grid")
    for cell in cells(out):
        try:
            cell_config(out, cell)
        except ConfigError as error:
            raise ConfigError(f"sweep.grid: {error}") from error
    return out


FINAL = (
    "final_train_loss",
    "final_train_accuracy",
    "final_test_loss",
    "final_test_accuracy",
    "final_sharpness",
    "stop_step",
    "examples_seen",
    "diverged",
)
"""A cell's final numbers (the variables of a sweep file), what :func:`final` returns."""


def final(ds: xr.Dataset, n: int) -> dict[str, Any]:
    """One cell's final numbers from its run Dataset."""
    last = ds.isel(step=-1)
    out = {
        f"final_{k}": float(last[k]) if k in last else math.nan
        for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    }
    out["final_sharpness"] = float(last["sharpness"].sel(eig=1)) if "sharpness" in last else math.nan
    config = json.loads(ds.attrs["config"])
    out["stop_step"] = ds.attrs["stop_step"]
    out["examples_seen"] = ds.attrs["stop_step"] * (config["optimizer"]["batch_size"] or n)
    out["diverged"] = ds.attrs["diverged"]
    return out


def _dataset(
    config: dict[str, Any],
    points: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    reasons: list[str],
    wall: float,
    status: str,
) -> xr.Dataset:
    """The sweep's Dataset of its cells ``points`` with their finished ``rows`` (as many)."""
    coords: dict[str, Any] = {"cell": np.arange(len(points)), "stop_reason": ("cell", reasons)}
    for key in config["sweep"]["grid"]:
        coords[key] = ("cell", [c[key] for c in points])
    data = {
        k: xr.Variable(
            "cell",
            np.asarray([r[k] for r in rows], dtype=float),
            {"long_name": VARIABLES[k][1], "units": VARIABLES[k][2]},
        )
        for k in FINAL
    }
    return xr.Dataset(data, coords=coords, attrs={**provenance(config), "wall_time_s": wall, "status": status})


def _finished_cells(files: RunFiles, digest: str) -> tuple[list[dict[str, Any]], list[str], float]:
    """The rows, stop reasons and wall time of the cells an interrupted sweep of this config left in
    ``<out>.partial`` (none if there is no such file, or it is of another config or damaged)."""
    if files.partial is None or not is_intact(files.partial, partial=True):
        return [], [], 0.0
    ds = open_run(files.partial)
    if ds.attrs.get("config_hash") != digest:
        return [], [], 0.0
    rows = [{k: ds[k].values[i].item() for k in FINAL} for i in range(ds.sizes["cell"])]
    return rows, [str(r) for r in ds.stop_reason.values], float(ds.attrs["wall_time_s"])


def run_sweep(config: Mapping[str, Any], out: str | Path | None = None, quiet: bool = True) -> xr.Dataset:
    """Run every cell of a sweep config; with ``out``, write the NetCDF there (atomically, at the end).

    ``out`` is checked (and locked, :class:`eoslab.runfiles.RunFiles`) before any compute. After each cell the
    finished cells go to ``<out>.partial``; SIGTERM or SIGINT stops the sweep after the current cell with
    :class:`~eoslab.runfiles.Interrupted`, and the same call resumes from the next cell.
    """
    config = validate_sweep(config)
    with claimed(out) as files, caught_signals(enabled=out is not None) as received:
        files.claim(received=received)
        if (made := files.made_meanwhile(digest(config))) is not None:
            return made
        return _run_cells(config, files, quiet, received)


def _run_cells(config: dict[str, Any], files: RunFiles, quiet: bool, received: list[int]) -> xr.Dataset:
    """The grid, then its adaptive extensions (``sweep.extend``, :mod:`eoslab.adaptive_grid`), skipping the cells an
    interrupted sweep finished: an extension depends only on the rows before it, so it is the same on resuming."""
    rows, reasons, wall = _finished_cells(files, digest(config))
    started = time.perf_counter() - wall
    points, pending, rounds, done = [], cells(config), 0, len(rows)
    n = len(build_problem(cell_config(config, pending[0])).X)  # examples per full-batch step
    extend = config["sweep"].get("extend")
    while pending:
        known = len(points) + len(pending)  # cells so far (an extension may add more)
        for cell in pending:
            points.append(cell)
            if len(points) <= done:
                continue
            ds = run(cell_config(config, cell))
            rows.append(final(ds, n))
            reasons.append(ds.attrs["stop_reason"])
            if not quiet:
                print(f"cell {len(rows)}/{known} {cell}: {reasons[-1]} at step {rows[-1]['stop_step']}", flush=True)
            if files.out is not None:
                partial = _dataset(config, points, rows, reasons, time.perf_counter() - started, "running")
                write_run(partial, files.partial)
            if received:
                name = signal.Signals(received[0]).name
                raise Interrupted(
                    received[0],
                    f"{name} after cell {len(rows)}: saved {files.partial}; the same command resumes from the next "
                    "cell",
                )
        pending = adaptive_grid.extension(extend, points, rows, rounds) if extend else []
        rounds += 1
    ds = _dataset(config, points, rows, reasons, time.perf_counter() - started, "complete")
    if files.out is not None:
        write_run(ds, files.out)
        files.finish()
    return ds
