"""The command line: ``eoslab config`` and ``eoslab run`` (in process through ``main``, and once as a process)."""

import io
import json
import subprocess
import sys

import pytest
import yaml
from helpers import TINY_RUN

from eoslab.cli import main
from eoslab.config import config_hash, validate
from eoslab.store import open_run

CONFIG = TINY_RUN


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_config_prints_the_validated_config_and_hash(config_file, capsys):
    assert main(["config", str(config_file)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"] == validate(CONFIG)
    assert printed["config_hash"] == config_hash(CONFIG)


def test_set_overrides(config_file, capsys):
    assert main(["config", str(config_file), "--set", "optimizer.lr=2e-2", "--set", "measure.layers=true"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = {**CONFIG, "optimizer": {"lr": 0.02}, "measure": {"every": 1, "layers": True}}
    assert printed["config"] == validate(expected)
    assert printed["config_hash"] == config_hash(expected) != config_hash(CONFIG)


def test_config_from_json_and_stdin(capsys, monkeypatch):
    assert main(["config", "--json", json.dumps(CONFIG)]) == 0
    assert json.loads(capsys.readouterr().out)["config_hash"] == config_hash(CONFIG)
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump(CONFIG)))
    assert main(["config", "-", "--set", "seed=4"]) == 0
    assert json.loads(capsys.readouterr().out)["config_hash"] == config_hash({**CONFIG, "seed": 4})


def test_run_writes_the_file_with_overrides(config_file, tmp_path, capsys):
    out = tmp_path / "results" / "run.nc"
    assert main(["run", str(config_file), "--out", str(out), "--quiet", "--set", "steps=2", "--set", "seed=1"]) == 0
    assert "complete" in capsys.readouterr().err
    ds = open_run(out)
    expected = {**CONFIG, "steps": 2, "seed": 1}
    assert json.loads(ds.attrs["config"]) == validate(expected)
    assert ds.attrs["config_hash"] == config_hash(expected)
    assert list(ds.step.values) == [0, 1, 2] and ds.sizes["iteration"] == 2


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--set", "optimizer.lr=-1"], "optimizer.lr"),
        (["--set", "optimizer.rule=lion"], "optimizer.rule"),
        (["--set", "model.widht=3"], "widht"),
        (["--set", "optimizer.rule=sgd", "--set", "optimizer.batch_size=64"], "optimizer.batch_size"),  # > n
        (["--set", "model.activation=tanhh"], "model"),
        (["--set", "optimizer.lr"], "optimizer.lr"),  # not key=value
    ],
)
def test_bad_config_exits_2_and_writes_nothing(args, key, config_file, tmp_path, capsys):
    out = tmp_path / "out" / "run.nc"
    assert main(["run", str(config_file), "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eoslab: error:") and key in err
    assert not out.exists() and not out.parent.exists()


def test_missing_config(tmp_path, capsys):
    assert main(["config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.startswith("eoslab: error:")
    assert main(["config"]) == 2
    assert "give a config file" in capsys.readouterr().err


def test_exit_status_of_the_process(config_file):
    bad = subprocess.run(
        [sys.executable, "-m", "eoslab.cli", "config", str(config_file), "--set", "dtype=float16"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("eoslab: error:") and "dtype" in bad.stderr
