"""λmax of the training-loss Hessian on CPU: eoslab against PyHessian, hessian-eigenthings and SciPy eigsh.

    OPENBLAS_NUM_THREADS=1 python benchmarks/sharpness_vs_peers.py [--workloads W1,W2,W3] [--repeats N] [--quick]

Prints one table (method, median seconds, HVPs, relative error of λmax against a float64 reference: SciPy eigsh at
tol 1e-10, or a dense Hessian for small models), one table of HVP/gradient cost ratios per HVP route, and the issue's
targets on W1 as PASS/FAIL lines. Every timing includes the method's own setup (graph building). Progress goes to
stderr. Everything is seeded: model init (torch seed 0), data (seed 1), start vectors (seed 0), the SGD batch (seed 2).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads OpenBLAS: its threads compete with torch's

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hessian_eigenthings as het
import numpy as np
import pyhessian
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch import Tensor, nn
from torch.func import grad, linearize, vjp
from torch.nn.utils import parameters_to_vector

from eoslab import power_iteration, top_eigenvalues
from eoslab.data import synthetic_regression
from eoslab.eigen import lanczos, start_vector
from eoslab.losses import LossFn, half_mse, mean_mse
from eoslab.models import mlp
from eoslab.operators import HessianOperator, ParamSpace, objective, split_params

TARGET = 1e-3  # relative error of λmax every "converged" method is held to
TOLS = (3e-2, 2e-2, 1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 3e-4, 1e-4)  # our Lanczos tolerances, loosest first
LANCZOS_STEPS = (10, 15, 20, 25, 30, 40, 50)  # hessian-eigenthings max_iter candidates, fewest first
PYHESSIAN_CAP = 1000  # power-iteration cap for "PyHessian to 1e-3"
LOADS: list[float] = []  # the 1-minute load average after every timed call: the machine's other load
HVP = Callable[[Tensor], Tensor]  # flat vector → Hessian-vector product


@dataclass(frozen=True)
class Workload:
    name: str
    model: nn.Module
    loss: LossFn
    X: Tensor
    y: Tensor
    repeats: int

    @property
    def params(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def gradient(self) -> tuple[Tensor, ...]:
        return torch.autograd.grad(self.loss(self.model(self.X), self.y), self.params)


@dataclass(frozen=True)
class Row:
    workload: str
    method: str
    seconds: float
    hvps: int
    rel_err: float


class Probe:
    """Wraps a function; counts its calls and times each."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn, self.seconds = fn, []

    def __call__(self, *args: Any) -> Any:
        t = time.perf_counter()
        out = self.fn(*args)
        self.seconds.append(time.perf_counter() - t)
        return out

    @property
    def calls(self) -> int:
        return len(self.seconds)


def mlp_workload(name: str, in_dim: int, width: int, n: int, repeats: int) -> Workload:
    """4 tanh hidden layers of ``width``, 10 outputs, half-MSE on Gaussian inputs and one-hot targets."""
    torch.manual_seed(0)
    model = mlp(in_dim, 10, width, 4, "tanh")
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, in_dim, generator=g)
    y = nn.functional.one_hot(torch.randint(10, (n,), generator=g), 10).float()
    return Workload(name, model, half_mse, X, y, repeats)


def fox_workload(name: str, repeats: int) -> Workload:
    """Seed 003: Linear(10,10), Tanh, Linear(10,10), Tanh, Linear(10,10), MSELoss on 100 synthetic samples."""
    torch.manual_seed(0)
    data = synthetic_regression(n=100, seed=1)
    return Workload(name, mlp(10, 10, 10, 2, "tanh"), mean_mse, data.X, data.y, repeats)


def workloads(quick: bool) -> dict[str, Callable[[], Workload]]:
    if quick:
        return {"W1": lambda: mlp_workload("W1", 64, 32, 64, 1), "W2": lambda: mlp_workload("W2", 64, 32, 256, 1),
                "W3": lambda: fox_workload("W3", 1)}  # fmt: skip
    return {"W1": lambda: mlp_workload("W1", 3072, 512, 1024, 3), "W2": lambda: mlp_workload("W2", 3072, 512, 4096, 1),
            "W3": lambda: fox_workload("W3", 3)}  # fmt: skip


# --- reference -------------------------------------------------------------------------------------------------


def reference(w: Workload, params: dict[str, Tensor], v0: Tensor | None = None) -> tuple[float, Tensor]:
    """(λmax, its unit eigenvector) of the Hessian at ``params``, float64: dense below 5000 parameters, else eigsh."""
    p64 = {k: v.double() for k, v in params.items()}
    X, y = w.X.double(), w.y.double()
    space = ParamSpace(p64)
    if space.dim < 5000:
        f = objective(w.model, w.loss, {})
        H = torch.func.hessian(lambda t: f(space.unflatten(t), X, y))(space.flatten(p64))
        vals, vecs = torch.linalg.eigh(H)
        return vals[-1].item(), vecs[:, -1]
    op = HessianOperator(w.model, w.loss, X, y, params=p64)
    start = np.random.default_rng(0).standard_normal(op.dim) if v0 is None else v0.double().numpy()
    matvec = LinearOperator((op.dim, op.dim), lambda v: op.matvec(torch.from_numpy(v)).numpy(), dtype=np.float64)
    vals, vecs = eigsh(matvec, k=1, which="LA", tol=1e-10, v0=start)
    return float(vals[0]), torch.from_numpy(vecs[:, 0])


# --- HVP routes -------------------------------------------------------------------------------------------------


def double_backward(w: Workload) -> HVP:
    """HVP by double backward, the gradient graph rebuilt for every product (locuslab's compute_hvp)."""

    def hvp(v: Tensor) -> Tensor:
        grads = torch.autograd.grad(w.loss(w.model(w.X), w.y), w.params, create_graph=True)
        dot = parameters_to_vector(grads).mul(v).sum()
        return parameters_to_vector(torch.autograd.grad(dot, w.params))

    return hvp


def retained_double_backward(w: Workload) -> HVP:
    """HVP by double backward through one retained gradient graph (PyHessian's single-batch path)."""
    grads = torch.autograd.grad(w.loss(w.model(w.X), w.y), w.params, create_graph=True)
    space = ParamSpace(dict(w.model.named_parameters()))
    return lambda v: parameters_to_vector(
        torch.autograd.grad(grads, w.params, list(space.unflatten(v).values()), retain_graph=True)
    )


def linearized(w: Workload) -> HVP:
    """HVP by a reused ``torch.func.linearize`` of the gradient."""
    theta, frozen = split_params(w.model)
    space = ParamSpace(theta)
    _, jvp_fn = linearize(lambda th: grad(objective(w.model, w.loss, frozen))(th, w.X, w.y), theta)
    return lambda v: space.flatten(jvp_fn(space.unflatten(v)))


def func_vjp(w: Workload) -> HVP:
    """HVP by a reused ``torch.func.vjp`` of ``torch.func.grad`` (reverse-over-reverse in functorch's transforms)."""
    theta, frozen = split_params(w.model)
    space = ParamSpace(theta)
    _, vjp_fn = vjp(lambda th: grad(objective(w.model, w.loss, frozen))(th, w.X, w.y), theta)
    return lambda v: space.flatten(vjp_fn(space.unflatten(v))[0])


ROUTES: dict[str, Callable[[Workload], HVP]] = {
    "eoslab: double backward, retained graph": lambda w: HessianOperator(w.model, w.loss, w.X, w.y).matvec,
    "eoslab chunk_size=n/4: graphs rebuilt per product": lambda w: HessianOperator(
        w.model, w.loss, w.X, w.y, chunk_size=len(w.X) // 4
    ).matvec,
    "torch.func.vjp(grad), reused": func_vjp,
    "torch.func.linearize, reused": linearized,
    "double backward, rebuilt per product": double_backward,
    "double backward, retained graph (PyHessian)": retained_double_backward,
}  # fmt: skip


# --- methods: each returns (λmax, HVPs) ---------------------------------------------------------------------------


class Reached(Exception):
    """Raised from inside PyHessian's loop once its estimate is within TARGET of the reference."""

    def __init__(self, value: float):
        self.value = value


def pyhessian_top(w: Workload, ref: float | None = None, **options: Any) -> tuple[float, int]:
    """PyHessian's ``eigenvalues(top_n=1, **options)``, HVPs counted; with ``ref`` stopped once within TARGET."""
    module = sys.modules["pyhessian.hessian"]  # the package's __init__ shadows this module with the class
    original = module.hessian_vector_product

    def hvp(gradsH: list[Tensor], params: list[Tensor], v: list[Tensor]) -> tuple[Tensor, ...]:
        Hv = original(gradsH, params, v)
        lam = pyhessian.group_product(Hv, v).item()  # PyHessian's own estimate vᵀHv
        if ref is not None and abs(lam - ref) <= TARGET * abs(ref):
            raise Reached(lam)
        return Hv

    module.hessian_vector_product = probe = Probe(hvp)
    w.model.zero_grad(set_to_none=True)
    try:
        lam = pyhessian.hessian(w.model, w.loss, data=(w.X, w.y), cuda=False).eigenvalues(top_n=1, **options)[0][0]
    except Reached as stop:
        lam = stop.value
    finally:
        module.hessian_vector_product = original
        w.model.zero_grad(set_to_none=True)  # PyHessian leaves graph-carrying .grad behind
    return lam, probe.calls


def eigenthings(w: Workload, solver: Callable[[het.HessianOperator], float]) -> tuple[float, int]:
    """A hessian-eigenthings solver on its HessianOperator (double backward rebuilt per product), HVPs counted."""
    op = het.HessianOperator(w.model, [(w.X, w.y)], het.supervised_loss(w.loss))
    op.matvec = probe = Probe(op.matvec)
    return solver(op), probe.calls


def eigenthings_lanczos(steps: int) -> Callable[[het.HessianOperator], float]:
    return lambda op: het.lanczos(op, k=1, max_iter=steps, which="LA", seed=0).eigenvalues[0].item()


def eigenthings_power(op: het.HessianOperator) -> float:
    return het.power_iteration_one(op, max_iter=100, tol=TARGET, seed=0)[0]


def scipy_eigsh(w: Workload) -> tuple[float, int]:
    """locuslab/edge-of-stability: eigsh on a LinearOperator whose matvec moves numpy ↔ torch and recomputes HVPs."""
    hvp, dim = double_backward(w), sum(p.numel() for p in w.params)
    probe = Probe(lambda v: hvp(torch.tensor(v, dtype=torch.float)).numpy())
    start = np.random.default_rng(0).standard_normal(dim)
    vals, _ = eigsh(LinearOperator((dim, dim), matvec=probe, dtype=np.float32), k=1, which="LA", v0=start)
    return float(vals[0]), probe.calls


def ours(w: Workload, tol: float | None = None, **options: Any) -> tuple[float, int]:
    """``top_eigenvalues`` as a user calls it (``tol=None``: the default, relative accuracy 1e-3 of λmax)."""
    options |= {} if tol is None else {"tol": tol}
    r = top_eigenvalues(w.model, w.loss, w.X, w.y, k=1, generator=torch.Generator().manual_seed(0), **options)
    return r.values.item(), r.n_matvecs


def ours_power(w: Workload) -> tuple[float, int]:
    """eoslab.power_iteration with PyHessian's stopping rule (relative change < 1e-3, ≤ 100 iterations)."""
    op = HessianOperator(w.model, w.loss, w.X, w.y)
    v = torch.randn((1, op.dim), generator=torch.Generator().manual_seed(0))  # PyHessian's random start
    r = power_iteration(op.matvec, v, tol=TARGET, max_iter=100, criterion="relative")
    return r.values.item(), r.n_matvecs


# --- measuring --------------------------------------------------------------------------------------------------


def timed(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 0, seed: int = 0
) -> dict[str, tuple[float, Any]]:
    """Per function: (median wall time, last result) over ``repeats`` rounds after ``warmup`` untimed ones.

    Rounds are round-robin (every function once per round), so background load on the machine hits all alike.
    The global RNG is reseeded with ``seed`` before each call (PyHessian draws its start vector from it).
    """
    seconds: dict[str, list[float]] = {k: [] for k in fns}
    out: dict[str, Any] = {}
    for i in range(warmup + repeats):
        for k, fn in fns.items():
            torch.manual_seed(seed)
            t = time.perf_counter()
            out[k] = fn()
            if i >= warmup:
                seconds[k].append(time.perf_counter() - t)
                LOADS.append(os.getloadavg()[0])
    return {k: (statistics.median(seconds[k]), out[k]) for k in fns}


def first_within(candidates: tuple, run: Callable[[Any], tuple[float, int]], ref: float) -> Any:
    """The first candidate setting whose run lands within TARGET of ``ref`` (the last one if none does)."""
    for c in candidates:
        if abs(run(c)[0] - ref) <= TARGET * abs(ref):
            return c
    return candidates[-1]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def route_ratios(w: Workload, repeats: int) -> list[list[str]]:
    """Per route: its build and one product, each timed against gradients interleaved with it."""
    v = torch.randn(sum(p.numel() for p in w.params), generator=torch.Generator().manual_seed(0))
    out = []
    for name, build in ROUTES.items():
        t = timed({"grad": w.gradient, "build": lambda build=build: build(w)}, repeats, warmup=1)
        build_ratio, hvp = t["build"][0] / t["grad"][0], t["build"][1]
        t = timed({"grad": w.gradient, "hvp": lambda hvp=hvp: hvp(v)}, max(repeats, 3), warmup=1)
        out.append([w.name, name, f"{build_ratio:.2f}", f"{t['hvp'][0] / t['grad'][0]:.2f}", f"{t['hvp'][0]:.4f}"])
    return out


def in_solve(w: Workload, tol: float) -> tuple[float, float]:
    """(median HVP time inside a cold Lanczos solve run as ``top_eigenvalues`` runs it, that of a gradient timed
    right after each HVP): the HVPs see the caches and allocator of a real solve."""
    op = HessianOperator(w.model, w.loss, w.X, w.y)
    hvp, gradient = Probe(op.matvec), Probe(w.gradient)
    v = start_vector(op.gradient[None], None, torch.Generator().manual_seed(0))
    lanczos(lambda u: (hvp(u), gradient())[0], v, 1, tol, 100, torch.Generator().manual_seed(0))  # default rule
    return statistics.median(hvp.seconds), statistics.median(gradient.seconds)


def sgd_step(w: Workload, lr: float, batch: int = 128) -> dict[str, Tensor]:
    """θ − lr·∇L_B(θ) on one seeded mini-batch, as a parameter dict (the model itself is left unchanged)."""
    idx = torch.randperm(len(w.X), generator=torch.Generator().manual_seed(2))[:batch]
    grads = torch.autograd.grad(w.loss(w.model(w.X[idx]), w.y[idx]), w.params)
    return {k: (p - lr * g).detach() for (k, p), g in zip(w.model.named_parameters(), grads, strict=True)}


def bench(w: Workload, repeats: int, lr: float) -> tuple[list[Row], list[list[str]], dict[str, float]]:
    """Sharpness rows, route-ratio rows and the ratios the targets need, for one workload."""
    log(f"[{w.name}] {sum(p.numel() for p in w.params)} parameters; HVP routes ...")
    routes = route_ratios(w, repeats)
    log(f"[{w.name}] references and calibration ...")
    theta = {k: p.detach() for k, p in w.model.named_parameters()}
    ref, ref_vec = reference(w, theta)
    tol = first_within(TOLS, lambda t: ours(w, t, criterion="residual"), ref)
    steps = first_within(LANCZOS_STEPS, lambda s: eigenthings(w, eigenthings_lanczos(s)), ref)
    cold = top_eigenvalues(w.model, w.loss, w.X, w.y, generator=torch.Generator().manual_seed(0))
    stepped = sgd_step(w, lr)
    ref_warm, _ = reference(w, stepped, v0=ref_vec)
    methods: dict[str, tuple[str, Callable[[], tuple[float, int]], float]] = {
        "py_default": ("PyHessian default (tol=1e-3, maxIter=100)",
                       lambda: pyhessian_top(w, maxIter=100, tol=1e-3), ref),
        "py_target": (f"PyHessian to 1e-3 rel. err (oracle stop, cap {PYHESSIAN_CAP})",
                      lambda: pyhessian_top(w, ref, maxIter=PYHESSIAN_CAP, tol=1e-6), ref),
        "het_l20": ("eigenthings Lanczos(20)", lambda: eigenthings(w, eigenthings_lanczos(20)), ref),
        "het_target": (f"eigenthings Lanczos({steps}) (fewest steps to 1e-3)",
                       lambda: eigenthings(w, eigenthings_lanczos(steps)), ref),
        "het_power": ("eigenthings power (tol=1e-3, max_iter=100)", lambda: eigenthings(w, eigenthings_power), ref),
        "scipy": ("SciPy eigsh, locuslab HVP (tol=0)", lambda: scipy_eigsh(w), ref),
        "default": ("eoslab sharpness(), the default call (tol=1e-3 on λ)", lambda: ours(w), ref),
        "warm": (f"eoslab default, warm after 1 SGD step (lr={lr:.3g})",
                 lambda: ours(w, params=stepped, v0=cold.vectors[0, 0]), ref_warm),
        "tol1e-2": ("eoslab tol=1e-2", lambda: ours(w, 1e-2), ref),
        "tol1e-4": ("eoslab tol=1e-4", lambda: ours(w, 1e-4), ref),
        "cold": (f"eoslab criterion='residual' (loosest tol to 1e-3: {tol:g})",
                 lambda: ours(w, tol, criterion="residual"), ref),
        "power": ("eoslab power_iteration (PyHessian's rule)", lambda: ours_power(w), ref),
    }  # fmt: skip
    log(f"[{w.name}] timing {repeats} round(s) of {len(methods)} methods ...")
    t = timed({k: run for k, (_, run, _) in methods.items()}, repeats)
    rows = {
        k: Row(w.name, label, t[k][0], t[k][1][1], abs(t[k][1][0] - r) / abs(r)) for k, (label, _, r) in methods.items()
    }
    hvp_s, grad_s = in_solve(w, 1e-3)
    py_hvp = retained_double_backward(w)
    v = torch.randn(sum(p.numel() for p in w.params), generator=torch.Generator().manual_seed(0))
    py_hvp_s = timed({"hvp": lambda: py_hvp(v)}, max(repeats, 3), warmup=1)["hvp"][0]
    ratios = {
        "a": rows["py_target"].seconds / rows["default"].seconds,
        "b": rows["default"].seconds / rows["py_default"].seconds,
        "b_err": rows["default"].rel_err,
        "c": rows["default"].seconds / rows["het_l20"].seconds,
        "d": hvp_s / grad_s,
        "d_py": hvp_s / py_hvp_s,
        "e": rows["warm"].hvps / rows["default"].hvps,
    }
    routes += [
        [w.name, "eoslab HessianOperator inside a default solve", "", f"{ratios['d']:.2f}", f"{hvp_s:.4f}"],
        [w.name, "  same, whole solve time / HVPs (build, Lanczos included)", "",
         f"{rows['default'].seconds / rows['default'].hvps / grad_s:.2f}",
         f"{rows['default'].seconds / rows['default'].hvps:.4f}"],
    ]  # fmt: skip
    log(f"[{w.name}] λmax = {ref:.6g}, after the SGD step {ref_warm:.6g}")
    return list(rows.values()), routes, ratios


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    for i, row in enumerate([headers, *rows]):
        cells = [x.ljust(n) if j < 2 else x.rjust(n) for j, (x, n) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * n for n in widths))


TARGETS = {  # key in bench()'s ratios → (label, the bound, whether the measured ratio must be at least it)
    "a": ("(a) speed-up of the default call over PyHessian's power iteration run to 1e-3", 5.0, True),
    "b": ("(b) default call time / PyHessian's default call", 2 / 3, False),
    "b_err": ("(b') default call's relative error of λmax", 1e-3, False),
    "c": ("(c) default call time / eigenthings Lanczos(20)", 1 / 2, False),
    "d": ("(d) one HVP inside a solve / one gradient", 1.5, False),
    "d_py": ("(d') one HVP inside a solve / PyHessian's retained double-backward HVP", 1.0, False),
    "e": ("(e) warm HVPs after one SGD step / cold HVPs", 1 / 4, False),
}


def print_targets(figures: dict[str, float]) -> None:
    for key, (label, bound, at_least) in TARGETS.items():
        ratio = figures[key]
        ok = ratio >= bound if at_least else ratio <= bound
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {ratio:.3g} (needs {'>=' if at_least else '<='} {bound:.3g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated subset of W1,W2,W3")
    parser.add_argument("--repeats", type=int, help="timed repeats per method (default: 3; 1 on W2)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: a smoke check in seconds")
    parser.add_argument("--lr", type=float, default=2 / 30, help="SGD step before the warm re-measure (default 2/30)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", "Attempted to insert a get_attr")  # torch.func.linearize's constant folding
    warnings.filterwarnings("ignore", "Using backward.. with create_graph")  # PyHessian; we clear .grad after it
    available = workloads(args.quick)
    rows, routes, figures, repeats = [], [], {}, {}
    for name in args.workloads.split(","):
        w = available[name.strip()]()
        repeats[w.name] = args.repeats or w.repeats
        r, rt, figures[w.name] = bench(w, repeats[w.name], args.lr)
        rows += r
        routes += rt
    counts = ", ".join(f"{k} x{v}" for k, v in repeats.items())
    print(f"\nλmax: median of round-robin repeats ({counts}), 2 torch threads; 1-min load average while timing: "
          f"median {statistics.median(LOADS):.1f}, max {max(LOADS):.1f}")  # fmt: skip
    table = [[r.workload, r.method, f"{r.seconds:.3f}", str(r.hvps), f"{r.rel_err:.1e}"] for r in rows]
    print_table(["workload", "method", "seconds", "HVPs", "rel. error"], table)
    print("\nCost of one HVP in gradients (one gradient = torch.autograd.grad of the full-batch loss)")
    print_table(["workload", "route", "build/grad", "HVP/grad", "s/HVP"], routes)
    for name, figure in figures.items():
        print(f"\nTargets on {name}")
        print_targets(figure)


if __name__ == "__main__":
    main()
