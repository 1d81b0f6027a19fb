"""`eoslab --help` is instant and plain, `--version` answers, and the DAG runs without an activated environment."""

import re
import subprocess
import sys
from pathlib import Path

import eoslab

ROOT = Path(__file__).resolve().parents[1]


def test_help_does_not_import_torch_and_has_no_markup():
    code = (
        "import sys\nfrom eoslab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO TORCH")
    assert "``" not in out and ":func:" not in out and "eoslab config --template" in out
    version = subprocess.run([sys.executable, "-m", "eoslab.cli", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"eoslab {eoslab.__version__}"


def test_snakefile_calls_tools_through_the_running_interpreter():
    shells = re.findall(r"shell:\n\s+\"(.*?)\"", (ROOT / "Snakefile").read_text())
    assert len(shells) >= 3 and all(s.startswith("{PYTHON} -m ") for s in shells), shells
    # the DAG of the smoke profile, from an environment whose PATH has no .venv: run, figure and report jobs
    snakemake = Path(sys.executable).parent / "snakemake"
    dry = subprocess.run(
        [str(snakemake), "-n", "--forceall", "all", "--config", "profile=smoke", "--quiet", "rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        check=True,
    ).stdout
    assert re.search(r"\breport\s+1\b", dry) and re.search(r"\bfigure\s+\d+\b", dry), dry
