"""F5 (Fox 2023, Ch. 3): layer-wise EoS on synthetic regression and the step-size schemes of §3.3."""

import pytest


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary("f5_layerwise_eos")


def activation(summary, name):
    (row,) = [r for r in summary["activations"] if r["activation"] == name]
    return row


def scheme(summary, act, name):
    (row,) = [r for r in summary["schemes"] if r["activation"] == act and r["scheme"] == name]
    return row


def test_every_layer_sharpness_is_below_the_full_sharpness(summary):
    """Cauchy interlacing: a diagonal block's λmax ≤ the whole Hessian's, up to the solver tolerance."""
    assert len(summary["activations"]) == 4
    for r in summary["activations"]:
        assert r["interlacing_excess"] <= 2 * summary["solver_tol"], r["run"]
        assert max(r["layer_second_half_median"]) <= r["full_second_half_median"] * (1 + 2 * summary["solver_tol"])


@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_tanh_and_relu_reach_the_edge(summary, name):
    r = activation(summary, name)
    assert r["onset_step"] is not None and r["eta"] == pytest.approx(2 / 25)
    assert 0.95 <= r["median_after_onset"] <= 1.2


def test_linear_converges_below_the_edge(summary):
    r = activation(summary, "linear")
    assert r["onset_step"] is None and r["final"] < 0.95


def test_tanh_output_layer_is_far_flatter_than_the_input_layer(summary):
    r = activation(summary, "tanh")
    assert r["layer_second_half_median"][-1] < 0.1 * r["layer_second_half_median"][0]


def test_sigmoid_inverse_current_sharpness_is_slower_than_inverse_initial_sharpness(summary):
    lam0, lamt = scheme(summary, "sigmoid", "inv_initial"), scheme(summary, "sigmoid", "inv_sharpness")
    assert lam0["last_step"] == lamt["last_step"] and not lam0["diverged"] and not lamt["diverged"]
    assert lamt["final_loss"] > lam0["final_loss"]


def test_sigmoid_scaled_layerwise_steps_keep_the_preconditioned_sharpness_below_2(summary):
    assert scheme(summary, "sigmoid", "layerwise_c2")["preconditioned_max"] < 2.0


def test_the_reported_claims_carry_their_numbers(summary):
    """Reported (not asserted): whether the unscaled layer-wise step's λmax(P^½HP^½) exceeds 2, and when (and, where
    the profile runs tanh's schemes, tanh's two scheme claims)."""
    reported = [c for c in summary["claims"] if not c["asserted"]]
    for act in {r["activation"] for r in summary["schemes"]}:
        c1 = scheme(summary, act, "layerwise")
        (entry,) = [c for c in reported if c["claim"].startswith(f"{act}: 1/λ_(i,t) oversteps")]
        assert entry["value"] == c1["preconditioned_max"] and entry["passed"] == (c1["preconditioned_max"] > 2)
        assert f"first at step {c1['preconditioned_first_above_2']}" in entry["claim"]
