"""The notebooks also run by hand: from notebooks/ with their default parameters (here the smoke profile's runs),
they find the repository's run files and write the same numbers as the DAG did."""

import json
from pathlib import Path

import papermill
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "notebook, figure",
    [
        ("01_sharpness_plateaus", "f1_sharpness_plateaus"),
        ("02_progressive_sharpening", "f2_progressive_sharpening"),
        ("03_interaction_sharpness", "f3_interaction_sharpness"),
        ("04_lssr", "f4_lssr"),
    ],
)
def test_notebook_runs_by_hand(tmp_path, load_summary, notebook, figure):
    out = tmp_path / figure
    papermill.execute_notebook(
        ROOT / "notebooks" / f"{notebook}.ipynb",
        tmp_path / f"{notebook}.ipynb",
        parameters={"profile": "smoke", "out": str(out)},
        cwd=ROOT / "notebooks",
        kernel_name="python3",
        progress_bar=False,
    )
    assert out.with_suffix(".pdf").stat().st_size > 0 and out.with_suffix(".png").stat().st_size > 0
    assert json.loads(out.with_suffix(".json").read_text()) == load_summary(figure)
