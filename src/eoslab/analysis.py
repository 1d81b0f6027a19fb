"""Numbers the figures' claims are checked on, computed from stacked runs (:func:`eoslab.store.open_runs`).

Every quantity is normalised by the edge: x·η/2, so 1 means "at 2/η". "Second half" is the measurements with
t ≥ T/2 (T the run's last step), the window of the plateau values; "ηt" is the learning rate times the step.
Notebooks write these summaries next to the figure (``figures/<profile>/<figure>.json``) and the claim tests read
them.
"""

from typing import Any

import numpy as np
import xarray as xr


def normalized(runs: xr.Dataset, name: str, per_edge: bool = True) -> xr.DataArray:
    """``name``·η/2 per run (raw with ``per_edge=False``). FullBS is eig 1 of ``sharpness``; per-batch quantities
    are averaged over their batches."""
    da = runs[name]
    if "eig" in da.dims:
        da = da.sel(eig=1)
    if "batch_draw" in da.dims:
        da = da.mean("batch_draw")
    return da * runs["eta"] / 2 if per_edge else da


def standard_error(runs: xr.Dataset, name: str) -> xr.DataArray:
    """Standard error of the batch average of a per-batch quantity, std/√m, normalised like :func:`normalized`."""
    da = runs[name]
    return da.std("batch_draw", ddof=1) / np.sqrt(da.sizes["batch_draw"]) * runs["eta"] / 2


def converged(runs: xr.Dataset) -> xr.Dataset:
    """The runs that did not diverge: summaries use only these (a diverged run's few measurements are not a
    plateau); plots mark the diverged ones (:func:`eoslab.plotting.run_label`)."""
    return runs.isel(run=np.flatnonzero(runs["diverged"].values == 0))


def second_half(da: xr.DataArray) -> xr.DataArray:
    """The measurements with t ≥ T/2 of each run (T: the run's last measured step), NaN elsewhere."""
    last = da.step.where(da.notnull()).max("step")
    return da.where(da.step >= last / 2)


def batch_size_of(runs: xr.Dataset, i: int) -> float | None:
    """SGD's batch size of run ``i``, None for full-batch runs."""
    if "optimizer.batch_size" not in runs.coords:
        return None
    value = float(runs["optimizer.batch_size"].values[i])
    return None if np.isnan(value) else value


def mean(da: xr.DataArray) -> float:
    """Mean over the measured (non-NaN) entries."""
    return float(da.mean(skipna=True))


def median(da: xr.DataArray) -> float:
    """Median over the measured (non-NaN) entries."""
    return float(da.median(skipna=True))


def at_time(runs: xr.Dataset, name: str, eta_t: float, per_edge: bool = True) -> xr.DataArray:
    """``name`` (·η/2 unless ``per_edge=False``) of each run at ηt = ``eta_t`` (linear interpolation in t)."""
    da = normalized(runs, name, per_edge)
    return xr.concat(
        [
            da.isel(run=i).dropna("step").interp(step=eta_t / float(runs["eta"].values[i]))
            for i in range(runs.sizes["run"])
        ],
        dim="run",
    )


def slope(runs: xr.Dataset, name: str, eta_t: tuple[float, float]) -> xr.DataArray:
    """Least-squares slope of ``name``·η/2 against ηt over the window ``eta_t`` = (start, end), per run."""
    da = normalized(runs, name)
    slopes = []
    for i in range(runs.sizes["run"]):
        x = da.step.values * float(runs["eta"].values[i])
        y = da.isel(run=i).values
        keep = (x >= eta_t[0]) & (x <= eta_t[1]) & np.isfinite(y)
        slopes.append(np.polyfit(x[keep], y[keep], 1)[0] if keep.sum() >= 2 else np.nan)
    return xr.DataArray(slopes, dims="run", coords={"run": runs.run})


def run_order(runs: xr.Dataset) -> list[int]:
    """Run indices by increasing batch size, full-batch runs last, then by learning rate."""
    b = (
        runs["optimizer.batch_size"].fillna(np.inf).values
        if "optimizer.batch_size" in runs.coords
        else np.zeros(runs.sizes["run"])
    )
    return sorted(range(runs.sizes["run"]), key=lambda i: (b[i], float(runs["eta"].values[i])))


def spread(values: xr.DataArray) -> float:
    """max − min across runs."""
    return float(values.max() - values.min())


def claim(
    text: str,
    value: Any,
    band: tuple[float | None, float | None] | None = None,
    passed: bool | None = None,
    asserted: bool = True,
) -> dict[str, Any]:
    """One checkable claim as the figure's JSON and the report page list it.

    ``value`` is the measured number (or a list of them); ``band`` = (lo, hi), either end None for one-sided;
    ``passed`` defaults to lo ≤ value ≤ hi; ``asserted=False`` marks a claim that is reported, not asserted.
    The claim tests recompute their checks from the raw numbers in the JSON; this entry is for readers.
    """
    if passed is None:
        lo, hi = band if band is not None else (None, None)
        values = np.atleast_1d(np.asarray(value, dtype=float))
        passed = bool(np.all((lo is None or values >= lo) & (hi is None or values <= hi)))
    return {"claim": text, "value": value, "band": list(band) if band else None, "passed": passed, "asserted": asserted}
