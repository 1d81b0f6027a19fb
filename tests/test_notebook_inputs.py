"""Notebooks run by hand: a missing run file says how to make it or switch to smoke; output goes to explore/."""

import os

import pytest

from eoslab.figures import notebook_inputs
from eoslab.pipeline import figure_runs, load_profile


@pytest.fixture(autouse=True)
def keep_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def test_missing_run_file_says_how_to_point_at_smoke():
    with pytest.raises(FileNotFoundError, match=r"1 run file\(s\) of the 'smoke' profile are missing, e\.g\. x\.nc"):
        notebook_inputs("f1_sharpness_plateaus", "smoke", {"plateaus": ["x.nc"]})
    with pytest.raises(FileNotFoundError, match=r"profile = \"smoke\".*make smoke"):
        notebook_inputs("f1_sharpness_plateaus", "default", {"plateaus": ["x.nc"]})


def test_by_hand_writes_to_the_exploration_folder(tmp_path):
    existing = tmp_path / "run.nc"
    existing.touch()
    profile, runs, out = notebook_inputs("f1_sharpness_plateaus", "smoke", {"plateaus": [str(existing)]})
    assert out == "results/explore/smoke/f1_sharpness_plateaus"  # never figures/<profile>/, the DAG's outputs
    assert profile == load_profile("smoke") and runs == {"plateaus": [str(existing)]}
    given = notebook_inputs("f1_sharpness_plateaus", "smoke", {"plateaus": [str(existing)]}, "figures/smoke/f1")[2]
    assert given == "figures/smoke/f1"
    assert figure_runs(profile, "f1_sharpness_plateaus")  # by hand, runs default to the profile's
