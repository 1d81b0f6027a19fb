"""Run-config schema: defaults, rejection of bad configs with a message naming the key, hashing, YAML loading."""

import copy
import json

import pytest

from eoslab.config import ConfigError, config_hash, load_config, set_key, validate
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
