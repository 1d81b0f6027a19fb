"""Profiles expand into validated run configs with stable, config-addressed file names."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eoslab.config import ConfigError, config_hash
from eoslab.pipeline import expand_family, figure_runs, load_profile, merge, profile_runs, run_file

BASE = {
    "data": {"name": "digits", "n_train": 64},
    "model": {"name": "mlp", "width": 8, "depth": 1},
    "optimizer": {"rule": "sgd", "lr": 0.1, "batch_size": 8},
    "steps": 10,
}


def test_merge_is_deep_and_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    assert merge(base, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3}


def test_family_runs_and_grid():
    runs = expand_family(
        {
            "base": BASE,
            "runs": {"gd": {"optimizer": {"rule": "gd", "batch_size": None}}},
            "grid": {"optimizer.lr": [0.1, 0.2], "seed": [0, 1]},
        }
    )
    assert list(runs) == ["gd", "lr0.1-seed0", "lr0.1-seed1", "lr0.2-seed0", "lr0.2-seed1"]
    assert runs["gd"]["optimizer"]["rule"] == "gd" and runs["gd"]["optimizer"]["lr"] == 0.1
    assert runs["lr0.2-seed1"]["optimizer"]["lr"] == 0.2 and runs["lr0.2-seed1"]["seed"] == 1
    assert runs["lr0.2-seed1"]["name"] == "lr0.2-seed1"


def test_run_file_is_addressed_by_config_hash():
    (config,) = expand_family({"base": BASE, "runs": {"a": None}}).values()
    assert run_file("fam", "a", config).as_posix() == f"data/runs/fam/a-{config_hash(config)}.nc"
    changed = expand_family({"base": BASE, "runs": {"a": {"optimizer": {"lr": 0.3}}}})["a"]
    assert run_file("fam", "a", changed) != run_file("fam", "a", config)


def test_bad_run_in_a_family_fails_with_the_key():
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        expand_family({"base": BASE, "runs": {"a": {"optimizer": {"lr": -1}}}})


@pytest.mark.parametrize("name", ["smoke", "default", "paper"])
def test_shipped_profiles_validate(name):
    profile = load_profile(name)
    files = profile_runs(profile)
    assert files and all(str(f).startswith("data/runs/") for f in files)
    for figure in profile["figures"]:
        assert all(f in {str(p) for p in files} for fs in figure_runs(profile, figure).values() for f in fs)


def test_profile_errors(tmp_path):
    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "schema.yaml").write_text((Path(__file__).parents[1] / "config" / "schema.yaml").read_text())
    with pytest.raises(FileNotFoundError, match="no profile 'nope'"):
        load_profile("nope", tmp_path)
    (tmp_path / "config" / "bad.yaml").write_text("families: {f: {runs: {a: null}}}\nfigures: {x: {notebook: 01_x}}\n")
    with pytest.raises(ConfigError, match="families"):
        load_profile("bad", tmp_path)
    (tmp_path / "config" / "bad2.yaml").write_text(
        "families: {f: {runs: {a: null}}}\nfigures: {x: {notebook: 01_x, families: [g]}}\n"
    )
    with pytest.raises(ConfigError, match="not defined"):
        load_profile("bad2", tmp_path)


def test_an_unchanged_profile_loads_from_its_memo_without_torch(tmp_path):
    """The DAG's parse (every `snakemake` call, every SLURM job) reads the memo: no validation, no torch import.
    A changed profile is validated again."""
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "config").mkdir()
    for name in ("smoke.yaml", "schema.yaml"):
        shutil.copy(root / "config" / name, tmp_path / "config" / name)
    (tmp_path / "Snakefile").touch()
    first = load_profile("smoke", tmp_path)
    probe = (
        "from eoslab.pipeline import load_profile, profile_runs; import json, sys; "
        f"p = load_profile('smoke', {str(tmp_path)!r}); "
        "print(json.dumps([p, {str(k): v for k, v in profile_runs(p).items()}, 'torch' in sys.modules]))"
    )
    profile, runs, torch_imported = json.loads(subprocess.check_output([sys.executable, "-c", probe]))
    assert profile == json.loads(json.dumps(first)) and not torch_imported
    assert runs == json.loads(json.dumps({str(k): v for k, v in profile_runs(first).items()}))
    text = (tmp_path / "config" / "smoke.yaml").read_text()
    (tmp_path / "config" / "smoke.yaml").write_text(
        text.replace("families:", "families:\n  bad: {base: {steps: -1}}", 1)
    )
    with pytest.raises(ConfigError, match="steps"):
        load_profile("smoke", tmp_path)
