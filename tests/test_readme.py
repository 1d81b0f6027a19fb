"""The README's library example runs and prints sensible numbers; its two commands are what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_example_runs(capsys):
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    exec(compile(block, "README.md", "exec"), {})
    out = capsys.readouterr().out
    lam = float(re.search(r"λmax=([\d.]+)", out).group(1))
    mini = float(re.search(r"avgMiniBS=([\d.]+)", out).group(1))
    assert lam > 0 and mini >= lam  # Jensen: E_B λmax(H_B) ≥ λmax(H) (up to sampling error, here by a margin)


def test_ci_runs_the_readme_test_command():
    assert "make test" in README.split("## Sharpness")[0]
    assert "make figures" in README.split("## Sharpness")[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
