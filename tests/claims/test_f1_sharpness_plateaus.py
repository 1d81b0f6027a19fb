"""F1 (Andreyev & Beneventano, Figs. 1–2): which curvature sits at 2/η, along η, b and data.

The claims and their bands live in one place, :func:`eoslab.figures.f1_sharpness_plateaus.claims`; these tests
recompute them from the numbers of the smoke JSON, assert every asserted one, and check that the scan spans the
paper's axes (≥ 4 η over ≥ 4×, b = 8, 32 and GD, ≥ 32 batches per Batch-Sharpness estimate, both settings)."""

import json

import pytest

from eoslab.figures import f1_sharpness_plateaus as f1
from eoslab.papers import PAPERS


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary(f1.FIGURE)


def test_every_asserted_claim_holds(summary):
    failed = [c for c in f1.claims(summary) if c["asserted"] and not c["passed"]]
    assert not failed, failed


def test_json_lists_the_modules_claims_and_cites_the_paper(summary):
    assert summary["paper"] == PAPERS["eoss"]

    def verdicts(claims):
        return [(c["claim"], c["band"], c["passed"], c["asserted"]) for c in claims]

    assert verdicts(summary["claims"]) == verdicts(json.loads(json.dumps(f1.claims(summary), default=float)))
    asserted = {c["claim"] for c in summary["claims"] if c["asserted"]}
    for b in (8, 32):  # asserted unless the module reports why not (f1.REPORTED_EDGE)
        text = f"{f1.PUBLISHED}, b = {b}: Batch Sharpness·η/2 at every η"
        assert (text in asserted) != (float(b) in f1.REPORTED_EDGE)
        assert f"{f1.PUBLISHED}, b = {b}: FullBS < Batch Sharpness < avg MiniBS at every η" in " ".join(asserted)


def test_plateau_runs_span_three_batch_sizes_and_gd(summary):
    rows = [r for r in summary["runs"] if not r["diverged"]]
    assert len(rows) == len(summary["runs"])
    assert len([r for r in rows if r["batch_size"]]) >= 3 and len([r for r in rows if r["rule"] == "gd"]) == 1


# GD in the published setting runs on the default profile only (minutes of CPU per full-batch run)
@pytest.mark.parametrize(
    ("setting", "b"), [("mnist1d", 8.0), ("mnist1d", 32.0), ("digits", 8.0), ("digits", 32.0), ("digits", None)]
)
def test_scan_spans_four_learning_rates_over_a_factor_four(summary, setting, b):
    cells = [c for c in summary["scan_cells"] if c["setting"] == setting and c["batch_size"] == b]
    etas = [c["eta"] for c in cells if c["seeds"]]
    assert len(etas) >= 4 and max(etas) >= 4 * min(etas), etas
    if b:
        assert all(c["batches"] >= 32 for c in cells)
        assert all("batch_sharpness_of_means" in c for c in cells if c["seeds"])


def test_pinned_or_not_is_decided_for_every_sgd_curve(summary):
    slopes = {(s["setting"], s["batch_size"], s["quantity"]) for s in summary["scan_slopes"]}
    for setting in f1.SETTINGS:
        for b in (8.0, 32.0):
            assert {(setting, b, q) for q in f1.SCAN} <= slopes
