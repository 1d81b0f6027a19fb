"""F3 (Lee & Jang, Figs. 1, 3, 4): ‖H‖_(S_n) sits at 2/η after GD's onset (‖H‖ above it), SGD's ‖H‖_(S_b) sits at
its IIR bound 2ρ_b/η, the level rises with b, and ‖H‖_(S_n) jumps from ≈0 once ‖H‖ crosses 2/η."""

import itertools

import pytest


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary("f3_interaction_sharpness")


def test_gd_interaction_sharpness_at_the_edge_and_sharpness_above(summary):
    assert len(summary["gd"]) >= 2
    for r in summary["gd"]:
        assert 0.95 <= r["median_directional_after_onset"] <= 1.05, r["run"]
        assert r["median_sharpness_after_onset"] >= 1.0, r["run"]


def test_onset_jump(summary):
    for r in summary["gd"]:
        assert r["directional_before_cross"] < 0.1, r["run"]
        assert r["directional_max_after_cross"] > 0.8, r["run"]
        assert r["window_every"] <= 5, r["run"]  # measured densely around the onset


def test_sgd_interaction_sharpness_at_the_iir_bound(summary):
    rows = summary["sgd"]
    assert [r["batch_size"] for r in rows] == [8, 32, 128]
    for r in rows:
        lo, hi = (0.85, 1.25) if r["batch_size"] < 32 else (0.9, 1.1)
        assert lo <= r["median_ratio"] <= hi, r["run"]
        assert r["n_measurements"] >= 8


def test_level_rises_with_batch_size(summary):
    levels = summary["levels_by_b"]
    assert len(levels) == 4 and all(a < b for a, b in itertools.pairwise(levels)), levels
    assert all(r["median_rho"] < 1 for r in summary["sgd"])


def test_claims_listed(summary):
    assert summary["paper"].startswith("Lee & Jang")
    assert all(c["passed"] for c in summary["claims"] if c["asserted"])
