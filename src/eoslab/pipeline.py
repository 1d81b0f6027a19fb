"""The pipeline's bookkeeping, shared by the Snakefile, the notebooks and the tests.

A profile (``config/<profile>.yaml``, validated against ``config/schema.yaml``) lists run *families* and *figures*.
A family is a ``base`` run config plus named ``runs`` (overrides merged into the base) and/or a ``grid``
(dotted key → list of values: one more run per point of the Cartesian product, named after its values, e.g.
``batch_size8``). Each run's file is ``data/runs/<family>/<name>-<hash>.nc``,
the hash being :func:`eoslab.config.config_hash` of its validated config: a changed config is a new file, so
Snakemake reruns exactly what changed and identical runs are shared between profiles and figures.
"""

import copy
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from eoslab.config import ConfigError, check, digest, parse_yaml, set_key, source_digest, validate


def _validate_limit(config: Mapping[str, Any]) -> dict[str, Any]:
    from eoslab.limits import validate_limit  # imports the engine

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


VALIDATED: dict[str, dict[str, dict[str, Any]]] = {}
""":func:`expand_family`'s results in this process, by :func:`family_key`; :func:`load_profile` keeps them on disk
(``.snakemake/eoslab/``), so a DAG parse with unchanged configs and code validates nothing (and imports no torch)."""


def family_key(family: Mapping[str, Any]) -> str:
    """SHA-256 of a family's spec and of the package's sources: what its validated runs depend on."""
    canonical = json.dumps(family, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{source_digest()}\0{canonical}".encode()).hexdigest()


def expand_family(family: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Run name → validated config for one family: the named ``runs`` plus one run per point of ``grid``, each
    once per seed of ``seeds`` if given (named ``<run>-seed<k>``), validated by the family's ``command``
    (default ``run``: a run config). Memoised in :data:`VALIDATED`."""
    key = family_key(family)
    if key not in VALIDATED:
        VALIDATED[key] = _expand(family)
    return copy.deepcopy(VALIDATED[key])


def _expand(family: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
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


def _stamp(stat: os.stat_result) -> list[int]:
    """What changes whenever a file's bytes may have: inode, size, mtime and ctime (ctime cannot be set back)."""
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def set_aside_broken(paths: Iterable[str | Path], memo: str | Path | None = None) -> list[Path]:
    """Move every existing run file that is unreadable, fails a checksum or is not a finished run to
    ``<file>.corrupt``, so the DAG makes it again (the Snakefile calls this before building the DAG).

    ``memo`` (a JSON file) remembers the files found intact, by :func:`_stamp` and code version: a file is read
    again only when it changed since, so a parse over hundreds of finished runs opens none of them."""
    memo = None if memo is None else Path(memo)
    known = _read_json(memo) if memo is not None else {}
    known = known if known.get("code") == source_digest() else {}
    intact, moved = {}, []
    for path in map(Path, paths):
        if not path.exists():
            continue
        stamp = _stamp(path.stat())
        if known.get("files", {}).get(str(path)) == stamp or _is_intact(path):
            intact[str(path)] = stamp
        else:
            path.replace(path.with_name(path.name + ".corrupt"))
            moved.append(path)
    if memo is not None and intact != known.get("files"):
        _write_json(memo, {"code": source_digest(), "files": intact})
    return moved


def _is_intact(path: Path) -> bool:
    from eoslab.store import is_intact  # imports xarray: only when a file must be read

    return is_intact(path)


def _read_json(path: Path) -> dict[str, Any]:
    """A memo file's content; {} if it is missing or unreadable (a memo is only ever a shortcut)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Write a memo atomically (a temp file beside it, then rename): concurrent parses never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(content))
    tmp.replace(path)


SIGNAL_LEAD_MIN = 5
"""Minutes before its time limit that SLURM sends SIGTERM (profiles/slurm: --signal=TERM@300): the run then
checkpoints, flushes and exits 143; a retry resumes it."""


def runtime_request(estimate_min: float, out: str | Path, steps: int) -> int:
    """Minutes a run job asks the scheduler for: 1.25 × the time the run still needs, plus SIGNAL_LEAD_MIN and
    2 minutes for the job wrapper. The need is measured where the run has measured it (its ``<out>.partial``:
    wall time per step so far × steps left), else the profile's ``estimate_min``."""
    return batch_runtime_request(estimate_min, {str(out): steps})


def batch_runtime_request(estimate_min: float, runs: Mapping[str, int]) -> int:
    """Minutes a job making the runs ``runs`` (output → steps) asks for: 1.25 × the runs' needs summed
    (:func:`_need`), plus SIGNAL_LEAD_MIN and the job wrapper's 2 minutes, counted once (one job)."""
    need = sum(_need(estimate_min, out, steps) for out, steps in runs.items())
    return math.ceil(1.25 * need + SIGNAL_LEAD_MIN + 2)


def _need(estimate_min: float, out: str | Path, steps: int) -> float:
    """Minutes a run still needs: wall time per step × steps left, as its ``<out>.partial`` measured, else
    ``estimate_min``."""
    partial = Path(f"{out}.partial")
    if not partial.exists():
        return estimate_min
    from eoslab.store import is_intact, open_run  # imports xarray

    if is_intact(partial, partial=True):
        ds = open_run(partial)
        done = int(ds.step.values[-1]) if ds.sizes["step"] else 0
        if done > 0:
            return ds.attrs["wall_time_s"] / done * (steps - done) / 60
    return estimate_min


def family_resource(profile: Mapping[str, Any], family: str, key: str) -> int:
    """A resource (``mem_mb``, ``runtime`` minutes) of a family's jobs: the family's own, else the profile's."""
    return profile["families"][family].get("resources", {}).get(key, profile["resources"][key])


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


def batched_families(profile: Mapping[str, Any]) -> list[str]:
    """The families whose files one job each makes (``eoslab batch``): the profile's ``batch``, ``all`` or a list."""
    batch = profile.get("batch", [])
    return list(profile["families"]) if batch == "all" else list(batch)


def check_batch(profile: Mapping[str, Any], where: str = "profile") -> None:
    """``ConfigError`` naming ``batch`` and the family unless every family the profile's ``batch`` lists is defined."""
    for family in batched_families(profile):
        if family not in profile["families"]:
            raise ConfigError(f"{where}: batch: {family!r} is not defined under families")


MAX_BATCH_BYTES = 100_000
"""The most bytes of one batch job's items (JSON): they go on its command line, and Linux takes at most 128 KiB in
one argument (MAX_ARG_STRLEN)."""


def batch_jobs(profile: Mapping[str, Any], root: str | Path = "data/runs") -> dict[str, dict[str, list[Any]]]:
    """Batched family (:func:`batched_families`) → its one job: ``files``, every run file of the family (the job's
    outputs); ``inputs``, the run files of other families its runs start from (``init.file``); ``items``, what
    ``eoslab batch`` is given (``command``, validated ``config``, ``out``), in the family's order. ``ConfigError``
    naming ``batch`` and the family if the items would not fit on a command line (:data:`MAX_BATCH_BYTES`)."""
    jobs = {}
    for family in batched_families(profile):
        command = profile["families"][family]["command"]
        runs = {str(run_file(family, name, c, root)): c for name, c in family_runs(profile, family, root).items()}
        items = [{"command": command, "config": config, "out": out} for out, config in runs.items()]
        size = len(json.dumps(items).encode())
        if size > MAX_BATCH_BYTES:
            raise ConfigError(
                f"batch: {family}: its {len(items)} runs are {size} bytes of JSON, more than one command line takes "
                f"({MAX_BATCH_BYTES}); leave the family out of batch or split it"
            )
        inputs = sorted({c["init"]["file"] for c in runs.values() if c.get("init", {}).get("file")})
        jobs[family] = {"files": list(runs), "inputs": inputs, "items": items}
    return jobs


def family_pattern(excluded: Iterable[str]) -> str:
    """The regular expression of a family's folder name (no '/') that is none of ``excluded``: the Snakefile's
    per-file run rule leaves the files of batched families to their batch job."""
    names = "|".join(map(re.escape, excluded))
    return f"(?!(?:{names})/)[^/]+" if names else "[^/]+"


def profile_runs(profile: Mapping[str, Any], root: str | Path = "data/runs") -> dict[Path, dict[str, Any]]:
    """Every run of a profile: file → validated config."""
    return {
        run_file(family, name, config, root): config
        for family in profile["families"]
        for name, config in family_runs(profile, family, root).items()
    }


NOTEBOOK_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "00_analytic_toys": ((), ()),
    "01_sharpness_plateaus": (("plateaus",), ("scan_mnist1d", "scan_digits")),
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
    "09_momentum_adaptive": (("momentum_adaptive",), ()),
}
"""Notebook → (the roles it must be given, the roles it reads when given): the keys of its ``runs`` parameter.
A profile's figure maps each role to one of its families (``families: {role: family}``; a list of names means
role = family); :func:`check_roles` holds every profile to this table when it is loaded."""


def figure_roles(spec: Mapping[str, Any]) -> dict[str, list[str]]:
    """Role → the families one figure of a profile reads under it (a list of families reads each under its own
    name; a mapping gives a role one family or several, whose runs it reads together)."""
    families = spec["families"]
    if not isinstance(families, Mapping):
        return {family: [family] for family in families}
    return {role: [family] if isinstance(family, str) else list(family) for role, family in families.items()}


def check_roles(profile: Mapping[str, Any], where: str = "profile") -> None:
    """``ConfigError`` naming the figure unless every figure gives its notebook exactly the roles
    :data:`NOTEBOOK_ROLES` declares (all required ones, no unknown one) from families the profile defines, and
    every family is read by some figure (or is the ``init.from`` source of a family that is)."""
    read = set()
    for figure, spec in profile["figures"].items():
        roles = figure_roles(spec)
        named = {family for families in roles.values() for family in families}
        missing = sorted(named - set(profile["families"]))
        if missing:
            raise ConfigError(f"{where}: figures.{figure}.families: {missing} are not defined under families")
        read |= named
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
        role: [
            str(run_file(family, name, cfg, root))
            for family in families
            for name, cfg in family_runs(profile, family, root).items()
        ]
        for role, families in figure_roles(profile["figures"][figure]).items()
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
    is that other profile with every size shrunk (:mod:`eoslab.rehearsal`).

    The result and every family's validated runs are kept in ``.snakemake/eoslab/profile-<name>.json``, keyed by
    the profiles' and the schema's text and the package's sources: loading an unchanged profile again (every DAG
    parse, and on SLURM every job) reads that file and validates nothing."""
    top = repo_root(root or ".")
    folder = top / "config"
    path = folder / f"{name}.yaml"
    if not path.exists():
        profiles = sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "schema")
        raise FileNotFoundError(f"no profile {name!r}: {path} does not exist; profiles: {profiles}")
    text, schema = path.read_text(), (folder / "schema.yaml").read_text()
    raw = parse_yaml(text, path.name)
    rehearsed = raw.get("rehearse") if isinstance(raw, dict) else None  # config/rehearsal.yaml: another profile
    other = (folder / f"{rehearsed}.yaml").read_text() if rehearsed else ""
    key = hashlib.sha256(f"{source_digest()}\0{text}\0{other}\0{schema}".encode()).hexdigest()
    memo = top / ".snakemake" / "eoslab" / f"profile-{name}.json"
    saved = _read_json(memo)
    if saved.get("key") == key:
        VALIDATED.update(saved["validated"])
        return saved["profile"]
    if rehearsed:  # every size shrunk
        from eoslab.rehearsal import shrink_profile

        raw = shrink_profile(raw, parse_yaml(other, f"{rehearsed}.yaml"))
    profile = check(raw, parse_yaml(schema, "schema.yaml"), path.name)
    check_roles(profile, path.name)
    check_batch(profile, path.name)
    profile_runs(profile)
    validated = {k: VALIDATED[k] for k in map(family_key, profile["families"].values())}
    _write_json(memo, {"key": key, "profile": profile, "validated": validated})
    return profile
