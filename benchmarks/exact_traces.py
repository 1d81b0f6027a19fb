"""Cost of one exact measurement of the interaction traces tr(H S_b), tr(S_b) (Lee & Jang), on CPU.

    python benchmarks/exact_traces.py [--n 512,4096] [--chunks 4,16,64,all] [--threads 1]

``eoslab.curvature.interaction(op, X, y, b, exact=True, grad_chunk=c)``: n per-example gradients streamed c at a
time, each block's c HVPs of the full-batch Hessian vmapped; "all" is c = n (every row in one vmap, the route before
streaming). Model: the smoke profiles' tanh MLP 64-64-64-10 (13,130 parameters), half-MSE, float64, Gaussian inputs,
one-hot targets. Per row: HVPs, CPU seconds (process time, so other processes' load does not count), and the peak
resident memory of the measurement above the process's memory after building the operator (Linux: the peak is reset
through /proc/self/clear_refs before the measurement and read from VmHWM after it).
"""

import argparse
import time
from pathlib import Path

import torch

from eoslab.curvature import interaction
from eoslab.losses import half_mse
from eoslab.models import mlp
from eoslab.operators import HessianOperator


def vm(key: str) -> float:
    """A /proc/self/status memory line in MiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) / 1024


def one(n: int, chunk: int) -> dict:
    """Build the operator at the initial θ, then time one exact measurement with ``chunk`` rows per block."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = mlp(64, 10, width=64, depth=3, activation="tanh").double()
    X = torch.randn(n, 64, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(10, (n,), generator=g), 10).double()
    op = HessianOperator(model, half_mse, X, y)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    base, start = vm("VmRSS"), time.process_time()
    res = interaction(op, X, y, 8, exact=True, grad_chunk=chunk)
    seconds = time.process_time() - start
    return {"hvps": op.n_matvecs, "seconds": seconds, "peak_mib": vm("VmHWM") - base, "tr_HS": res.tr_HS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="512,4096")
    parser.add_argument("--chunks", default="4,16,64,all")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'n':>6} {'grad_chunk':>10} {'HVPs':>6} {'CPU s':>8} {'s/HVP (ms)':>10} {'peak MiB':>9}  tr(HS_8)")
    for n in map(int, args.n.split(",")):
        for c in args.chunks.split(","):
            chunk = n if c == "all" else int(c)
            r = one(n, chunk)
            print(
                f"{n:>6} {c:>10} {r['hvps']:>6} {r['seconds']:>8.2f} {1e3 * r['seconds'] / r['hvps']:>10.2f} "
                f"{r['peak_mib']:>9.0f}  {r['tr_HS']:.12g}",
                flush=True,
            )


if __name__ == "__main__":
    main()
