"""Profiles expand into validated run configs with stable, config-addressed file names."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import eoslab.pipeline
from eoslab.config import ConfigError, config_hash
from eoslab.pipeline import (
    NOTEBOOK_ROLES,
    batch_jobs,
    batch_runtime_request,
    batched_families,
    check_batch,
    check_roles,
    expand_family,
    family_pattern,
    family_runs,
    figure_roles,
    figure_runs,
    load_profile,
    merge,
    profile_runs,
    run_file,
)
from eoslab.rehearsal import check_figure, shrink_family, shrink_grid

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


PROFILES = ["smoke", "default", "paper", "rehearsal"]


@pytest.mark.parametrize("name", PROFILES)
def test_shipped_profiles_validate(name):
    profile = load_profile(name)
    files = profile_runs(profile)
    assert files and all(str(f).startswith("data/runs/") for f in files)
    for figure in profile["figures"]:
        assert all(f in {str(p) for p in files} for fs in figure_runs(profile, figure).values() for f in fs)


@pytest.mark.parametrize("name", PROFILES)
def test_every_figure_gets_exactly_the_roles_its_notebook_reads(name):
    """The figure-input contract: the keys of a notebook's ``runs`` are its declared roles, whatever the families
    that fill them are called (paper: the CNN figure reads family plateaus_cnn as role plateaus)."""
    profile = load_profile(name)
    for figure, spec in profile["figures"].items():
        required, optional = NOTEBOOK_ROLES[spec["notebook"]]
        roles = set(figure_runs(profile, figure))
        assert set(required) <= roles <= {*required, *optional}, figure
    if name in ("paper", "rehearsal"):
        assert figure_roles(profile["figures"]["f1_sharpness_plateaus_cnn"]) == {"plateaus": ["plateaus_cnn"]}
    if name in ("smoke", "default"):  # one role read from several families: the η scan's, one family per η
        scans = figure_roles(profile["figures"]["f1_sharpness_plateaus"])["scan_mnist1d"]
        files = figure_runs(profile, "f1_sharpness_plateaus")["scan_mnist1d"]
        assert len(scans) >= 4 and len(files) == sum(len(family_runs(profile, f)) for f in scans)


def test_the_rehearsal_is_the_paper_profile_shrunk():
    paper, rehearsal = load_profile("paper"), load_profile("rehearsal")
    assert (
        rehearsal["figures"].keys() == paper["figures"].keys()
        and rehearsal["families"].keys() == paper["families"].keys()
    )
    assert {f: s["notebook"] for f, s in rehearsal["figures"].items()} == {
        f: s["notebook"] for f, s in paper["figures"].items()
    }
    assert {f: s["command"] for f, s in rehearsal["families"].items()} == {
        f: s["command"] for f, s in paper["families"].items()
    }
    assert all(c["device"] == "cpu" and c["steps"] <= 16 for c in profile_runs(rehearsal).values())
    (config,) = [c for p, c in profile_runs(rehearsal).items() if p.parent.name == "ngd_sqrt_loss" and "sqrt" in p.name]
    assert config["init"]["step"] == 16 and config["init"]["file"].startswith("data/runs/ngd_pretrain/gd-")


def test_shrink_rules():
    assert shrink_grid({"optimizer.batch_size": [8, 16, 64, 4096], "model.activation": ["relu", "tanh", "linear"]}) == {
        "optimizer.batch_size": [8, 32],
        "model.activation": ["relu", "tanh", "linear"],
    }
    family = {
        "base": {
            "device": "cuda",
            "data": {"name": "cifar10", "root": "data/cifar10", "n_train": 5000},
            "steps": 5000,
            "model": {"name": "mlp", "width": 512, "depth": 1},
            "save_params": [5000],
        },
        "runs": {"w25": {"model": {"width": 25}}, "w50": {"model": {"width": 50}}, "d3": {"model": {"depth": 3}}},
        "seeds": [0, 1, 2],
        "resources": {"runtime": 2880},
    }
    out = shrink_family(family)
    assert out["base"]["data"] == {"name": "cifar10", "root": "data/rehearsal/cifar10", "n_train": 40}
    assert out["base"]["device"] == "cpu" and out["base"]["steps"] == 16 and out["base"]["save_params"] == [16]
    assert out["base"]["measure"] == {"max_iter": 8, "tol": 1e-2}  # the solver's defaults, shrunk
    assert out["runs"] == {"w25": {"model": {"width": 8}}, "d3": {"model": {"depth": 2}}}  # w50 = w25 once shrunk
    assert out["seeds"] == [0, 2] and "resources" not in out


def test_seeds_repeat_every_run():
    runs = expand_family({"base": BASE, "runs": {"a": None}, "grid": {"optimizer.lr": [0.1]}, "seeds": [3, 4]})
    assert list(runs) == ["a-seed3", "a-seed4", "lr0.1-seed3", "lr0.1-seed4"]
    assert [r["seed"] for r in runs.values()] == [3, 4, 3, 4]


ROLE_PROFILE = {
    "families": {"a": {"runs": {"x": None}}, "b": {"runs": {"x": None}}},
    "figures": {"f": {"notebook": "01_sharpness_plateaus", "families": {"plateaus": "a"}}},
}


@pytest.mark.parametrize(
    ("figures", "message"),
    [
        (
            {"f": {"notebook": "01_sharpness_plateaus", "families": ["a"]}},
            r"p\.yaml: figures\.f\.families: notebook 01_sharpness_plateaus reads the roles \['plateaus'\] "
            r"\(optional \['scan_mnist1d', 'scan_digits'\]\): missing \['plateaus'\], unknown \['a'\]; map a role to a "
            r"family with \{role: family\}",
        ),
        (
            {"f": {"notebook": "09_new", "families": ["a"]}},
            r"p\.yaml: figures\.f\.notebook: '09_new' declares no roles \(add it to eoslab\.pipeline\.NOTEBOOK_ROLES\)",
        ),
        (
            {"f": {"notebook": "01_sharpness_plateaus", "families": {"plateaus": "c"}}},
            r"p\.yaml: figures\.f\.families: \['c'\] are not defined under families",
        ),
        (
            {"f": {"notebook": "01_sharpness_plateaus", "families": {"plateaus": "a"}}},
            r"p\.yaml: families: \['b'\] are read by no figure",
        ),
    ],
)
def test_role_contract_errors_name_the_figure(figures, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        check_roles(ROLE_PROFILE | {"figures": figures}, "p.yaml")


def test_a_source_family_counts_as_read():
    profile = {
        "families": {"a": {"runs": {"x": {"init": {"from": "pre/gd", "step": 1}}}}, "pre": {"runs": {"gd": None}}},
        "figures": {"f": {"notebook": "01_sharpness_plateaus", "families": {"plateaus": "a"}}},
    }
    check_roles(profile)


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


def test_rehearsal_check_flags_missing_files_and_claims_without_a_finite_number(tmp_path):
    prefix = tmp_path / "fig"
    assert check_figure(prefix) == [f"{prefix}.{ext}: missing or empty" for ext in ("pdf", "png", "json")]
    for ext in ("pdf", "png"):
        Path(f"{prefix}.{ext}").write_bytes(b"x")
    Path(f"{prefix}.json").write_text('{"claims": [{"claim": "a", "value": [NaN, null], "passed": false}]}')
    assert check_figure(prefix) == [f"{prefix}.json: no claim has a finite number"]
    Path(f"{prefix}.json").write_text('{"claims": [{"claim": "a", "value": [NaN, 0.5], "passed": true}]}')
    assert check_figure(prefix) == []


BATCH_PROFILE = {
    "families": {
        "pre": {"command": "run", "base": {**BASE, "save_params": [10]}, "runs": {"gd": None}},
        "scan_lr0.1": {
            "command": "run",
            "base": BASE,
            "runs": {"warm": {"init": {"from": "pre/gd", "step": 10}}},
            "grid": {"optimizer.lr": [0.1, 0.2]},
        },
    },
    "batch": ["scan_lr0.1"],
}


def test_a_batched_family_is_one_job_making_all_its_files():
    """The batch job of a family: every file of it as outputs, the other families' files its runs start from as
    inputs, and `eoslab batch` items that are the family's validated configs; the per-file run rule matches every
    other family's files and none of its."""
    jobs = batch_jobs(BATCH_PROFILE)
    runs = family_runs(BATCH_PROFILE, "scan_lr0.1")
    files = [str(run_file("scan_lr0.1", name, config)) for name, config in runs.items()]
    (pre,) = [str(run_file("pre", name, config)) for name, config in family_runs(BATCH_PROFILE, "pre").items()]
    assert list(jobs) == ["scan_lr0.1"] and len(files) == 3
    assert jobs["scan_lr0.1"] == {
        "files": files,
        "inputs": [pre],
        "items": [{"command": "run", "config": c, "out": f} for f, c in zip(files, runs.values(), strict=True)],
    }
    rule = re.compile(rf"data/runs/(?P<family>{family_pattern(jobs)})/(?P<run>.+)\.nc")  # as Snakemake matches
    assert rule.fullmatch(pre) and not any(rule.fullmatch(f) for f in files)
    assert rule.fullmatch(files[0].replace("scan_lr0.1", "scan_lr0x1"))  # the dot is escaped
    assert batch_jobs(BATCH_PROFILE | {"batch": "all"}).keys() == {"pre", "scan_lr0.1"}
    assert batch_jobs({k: v for k, v in BATCH_PROFILE.items() if k != "batch"}) == {}


def test_a_batch_too_long_for_a_command_line_is_refused(monkeypatch):
    monkeypatch.setattr(eoslab.pipeline, "MAX_BATCH_BYTES", 1000)
    with pytest.raises(ConfigError, match=r"^batch: scan_lr0\.1: its 3 runs are \d+ bytes of JSON"):
        batch_jobs(BATCH_PROFILE)


def test_a_batch_job_asks_for_its_runs_time_and_the_wrappers_once(tmp_path):
    runs = {str(tmp_path / f"{k}.nc"): 1000 for k in range(3)}
    assert batch_runtime_request(10, runs) == 38 + 5 + 2  # ceil(1.25 × 30) + SIGNAL_LEAD_MIN + job wrapper


def test_batch_names_defined_families(tmp_path):
    check_batch(BATCH_PROFILE, "p.yaml")
    with pytest.raises(ConfigError, match=r"^p\.yaml: batch: 'scan_lr0\.2' is not defined under families$"):
        check_batch(BATCH_PROFILE | {"batch": ["scan_lr0.1", "scan_lr0.2"]}, "p.yaml")
    (tmp_path / "Snakefile").write_text("")
    (tmp_path / "config").mkdir()
    shutil.copy(Path(__file__).parents[1] / "config" / "schema.yaml", tmp_path / "config")
    profile = (
        "families: {f: {runs: {a: null}}}\nfigures: {x: {notebook: 01_sharpness_plateaus, families: {plateaus: f}}}\n"
    )
    for batch, message in [("[f, g]", r"batch: 'g' is not defined under families"), ("al", r"batch: 'al' is not")]:
        (tmp_path / "config" / "p.yaml").write_text(f"{profile}batch: {batch}\n")
        with pytest.raises(ConfigError, match=rf"^p\.yaml: {message}"):
            load_profile("p", tmp_path)


@pytest.mark.parametrize("name", ["smoke", "rehearsal"])
def test_shipped_batches_cover_their_families_files_once(name):
    profile = load_profile(name)
    assert name != "rehearsal" or profile["batch"] == "all"  # kept from config/rehearsal.yaml by shrink_profile
    jobs = batch_jobs(profile)
    assert list(jobs) == batched_families(profile) and len(jobs) >= 12
    batched = [f for job in jobs.values() for f in job["files"]]
    assert len(batched) == len(set(batched))
    assert set(batched) == {str(p) for p in profile_runs(profile) if p.parent.name in jobs}
