"""The README stands alone: its Python examples run in order and print sensible numbers, it cites papers rather
than files outside the repository, and its two commands are what CI runs."""

import re
from pathlib import Path

import pytest

from eoslab.papers import PAPERS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 3  # the library example, its data loader and operators, the tracker in a plain GD loop
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    lam = float(re.search(r"λmax=([\d.]+)", out).group(1))
    mini = float(re.search(r"avgMiniBS=([\d.]+)", out).group(1))
    assert lam > 0 and mini >= lam  # Jensen: E_B λmax(H_B) ≥ λmax(H) (up to sampling error, here by a margin)
    assert re.search(r"^Estimate\([\d.]+ ± [\d.]+ \(se\), m=20\)$", out, re.M)
    assert re.search(r"^InteractionSharpness\(‖H‖_S=[\d.]+ ± 0, ρ=[\d.]+ ± 0,", out, re.M)
    assert float(re.search(r"loader λmax=([\d.]+)", out).group(1)) == pytest.approx(lam, abs=1e-3)
    tracked = re.findall(r"^t=(\d+) \{'FullBS': ([\d.]+), 'avgMiniBS': ([\d.]+)\} HVPs (\d+) \{'0'", out, re.M)
    assert [int(t) for t, *_ in tracked] == [0, 30, 60, 90, 120]
    assert all(float(mini) >= float(full) > 0 for _, full, mini, _ in tracked)
    assert float(tracked[0][1]) < 0.5 and all(0.9 < float(full) < 1.15 for _, full, *_ in tracked[1:])  # λ·η/2 → 1
    assert int(tracked[-1][3]) < int(tracked[0][3])  # warm starts need fewer Hessian-vector products


def test_readme_stands_alone():
    assert "../shared" not in README and not re.search(r"seed 00\d", README) and "paper-spec" not in README
    for key in ("cohen", "eoss", "iir", "fox", "stochastic_eos", "arora"):
        assert PAPERS[key].split("”")[0] + "”" in README.replace("\n  ", " "), key
    for path in re.findall(r"`((?:examples|docs|notebooks|benchmarks)/[\w./-]+\.\w+)`", README):
        assert (ROOT / path).exists(), path


def test_ci_runs_the_readme_test_command():
    assert "make test" in README.split("## Sharpness")[0]
    assert "make figures" in README.split("## Sharpness")[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
