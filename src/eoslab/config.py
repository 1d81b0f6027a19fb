"""Run configs: a JSON schema with defaults, validation with messages that name the key, and a content hash.

A run config is a nested dict (YAML or JSON on disk). ``validate`` fills defaults and raises ``ConfigError``
before anything is computed; ``config_hash`` ties a cached result to the settings that change its numbers
(everything but the operational keys :data:`OPERATIONAL`).
"""

import copy
import hashlib
import inspect
import json
import math
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from eoslab.data import DATASETS
from eoslab.losses import LOSSES
from eoslab.models import MODELS, PRESETS
from eoslab.rules import RULES, key_schema, rule_options

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


SCHEMA: dict[str, Any] = _obj(
    {
        "name": {"type": "string", "default": "run"},
        "seed": {**_count, "maximum": 2**32 - 1, "default": 0, "description": "initialisation and sampling seed"},
        "dtype": {"enum": ["float32", "float64"], "default": "float32"},
        "device": {"type": "string", "pattern": r"^(cpu|cuda(:\d+)?|mps)$", "default": "cpu"},
        "data": _obj({"name": {"enum": sorted(DATASETS)}}, ("name",), extra=True),
        "model": _obj({"name": {"enum": sorted(MODELS) + sorted(PRESETS)}}, ("name",), extra=True),
        "loss": {"enum": sorted(LOSSES), "default": "half_mse"},
        "optimizer": _obj(
            {
                "rule": {"enum": list(RULES), "default": "gd", "description": "the update rule"},
                "lr": _positive,
                "batch_size": {"type": ["integer", "null"], "minimum": 1, "default": None},
                "sampling": {"enum": list(SAMPLING), "default": "subset"},
                "schedule": {"enum": list(SCHEDULES), "default": "constant"},
                "loss_offset": {"type": "number", "default": 0.0, "description": "L* in GD on sqrt(L - L*)"},
                "eps": {"type": "number", "minimum": 0, "default": 1e-12},
                **key_schema(),
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


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but reading ``1e-3`` as a float as YAML 1.2 does (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


class ConfigError(ValueError):
    """An invalid run config; the message names the key."""


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills ``default`` values into the instance (the jsonschema FAQ recipe)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        for key, sub in properties.items():
            if "default" in sub and isinstance(instance, dict):
                instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


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
        if types and not isinstance(value, types):
            names = " or ".join(sorted({t.__name__ for t in types}))
            raise ConfigError(f"{section}.{key}: {value!r} is not of type {names}")


def _plain_types(hint: Any) -> tuple[type, ...] | None:
    """The types a plain annotation (int, float, str, bool, None and their unions) admits, else None."""
    args = typing.get_args(hint) or (hint,)
    if not all(a in (int, float, str, bool, type(None)) for a in args):
        return None
    return tuple({*args, *((int,) if float in args else ())})


def _non_finite(node: Any, path: str = "") -> str | None:
    """The dotted key of the first NaN or infinite number in ``node`` (YAML's .nan/.inf), or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return path or "(top level)"
    items = node.items() if isinstance(node, Mapping) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        found = _non_finite(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def check(instance: Mapping[str, Any], schema: Mapping[str, Any], what: str = "config") -> dict[str, Any]:
    """A deep copy of ``instance`` with the schema's defaults filled in, or ``ConfigError`` naming the bad key."""
    if not isinstance(instance, Mapping):
        raise ConfigError(f"{what}: (top level): must be a mapping of keys to values, not {type(instance).__name__}")
    bad = _non_finite(instance)
    if bad is not None:
        raise ConfigError(f"{what}: {bad}: must be a finite number (NaN and infinity are not allowed)")
    out = copy.deepcopy(dict(instance))
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(out))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        hint = ""
        if error.validator == "additionalProperties":
            hint = f"; allowed: {sorted(error.schema['properties'])}"
        raise ConfigError(f"{what}: {where}: {error.message}{hint}")
    return out


def validate(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated deep copy of a run config with every default filled in; ``ConfigError`` names the bad key."""
    out = check(config, SCHEMA)
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
    try:
        text = Path(path).read_text() if path is not None else text
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: cannot read the config ({error.__class__.__name__}: {error})") from error
    config = _parse(text or "{}", where)
    config = {} if config is None else config  # an empty file: the schema names the missing keys
    if not isinstance(config, dict):
        raise ConfigError(f"{where}: (top level): must be a mapping of keys to values, not {type(config).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        set_key(config, key.strip(), _parse(value, f"override {item!r}"))
    return (validator or validate)(config)


def _parse(text: str, where: str) -> Any:
    """YAML (or JSON) ``text``; a syntax error becomes a one-line ``ConfigError`` with the position."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML{at}: {problem}") from error
