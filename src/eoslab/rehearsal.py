"""The rehearsal profile: every family, figure and notebook of the paper profile, every size shrunk, on
CIFAR-10- and MNIST-format files it writes itself.

``config/rehearsal.yaml`` names the profile it rehearses (``rehearse: paper``); :func:`shrink_profile` derives
the families and figures from that profile's YAML when the profile is loaded, so the rehearsal cannot drift from
it: the same job kinds, run names, roles and notebooks, with sizes capped by :data:`RULES` (n, d, widths, steps,
measurement counts, search repetitions), numeric grids cut to their first and last value, and the device set to
the CPU. ``python -m eoslab.rehearsal data`` writes the data files (the real loaders read them);
``python -m eoslab.rehearsal check`` checks every run file and figure of the profile for shape and finiteness
(not claims: the sizes are far too small for them). ``make rehearsal`` runs the three steps.
"""

import argparse
import json
import math
import pickle
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from eoslab.pipeline import merge

DATA_ROOT = "data/rehearsal"
"""Where the rehearsal's data files are written and read (``data.root`` of every run)."""


def cap(limit: float) -> Callable[[Any], Any]:
    """A rule keeping a value at most ``limit`` (None stays None: e.g. 'all test examples')."""
    return lambda value: value if value is None else min(value, limit)


def _windows(windows: list[dict[str, int]]) -> list[dict[str, int]]:
    return [{"from": min(w["from"], 8), "until": min(w["until"], 16), "every": min(w["every"], 4)} for w in windows]


RULES: dict[str, Callable[[Any], Any]] = {
    "device": lambda _: "cpu",
    "data.root": lambda root: f"{DATA_ROOT}/{Path(root).name}",
    "data.n_train": cap(40),
    "data.n_test": cap(20),
    "data.n": cap(48),
    "data.d": cap(10),
    "model.width": cap(8),
    "model.fc_width": cap(8),
    "model.depth": cap(2),
    "optimizer.batch_size": cap(32),
    "steps": cap(16),
    "stop.examples": cap(128),
    "measure.every": cap(8),
    "measure.early_every": cap(8),
    "measure.early_until": cap(8),
    "measure.minibatch": cap(1),
    "measure.batch_size": cap(8),
    "measure.subset": cap(20),
    "measure.chunk_size": cap(16),
    "measure.lssr": cap(4),
    "measure.max_iter": cap(8),
    "measure.tol": lambda tol: max(tol, 1e-2),
    "measure.windows": _windows,
    "checkpoint_every": cap(8),
    "save_params": lambda steps: sorted({min(s, 16) for s in steps}),
    "init.step": cap(16),
    "search.T": cap(8),
    "search.R": cap(2),
    "search.beta": lambda beta: max(beta, 1.5),
}
"""Dotted key of a run config → its rehearsal value. Caps keep the same step everywhere it is named (steps,
save_params, init.step), so a run started from another's saved parameters still finds them."""

MODEL_SIZES = ("width",)
"""Model sizes a preset carries without naming them in the profile: shrunk where the preset has them."""

SOLVER_KEYS = ("max_iter", "tol")
"""Measurement keys shrunk even where the profile leaves them at the run schema's default (Lanczos cost)."""

FIGURE_RULES: dict[str, Callable[[Any], Any]] = {"steps": cap(1000), "seeds": cap(2), "window_from": cap(8)}
"""Figure parameter → its rehearsal value (the Monte-Carlo sizes and step windows of the notebooks)."""


def shrink(node: Any, path: str = "") -> Any:
    """A run config (or a part of one at ``path``) with :data:`RULES` applied; ``sweep.grid`` shrinks as a grid."""
    if path in RULES:
        return RULES[path](node)
    if path == "sweep.grid":
        return shrink_grid(node)
    if path == "sweep.extend":
        return dict(node) | {"rounds": min(node.get("rounds", 1), 1)}
    if isinstance(node, Mapping):
        return {key: shrink(value, f"{path}.{key}" if path else key) for key, value in node.items()}
    return node


def shrink_grid(grid: Mapping[str, list[Any]]) -> dict[str, list[Any]]:
    """A numeric axis keeps its first and last value, then :data:`RULES` (duplicates dropped); a categorical
    axis (activations) is kept whole: the figures pick runs by it."""
    out = {}
    for key, values in grid.items():
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        kept = [values[0], values[-1]] if numeric and len(values) > 2 else list(values)
        out[key] = list(dict.fromkeys(shrink(v, key) for v in kept))
    return out


def _defaults(base: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`shrink` must also see of a base config: the preset's sizes (:data:`MODEL_SIZES`) and the
    solver's defaults (:data:`SOLVER_KEYS`) where the profile does not name them."""
    from eoslab.config import SCHEMA  # only when a rehearsal is loaded: DAG parse of other profiles stays light
    from eoslab.models import PRESETS

    preset = PRESETS.get(base.get("model", {}).get("name"), {})
    measure = SCHEMA["properties"]["measure"]["properties"]
    return {
        "model": {key: preset[key] for key in MODEL_SIZES if key in preset},
        "measure": {key: measure[key]["default"] for key in SOLVER_KEYS},
    }


def shrink_family(family: Mapping[str, Any]) -> dict[str, Any]:
    """One family of the rehearsed profile, shrunk: base and every run's overrides by :func:`shrink`, the grid by
    :func:`shrink_grid` (named runs that shrink to an earlier run's overrides are dropped, as grid duplicates are);
    its resources are dropped (the rehearsal's defaults apply)."""
    out = {key: value for key, value in family.items() if key not in ("base", "runs", "grid", "resources")}
    base = family.get("base", {})
    out["base"] = shrink(merge(_defaults(base), base))
    if "runs" in family:
        runs: dict[str, Any] = {}
        for name, over in family["runs"].items():
            shrunk = over if over is None else shrink(over)
            if shrunk not in runs.values():  # e.g. widths 25 ... 100 all capped to 8: one run, not four
                runs[name] = shrunk
        out["runs"] = runs
    if "grid" in family:
        out["grid"] = shrink_grid(family["grid"])
    if "seeds" in family:
        out["seeds"] = shrink_grid({"seed": family["seeds"]})["seed"]
    return out


def shrink_profile(rehearsal: Mapping[str, Any], rehearsed: Mapping[str, Any]) -> dict[str, Any]:
    """The rehearsal profile: ``rehearsal``'s own keys (description, threads, resources) with the families and
    figures of the ``rehearsed`` profile's YAML, shrunk."""
    out = {key: value for key, value in rehearsal.items() if key != "rehearse"}
    out["families"] = {name: shrink_family(family) for name, family in rehearsed["families"].items()}
    out["figures"] = {
        name: dict(spec)
        | {"params": {k: FIGURE_RULES.get(k, lambda v: v)(v) for k, v in (spec.get("params") or {}).items()}}
        for name, spec in rehearsed["figures"].items()
    }
    return out


# ---------------------------------------------------------------------------------------------- data files

CIFAR_TRAIN_BATCH = 20  # images per training batch file (5 files): 10 per class in all
CIFAR_TEST = 40
MNIST_TRAIN, MNIST_TEST = 60, 20


def write_cifar10(folder: Path, seed: int = 0) -> None:
    """The six CIFAR-10 python batch files (``cifar-10-batches-py``) with random images, classes in turn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {**{f"data_batch_{i}": CIFAR_TRAIN_BATCH for i in range(1, 6)}, "test_batch": CIFAR_TEST}
    for name, n in sizes.items():
        batch = {
            b"batch_label": name.encode(),
            b"labels": [k % 10 for k in range(n)],
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{k}.png".encode() for k in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))


def _idx(array: np.ndarray) -> bytes:
    """An idx file (uint8): magic 0x00 0x00 0x08 <ndim>, big-endian uint32 dims, data."""
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: Path, seed: int = 0) -> None:
    """The four MNIST idx files with random images, classes in turn."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx((np.arange(n) % 10).astype(np.uint8)))


WRITERS = {"cifar10": lambda root: write_cifar10(root / "cifar-10-batches-py"), "mnist": write_mnist}
"""Dataset name → the writer of its files under ``<DATA_ROOT>/<name>``."""


def write_data(root: str | Path = DATA_ROOT) -> list[Path]:
    """Every dataset's files under ``root``; returns the folders written."""
    folders = []
    for name, writer in WRITERS.items():
        writer(Path(root) / name)
        folders.append(Path(root) / name)
    return folders


# ---------------------------------------------------------------------------------------------- output check


def check_run_file(path: str | Path) -> list[str]:
    """Problems of one run, limit or sweep file: a dimension of size 0, or a numeric variable without a single
    finite value."""
    from eoslab.store import open_run

    ds = open_run(path)
    problems = [f"{path}: dimension {dim} has size 0" for dim, size in ds.sizes.items() if size == 0]
    for name, var in ds.data_vars.items():
        if np.issubdtype(var.dtype, np.number) and var.size and not np.isfinite(var.values).any():
            problems.append(f"{path}: {name} has no finite value")
    return problems


def _numbers(node: Any) -> list[float]:
    if isinstance(node, Mapping):
        return [x for value in node.values() for x in _numbers(value)]
    if isinstance(node, list):
        return [x for value in node for x in _numbers(value)]
    return [float(node)] if isinstance(node, int | float) and not isinstance(node, bool) else []


def check_figure(prefix: str | Path) -> list[str]:
    """Problems of one figure: a missing or empty pdf/png/json, a JSON without claims, or claims whose numbers
    are none of them finite."""
    files = {ext: Path(f"{prefix}.{ext}") for ext in ("pdf", "png", "json")}
    problems = [f"{f}: missing or empty" for f in files.values() if not f.is_file() or f.stat().st_size == 0]
    if problems:
        return problems
    claims = json.loads(files["json"].read_text()).get("claims") or []
    if not claims:
        return [f"{files['json']}: no claims"]
    if not any(math.isfinite(x) for x in _numbers(claims)):
        problems.append(f"{files['json']}: no claim has a finite number")
    return problems


def check(profile_name: str = "rehearsal") -> list[str]:
    """Every problem of the profile's outputs (run files and figures); empty when the rehearsal passed."""
    from eoslab.pipeline import load_profile, profile_runs

    profile = load_profile(profile_name)
    problems = [p for path in profile_runs(profile) for p in check_run_file(path)]
    return problems + [p for figure in profile["figures"] for p in check_figure(f"figures/{profile_name}/{figure}")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eoslab.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["data", "check"], help="write the data files, or check the outputs")
    args = parser.parse_args(argv)
    if args.action == "data":
        print("rehearsal data:", ", ".join(map(str, write_data())))
        return 0
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"rehearsal: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
