"""eoslab's default call against PyHessian's default call on W1, draw by draw: seconds, products and the relative
error of λmax, and the time ratio as a range over draws.

    OPENBLAS_NUM_THREADS=1 python benchmarks/default_vs_pyhessian.py [--seeds 0,1,2,3,4] [--repeats 3] [--quick]

Draw s is ``stopping_rule.py``'s (model ``torch.manual_seed(s)``, data seed s + 1, eoslab's start vector
``torch.Generator().manual_seed(s)``; PyHessian draws its start vector from the global RNG, reseeded with s before
each call). The reference is ``sharpness_vs_peers.py``'s (SciPy ``eigsh`` on float64 products at tol 1e-10). After
an untimed round, both calls run round-robin ``--repeats`` times per draw on 2 threads; the median wall seconds are
reported, the graph build included, and the load average with the table.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import warnings
from collections.abc import Callable

import torch
from sharpness_vs_peers import LOADS, Workload, pyhessian_top, reference, timed
from stopping_rule import draw

from eoslab import top_eigenvalues


def calls(w: Workload, seed: int) -> dict[str, Callable[[], tuple[float, int]]]:
    """Name → the default call on draw ``seed``, returning (λmax, products)."""

    def ours() -> tuple[float, int]:
        res = top_eigenvalues(w.model, w.loss, w.X, w.y, generator=torch.Generator().manual_seed(seed))
        return res.values.item(), res.n_matvecs

    return {"PyHessian": lambda: pyhessian_top(w), "eoslab": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="W1 shrunk as in sharpness_vs_peers.py --quick")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", "Using backward.. with create_graph")  # PyHessian; it clears .grad after
    head = "".join(f" {name + ': s, HVPs, error':>27}" for name in ("PyHessian", "eoslab"))
    print(f"{'seed':>4} {'λ ref':>10}{head} {'ratio':>6}", flush=True)
    ratios = []
    for seed in map(int, args.seeds.split(",")):
        w = draw("W1", seed, args.quick)
        ref, _ = reference(w, {k: p.detach() for k, p in w.model.named_parameters()})
        out = timed(calls(w, seed), args.repeats, warmup=1, seed=seed)  # the untimed round: first-call costs
        error = {name: abs(value - ref) / abs(ref) for name, (_, (value, _)) in out.items()}
        cells = "".join(
            f" {seconds:>14.2f} {products:>4} {error[k]:>7.1e}" for k, (seconds, (_, products)) in out.items()
        )
        ratios.append(out["eoslab"][0] / out["PyHessian"][0])
        print(f"{seed:>4} {ref:>10.5g}{cells} {ratios[-1]:>6.2f}", flush=True)
    print(f"eoslab / PyHessian time: {min(ratios):.2f}–{max(ratios):.2f} over {len(ratios)} draws", end="")
    print(f" (load average {min(LOADS):.1f}–{max(LOADS):.1f} while timing)")


if __name__ == "__main__":
    main()
