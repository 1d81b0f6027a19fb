"""F9 (Cohen et al. 2021; Cohen et al. 2022): full-batch momentum holds λmax at its own threshold, RMSProp and Adam
hold the preconditioned sharpness λmax(P⁻¹H) at theirs, and Adam's raw λmax is not at 2/η."""

import pytest

from eoslab.figures.f9_momentum_adaptive import BANDS

RUNS = ["heavy_ball_b05", "heavy_ball_b09", "nesterov_b05", "rmsprop", "adam"]


@pytest.fixture(scope="module")
def runs(load_summary):
    return {r["run"]: r for r in load_summary("f9_momentum_adaptive")["runs"]}


def test_every_rule_ran(runs):
    assert sorted(runs) == sorted(RUNS)
    assert [runs[r]["kind"] for r in RUNS] == ["momentum"] * 3 + ["adaptive"] * 2


@pytest.mark.parametrize("run", RUNS)
def test_the_normalised_sharpness_sits_at_the_rule_threshold_after_onset(runs, run):
    r = runs[run]
    assert not r["diverged"] and r["onset_step"] is not None and r["n_after"] >= 10
    lo, hi = BANDS[r["kind"]]
    assert lo <= r["q_median"] <= hi


def test_thresholds_are_the_papers(runs):
    assert runs["heavy_ball_b05"]["threshold"] == pytest.approx(3.0)
    assert runs["heavy_ball_b09"]["threshold"] == pytest.approx(3.8)
    assert runs["nesterov_b05"]["threshold"] == pytest.approx(1.5)
    assert runs["rmsprop"]["threshold"] == pytest.approx(2.0)
    assert runs["adam"]["threshold"] == pytest.approx(38.0)


def test_adams_raw_sharpness_is_not_at_two_over_eta(runs):
    lo, hi = BANDS["adaptive"]
    assert not lo <= runs["adam"]["raw_median"] <= hi
