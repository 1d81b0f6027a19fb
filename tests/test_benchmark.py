"""The peer benchmark still runs (quick sizes) and every method, ours included, finds λmax on the small workload."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sharpness_vs_peers.py"


def test_quick_benchmark_runs_and_agrees_with_the_reference():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--workloads", "W3"], capture_output=True, text=True, check=True
    ).stdout
    rows = {
        m.group(1).strip(): float(m.group(2))
        for m in re.finditer(r"^W3\s+(.+?)\s+[\d.]+\s+\d+\s+([\d.e+-]+)$", out, re.M)
    }
    assert any(k.startswith("PyHessian default") for k in rows) and any(k.startswith("SciPy eigsh") for k in rows)
    assert any(k.startswith("eigenthings Lanczos") for k in rows)
    (cold,) = [v for k, v in rows.items() if k.startswith("eoslab sharpness(), the default call")]
    (warm,) = [v for k, v in rows.items() if k.startswith("eoslab default, warm")]
    (strict,) = [v for k, v in rows.items() if k.startswith("eoslab criterion='residual'")]
    assert cold <= 1e-3 and warm <= 1e-3 and strict <= 1e-3
