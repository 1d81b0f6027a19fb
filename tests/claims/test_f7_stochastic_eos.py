"""F7 (Agarwala & Pennington, Fig. 1): the stochastic edge η_c where 𝒦 = 1, checked by ρ(A + B) and Monte Carlo."""

import numpy as np
import pytest

SCHEMES = ["without_replacement", "with_replacement"]


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary("f7_stochastic_eos")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_kernel_norm_one_is_rho_one(summary, scheme):
    s = summary["linear_regression"][scheme]
    assert abs(s["K_at_eta_c"] - 1) < 1e-6
    assert abs(s["rho_at_eta_c"] - 1) < 1e-6


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sgd_converges_below_and_diverges_above_eta_c(summary, scheme):
    linear = summary["linear_regression"]
    loss = np.asarray(linear[scheme]["final_loss"])
    assert loss.shape == (linear["seeds"], len(linear["factors"])) and linear["seeds"] >= 3
    assert linear["steps"] >= 10_000
    factors = np.asarray(linear["factors"])
    assert np.all(loss[:, factors == 0.95] < 1e-6)
    assert np.all(loss[:, factors == 1.05] >= 10)
    assert np.all(loss[:, factors < 1] < 1e-6) and np.all(loss[:, factors > 1] >= 10)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_kernel_norm_increases_with_eta_and_the_edge_is_far_below_two_over_lambda(summary, scheme):
    s = summary["linear_regression"][scheme]
    assert np.all(np.diff(s["K_grid"]) > 0)
    assert s["eta_c_over_edge"] < 1
    assert 0.9 < s["exact_eta_c"] / s["eta_c"] < 1.1  # the diagonal approximation is close to the exact operator


def test_replacement_lowers_eta_c(summary):
    lr = summary["linear_regression"]
    assert lr["with_replacement"]["eta_c"] < lr["without_replacement"]["eta_c"]


def test_network_kernel_norm_was_tracked(summary):
    rows = summary["network"]
    assert len(rows) >= 4
    for r in rows:
        assert r["K_initial"] > 0 and np.isfinite(r["K_max"])
