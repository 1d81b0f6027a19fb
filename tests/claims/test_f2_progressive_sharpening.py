"""F2 (Andreyev & Beneventano §4, Fig. 3): the two phases of progressive sharpening, on the ηt axis."""

import numpy as np
import pytest

from eoslab.papers import PAPERS


@pytest.fixture(scope="module")
def summary(load_summary):
    return load_summary("f2_progressive_sharpening")


def test_phase1_curves_collapse_on_eta_t(summary):
    assert summary["phase1_max_rel_dev"] <= 0.15


def test_minibs_spread_across_batch_sizes_is_smaller_than_fullbs_spread(summary):
    assert len(summary["batch_sizes"]) >= 3
    assert summary["avg_minibs_spread"] < summary["fullbs_spread"]


def test_phase2_sharpening_is_faster_for_larger_batches(summary):
    order = np.argsort(summary["batch_sizes"])
    slopes = np.asarray(summary["phase2_slope"])[order]
    assert np.all(np.diff(slopes) > 0), slopes


def test_json_cites_the_paper_and_its_claims_agree_with_the_numbers(summary):
    assert summary["paper"] == PAPERS["eoss"]
    assert len(summary["claims"]) == 3 and all(c["passed"] and c["asserted"] for c in summary["claims"])
    assert summary["claims"][0]["value"] == summary["phase1_max_rel_dev"]
    ratio = summary["avg_minibs_spread"] / summary["fullbs_spread"]
    assert summary["claims"][1]["value"] == pytest.approx(ratio)
