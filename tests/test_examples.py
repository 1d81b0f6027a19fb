"""The shipped example run configs validate as they are, run (shortened), and measure what their comments say."""

from pathlib import Path

import pytest

from eoslab.cli import main
from eoslab.config import load_config
from eoslab.store import open_run
from eoslab.template import template

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert {p.stem for p in EXAMPLES} >= {"gd_digits", "sgd_minibatch"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(path, tmp_path, capsys):
    config = load_config(path)
    out = tmp_path / "run.nc"
    assert main(["run", str(path), "--out", str(out), "--quiet", "--set", "steps=20", "--set", "measure.every=10"]) == 0
    assert "complete" in capsys.readouterr().err
    ds = open_run(out)
    assert list(ds.step.values) == [0, 10, 20] and (ds["sharpness"].sel(eig=1) > 0).all()
    if config["measure"]["minibatch"]:
        assert ds.sizes["batch_draw"] == config["measure"]["minibatch"]
        assert float(ds["minibatch_sharpness"].mean()) > float(ds["sharpness"].sel(eig=1).mean())  # Jensen
    if config["measure"]["layers"]:
        assert (ds["layer_sharpness"] > 0).all()


def test_template_is_a_valid_commented_config(capsys):
    assert main(["config", "--template"]) == 0
    text = capsys.readouterr().out
    assert text == template()
    config = load_config(text=text)
    assert config["measure"]["minibatch"] == 0 and config["model"] == {"name": "mlp", "width": 64, "depth": 2}
    assert "minibatch: 0  # a COUNT" in text and "layers: false  # a FLAG" in text
    assert "model:  # a mapping" in text  # `model: mlp` is an error: the prose says so
