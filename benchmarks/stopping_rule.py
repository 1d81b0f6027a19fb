"""Does the default call meet its own tolerance? λmax by ``eoslab.top_eigenvalues`` at tol 1e-3, by the default
residual rule and by the gap ("eigenvalue") rule, against a float64 reference, over draws of the model, the data
and the start vector.

    OPENBLAS_NUM_THREADS=1 python benchmarks/stopping_rule.py [--workloads W1,W2,W3] [--seeds 0,1,2,3,4] [--quick]

The workloads of ``sharpness_vs_peers.py`` with every seed moved together: draw s initialises the model with
``torch.manual_seed(s)``, draws the data with seed s + 1 and starts Lanczos from ``torch.Generator().manual_seed(s)``
(s = 0 is the peers benchmark's draw). The reference is that script's (dense below 5000 parameters, else SciPy
``eigsh`` on float64 products at tol 1e-10). A call passes when the relative error is ≤ its ``tol``. Accuracy and
products only: nothing is timed, so the machine's load does not matter.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys

import torch
from sharpness_vs_peers import Workload, reference
from torch import nn

from eoslab import top_eigenvalues
from eoslab.data import synthetic_regression
from eoslab.losses import half_mse, mean_mse
from eoslab.models import mlp

TOL = 1e-3


def draw(name: str, seed: int, quick: bool) -> Workload:
    """Workload ``name`` at draw ``seed``."""
    torch.manual_seed(seed)
    if name == "W3":
        data = synthetic_regression(n=100, seed=seed + 1)
        return Workload(name, mlp(10, 10, 10, 2, "tanh"), mean_mse, data.X, data.y, 1)
    in_dim, width, n = (64, 32, 64 if name == "W1" else 256) if quick else (3072, 512, 1024 if name == "W1" else 4096)
    model = mlp(in_dim, 10, width, 4, "tanh")
    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(n, in_dim, generator=g)
    y = nn.functional.one_hot(torch.randint(10, (n,), generator=g), 10).float()
    return Workload(name, model, half_mse, X, y, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="W1,W2,W3")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--quick", action="store_true", help="W1/W2 shrunk as in sharpness_vs_peers.py --quick")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rules = ("residual", "eigenvalue")
    print(f"{'workload':<8} {'seed':>4} {'λ ref':>12}" + "".join(f" {r + ': HVPs, rel. error':>32}" for r in rules))
    failures = dict.fromkeys(rules, 0)
    for name in args.workloads.split(","):
        for seed in map(int, args.seeds.split(",")):
            w = draw(name, seed, args.quick)
            ref, _ = reference(w, {k: p.detach() for k, p in w.model.named_parameters()})
            cells = []
            for rule in rules:
                start = torch.Generator().manual_seed(seed)
                res = top_eigenvalues(w.model, w.loss, w.X, w.y, k=1, tol=TOL, generator=start, criterion=rule)
                error = abs(res.values.item() - ref) / abs(ref)
                failures[rule] += error > TOL
                cells.append(f"{res.n_matvecs:>4} {error:>9.1e} {'ok' if error <= TOL else 'OUT':>3}")
            print(f"{name:<8} {seed:>4} {ref:>12.6g}" + "".join(f" {c:>32}" for c in cells), flush=True)
    print(", ".join(f"{rule}: {n} draw(s) outside tol = {TOL:g}" for rule, n in failures.items()), file=sys.stderr)


if __name__ == "__main__":
    main()
