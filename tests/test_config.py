"""Run-config schema: defaults, rejection of bad configs with a message naming the key, hashing, YAML loading."""

import copy
import json

import pytest

from eoslab.config import ConfigError, config_hash, load_config, read_yaml, set_key, validate
from eoslab.engine import run

BASE = {
    "data": {"name": "digits", "n_train": 32, "n_test": 8},
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "optimizer": {"lr": 0.1},
    "steps": 3,
}


def with_(dotted: str, value) -> dict:
    config = copy.deepcopy(BASE)
    set_key(config, dotted, value)
    return config


def without(section: str, key: str | None = None) -> dict:
    config = copy.deepcopy(BASE)
    if key is None:
        del config[section]
    else:
        del config[section][key]
    return config


# (config, regex the message must match: the offending key is named)
BAD = {
    "negative lr": (with_("optimizer.lr", -0.1), r"optimizer\.lr"),
    "zero lr": (with_("optimizer.lr", 0), r"optimizer\.lr"),
    "lr as a string": (with_("optimizer.lr", "fast"), r"optimizer\.lr"),
    "missing lr": (without("optimizer", "lr"), r"'lr' is a required property"),
    "unknown rule": (with_("optimizer.rule", "lion"), r"optimizer\.rule.*'lion'"),
    "unknown sampling": (with_("optimizer.sampling", "stratified"), r"optimizer\.sampling"),
    "unknown schedule": (with_("optimizer.schedule", "cosine"), r"optimizer\.schedule"),
    "unknown dataset": (with_("data.name", "imagenet"), r"data\.name.*'imagenet'"),
    "unknown model": (with_("model.name", "transformer"), r"model\.name.*'transformer'"),
    "model key typo": (with_("model.widht", 8), r"model.*'widht'"),
    "data key typo": (with_("data.n_trian", 8), r"data.*'n_trian'"),
    "model shape key set by hand": (with_("model.in_dim", 64), r"model.*'in_dim'"),
    "sgd without batch_size": (with_("optimizer.rule", "sgd"), r"optimizer\.batch_size.*required"),
    "gd with batch_size": (with_("optimizer.batch_size", 8), r"optimizer\.batch_size"),
    "batch_size 0": (with_("optimizer.batch_size", 0), r"optimizer\.batch_size"),
    "unknown top-level key": (with_("stpes", 10), r"'stpes'"),
    "unknown optimizer key": (with_("optimizer.momentum", 0.9), r"'momentum'"),
    "unknown measure key": (with_("measure.sharpnes", True), r"'sharpnes'"),
    "wrong dtype": (with_("dtype", "float16"), r"dtype.*'float16'"),
    "bad device": (with_("device", "gpu0"), r"device.*'gpu0'"),
    "negative steps": (with_("steps", -1), r"steps"),
    "fractional steps": (with_("steps", 2.5), r"steps"),
    "missing steps": (without("steps"), r"'steps' is a required property"),
    "missing data": (without("data"), r"data: 'name' is a required property"),
    "measure.every 0": (with_("measure.every", 0), r"measure\.every"),
    "measure.top_k 0": (with_("measure.top_k", 0), r"measure\.top_k"),
    "measure.tol negative": (with_("measure.tol", -1e-3), r"measure\.tol"),
    "seed negative": (with_("seed", -3), r"seed"),
    "seed boolean": (with_("seed", True), r"seed"),
    "minibatch measures, full batch": (with_("measure.minibatch", 4), r"measure\.batch_size"),
    "interaction, full batch": (with_("measure.interaction_exact", True), r"measure\.batch_size"),
    "checkpoint_every negative": (with_("checkpoint_every", -1), r"checkpoint_every"),
    "data not a mapping": (with_("data", "digits"), r"data"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_is_rejected_naming_the_key(name):
    config, pattern = BAD[name]
    with pytest.raises(ConfigError, match=pattern):
        validate(config)


@pytest.mark.parametrize(
    ("dotted", "value", "pattern"),
    [
        ("loss", "cross_entropy", r"loss: cross_entropy needs a classification dataset"),
        ("model.activation", "tanhh", r"model: .*'tanhh'"),
        ("data.n_train", 5000, r"data: n_train=5000"),
    ],
)
def test_bad_values_found_when_building_are_config_errors(dotted, value, pattern, tmp_path):
    config = with_(dotted, value)
    if dotted == "loss":
        config["data"] = {"name": "gaussian_linear_regression", "D": 4, "P": 3}
        config["model"] = {"name": "linear_regression"}
    out = tmp_path / "run.nc"
    with pytest.raises(ConfigError, match=pattern):
        run(config, out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"optimizer": {"lr": 0.1, "rule": "sgd", "batch_size": 33}}, r"optimizer\.batch_size: 33 exceeds the 32"),
        ({"measure": {"minibatch": 2, "batch_size": 40}}, r"measure\.batch_size: 40 exceeds the 32"),
        ({"measure": {"interaction": 2, "batch_size": 8, "subset": 4}}, r"measure\.batch_size: 8 exceeds the 4"),
    ],
)
def test_batch_larger_than_data_is_rejected_before_training(changes, pattern, tmp_path, monkeypatch):
    import eoslab.engine

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(eoslab.engine, "grad_and_value", no_training)
    out = tmp_path / "run.nc"
    with pytest.raises(ConfigError, match=pattern):
        run({**BASE, **changes}, out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_defaults_are_filled_and_input_is_not_mutated():
    original = copy.deepcopy(BASE)
    config = validate(BASE)
    assert BASE == original
    assert config["seed"] == 0 and config["dtype"] == "float32" and config["device"] == "cpu"
    assert config["loss"] == "half_mse"
    assert config["optimizer"] == {
        "lr": 0.1,
        "rule": "gd",
        "batch_size": None,
        "sampling": "subset",
        "schedule": "constant",
        "loss_offset": 0.0,
        "eps": 1e-12,
    }
    assert config["measure"]["every"] == 100 and config["measure"]["sharpness"] is True
    assert config["measure"]["minibatch"] == 0 and config["measure"]["batch_size"] is None
    assert config["divergence"] == {"max_loss": 1e8}
    assert config["checkpoint_every"] == 1000 and config["flush_every"] == 20
    assert validate(config) == config  # idempotent


def test_good_configs_pass():
    validate(with_("model.name", "fox_mlp"))  # a preset
    validate({**with_("model.name", "fox_mlp"), "model": {"name": "fox_mlp", "activation": "relu"}})
    validate({**BASE, "optimizer": {"lr": 0.1, "rule": "sgd", "batch_size": 8, "sampling": "iid"}})
    validate({**BASE, "measure": {"minibatch": 4, "batch_size": 8}, "device": "cuda:1"})
    validate({**BASE, "divergence": {"max_loss": None}, "steps": 0})


def test_config_hash():
    h = config_hash(BASE)
    assert len(h) == 12 and int(h, 16) >= 0
    # canonical: key order and explicitly written defaults do not matter
    reordered = json.loads(json.dumps(dict(reversed(list(BASE.items())))))
    assert config_hash(reordered) == h
    assert config_hash(validate(BASE)) == h
    assert config_hash(with_("seed", 0)) == h
    # any real change does
    assert config_hash(with_("optimizer.lr", 0.2)) != h
    assert config_hash(with_("seed", 1)) != h
    assert config_hash(with_("measure.layers", True)) != h
    with pytest.raises(ConfigError):
        config_hash(with_("optimizer.lr", -1))


def test_load_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "data: {name: digits, n_train: 32}\nmodel: {name: mlp, width: 4, depth: 1}\n"
        "optimizer:\n  lr: 2e-2\n  rule: sgd\n  batch_size: 8\nsteps: 10\n"
    )
    config = load_config(path)
    assert config["optimizer"]["lr"] == 0.02  # YAML 1.2 float, not the string '2e-2'
    config = load_config(path, overrides=["optimizer.lr=1e-3", "measure.layers=true", "optimizer.sampling=iid"])
    assert config["optimizer"]["lr"] == 0.001 and config["measure"]["layers"] is True
    assert config["optimizer"]["sampling"] == "iid"
    assert load_config(text=path.read_text()) == load_config(path)
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, overrides=["optimizer.lr"])
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        load_config(path, overrides=["optimizer.lr=-1"])
    with pytest.raises(ConfigError, match=r"'steps' is not a section"):
        load_config(path, overrides=["steps.x=1"])
    with pytest.raises(ConfigError, match=r"'extra'"):
        load_config(path, overrides=["model.extra=1"])


# ------------------------------------------------------------------------------- the bounded, strict YAML loader

YAML_REFUSED = {
    "recursive alias in a mapping": ("a: &x {b: *x}\n", r"at line 1, column 11: recursive alias \*x"),
    "recursive alias in a list": ("a: &x [1, *x]\n", r"recursive alias \*x"),
    "alias bomb": (
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)),
        r"expands to more than 100000 values",
    ),
    "too many aliases": ("a: &a 1\nb: [" + ", ".join(["*a"] * 201) + "]\n", r"more than 200 aliases"),
    "duplicate top-level key": ("steps: 3\nsteps: 4\n", r"at line 2, column 1: duplicate key 'steps'"),
    "duplicate nested key": ("optimizer: {lr: 0.1, lr: 50.0}\n", r"duplicate key 'lr'"),
    "nested too deeply": ("[" * 5000 + "]" * 5000, r"nested too deeply"),
    "too long": ("#" * (1 << 20) + "x\n", r"at most 1048576"),
}


@pytest.mark.parametrize("case", list(YAML_REFUSED))
def test_yaml_loader_refuses_bombs_recursion_and_duplicates_in_one_line(case):
    text, message = YAML_REFUSED[case]
    with pytest.raises(ConfigError, match=message) as error:
        load_config(text=text)
    assert str(error.value).startswith("config: ") and "\n" not in str(error.value)


def test_yaml_loader_keeps_anchors_merge_keys_and_the_profiles(tmp_path):
    import yaml

    from eoslab.pipeline import repo_root

    (tmp_path / "c.yaml").write_text("base: &b {lr: 0.1, rule: gd}\noptimizer: {<<: *b, lr: 0.2}\n")
    assert read_yaml(tmp_path / "c.yaml") == {"base": {"lr": 0.1, "rule": "gd"}, "optimizer": {"lr": 0.2, "rule": "gd"}}
    for path in sorted((repo_root() / "config").glob("*.yaml")):
        assert read_yaml(path) == yaml.safe_load(path.read_text()), path.name


def test_a_profile_with_a_duplicate_key_is_refused(tmp_path):
    from eoslab.pipeline import load_profile, repo_root

    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "schema.yaml").write_text((repo_root() / "config" / "schema.yaml").read_text())
    (tmp_path / "config" / "dup.yaml").write_text("families: {}\nfigures: {}\nfamilies: {}\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: not valid YAML at line 3, column 1: duplicate key 'families'"):
        load_profile("dup", tmp_path)


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("data.n_train", True, r"data\.n_train: True is not of type int"),
        ("model.width", True, r"model\.width: True is not of type int"),
        ("model.depth", False, r"model\.depth: False is not of type int"),
        ("steps", True, r"steps: True is not of type 'integer'"),
        ("optimizer.lr", True, r"optimizer\.lr: True is not of type 'number'"),
        ("optimizer.lr", 10**400, r"optimizer\.lr: 100000000000\.\.\. \(401 digits\) is out of range"),
        ("measure.tol", -(10**30), r"measure\.tol: -10000000000\.\.\. \(31 digits\) is out of range"),
        ("seed", 2**63, r"seed: .* is out of range"),
    ],
)
def test_booleans_and_huge_integers_are_refused_naming_the_key(dotted, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(with_(dotted, value))
