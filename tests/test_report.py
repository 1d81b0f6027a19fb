"""The report page lists every figure, its paper and each claim with value, band and verdict."""

import json

from eoslab.report import band, build, deviations, fmt


def write(tmp_path, name, summary):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(summary))
    return path


def test_page_lists_figures_papers_claims_and_links(tmp_path):
    good = write(
        tmp_path,
        "f1_x",
        {
            "figure": "f1_x",
            "paper": "A. Author, “Title”, 2024, arXiv:2412.20553",
            "claims": [
                {"claim": "GD at the edge", "value": 1.0312, "band": [0.95, 1.15], "passed": True, "asserted": True},
                {
                    "claim": "BS at the edge",
                    "value": [0.61, 0.7],
                    "band": [0.85, None],
                    "passed": False,
                    "asserted": False,
                },
            ],
            "deviations": ["b = 8 sits at 0.84 · 2/η"],
        },
    )
    bad = write(
        tmp_path,
        "f2_y",
        {"figure": "f2_y", "claims": [{"claim": "slope", "value": 3, "band": None, "passed": False, "asserted": True}]},
    )
    page = build([good, bad], "smoke", tmp_path)
    assert page.count("<h2 ") == 2 and '<img src="f1_x.png"' in page and '<img src="f2_y.png"' in page
    assert "arXiv:2412.20553" in page and "(no paper in the JSON)" in page
    assert "<td class='num'>1.031</td><td class='num'>[0.95, 1.15]</td><td><span class=\"pass\">pass</span>" in page
    assert "0.61, 0.7" in page and "≥ 0.85" in page and "FAIL (reported, not asserted)" in page
    assert "1/1 asserted pass" in page and "0/1 asserted pass" in page
    assert '<a href="../../results/smoke/notebooks/f1_x.ipynb">executed notebook</a>' in page
    assert "b = 8 sits at 0.84 · 2/η" in page


def test_formatting_and_doc_deviations(tmp_path):
    assert fmt(None) == "–" and fmt(0.123456) == "0.1235" and fmt([1, 2.5]) == "1, 2.5"
    assert band(None) == "–" and band([None, 0.7]) == "≤ 0.7" and band([1, 2]) == "[1, 2]"
    doc = tmp_path / "f.md"
    doc.write_text("# F\n\ntext\n\n## Deviations from the paper\n\nfirst\n\nsecond\n\n## Next\n\nnot this\n")
    assert deviations({"deviations": ["json"]}, doc) == ["json", "first", "second"]
