"""Run configs: a JSON schema with defaults, validation with messages that name the key, and a content hash.

A run config is a nested dict (YAML or JSON on disk). ``validate`` fills defaults and raises ``ConfigError``
before anything is computed; ``config_hash`` ties a cached result to the settings that change its numbers
(everything but the operational keys :data:`OPERATIONAL`).
"""

import copy
import functools
import hashlib
import inspect
import json
import math
import re
import sys
import typing
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml

SAMPLING = ("subset", "iid", "reshuffle")
SCHEDULES = ("constant", "inv_initial_sharpness", "inv_sharpness", "layerwise")

_count = {"type": "integer", "minimum": 0}
_positive = {"type": "number", "exclusiveMinimum": 0}
_optional_count = {"type": ["integer", "null"], "minimum": 1, "default": None}


def _obj(properties: dict, required: tuple[str, ...] = (), extra: bool = False) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": extra,
        "default": {},
    }


_NAMED = {"type": "string", "description": "filled with a registry's names by run_schema()"}
_SCHEMA: dict[str, Any] = _obj(
    {
        "name": {"type": "string", "default": "run"},
        "seed": {**_count, "maximum": 2**32 - 1, "default": 0, "description": "initialisation and sampling seed"},
        "dtype": {"enum": ["float32", "float64"], "default": "float32"},
        "device": {"type": "string", "pattern": r"^(cpu|cuda(:\d+)?|mps)$", "default": "cpu"},
        "data": _obj({"name": _NAMED}, ("name",), extra=True),
        "model": _obj({"name": _NAMED}, ("name",), extra=True),
        "loss": {**_NAMED, "default": "half_mse"},
        "optimizer": _obj(
            {
                "rule": {**_NAMED, "default": "gd", "description": "the update rule"},
                "lr": _positive,
                "batch_size": {"type": ["integer", "null"], "minimum": 1, "default": None},
                "sampling": {"enum": list(SAMPLING), "default": "subset"},
                "schedule": {"enum": list(SCHEDULES), "default": "constant"},
                "loss_offset": {"type": "number", "default": 0.0, "description": "L* in GD on sqrt(L - L*)"},
                "eps": {"type": "number", "minimum": 0, "default": 1e-12},
            },
            ("lr",),
        ),
        "steps": _count,
        "measure": _obj(
            {
                "every": {"type": "integer", "minimum": 1, "default": 100},
                "early_every": {"type": "integer", "minimum": 1, "default": 10},
                "early_until": {**_count, "default": 0},
                "subset": _optional_count | {"description": "first n examples for full-batch measures"},
                "chunk_size": _optional_count,
                "tol": {**_positive, "default": 1e-3},
                "max_iter": {"type": "integer", "minimum": 1, "default": 100},
                "sharpness": {"type": "boolean", "default": True},
                "top_k": {"type": "integer", "minimum": 1, "default": 1},
                "batch_size": _optional_count | {"description": "mini-batch size of the estimators (default: SGD's)"},
                "minibatch": {**_count, "default": 0, "description": "batches for MiniBS and Batch Sharpness"},
                "directional": {"type": "boolean", "default": False},
                "layers": {"type": "boolean", "default": False},
                "interaction": {**_count, "default": 0, "description": "batches for tr(HS_b) (0: off)"},
                "interaction_exact": {"type": "boolean", "default": False},
                "trace": {**_count, "default": 0, "description": "Hutchinson probes (0: off)"},
                "grad_norms": {"type": "boolean", "default": False},
                "preconditioned": {"type": "boolean", "default": False, "description": "λmax(P^½HP^½)"},
                "test": {"type": "boolean", "default": True},
                "noise_kernel": {"type": "boolean", "default": False, "description": "NTK spectrum and 𝒦 (MSE)"},
                "lssr": {**_count, "default": 0, "description": "Monte-Carlo batches per b for rho_b (0: off)"},
                "windows": {
                    "type": "array",
                    "default": [],
                    "description": "extra measurements every `every` steps for from <= t <= until (dense windows)",
                    "items": _obj(
                        {"from": _count, "until": _count, "every": {"type": "integer", "minimum": 1}},
                        ("from", "until", "every"),
                    ),
                },
            }
        ),
        "stop": _obj(
            {
                "train_loss": {
                    "type": ["number", "null"],
                    "default": None,
                    "description": "stop at the first measurement whose full-batch training loss is below this",
                },
                "examples": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "default": None,
                    "description": "stop once steps x b examples were seen (full-batch rules: n per step)",
                },
            }
        ),
        "divergence": _obj({"max_loss": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": 1e8}}),
        "checkpoint_every": {**_count, "default": 1000, "description": "steps between checkpoints (0: none)"},
        "flush_every": {**_count, "default": 20, "description": "measurements between NetCDF flushes"},
        "save_params": {
            "type": "array",
            "items": _count,
            "default": [],
            "description": "steps whose parameters the NetCDF keeps (variable saved_params), for init.file",
        },
        "init": _obj(
            {
                "file": {"type": ["string", "null"], "default": None, "description": "run file to start from"},
                "step": {"type": ["integer", "null"], "minimum": 0, "default": None},
                "from": {
                    "type": ["string", "null"],
                    "default": None,
                    "description": "<family>/<run> of the same profile; the pipeline fills init.file",
                },
            }
        ),
    },
    ("data", "model", "optimizer", "steps"),
)


@functools.cache
def run_schema() -> dict[str, Any]:
    """The JSON schema of a run config (also :data:`SCHEMA`): its data, model, loss and update-rule names and the
    rules' own keys come from the registries of :mod:`eoslab.data`, :mod:`eoslab.models`, :mod:`eoslab.losses` and
    :mod:`eoslab.rules`. Built on first use: those import torch, and importing this module must not (the DAG's parse
    reads configs and hashes only)."""
    from eoslab.data import DATASETS
    from eoslab.losses import LOSSES
    from eoslab.models import MODELS, PRESETS
    from eoslab.rules import RULES, key_schema

    schema = copy.deepcopy(_SCHEMA)
    sections = schema["properties"]
    sections["data"]["properties"]["name"] = {"enum": sorted(DATASETS)}
    sections["model"]["properties"]["name"] = {"enum": sorted(MODELS) + sorted(PRESETS)}
    sections["loss"] = {"enum": sorted(LOSSES), "default": "half_mse"}
    optimizer = sections["optimizer"]["properties"]
    optimizer["rule"] = {"enum": list(RULES), "default": "gd", "description": "the update rule"}
    optimizer.update(key_schema())
    return schema


def __getattr__(name: str) -> Any:
    if name == "SCHEMA":
        return run_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded and strict: ``1e-3`` is a float (as in YAML 1.2; YAML 1.1 wants ``1.0e-3``);
    a duplicate key, a recursive alias, more than :data:`MAX_ALIASES` aliases or a document expanding to more than
    :data:`MAX_NODES` values is a ``yaml.YAMLError`` naming the line. Merge keys (``<<: *base``) work as usual."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: set[str] = set()  # anchors whose node is being composed: an alias to one is recursive
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if event.anchor in self._open:
                raise yaml.composer.ComposerError(None, None, f"recursive alias *{event.anchor}", event.start_mark)
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases in one document", event.start_mark
                )
            return super().compose_node(parent, index)
        anchor = self.peek_event().anchor
        if anchor is not None:
            self._open.add(anchor)
        node = super().compose_node(parent, index)
        self._open.discard(anchor)
        return node

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"the document expands to more than {MAX_NODES} values (aliases counted)", node.start_mark
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_BYTES = 1 << 20
"""The largest config text the loader reads (1 MiB; the paper profile is ~10 kB)."""
MAX_ALIASES = 200
"""The most YAML aliases (``*name``) one document may use."""
MAX_NODES = 100_000
"""The most values one document may expand to, aliases counted as copies (an alias bomb is refused unbuilt)."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Values ``node`` expands to, each alias counted as a full copy (memoised by node: linear in the document)."""
    if id(node) not in sizes:
        sizes[id(node)] = MAX_NODES + 1  # a cycle (refused earlier) must not recurse forever
        children = node.value if isinstance(node.value, list) else []
        flat = [c for item in children for c in (item if isinstance(item, tuple) else (item,))]
        sizes[id(node)] = min(1 + sum(_expanded_size(c, sizes) for c in flat), MAX_NODES + 1)
    return sizes[id(node)]


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


class ConfigError(ValueError):
    """An invalid run config; the message names the key."""


@functools.cache
def import_jsonschema() -> Any:
    """The jsonschema module, imported on first use without ``rfc3987_syntax``.

    Importing jsonschema imports the optional package of every format checker it finds, and ``rfc3987_syntax``
    (installed by the notebook stack) builds a grammar at import: ~1 s in every job (1.9 s of papermill's 2.7 s
    import, through nbformat). Neither configs nor notebooks use the ``iri`` formats, so that one import is made to
    fail while jsonschema loads (only if nothing imported it before; later imports of it work as usual).
    """
    hide = "rfc3987_syntax" not in sys.modules
    if hide:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # `import` of it raises ImportError
    try:
        import jsonschema
    finally:
        if hide:
            del sys.modules["rfc3987_syntax"]
    return jsonschema


@functools.cache
def _validator_class() -> type:
    """Draft 2020-12 that also fills ``default`` values into the instance (the jsonschema FAQ recipe)."""
    jsonschema = import_jsonschema()
    validator_class = jsonschema.Draft202012Validator
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        for key, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _check_kwargs(section: str, fn: Any, given: Mapping, exclude: set[str]) -> None:
    """``given`` (a section naming ``fn``) has only ``fn``'s keyword arguments, and every one without a default."""
    parameters = inspect.signature(fn).parameters
    allowed = sorted(set(parameters) - exclude)
    unknown = sorted(set(given) - {"name"} - set(allowed))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown} for {given['name']!r}; allowed: {allowed}")
    required = [k for k in allowed if parameters[k].default is inspect.Parameter.empty and k not in given]
    if required:
        raise ConfigError(f"{section}: {given['name']!r} needs the key(s) {required}")
    hints = typing.get_type_hints(fn.__init__ if isinstance(fn, type) else fn)
    for key, value in given.items():
        types = _plain_types(hints.get(key))
        if types and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
            names = " or ".join(sorted({t.__name__ for t in types}))
            raise ConfigError(f"{section}.{key}: {value!r} is not of type {names}")


def _plain_types(hint: Any) -> tuple[type, ...] | None:
    """The types a plain annotation (int, float, str, bool, None and their unions) admits, else None."""
    args = typing.get_args(hint) or (hint,)
    if not all(a in (int, float, str, bool, type(None)) for a in args):
        return None
    return tuple({*args, *((int,) if float in args else ())})


MAX_INT = 2**63 - 1
"""The largest integer a config may hold (int64: what torch and NetCDF store)."""


def _bad_number(node: Any, path: str = "") -> str | None:
    """``"<dotted key>: <why>"`` for the first number in ``node`` no run can use: NaN or infinite (YAML's .nan/.inf),
    or an integer beyond int64 (a 400-digit ``lr`` would overflow torch's conversion); else None."""
    where = path or "(top level)"
    if isinstance(node, float) and not math.isfinite(node):
        return f"{where}: must be a finite number (NaN and infinity are not allowed)"
    if isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_INT:
        return f"{where}: {str(node)[:12]}... ({len(str(abs(node)))} digits) is out of range (|x| < 2^63)"
    items = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _bad_number(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def check(instance: Mapping[str, Any], schema: Mapping[str, Any], what: str = "config") -> dict[str, Any]:
    """A deep copy of ``instance`` with the schema's defaults filled in, or ``ConfigError`` naming the bad key."""
    if not isinstance(instance, Mapping):
        raise ConfigError(f"{what}: (top level): must be a mapping of keys to values, not {type(instance).__name__}")
    bad = _bad_number(instance)
    if bad is not None:
        raise ConfigError(f"{what}: {bad}")
    out = copy.deepcopy(dict(instance))
    error = import_jsonschema().exceptions.best_match(_validator_class()(schema).iter_errors(out))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        hint = ""
        if error.validator == "additionalProperties":
            hint = f"; allowed: {sorted(error.schema['properties'])}"
        raise ConfigError(f"{what}: {where}: {error.message}{hint}")
    return out


def validate(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated deep copy of a run config with every default filled in; ``ConfigError`` names the bad key."""
    from eoslab.data import DATASETS
    from eoslab.models import MODELS, PRESETS
    from eoslab.rules import RULES, rule_options

    out = check(config, run_schema())
    _check_kwargs("data", DATASETS[out["data"]["name"]], out["data"], {"dtype"})
    name = out["model"]["name"]
    constructor = MODELS[PRESETS[name]["name"]] if name in PRESETS else MODELS[name]
    shape_args = {"in_dim", "out_dim", "in_channels", "num_classes", "image_size", "P", "flatten_dims", "self"}
    _check_kwargs("model", constructor, {**PRESETS.get(name, {}), **out["model"]}, shape_args)
    try:
        opt = out["optimizer"] = rule_options(out["optimizer"])
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if opt["rule"] == "sgd" and opt["batch_size"] is None:
        raise ConfigError("optimizer.batch_size: required when optimizer.rule is 'sgd'")
    if not RULES[opt["rule"]].stochastic and opt["batch_size"] is not None:
        raise ConfigError(f"optimizer.batch_size: only 'sgd' samples mini-batches, not {opt['rule']!r}")
    m = out["measure"]
    if m["preconditioned"] and opt["schedule"] not in ("constant", "layerwise"):
        raise ConfigError(f"measure.preconditioned: needs schedule 'constant' or 'layerwise', not {opt['schedule']!r}")
    needs_b = m["minibatch"] or m["interaction"] or m["interaction_exact"] or m["noise_kernel"]
    if needs_b and m["batch_size"] is None and opt["batch_size"] is None:
        raise ConfigError("measure.batch_size: required for mini-batch measurements when training is full-batch")
    if m["noise_kernel"] and out["loss"] not in ("half_mse", "sum_mse", "mean_mse"):
        raise ConfigError(f"measure.noise_kernel: defined for the MSE losses, not {out['loss']!r}")
    init = out["init"]
    if (init["file"] or init["from"]) and init["step"] is None:
        raise ConfigError("init.step: required when starting from another run (init.file or init.from)")
    return out


OPERATIONAL = ("name", "checkpoint_every", "flush_every")
"""Keys that change how a run is carried out or labelled, never its numbers: left out of :func:`digest`."""


def check_device(device: str) -> None:
    """``ConfigError`` unless ``device`` (validated, e.g. "cuda:1") exists on this machine (checked before a run,
    not by :func:`validate`: a config for a GPU cluster validates anywhere)."""
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= count:
            raise ConfigError(f"device: {device!r} is not available here ({count} CUDA devices); use device: cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: {device!r} is not available here; use device: cpu")


@functools.cache
def source_digest() -> str:
    """SHA-256 of the eoslab package's sources (every ``.py`` file, by relative path), once per process: what
    decides how a config validates and what a run computes."""
    package = Path(__file__).resolve().parent
    sha = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        sha.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()


def digest(validated: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of an already validated config in canonical JSON (sorted keys), without the
    :data:`OPERATIONAL` keys: checkpointing more often or renaming a run keeps its cached file."""
    numeric = {k: v for k, v in validated.items() if k not in OPERATIONAL}
    canonical = json.dumps(numeric, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def config_hash(config: Mapping[str, Any]) -> str:
    """:func:`digest` of the validated run config (defaults filled, so an explicit default hashes the same)."""
    return digest(validate(config))


def set_key(config: dict[str, Any], dotted: str, value: Any) -> None:
    """config["a"]["b"] = value for ``dotted`` = "a.b" (creating intermediate dicts)."""
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key!r} is not a section")
    node[last] = value


def load_config(
    path: str | Path | None = None,
    overrides: list[str] = (),
    text: str | None = None,
    validator: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read a YAML/JSON config (file ``path`` or string ``text``), apply ``key=value`` overrides, validate
    (with ``validator``, default :func:`validate`: a run config).

    Override values are parsed as YAML: ``optimizer.lr=0.1``, ``measure.layers=true``, ``data.name=digits``.
    """
    where = str(path) if path is not None else "config"
    config = read_yaml(path) if path is not None else parse_yaml(text or "{}", where)
    config = {} if config is None else config  # an empty file: the schema names the missing keys
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: (top level): must be a mapping of keys to values, not {type(config).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        set_key(config, key.strip(), parse_yaml(value, f"override {item!r}"))
    return (validator or validate)(config)


def read_yaml(path: str | Path) -> Any:
    """A YAML file read like a run config (bounded, duplicate keys refused); ``ConfigError`` naming the file."""
    try:
        if Path(path).stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: {Path(path).stat().st_size} bytes; a config has at most {MAX_BYTES}")
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config ({error.__class__.__name__}: {error})") from error
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> Any:
    """YAML (or JSON) ``text`` read by the bounded, duplicate-refusing :class:`_Loader`; a syntax error becomes a
    one-line ``ConfigError`` with the position."""
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters; a config has at most {MAX_BYTES}")
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from error
    except RecursionError as error:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from error
