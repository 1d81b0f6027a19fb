"""F0: the diagonal linear network (EoSS App. C) and Zhu et al.'s scalar network, re-checked from the figure's JSON."""

import pytest


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary("f0_analytic_toys")


def test_diagonal_net_sharpness_equals_the_closed_forms(summary):
    rows = summary["diagonal_net"]
    assert len(rows) >= 50 and {r["full"] for r in rows} == {True, False}
    for r in rows:
        lam_max, lam_mean = max(r["lambda1"], r["lambda2"]), (r["lambda1"] + r["lambda2"]) / 2
        assert r["fullbs"] == pytest.approx(lam_max / 2, rel=1e-9)
        assert r["avg_minibs"] == pytest.approx(lam_mean, rel=1e-9)


def test_diagonal_net_bound(summary):
    """λ_i ≥ 2 (AM–GM), so the largest per-sample sharpness is at most 2·(avg MiniBS) − 2."""
    for r in summary["diagonal_net"]:
        assert min(r["lambda1"], r["lambda2"]) >= 2 - 1e-12
        assert max(r["lambda1"], r["lambda2"]) <= 2 * r["avg_minibs"] - 2 + 1e-12


def test_scalar_net_ends_in_zhu_et_al_band(summary):
    eos = [r for r in summary["scalar_net"] if r["delta"] > 0]
    assert {r["eta"] for r in eos} == {0.1, 0.05, 0.02}
    for r in eos:
        assert 2 / r["eta"] - 20 * r["eta"] / 3 < r["sharpness"] < 2 / r["eta"], r
        assert r["loss"] < 1e-6
        assert abs(r["sharpness_initial"] - 2 / r["eta"]) > 1  # it started away from the edge (below or above)


def test_claim_entries_pass(summary):
    assert all(c["passed"] for c in summary["claims"] if c["asserted"])
