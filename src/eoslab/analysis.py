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


def second_half(da: xr.DataArray) -> xr.DataArray:
    """The measurements with t ≥ T/2 of each run (T: the run's last measured step), NaN elsewhere."""
    last = da.step.where(da.notnull()).max("step")
    return da.where(da.step >= last / 2)


def plateau_summary(runs: xr.Dataset) -> list[dict[str, Any]]:
    """Per run: second-half mean and median of FullBS, average MiniBS and Batch Sharpness (all ·η/2), the most
    negative z-score (avg MiniBS − FullBS)/SE over all measurements, and the run's rule and batch size."""
    full = normalized(runs, "sharpness")
    out = []
    for i, run in enumerate(runs.run.values):
        row: dict[str, Any] = {
            "run": str(run),
            "rule": str(runs["optimizer.rule"].values[i]) if "optimizer.rule" in runs.coords else None,
            "batch_size": _batch_size_of(runs, i),
            "eta": float(runs["eta"].values[i]),
            "diverged": bool(runs["diverged"].values[i]),
            "fullbs_mean": _mean(second_half(full.isel(run=i))),
            "fullbs_median": _median(second_half(full.isel(run=i))),
        }
        if "minibatch_sharpness" in runs:
            mini = normalized(runs, "minibatch_sharpness").isel(run=i)
            se = standard_error(runs, "minibatch_sharpness").isel(run=i)
            z = ((mini - full.isel(run=i)) / se).where(runs.step > 0)
            row |= {
                "avg_minibs_mean": _mean(second_half(mini)),
                "batch_sharpness_mean": _mean(second_half(normalized(runs, "batch_sharpness").isel(run=i))),
                "minibs_minus_fullbs_min_z": float(z.min(skipna=True)),
            }
        out.append(row)
    return out


def _batch_size_of(runs: xr.Dataset, i: int) -> float | None:
    if "optimizer.batch_size" not in runs.coords:
        return None
    value = float(runs["optimizer.batch_size"].values[i])
    return None if np.isnan(value) else value


def _mean(da: xr.DataArray) -> float:
    return float(da.mean(skipna=True))


def _median(da: xr.DataArray) -> float:
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


def phase_summary(
    runs: xr.Dataset, compare_at: float, phase1: tuple[float, float], phase2: tuple[float, float]
) -> dict[str, Any]:
    """The two phases of progressive sharpening (Andreyev & Beneventano §4) on the ηt axis.

    - ``phase1_max_rel_dev``: over ηt in ``phase1``, the largest (max − min)/mean of the raw FullBS λ across all
      runs (the collapse of Andreyev & Beneventano's Fig. 3 is of λ against ηt, whatever η);
    - at ηt = ``compare_at`` (phase 2), FullBS and average MiniBS of the SGD runs and their spreads across b;
    - ``phase2_slope``: the slope of FullBS·η/2 against ηt over ``phase2``, per SGD run.
    """
    grid = np.linspace(*phase1, 9)
    curves = xr.concat([at_time(runs, "sharpness", t, per_edge=False) for t in grid], dim="eta_t")
    rel_dev = float(((curves.max("run") - curves.min("run")) / curves.mean("run")).max())
    sgd = [i for i in run_order(runs) if np.isfinite(float(runs["optimizer.batch_size"].values[i]))]
    base_eta = float(runs["eta"].values[sgd[0]])
    same_eta = [i for i in sgd if float(runs["eta"].values[i]) == base_eta]
    sub = runs.isel(run=same_eta)
    full_at = at_time(sub, "sharpness", compare_at)
    mini_at = at_time(sub, "minibatch_sharpness", compare_at)
    slopes = slope(sub, "sharpness", phase2)
    return {
        "phase1_window": list(phase1),
        "phase1_max_rel_dev": rel_dev,
        "compare_at_eta_t": compare_at,
        "eta": base_eta,
        "batch_sizes": [float(b) for b in sub["optimizer.batch_size"].values],
        "fullbs_at": full_at.values.tolist(),
        "avg_minibs_at": mini_at.values.tolist(),
        "fullbs_spread": spread(full_at),
        "avg_minibs_spread": spread(mini_at),
        "phase2_window": list(phase2),
        "phase2_slope": slopes.values.tolist(),
    }


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
