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
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from eoslab.config import ConfigError, check, digest, set_key, validate
from eoslab.limits import validate_limit
from eoslab.store import is_intact, open_run


def _validate_limit(config: Mapping[str, Any]) -> dict[str, Any]:

    return validate_limit(config)


def _validate_sweep(config: Mapping[str, Any]) -> dict[str, Any]:
    from eoslab.sweep import validate_sweep  # imports the engine

    return validate_sweep(config)


COMMANDS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "run": validate,
    "limit": _validate_limit,
    "sweep": _validate_sweep,
}
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
    """Run name → validated config for one family: the named ``runs`` plus one run per point of ``grid``, each
    once per seed of ``seeds`` if given (named ``<run>-seed<k>``), validated by the family's ``command``
    (default ``run``: a run config)."""
    variants: dict[str, dict[str, Any]] = {name: dict(over or {}) for name, over in family.get("runs", {}).items()}
    grid = family.get("grid", {})
    for values in itertools.product(*grid.values()) if grid else ():
        assignment = dict(zip(grid, values, strict=True))
        over: dict[str, Any] = {}
        for key, value in assignment.items():
            set_key(over, key, value)
        variants[_grid_name(assignment)] = over
    seeds = family.get("seeds")
    if seeds is not None:  # every run once per seed
        variants = {f"{name}-seed{seed}": over | {"seed": seed} for name, over in variants.items() for seed in seeds}
    runs = {}
    for name, over in variants.items():
        config = merge(family.get("base", {}), over)
        config["name"] = name
        runs[name] = COMMANDS[family.get("command", "run")](config)
    return runs


def run_file(family: str, name: str, config: Mapping[str, Any], root: str | Path = "data/runs") -> Path:
    """Where a run is cached: ``<root>/<family>/<name>-<hash>.nc``, the hash of the validated ``config``."""
    return Path(root) / family / f"{name}-{digest(config)}.nc"


def set_aside_broken(paths: Iterable[str | Path]) -> list[Path]:
    """Move every existing run file that is unreadable, fails a checksum or is not a finished run to
    ``<file>.corrupt``, so the DAG makes it again (the Snakefile calls this before building the DAG)."""
    moved = []
    for path in map(Path, paths):
        if path.exists() and not is_intact(path):
            path.replace(path.with_name(path.name + ".corrupt"))
            moved.append(path)
    return moved


SIGNAL_LEAD_MIN = 5
"""Minutes before its time limit that SLURM sends SIGTERM (profiles/slurm: --signal=TERM@300): the run then
checkpoints, flushes and exits 143; a retry resumes it."""


def runtime_request(estimate_min: float, out: str | Path, steps: int) -> int:
    """Minutes a run job asks the scheduler for: 1.25 × the time the run still needs, plus SIGNAL_LEAD_MIN and
    2 minutes for the job wrapper. The need is measured where the run has measured it (its ``<out>.partial``:
    wall time per step so far × steps left), else the profile's ``estimate_min``."""
    need = estimate_min
    partial = Path(f"{out}.partial")
    if partial.exists() and is_intact(partial, partial=True):
        ds = open_run(partial)
        done = int(ds.step.values[-1]) if ds.sizes["step"] else 0
        if done > 0:
            need = ds.attrs["wall_time_s"] / done * (steps - done) / 60
    return math.ceil(1.25 * need + SIGNAL_LEAD_MIN + 2)


def family_runs(profile: Mapping[str, Any], family: str, root: str | Path = "data/runs") -> dict[str, dict[str, Any]]:
    """:func:`expand_family` of a profile's family, with every ``init.from`` (``<family>/<run>`` of the profile)
    resolved to that run's file in ``init.file``: the source's config hash is then part of the dependent's."""
    if family not in profile["families"]:
        raise ConfigError(f"init.from: no family {family!r} in the profile")
    runs = expand_family(profile["families"][family])
    for name, config in runs.items():
        source = config.get("init", {}).get("from")
        if source is None:
            continue
        src_family, _, src_name = source.partition("/")
        src = family_runs(profile, src_family, root).get(src_name)
        if src is None:
            raise ConfigError(f"{family}/{name}: init.from: no run {source!r} in the profile")
        if config["init"]["step"] not in src["save_params"]:
            raise ConfigError(f"{family}/{name}: init.step: {source} saves steps {src['save_params']} only")
        config["init"]["file"] = str(run_file(src_family, src_name, src, root))
    return runs


def profile_runs(profile: Mapping[str, Any], root: str | Path = "data/runs") -> dict[Path, dict[str, Any]]:
    """Every run of a profile: file → validated config."""
    return {
        run_file(family, name, config, root): config
        for family in profile["families"]
        for name, config in family_runs(profile, family, root).items()
    }


NOTEBOOK_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "00_analytic_toys": ((), ()),
    "01_sharpness_plateaus": (("plateaus",), ()),
    "02_progressive_sharpening": (("plateaus", "plateaus_lr"), ()),
    "03_interaction_sharpness": (("iir",), ()),
    "04_lssr": (("lssr_rho", "lssr_grid"), ()),
    "05_layerwise_eos": (
        ("layerwise_eos", "step_schemes"),
        ("layerwise_width", "layerwise_depth", "step_schemes_cifar10"),
    ),
    "06_divergence_limits": (
        ("limits_gd", "limits_sgd", "limits_bisect_gd", "limits_bisect_sgd"),
        ("limits_width", "limits_depth", "limits_n"),
    ),
    "07_stochastic_eos": (("stochastic_eos",), ()),
    "08_ngd_sqrt_loss": (("ngd_sqrt_loss",), ()),
}
"""Notebook → (the roles it must be given, the roles it reads when given): the keys of its ``runs`` parameter.
A profile's figure maps each role to one of its families (``families: {role: family}``; a list of names means
role = family); :func:`check_roles` holds every profile to this table when it is loaded."""


def figure_roles(spec: Mapping[str, Any]) -> dict[str, str]:
    """Role → family of one figure of a profile (a list of families reads each under its own name)."""
    families = spec["families"]
    return dict(families) if isinstance(families, Mapping) else {family: family for family in families}


def check_roles(profile: Mapping[str, Any], where: str = "profile") -> None:
    """``ConfigError`` naming the figure unless every figure gives its notebook exactly the roles
    :data:`NOTEBOOK_ROLES` declares (all required ones, no unknown one) from families the profile defines, and
    every family is read by some figure (or is the ``init.from`` source of a family that is)."""
    read = set()
    for figure, spec in profile["figures"].items():
        roles = figure_roles(spec)
        missing = sorted(set(roles.values()) - set(profile["families"]))
        if missing:
            raise ConfigError(f"{where}: figures.{figure}.families: {missing} are not defined under families")
        read |= set(roles.values())
        if spec["notebook"] not in NOTEBOOK_ROLES:
            raise ConfigError(
                f"{where}: figures.{figure}.notebook: {spec['notebook']!r} declares no roles "
                "(add it to eoslab.pipeline.NOTEBOOK_ROLES)"
            )
        required, optional = NOTEBOOK_ROLES[spec["notebook"]]
        absent = [r for r in required if r not in roles]
        unknown = sorted(set(roles) - {*required, *optional})
        if absent or unknown:
            raise ConfigError(
                f"{where}: figures.{figure}.families: notebook {spec['notebook']} reads the roles {list(required)}"
                f" (optional {list(optional)}): missing {absent}, unknown {unknown}; map a role to a family with"
                " {role: family}"
            )
    for family in profile["families"].values():  # a run started from another family's run reads that family
        overrides = [family.get("base", {}), *(over or {} for over in family.get("runs", {}).values())]
        read |= {(over.get("init") or {}).get("from", "").partition("/")[0] for over in overrides}
    unread = sorted(set(profile["families"]) - read)
    if unread:
        raise ConfigError(f"{where}: families: {unread} are read by no figure")


def figure_runs(profile: Mapping[str, Any], figure: str, root: str | Path = "data/runs") -> dict[str, list[str]]:
    """The run files a figure reads, by role (what the Snakefile passes to the notebook as ``runs``)."""
    return {
        role: [str(run_file(family, name, cfg, root)) for name, cfg in family_runs(profile, family, root).items()]
        for role, family in figure_roles(profile["figures"][figure]).items()
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
    expanded and validated too, so a bad profile fails before any job starts. A profile naming ``rehearse: <other>``
    is that other profile with every size shrunk (:mod:`eoslab.rehearsal`)."""
    folder = repo_root(root or ".") / "config"
    path = folder / f"{name}.yaml"
    if not path.exists():
        profiles = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "schema")
        raise FileNotFoundError(f"no profile {name!r}: {path} does not exist; profiles: {profiles}")
    raw = yaml.safe_load(path.read_text())
    if isinstance(raw, dict) and "rehearse" in raw:  # config/rehearsal.yaml: another profile, every size shrunk
        from eoslab.rehearsal import shrink_profile

        raw = shrink_profile(raw, yaml.safe_load((folder / f"{raw['rehearse']}.yaml").read_text()))
    profile = check(raw, yaml.safe_load((folder / "schema.yaml").read_text()), path.name)
    check_roles(profile, path.name)
    profile_runs(profile)
    return profile
