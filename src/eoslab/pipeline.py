"""The pipeline's bookkeeping, shared by the Snakefile, the notebooks and the tests.

A profile (``config/<profile>.yaml``, validated against ``config/schema.yaml``) lists run *families* and *figures*.
A family is a ``base`` run config plus named ``runs`` (overrides merged into the base) and/or a ``grid``
(dotted key → list of values: one more run per point of the Cartesian product, named after its values, e.g.
``batch_size8``). Each run's file is ``data/runs/<family>/<name>-<hash>.nc``,
the hash being :func:`eoslab.config.config_hash` of its validated config: a changed config is a new file, so
Snakemake reruns exactly what changed and identical runs are shared between profiles and figures.
"""

import copy
import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from eoslab.config import ConfigError, check, digest, set_key, validate


def _validate_sweep(config: Mapping[str, Any]) -> dict[str, Any]:
    from eoslab.sweep import validate_sweep  # imports the engine

    return validate_sweep(config)


COMMANDS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {"run": validate, "sweep": _validate_sweep}
"""A family's ``command`` (the ``eoslab`` subcommand that makes each of its files) → the validator of its configs."""


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge: nested dicts merge key by key; any other value in ``override`` replaces the base's."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def _grid_name(assignment: dict[str, Any]) -> str:
    return "-".join(f"{key.rsplit('.', 1)[-1]}{value}" for key, value in assignment.items())


def expand_family(family: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Run name → validated config for one family: the named ``runs`` plus one run per point of ``grid``,
    validated by the family's ``command`` (default ``run``: a run config)."""
    variants: dict[str, dict[str, Any]] = {name: dict(over or {}) for name, over in family.get("runs", {}).items()}
    grid = family.get("grid", {})
    for values in itertools.product(*grid.values()) if grid else ():
        assignment = dict(zip(grid, values, strict=True))
        over: dict[str, Any] = {}
        for key, value in assignment.items():
            set_key(over, key, value)
        variants[_grid_name(assignment)] = over
    runs = {}
    for name, over in variants.items():
        config = merge(family.get("base", {}), over)
        config["name"] = name
        runs[name] = COMMANDS[family.get("command", "run")](config)
    return runs


def run_file(family: str, name: str, config: Mapping[str, Any], root: str | Path = "data/runs") -> Path:
    """Where a run is cached: ``<root>/<family>/<name>-<hash>.nc``, the hash of the validated ``config``."""
    return Path(root) / family / f"{name}-{digest(config)}.nc"


def profile_runs(profile: Mapping[str, Any], root: str | Path = "data/runs") -> dict[Path, dict[str, Any]]:
    """Every run of a profile: file → validated config."""
    return {
        run_file(family, name, config, root): config
        for family, spec in profile["families"].items()
        for name, config in expand_family(spec).items()
    }


def figure_runs(profile: Mapping[str, Any], figure: str, root: str | Path = "data/runs") -> dict[str, list[str]]:
    """The run files a figure reads, by family (what the Snakefile passes to the notebook)."""
    families = profile["figures"][figure]["families"]
    return {
        family: [
            str(run_file(family, name, config, root))
            for name, config in expand_family(profile["families"][family]).items()
        ]
        for family in families
    }


def repo_root(start: str | Path = ".") -> Path:
    """The nearest folder at or above ``start`` holding the Snakefile (notebooks run from ``notebooks/`` by hand)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "Snakefile").exists():
            return folder
    raise FileNotFoundError(f"no Snakefile at or above {here}")


def load_profile(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """``config/<name>.yaml`` validated against ``config/schema.yaml`` (defaults filled), with every run config
    expanded and validated too, so a bad profile fails before any job starts."""
    folder = repo_root(root or ".") / "config"
    path = folder / f"{name}.yaml"
    if not path.exists():
        profiles = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "schema")
        raise FileNotFoundError(f"no profile {name!r}: {path} does not exist; profiles: {profiles}")
    profile = check(yaml.safe_load(path.read_text()), yaml.safe_load((folder / "schema.yaml").read_text()), path.name)
    for figure, spec in profile["figures"].items():
        missing = [f for f in spec["families"] if f not in profile["families"]]
        if missing:
            raise ConfigError(f"{path.name}: figures.{figure}.families: {missing} are not defined under families")
    profile_runs(profile)
    return profile
