"""Divergence limits: the largest constant step size before GD/SGD diverges (Fox 2023, Ch. 4, Algorithm 2).

``eoslab limit CONFIG --out FILE.nc``. CONFIG is a run config (data, model, loss, optimizer rule ``gd`` or ``sgd``,
dtype, seed; ``steps`` and ``optimizer.lr`` default to ``search.T`` and ``search.eta0``) plus a ``search`` section:

- ``method: scan`` — Algorithm 2 verbatim: for each repetition r = 1..R, η = η₀·βᵏ for k = 0, 1, ...: train a
  *freshly initialised* model for T steps; the first η whose loss becomes NaN/±inf within T steps is η_r. The
  result is max_lr = mean_r η_r. Every trial (r, k) draws its initialisation (and SGD's samples) from its own
  recorded seed, ``SeedSequence([seed, r, k])``, so the outcome of every trial is reproducible on its own.
- ``method: bisect`` — one fixed initialisation (and sample sequence) per repetition, the seed of trial (r, 0):
  grow η by ``expand`` from η₀ until a trial diverges, then bisect [lo, hi] in log space until hi/lo ≤ β;
  η_r = hi. About log(η_r/η₀)/log(expand) + log₂(log(expand)/log β) runs instead of the scan's log(η_r/η₀)/log β.
  With a fixed model the outcome is (close to) monotone in η: the bisection measures one initialisation's
  threshold, the scan the first divergence over many fresh draws (the luckiest draw ends it early).

A step is θ ← θ − η∇L_B(θ), taken by the rule's object (:mod:`eoslab.rules`; B the full batch for GD; for SGD
``optimizer.batch_size`` examples per step drawn as a run draws them, with replacement for ``sampling: iid`` or
without within the step for ``subset``). "The loss at step j" is L_B(θ_{j−1}),
the loss of the batch stepped on at step j = 1..T, as in a PyTorch training loop. Speed: every trial of a round
(several η and repetitions) is one row of a batched forward/backward, ``torch.func.vmap`` over stacked parameter
copies; a trial leaves the batch when it diverges, and a scan drops the trials above a repetition's first
divergence.

The NetCDF (written atomically) holds every trial: ``limit_repetition``, ``limit_eta``, ``limit_diverged``,
``limit_diverged_step`` (1..T, −1 if finite), ``limit_seed``; ``limit_max_lr`` per repetition (NaN if a scan found
no divergence within ``max_trials``); attrs ``max_lr`` (mean over repetitions), ``max_lr_std``, ``method``,
``n_trials``, ``n_rounds`` and the config.
"""

import copy
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor
from torch.func import grad_and_value, vmap

from eoslab.config import ConfigError, check, validate
from eoslab.curvature import layers
from eoslab.engine import Problem, build_problem
from eoslab.models import build_model
from eoslab.operators import objective
from eoslab.rules import RULES, build_rule, sample
from eoslab.runfiles import provenance, write_run

VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "limit_repetition": (("trial",), "repetition of the trial", "1"),
    "limit_eta": (("trial",), "constant step size η of the trial", "1"),
    "limit_diverged": (("trial",), "1 if the loss became NaN/±inf within T steps", "1"),
    "limit_diverged_step": (("trial",), "step j (1..T) whose loss was non-finite, −1 if none", "step"),
    "limit_seed": (("trial",), "seed of the trial's initialisation (and SGD's samples)", "1"),
    "limit_max_lr": (("repetition",), "first diverging η of the repetition (Algorithm 2's η_i)", "1"),
}
"""The variables of a limit file (name → dims, long_name, units), like :data:`eoslab.store.VARIABLES` for runs."""

SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["eta0"],
    "properties": {
        "eta0": {"type": "number", "exclusiveMinimum": 0, "description": "first step size η₀"},
        "beta": {"type": "number", "exclusiveMinimum": 1, "default": 1.01, "description": "scan factor β"},
        "T": {"type": "integer", "minimum": 1, "default": 100, "description": "steps per trial"},
        "R": {"type": "integer", "minimum": 1, "default": 10, "description": "repetitions"},
        "method": {"enum": ["scan", "bisect"], "default": "scan"},
        "expand": {"type": "number", "exclusiveMinimum": 1, "default": 2.0, "description": "bisect's bracket growth"},
        "max_trials": {"type": "integer", "minimum": 1, "default": 5000, "description": "scan: per repetition"},
        "batch": {"type": "integer", "minimum": 1, "default": 512, "description": "trials per batched round"},
    },
}


def validate_limit(config: Mapping[str, Any]) -> dict[str, Any]:
    """A validated limit config: the run config (validated by :func:`eoslab.config.validate`) plus ``search``."""
    config = copy.deepcopy(dict(config))
    search = check(config.pop("search", None) or {}, SEARCH_SCHEMA, "search")
    config.setdefault("steps", search["T"])
    config.setdefault("optimizer", {}).setdefault("lr", search["eta0"])
    run = validate(config)
    opt = run["optimizer"]
    if RULES[opt["rule"]].scaled or RULES[opt["rule"]].stateful:
        plain = [name for name, cls in RULES.items() if not (cls.scaled or cls.stateful)]
        raise ConfigError(
            f"optimizer.rule: a divergence search runs a rule without state or factor {plain}, not {opt['rule']!r}"
        )
    if opt["schedule"] != "constant":
        raise ConfigError(f"optimizer.schedule: a divergence search needs a constant step, not {opt['schedule']!r}")
    if opt["rule"] == "sgd" and opt["sampling"] == "reshuffle":
        raise ConfigError("optimizer.sampling: a divergence search samples 'iid' or 'subset', not 'reshuffle'")
    return run | {"search": search}


def trial_seed(seed: int, repetition: int, k: int) -> int:
    """The recorded seed of trial k of a repetition (initialisation and SGD samples)."""
    return int(np.random.SeedSequence([seed, repetition, k]).generate_state(1)[0])


def _init(problem: Problem, config: dict[str, Any], seeds: list[int]) -> dict[str, Tensor]:
    """The stacked initial parameters of freshly built models, one per seed (PyTorch's default init)."""
    dtype = getattr(torch, config["dtype"])
    copies = []
    for s in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            model = build_model(config["model"], tuple(problem.X.shape[1:]), problem.Y.shape[-1])
        copies.append({k: p.detach().to(dtype=dtype, device=problem.X.device) for k, p in model.named_parameters()})
    return {k: torch.stack([c[k] for c in copies]) for k in copies[0]}


def _samples(config: dict[str, Any], n: int, seeds: list[int]) -> Tensor | None:
    """SGD's example indices (trials, T, b) from each trial's seed, drawn as a run draws them
    (:func:`eoslab.rules.sample`); None for a full-batch rule."""
    opt, T = config["optimizer"], config["search"]["T"]
    if not RULES[opt["rule"]].stochastic:
        return None
    out = []
    for s in seeds:
        gen = torch.Generator().manual_seed(s)
        out.append(torch.stack([sample(n, opt["batch_size"], opt["sampling"], gen) for _ in range(T)]))
    return torch.stack(out)


def _stepper(problem: Problem, config: dict[str, Any]) -> Any:
    """(stacked θ, stacked g, η per trial) → stacked θ after one step of the config's rule, vmapped over trials."""
    layer_params = layers(problem.model)

    def step(params: dict[str, Tensor], grads: dict[str, Tensor], lr: Tensor) -> dict[str, Tensor]:
        rule = build_rule(config["optimizer"] | {"lr": lr}, layer_params)
        return rule.step(params, grads, None, None, None, {})[0]

    return vmap(step)


def run_trials(
    problem: Problem, config: dict[str, Any], etas: Tensor, seeds: list[int], group: Tensor | None = None
) -> Tensor:
    """T steps of every trial (η_i, seed_i) in one vmapped batch; the step (1..T) at which each diverged, or −1.

    With ``group`` (trials of a group in increasing η), a group's trials above its first divergence are dropped
    (their step is −2: not decided), as a scan never needs them.
    """
    T = config["search"]["T"]
    f = objective(problem.model, problem.loss_fn, dict(problem.model.named_buffers()))
    idx = _samples(config, len(problem.X), seeds)
    step_fn = vmap(grad_and_value(f), in_dims=(0, None, None) if idx is None else 0)
    update = _stepper(problem, config)
    params = _init(problem, config, seeds)
    lr = etas.to(problem.X)
    active = torch.arange(len(etas))
    outcome = torch.full((len(etas),), -1)
    first = torch.full((int(group.max()) + 1,), len(etas)) if group is not None else None
    device = problem.X.device  # bookkeeping (active, outcome, idx) stays on the CPU
    for j in range(T):
        rows = None if idx is None else idx[active, j].to(device)
        Xb, Yb = (problem.X, problem.Y) if rows is None else (problem.X[rows], problem.Y[rows])
        grads, loss = step_fn(params, Xb, Yb)
        bad = ~torch.isfinite(loss).cpu()
        if bad.any():
            outcome[active[bad]] = j + 1
            keep = ~bad
            if first is not None:
                first.scatter_reduce_(0, group[active[bad]], active[bad], "amin")
                keep &= active < first[group[active]]
            outcome[active[~keep & ~bad]] = -2
            active, on_device = active[keep], keep.to(device)
            lr = lr[on_device]
            params = {k: v[on_device] for k, v in params.items()}
            grads = {k: v[on_device] for k, v in grads.items()}
            if len(active) == 0:
                break
        params = update(params, grads, lr)
    return outcome


def scan(problem: Problem, config: dict[str, Any]) -> tuple[list[tuple[int, float, int, int]], np.ndarray, int]:
    """Algorithm 2: trials (repetition, η, diverged step, seed), each repetition's first diverging η, rounds."""
    s = config["search"]
    trials: list[tuple[int, float, int, int]] = []
    result = np.full(s["R"], np.nan)
    open_reps, k0, rounds = list(range(s["R"])), 0, 0
    while open_reps and k0 < s["max_trials"]:
        per = max(1, min(s["batch"] // len(open_reps), s["max_trials"] - k0))
        ks = list(range(k0, k0 + per))
        reps = [r for r in open_reps for _ in ks]
        kk = [k for _ in open_reps for k in ks]
        seeds = [trial_seed(config["seed"], r, k) for r, k in zip(reps, kk, strict=True)]
        etas = torch.tensor([s["eta0"] * s["beta"] ** k for k in kk], dtype=torch.float64)
        group = torch.tensor([open_reps.index(r) for r in reps])
        outcome = run_trials(problem, config, etas, seeds, group).tolist()
        rounds += 1
        for i, r in enumerate(reps):  # in increasing η per repetition: keep trials up to the first divergence
            if np.isnan(result[r]):
                trials.append((r, float(etas[i]), outcome[i], seeds[i]))
                if outcome[i] > 0:
                    result[r] = float(etas[i])
        open_reps = [r for r in open_reps if np.isnan(result[r])]
        k0 += per
    return trials, result, rounds


def bisect(problem: Problem, config: dict[str, Any]) -> tuple[list[tuple[int, float, int, int]], np.ndarray, int]:
    """Bracket then bisect each repetition's threshold (fixed initialisation), all repetitions batched."""
    s = config["search"]
    R = s["R"]
    lo: list[float | None] = [None] * R  # largest η that stayed finite
    hi: list[float | None] = [None] * R  # smallest η that diverged
    seeds = [trial_seed(config["seed"], r, 0) for r in range(R)]
    trials: list[tuple[int, float, int, int]] = []
    rounds = 0
    while True:
        todo = [r for r in range(R) if lo[r] is None or hi[r] is None or hi[r] / lo[r] > s["beta"]]
        if not todo:
            break
        etas = []
        for r in todo:
            if lo[r] is None and hi[r] is None:
                etas.append(s["eta0"])
            elif hi[r] is None:
                etas.append(lo[r] * s["expand"])
            elif lo[r] is None:
                etas.append(hi[r] / s["expand"])
            else:
                etas.append(math.sqrt(lo[r] * hi[r]))
        outcome = run_trials(problem, config, torch.tensor(etas, dtype=torch.float64), [seeds[r] for r in todo])
        rounds += 1
        for r, eta, out in zip(todo, etas, outcome.tolist(), strict=True):
            trials.append((r, eta, out, seeds[r]))
            if out > 0:
                hi[r] = eta
            else:
                lo[r] = eta
    return trials, np.asarray(hi, dtype=float), rounds


def _var(name: str, values: Any) -> xr.Variable:
    dims, long_name, units = VARIABLES[name]
    return xr.Variable(dims, np.asarray(values), {"long_name": long_name, "units": units})


def limit(config: Mapping[str, Any], out: str | Path | None = None) -> xr.Dataset:
    """Run the divergence search of a limit config; with ``out``, write the NetCDF there atomically."""
    config = validate_limit(config)
    problem = build_problem(config)
    started, cpu = time.perf_counter(), time.process_time()
    search = scan if config["search"]["method"] == "scan" else bisect
    with torch.no_grad():
        trials, result, rounds = search(problem, config)
    rep, eta, step, seed = (list(col) for col in zip(*trials, strict=True))
    ds = xr.Dataset(
        {
            "limit_repetition": _var("limit_repetition", rep),
            "limit_eta": _var("limit_eta", eta),
            "limit_diverged": _var("limit_diverged", [int(s > 0) for s in step]),
            "limit_diverged_step": _var("limit_diverged_step", step),
            "limit_seed": _var("limit_seed", np.asarray(seed, dtype=np.int64)),
            "limit_max_lr": _var("limit_max_lr", result),
        },
        coords={"trial": np.arange(len(rep)), "repetition": np.arange(len(result))},
        attrs={
            **provenance(config),
            "seed": config["seed"],
            "method": config["search"]["method"],
            "max_lr": float(np.mean(result)),
            "max_lr_std": float(np.std(result, ddof=1)) if len(result) > 1 else 0.0,
            "n_trials": len(rep),
            "n_rounds": rounds,
            "wall_time_s": time.perf_counter() - started,
            "cpu_time_s": time.process_time() - cpu,
            "status": "complete" if np.all(np.isfinite(result)) else "incomplete",
        },
    )
    if out is not None:
        write_run(ds, Path(out))
    return ds
