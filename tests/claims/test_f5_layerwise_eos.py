"""F5 (Fox 2023, Ch. 3): layer-wise EoS on synthetic regression and the step-size schemes of §3.3."""

import pytest


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary("f5_layerwise_eos")


def activation(summary, name):
    (row,) = [r for r in summary["activations"] if r["activation"] == name]
    return row


def schemes(summary, act, name):
    """The runs of one scheme, one per seed, in seed order."""
    return sorted(
        (r for r in summary["schemes"] if r["activation"] == act and r["scheme"] == name), key=lambda r: r["seed"]
    )


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


def test_relu_scaled_layerwise_steps_end_below_the_unscaled_ones_at_every_seed(summary):
    """Fox: 1/λ_(i,t) is "too large" and c = 2 fixes it, on the training loss: at every seed the scaled steps'
    final loss is below the unscaled steps' (neither diverges)."""
    c2, c1 = schemes(summary, "relu", "layerwise_c2"), schemes(summary, "relu", "layerwise")
    assert [r["seed"] for r in c2] == [r["seed"] for r in c1] == [0, 1, 2]
    for scaled, unscaled in zip(c2, c1, strict=True):
        assert not scaled["diverged"] and scaled["last_step"] == unscaled["last_step"] == 400
        assert scaled["final_loss"] < unscaled["final_loss"], scaled["run"]


def test_the_reported_claims_carry_their_numbers(summary):
    """Reported (not asserted): 1/λ_t against 1/λ_0 (Fox: much slower; at smoke scale ReLU's 1/λ_0 kills or
    diverges the network instead), and the mechanism, the preconditioned sharpness of the layer-wise steps."""
    reported = [c for c in summary["claims"] if not c["asserted"]]
    lam0, lamt = schemes(summary, "relu", "inv_initial"), schemes(summary, "relu", "inv_sharpness")
    (slower,) = [c for c in reported if c["claim"].startswith("relu: 1/λ_t is much slower")]
    loss = lambda r: float("inf") if r["diverged"] else r["final_loss"]  # noqa: E731
    assert slower["value"] == [loss(t) / loss(z) for t, z in zip(lamt, lam0, strict=True)]
    assert slower["passed"] == all(v > 1 for v in slower["value"])
    for name, label in (("layerwise", "1/λ_(i,t)"), ("layerwise_c2", "1/(2λ_(i,t))")):
        (entry,) = [c for c in reported if c["claim"].startswith(f"relu: mechanism, {label}:")]
        assert entry["value"] == [r["preconditioned_max_after_0"] for r in schemes(summary, "relu", name)]
