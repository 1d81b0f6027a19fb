"""What tracking sharpness in a training loop costs: SharpnessTracker (warm) against cold calls at the same θ.

A plain torch.optim.SGD loop (half-MSE on one-hot digits, MLP 64→256→256→10, n = 1024, float32, b = 32) measures
every ``--every`` steps, first with ``eoslab.SharpnessTracker`` (warm-started from its last eigenvectors), then with
the stateless functions called cold at the same parameters. Reports per measurement: CPU seconds of this process
(``time.process_time``, immune to other processes' load) and Hessian-vector products, for FullBS alone and for
FullBS + MiniBS/Batch Sharpness (20 batches) + layer sharpness.

    .venv/bin/python benchmarks/tracker_cost.py            # ~1 min on one thread
    .venv/bin/python benchmarks/tracker_cost.py --quick    # seconds (tests)
"""

import argparse
import time

import torch

import eoslab
from eoslab.data import digits
from eoslab.losses import half_mse


def setup(width: int, n: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    data = digits(n_train=n)
    y = torch.nn.functional.one_hot(data.y, 10).float()
    model = torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.Tanh(), torch.nn.Linear(width, width), torch.nn.Tanh(),
        torch.nn.Linear(width, 10),
    )  # fmt: skip
    return model, data.X, y


def cold(model, X, y, full_only: bool, gen: torch.Generator) -> int:
    """The stateless calls a loop without a tracker makes, with the tracker's stopping rule (the strict residual
    criterion, as the engine's measurements); returns the HVPs of the FullBS solve."""
    strict = {"generator": gen, "criterion": "residual"}
    hvps = eoslab.top_eigenvalues(model, half_mse, X, y, **strict).n_matvecs
    if not full_only:
        eoslab.minibatch_sharpness(model, half_mse, X, y, 32, 20, **strict)
        eoslab.batch_sharpness(model, half_mse, X, y, 32, 20, generator=gen)
        eoslab.layer_sharpness(model, half_mse, X, y, **strict)
    return hvps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--every", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    width, n, steps = (32, 256, 40) if args.quick else (256, 1024, 200)
    print(f"{'measure':<28} {'tracker s':>10} {'cold s':>8} {'ratio':>6} {'tracker HVPs':>13} {'cold HVPs':>10}")
    everything = {"minibatch": 20, "batch_size": 32, "layers": True}
    for label, extra in [("FullBS", {}), ("FullBS+MiniBS+BS+layers", everything)]:
        model, X, y = setup(width, n)
        tracker = eoslab.SharpnessTracker(model, half_mse, X, y, **extra)
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        gen = torch.Generator().manual_seed(1)
        cost = {"tracker": [0.0, 0], "cold": [0.0, 0]}
        count = 0
        for t in range(steps):
            idx = torch.randint(n, (32,))
            opt.zero_grad()
            half_mse(model(X[idx]), y[idx]).backward()
            opt.step()
            if t % args.every == args.every - 1:
                start = time.process_time()
                cost["tracker"][1] += tracker.measure()["n_hvp"]
                cost["tracker"][0] += time.process_time() - start
                start = time.process_time()
                cost["cold"][1] += cold(model, X, y, not extra, gen)
                cost["cold"][0] += time.process_time() - start
                count += 1
        (ts, th), (cs, ch) = ([v / count for v in cost[k]] for k in ("tracker", "cold"))
        print(f"{label:<28} {ts:>10.3f} {cs:>8.3f} {cs / ts:>6.2f} {th:>13.1f} {ch:>10.1f}")


if __name__ == "__main__":
    main()
