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


def test_figure_jobs_run_papermill_without_the_rfc3987_grammar(tmp_path):
    import nbformat

    kernel = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernel})
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(x * 7)")]
    src, out = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    code = (  # the module's entry point in this process, then: did jsonschema's import load the grammar package?
        "import runpy, sys\nsys.argv = ['papermill', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('eoslab.notebooks', run_name='__main__')\nexcept SystemExit as e:\n"
        "    assert not e.code, e.code\nprint('LOADED' if 'rfc3987_syntax' in sys.modules else 'NOT LOADED')"
    )
    cmd = [sys.executable, "-c", code, str(src), str(out), "-p", "x", "6", "-k", "python3", "--cwd", str(tmp_path)]
    parent = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert parent.strip().endswith("NOT LOADED")
    assert nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"].strip() == "42"
