"""Average MiniBS over m mini-batches against one full-batch λmax solve, in products, seconds and peak memory.

    OPENBLAS_NUM_THREADS=1 python benchmarks/minibatch_cost.py [--quick]

Workload W1 of ``sharpness_vs_peers.py`` (4 tanh layers of 512 on 3072 Gaussian inputs, n = 1024, half-MSE, float32,
2.4 M parameters). Each case runs in a fresh process (its peak resident memory is its own ``ru_maxrss``), with
freed memory kept in the heap as in the pipeline's jobs (:func:`eoslab.allocator.keep_freed_memory`); the rows
marked "glibc default" run without it, as a plain Python process does:

- ``full-batch default``: ``eoslab.sharpness`` as a user calls it (tol 1e-3).
- ``MiniBS m×b``: ``eoslab.minibatch_sharpness`` (the three-term recurrence, no basis kept), default tol 1e-3.
- ``MiniBS m×b, basis``: the same stacked problems by :func:`eoslab.eigen.lanczos` (full reorthogonalisation, an
  m × steps × dim basis): what ``minibatch_sharpness`` did before. Its m = 32 case needs ~18 GB and is left out.

The per-batch values of both MiniBS solvers are compared with a reference (the recurrence at tol 1e-5, residual
rule: about float32's floor) on the same batches. "wall s" is the solve inside the child (operator build included,
start-up not), "× full" its ratio to the full-batch solve's with the same allocator setting; CPU seconds are the
whole child's user + system time (start-up included); the load average is printed with the table.
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from torch import nn

import eoslab
from eoslab.allocator import keep_freed_memory
from eoslab.curvature import sample_batches
from eoslab.eigen import lanczos, start_vector
from eoslab.losses import half_mse
from eoslab.models import mlp
from eoslab.operators import MiniBatchHessians


def problem(quick: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """W1 (or a small stand-in with ``quick``), seeded as in sharpness_vs_peers.py."""
    in_dim, width, n = (64, 32, 256) if quick else (3072, 512, 1024)
    torch.manual_seed(0)
    model = mlp(in_dim, 10, width, 4, "tanh")
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, in_dim, generator=g)
    return model, X, nn.functional.one_hot(torch.randint(10, (n,), generator=g), 10).float()


def case(name: str, m: int, b: int, quick: bool) -> dict:
    """Run one case in this process: its values, products, seconds and peak resident memory."""
    model, X, y = problem(quick)
    batches = sample_batches(len(X), b, m, generator=torch.Generator().manual_seed(2))
    start = time.perf_counter()
    if name == "full":
        res = eoslab.top_eigenvalues(model, half_mse, X, y, generator=torch.Generator().manual_seed(0))
        values, products = res.values[:, 0], res.n_matvecs
    elif name in ("short", "reference"):
        tight = {"tol": 1e-5, "max_iter": 200} if name == "reference" else {}  # float32: 1e-5 is about its floor
        est = eoslab.minibatch_sharpness(
            model, half_mse, X, y, b, batches=batches, generator=torch.Generator().manual_seed(0), **tight
        )
        values, products = est.values, None
    else:  # the stacked problems by lanczos with its basis, as minibatch_sharpness solved them before
        op = MiniBatchHessians(model, half_mse, X[batches], y[batches])
        res = lanczos(op.matvec, start_vector(op.gradients, generator=torch.Generator().manual_seed(0)))
        values, products = res.values[:, 0], res.n_matvecs
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"seconds": seconds, "values": values.tolist(), "products": products, "peak_gb": peak_gb}


def measured(name: str, m: int, b: int, quick: bool, heap: bool = True) -> dict:
    """:func:`case` in a fresh interpreter (``heap``: keeping freed memory), with its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [sys.executable, __file__, "--case", name, "--m", str(m), "--b", str(b)] + ["--quick"] * quick
    argv += [] if heap else ["--glibc-default"]
    out = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["cpu"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small MLP instead of W1 (checks the script)")
    parser.add_argument("--timing-only", action="store_true", help="no basis case, no references (errors blank)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--m", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--b", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--glibc-default", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.case:
        if not args.glibc_default:
            keep_freed_memory()
        print(json.dumps(case(args.case, args.m, args.b, args.quick)))
        return
    rows = [("full-batch default", "full", 1, 1, True)]
    rows += [] if args.timing_only else [("MiniBS 8×32, basis", "basis", 8, 32, True)]
    rows += [("MiniBS 8×32", "short", 8, 32, True), ("MiniBS 32×32", "short", 32, 32, True)]
    rows += [("full, glibc default", "full", 1, 1, False), ("32×32, glibc default", "short", 32, 32, False)]
    results = {label: measured(name, m, b, args.quick, heap) for label, name, m, b, heap in rows}
    # the references with glibc's allocator: 200 steps of 32 stacked problems outgrow 24 GB with the heap kept
    refs = {} if args.timing_only else {m: measured("reference", m, 32, args.quick, False)["values"] for m in (8, 32)}
    full = results["full-batch default"]
    print(f"W1{' (quick stand-in)' if args.quick else ''}, 1 thread, load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':22s} {'wall s':>7s} {'CPU s':>7s} {'× full':>7s} {'peak GB':>8s} {'max rel err':>12s}")
    for (label, _, m, _, heap), r in zip(rows, results.values(), strict=True):
        ref = refs.get(m)
        err = "" if ref is None else f"{max(abs(v - w) / w for v, w in zip(r['values'], ref, strict=True)):.1e}"
        ratio = r["seconds"] / (full if heap else results["full, glibc default"])["seconds"]
        print(f"{label:22s} {r['seconds']:7.2f} {r['cpu']:7.2f} {ratio:7.2f} {r['peak_gb']:8.2f} {err:>12s}")
    ratio = results["MiniBS 32×32"]["seconds"] / full["seconds"]
    print(
        f"{'PASS' if ratio <= 3 else 'FAIL'}  MiniBS 32×32 costs {ratio:.2f}× a full-batch default solve (target <= 3)"
    )


if __name__ == "__main__":
    main()
