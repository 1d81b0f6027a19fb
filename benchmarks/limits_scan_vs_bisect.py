"""Divergence search (``eoslab limit``): runs and CPU seconds of a scan (Algorithm 2) against a bisection.

    OMP_NUM_THREADS=1 python benchmarks/limits_scan_vs_bisect.py [--R 3] [--sequential]

Fox's setting (synthetic regression n = 100, 3×10 MLP, nn.MSELoss, T = 100, β = 1.01; GD from η₀ = 0.1, SGD b = 1
from η₀ = 0.01), one torch thread, float32. Prints per activation and rule: max_lr, trials (training runs of T steps),
batched rounds and CPU seconds of each method. ``--sequential`` also times the scan of linear GD with one trial per
round (``search.batch = 1``: what a plain loop costs) against the batched default, same numbers.
"""

import argparse
import time

import torch

from eoslab.limits import limit

BASE = {
    "seed": 0,
    "dtype": "float32",
    "data": {"name": "synthetic_regression", "n": 100, "d": 10, "n_test": 0},
    "model": {"name": "fox_mlp"},
    "loss": "mean_mse",
}
RULES = {"gd": ({"rule": "gd"}, 0.1), "sgd": ({"rule": "sgd", "batch_size": 1, "sampling": "iid"}, 0.01)}


def timed(config: dict) -> tuple[dict, float]:
    start = time.process_time()
    ds = limit(config)
    return ds.attrs, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--R", type=int, default=3)
    parser.add_argument("--sequential", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| rule | activation | scan max_lr | trials | rounds | CPU s | bisect max_lr | trials | rounds | CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    total = {"scan": 0.0, "bisect": 0.0}
    for rule, (optimizer, eta0) in RULES.items():
        for act in ("linear", "tanh", "relu", "sigmoid"):
            cells = []
            for method in ("scan", "bisect"):
                config = BASE | {"model": {"name": "fox_mlp", "activation": act}, "optimizer": optimizer}
                config["search"] = {"eta0": eta0, "R": args.R, "method": method}
                attrs, cpu = timed(config)
                total[method] += cpu
                cells += [f"{attrs['max_lr']:.4g}", str(attrs["n_trials"]), str(attrs["n_rounds"]), f"{cpu:.2f}"]
            print(f"| {rule} | {act} | " + " | ".join(cells) + " |", flush=True)
    print(f"\ntotal CPU s: scan {total['scan']:.1f}, bisect {total['bisect']:.1f}")
    if args.sequential:
        config = BASE | {"optimizer": RULES["gd"][0], "model": {"name": "fox_mlp", "activation": "linear"}}
        for batch in (512, 1):
            config["search"] = {"eta0": 0.1, "R": 1, "batch": batch}
            attrs, cpu = timed(config)
            print(f"linear GD scan, R = 1, batch {batch}: max_lr {attrs['max_lr']:.5g}, {attrs['n_trials']} trials, "
                  f"{attrs['n_rounds']} rounds, {cpu:.2f} CPU s")  # fmt: skip


if __name__ == "__main__":
    main()
