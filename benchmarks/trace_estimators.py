"""Hutch++ against Hutchinson: the error of tr(H) for the same number of Hessian-vector products.

    python benchmarks/trace_estimators.py [--budgets 30,60,120,240,480] [--repeats 20] [--quick]

Counts products, not seconds, so the numbers do not depend on the machine or its load. Model: a tanh MLP
10→32→32→3 (1,507 parameters), half-MSE on n = 256 Gaussian inputs with a tanh teacher's targets (×5), float64,
at its PyTorch default initialisation and after ``--steps`` (default 100) full-batch GD steps at η = 0.3, when
λmax has risen to 2/η and stands out of the bulk. Exact trace: Σ_i e_iᵀHe_i over all unit vectors. Per budget m
and estimator, the
root-mean-square relative error over ``--repeats`` seeds (Hutchinson: m Rademacher probes; Hutch++ (Meyer, Musco,
Musco & Woodruff 2021, arXiv:2010.09649): m/3 probes for the sketch, m/3 for its basis, m/3 for the remainder), and
the products Hutchinson would need for Hutch++'s error at its 1/√m rate.
"""

import argparse

import torch

import eoslab
from eoslab.curvature import hutchinson, hutchpp
from eoslab.losses import half_mse
from eoslab.operators import HessianOperator


def exact_trace(op: HessianOperator, block: int = 256) -> float:
    """tr(H) from every diagonal entry, ``block`` unit vectors per product."""
    eye = torch.eye(op.dim, dtype=torch.float64)
    return sum((E * op.matvec(E)).sum().item() for E in eye.split(block))


def compare(op: HessianOperator, budgets: list[int], repeats: int) -> None:
    """The table of RMS relative errors for one operator."""
    exact = exact_trace(op)
    print(f"{op.dim} parameters, tr(H) = {exact:.6g}; RMS relative error over {repeats} seeds")
    print(
        f"{'products':>8} {'Hutchinson':>11} {'Hutch++':>11} {'ratio':>7} {'Hutchinson products for Hutch++ error':>38}"
    )
    for m in budgets:
        errors = {}
        for name, estimate in (("hutchinson", hutchinson), ("hutch++", hutchpp)):
            values = [estimate(op, m, torch.Generator().manual_seed(s)).mean for s in range(repeats)]
            errors[name] = (sum((v / exact - 1) ** 2 for v in values) / repeats) ** 0.5
        needed = m * (errors["hutchinson"] / errors["hutch++"]) ** 2
        print(
            f"{m:>8} {errors['hutchinson']:>11.3e} {errors['hutch++']:>11.3e} "
            f"{errors['hutchinson'] / errors['hutch++']:>7.1f} {needed:>38.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="30,60,120,240,480")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100, help="GD steps (η = 0.3) before the second table")
    parser.add_argument("--quick", action="store_true", help="two budgets, five repeats")
    args = parser.parse_args()
    budgets = [30, 120] if args.quick else [int(b) for b in args.budgets.split(",")]
    repeats = 5 if args.quick else args.repeats
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    tanh = (torch.nn.Tanh(),)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 32), *tanh, torch.nn.Linear(32, 32), *tanh, torch.nn.Linear(32, 3)
    ).double()
    teacher = torch.nn.Sequential(torch.nn.Linear(10, 8), *tanh, torch.nn.Linear(8, 3)).double()
    X = torch.randn(256, 10, generator=g, dtype=torch.float64)
    y = 5 * teacher(X).detach()
    print("at initialisation:")
    compare(HessianOperator(model, half_mse, X, y), budgets, repeats)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(args.steps):
        opt.zero_grad()
        half_mse(model(X), y).backward()
        opt.step()
    print(f"after {args.steps} GD steps at η = 0.3 (2/η = 6.67):")
    op = HessianOperator(model, half_mse, X, y)
    print(f"λmax = {eoslab.sharpness(model, half_mse, X, y):.4g}")
    compare(op, budgets, repeats)


if __name__ == "__main__":
    main()
