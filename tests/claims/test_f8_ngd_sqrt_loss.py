"""F8 (Arora, Li & Panigrahi): NGD and √L-GD enter the EoS (η_eff·λ₁ ≈ 2) and then lower λ₁; the toy's limits."""

import pytest


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary("f8_ngd_sqrt_loss")


def test_toy_small_eta_limits(summary):
    c = summary["toy"]["check"]
    assert c["eta"] == 0.1
    assert abs(c["x_factor_two_step"] - (1 - c["eta"] ** 2 / 2)) < 1e-3
    assert c["amplitude_max_rel_dev"] < 0.01


def test_toy_limits_degrade_with_eta(summary):
    sweep = summary["toy"]["sweep"]
    largest = max(sweep, key=lambda s: s["eta"])
    assert largest["eta"] == 0.5
    assert largest["x_factors_one_step"] == pytest.approx([0.898, 0.835], abs=1e-3)
    assert abs(largest["x_factor_two_step"] - largest["x_factor_limit"]) > 1e-3


@pytest.mark.parametrize("rule", ["ngd", "sqrt_gd"])
def test_network_enters_the_edge_of_stability(summary, rule):
    (r,) = [r for r in summary["network"] if r["rule"] == rule]
    assert r["entered"]
    assert 1.9 <= r["criterion_median"] <= 2.1


@pytest.mark.parametrize("rule", ["ngd", "sqrt_gd"])
def test_lambda1_decreases_after_entry(summary, rule):
    (r,) = [r for r in summary["network"] if r["rule"] == rule]
    assert r["lambda1_end"] < r["lambda1_entry"]
