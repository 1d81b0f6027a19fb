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
        ("05_layerwise_eos", "f5_layerwise_eos"),
        ("06_divergence_limits", "f6_divergence_limits"),
        ("00_analytic_toys", "f0_analytic_toys"),
        ("07_stochastic_eos", "f7_stochastic_eos"),
        ("08_ngd_sqrt_loss", "f8_ngd_sqrt_loss"),
        ("03_interaction_sharpness", "f3_interaction_sharpness"),
        ("04_lssr", "f4_lssr"),
        ("09_momentum_adaptive", "f9_momentum_adaptive"),
    ],
)
def test_notebook_runs_by_hand(tmp_path, monkeypatch, load_summary, notebook, figure):
    # the DAG's figure job has one thread (Snakemake sets these for `threads: 1`); summation order, and so the last
    # bits of a BLAS reduction, depend on the thread count
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.setenv(var, "1")
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
