"""The run engine: train by a config's update rule, measure curvature on a schedule, cache one NetCDF per run.

``run(config, out)`` is the whole job: validate, build data and model (seeded), then for t = 0..steps:
take the step's batch gradient, stop if the loss is non-finite or above ``divergence.max_loss`` (a diverged run
is a result: it is recorded and the file is written), measure if t is on the schedule, update. The run ends at
``steps``, earlier when ``stop.examples`` examples were seen, or at the first measurement whose training loss is below
``stop.train_loss``; attrs ``stop_reason`` and ``stop_step`` say which and when. Measurements of
the full-batch Hessian share one operator per measurement step (one graph build: FullBS, directional sharpness,
layer sharpness, gradient norms, tr(H S_b), Hutchinson); MiniBS and Batch Sharpness share one stacked
mini-batch operator. Eigenvectors warm-start the next measurement.

Every random draw comes from two explicit generators (training batches; measurement batches and probes),
whose states are checkpointed with the parameters, so a killed run resumed from its checkpoint ends identical to
an uninterrupted one, and a config reproduces its numbers exactly on CPU. The files a run writes, its lock and
its signal handling are :mod:`eoslab.runfiles`'s: partial results go to ``<out>.partial``, never to ``out``.
"""

import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import torch
import xarray as xr
from torch import Tensor, nn
from torch.func import functional_call

from eoslab.config import ConfigError, check_device, config_hash, validate
from eoslab.curvature import eigs, layer_eigs, layer_masks, layers
from eoslab.data import load_data
from eoslab.losses import LossFn, get_loss
from eoslab.measurements import Context, take_measurements
from eoslab.models import build_model
from eoslab.operators import HessianOperator, Params, grad_and_value, objective
from eoslab.optim import grad_norm
from eoslab.rules import RULES, Batch, Rule, build_rule, sample
from eoslab.runfiles import (
    Interrupted,
    OutputError,
    RunFiles,
    caught_signals,
    claimed,
    code_version,
    load_checkpoint,
    provenance,
    save_checkpoint,
    write_run,
)
from eoslab.store import to_dataset
from eoslab.warmstart import flat_params, initial_params


@dataclass
class Problem:
    """What a run trains on: the model (its parameters are the initial θ), the loss, and tensors on the device.

    ``Y``/``Y_test`` are the loss targets (one-hot for MSE on classification data); ``labels``/``labels_test``
    the class labels for accuracy (None for regression).
    """

    model: nn.Module
    loss_fn: LossFn
    X: Tensor
    Y: Tensor
    X_test: Tensor
    Y_test: Tensor
    labels: Tensor | None
    labels_test: Tensor | None


def build_problem(config: dict[str, Any]) -> Problem:
    """Data, targets and the seeded initial model of a validated config (the global RNG is left untouched)."""
    dtype, device = getattr(torch, config["dtype"]), torch.device(config["device"])
    try:
        data = load_data({**config["data"], "dtype": config["dtype"]}).to(device)
    except (ValueError, TypeError, FileNotFoundError) as error:  # bad arguments (n_train too large, ...) or files
        raise ConfigError(f"data: {error}") from error
    if config["loss"] == "cross_entropy" and not data.is_classification:
        raise ConfigError(f"loss: cross_entropy needs a classification dataset, {data.name!r} is regression")
    kind = "labels" if config["loss"] == "cross_entropy" else "onehot"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        try:
            model = build_model(config["model"], data.input_shape, data.output_dim)
        except (ValueError, TypeError, RuntimeError) as error:  # bad arguments (unknown activation, shapes, ...)
            raise ConfigError(f"model: {error}") from error
    model = model.to(dtype=dtype, device=device)
    labels = data.targets("labels") if data.is_classification else None
    labels_test = data.targets("labels", test=True) if data.is_classification else None
    return Problem(
        model,
        get_loss(config["loss"]),
        data.X,
        data.targets(kind),
        data.X_test,
        data.targets(kind, test=True),
        labels,
        labels_test,
    )


@dataclass
class State:
    """Everything a run carries from step to step (what a checkpoint saves): ``rule`` is the update rule's state
    (:meth:`eoslab.rules.Rule.init`), ``cursor`` the reshuffle sampler's permutation and position, ``warm`` the
    measurements' last eigenvectors."""

    step: int
    params: Params
    train_rng: Tensor
    measure_rng: Tensor
    cursor: dict[str, Any] = field(default_factory=dict)
    rule: dict[str, Any] = field(default_factory=dict)
    warm: dict[str, Tensor] = field(default_factory=dict)
    measured: dict[str, list] = field(default_factory=dict)
    per_iteration: dict[str, list] = field(default_factory=dict)
    elapsed: float = 0.0
    diverged_step: int = -1
    last_finite_loss: float = math.nan
    saved: dict[int, list[float]] = field(default_factory=dict)
    stop_reason: str = "steps"


def is_measure_step(t: int, config: dict[str, Any], last: int | None = None) -> bool:
    """Measure at t = 0, every ``every`` steps, every ``early_every`` steps up to ``early_until``, every ``every``
    steps of each dense window (counted from its ``from``), and at the end (``last``, default ``steps``)."""
    m = config["measure"]
    return (
        t % m["every"] == 0
        or (t <= m["early_until"] and t % m["early_every"] == 0)
        or any(w["from"] <= t <= w["until"] and (t - w["from"]) % w["every"] == 0 for w in m["windows"])
        or t == (config["steps"] if last is None else last)
    )


def last_step(config: dict[str, Any], n: int) -> tuple[int, str]:
    """The run's final step and its stop reason: ``steps`` ("steps"), or fewer when ``stop.examples`` runs out
    first ("examples"; SGD sees b examples per step, full-batch rules n)."""
    budget, steps = config["stop"]["examples"], config["steps"]
    short = steps if budget is None else math.ceil(budget / (config["optimizer"]["batch_size"] or n))
    return (short, "examples") if short < steps else (steps, "steps")


def reached_target(values: dict[str, Any], config: dict[str, Any]) -> bool:
    """Whether a measurement's full-batch training loss is below ``stop.train_loss``."""
    target = config["stop"]["train_loss"]
    return target is not None and values["train_loss"] < target


def next_batch(state: State, n: int, config: dict[str, Any], gen: torch.Generator) -> Tensor | None:
    """The step's example indices: None for a full-batch rule; a stochastic rule's batch by
    :func:`eoslab.rules.sample` (``optimizer.sampling``)."""
    opt = config["optimizer"]
    if not RULES[opt["rule"]].stochastic:
        return None
    return sample(n, opt["batch_size"], opt["sampling"], gen, state.cursor)


def _record(store: dict[str, list], values: dict[str, Any]) -> None:
    for key, value in values.items():
        store.setdefault(key, []).append(value.tolist() if isinstance(value, Tensor) else value)


def _pad_missing(store: dict[str, list], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` plus NaN (shaped like the last entry) for every measured variable it lacks.

    A diverged measurement carries only the losses; padding keeps every variable as long as ``step``.
    """
    missing = {k: torch.full(torch.tensor(v[-1]).shape, math.nan).tolist() for k, v in store.items() if v}
    return {k: v for k, v in missing.items() if k != "step"} | values


def _is_diverged(loss: float, config: dict[str, Any]) -> bool:
    limit = config["divergence"]["max_loss"]
    return not math.isfinite(loss) or (limit is not None and loss > limit)


SYNC_EVERY = 32
"""Training steps between reads of the batch loss and ‖g‖ back to the host, for rules whose step needs neither
(:attr:`eoslab.rules.Rule.host_every_step`): on a GPU the hot path then never waits for the device."""


def _read_back(state: State, config: dict[str, Any], start: int) -> bool:
    """Bring the per-step batch losses and gradient norms from ``start`` on to the host (one transfer) and check
    them in order. At the first diverged step s the run is cut back to s, as if it had stopped there: the steps
    after it are dropped (their updates took a non-finite gradient), ``diverged_step = step = s``. Returns whether
    it diverged."""
    losses, norms = state.per_iteration.get("batch_loss", []), state.per_iteration.get("step_grad_norm", [])
    if start >= len(losses) or not isinstance(losses[start], Tensor):  # read every step (sync_every 1)
        return False
    values = torch.stack([torch.stack([a, g]) for a, g in zip(losses[start:], norms[start:], strict=True)]).tolist()
    for i, (loss, gnorm) in enumerate(values):
        s = start + i
        if _is_diverged(loss, config) or not math.isfinite(gnorm):
            for key in state.per_iteration:
                del state.per_iteration[key][s:]
            state.saved = {t: v for t, v in state.saved.items() if t <= s}
            state.diverged_step = state.step = s
            losses[start:s], norms[start:s] = [v[0] for v in values[:i]], [v[1] for v in values[:i]]
            state.last_finite_loss = losses[s - 1] if s > 0 else state.last_finite_loss
            return True
    losses[start:], norms[start:] = [v[0] for v in values], [v[1] for v in values]
    state.last_finite_loss = losses[-1]
    return False


def evaluate(problem: Problem, params: Params, test: bool) -> dict[str, float]:
    """Loss (and accuracy for classification) on the training or the test set."""
    X, Y, labels = (
        (problem.X_test, problem.Y_test, problem.labels_test) if test else (problem.X, problem.Y, problem.labels)
    )
    prefix = "test" if test else "train"
    if len(X) == 0:
        return {}
    with torch.no_grad():
        pred = functional_call(problem.model, params, (X,))
        out = {f"{prefix}_loss": problem.loss_fn(pred, Y).item()}
        if labels is not None:
            out[f"{prefix}_accuracy"] = (pred.argmax(-1) == labels).double().mean().item()
    return out


def measure(problem: Problem, params: Params, config: dict[str, Any], state: State, gen, rule: Rule) -> dict:
    """Losses (and accuracies), then every measurement the config switches on (:mod:`eoslab.measurements`), which
    see the step size, the batch size, the sampling and the rule's preconditioner."""
    out = evaluate(problem, params, test=False)
    if config["measure"]["test"]:
        out |= evaluate(problem, params, test=True)
    if _is_diverged(out["train_loss"], config):
        return out
    opt = config["optimizer"]
    ctx = Context(
        problem,
        params,
        config["measure"],
        state.warm,
        gen,
        lr=opt["lr"],
        train_batch_size=opt["batch_size"],
        replace=opt["sampling"] == "iid",
        loss=config["loss"],
        preconditioner=lambda grads, curvature: rule.preconditioner(params, grads, state.rule, curvature),
    )
    return out | take_measurements(ctx)


def _current_sharpness(problem: Problem, m: dict[str, Any], gen: torch.Generator) -> Callable:
    """The schedules' curvature (θ, kind, rule state) → λ_t, or λ_{i,t} per layer, of the full-batch Hessian,
    warm-started from the rule state's ``schedule`` vector."""

    def curvature(params: Params, kind: str, state: dict[str, Any]) -> dict[str, Any]:
        X, Y = problem.X[: m["subset"]], problem.Y[: m["subset"]]
        op = HessianOperator(problem.model, problem.loss_fn, X, Y, params)
        solver = {"tol": m["tol"], "max_iter": m["max_iter"], "generator": gen, "criterion": "residual"}
        if kind == "layer_sharpness":
            masks = layer_masks(op, problem.model)
            res = layer_eigs(op, masks, v0=state.get("schedule"), **solver)
            state["schedule"] = res.vectors[:, 0]
            return {"layer_sharpness": dict(zip(masks, res.values[:, 0].tolist(), strict=True))}
        res = eigs(op, v0=state.get("schedule"), **solver)
        state["schedule"] = res.vectors[0]
        return {"sharpness": res.values[0, 0].item()}

    return curvature


def _dataset(problem: Problem, config: dict[str, Any], state: State, status: str) -> xr.Dataset:
    attrs = {
        **provenance(config),
        "seed": config["seed"],
        "eta": config["optimizer"]["lr"],
        "wall_time_s": state.elapsed,
        "status": status,
        "diverged": int(state.diverged_step >= 0),
        "diverged_step": state.diverged_step,
        "last_finite_loss": state.last_finite_loss,
        "stop_reason": "diverged" if state.diverged_step >= 0 else state.stop_reason,
        "stop_step": state.step,
    }
    return to_dataset(state.measured, state.per_iteration, list(layers(problem.model)), attrs, state.saved)


def _checkpoint(path: Path, state: State, digest: str, gens: tuple[torch.Generator, ...], started: float) -> None:
    """Save ``state`` (with the generators' states and the elapsed time) for :func:`_load_checkpoint`."""
    state.train_rng, state.measure_rng = (g.get_state() for g in gens)
    state.elapsed = time.perf_counter() - started
    save_checkpoint(path, {"config_hash": digest, "code_hash": code_version()["code_hash"], "state": asdict(state)})


def _load_checkpoint(path: Path | None, digest: str, any_code: bool = False) -> State | None:
    """The checkpoint's State, None if there is none to resume; OutputError for one whose state this code does not
    know (written by older code, resumed with ``any_code``)."""
    saved = None if path is None else load_checkpoint(path, digest, any_code)
    if saved is None:
        return None
    unknown = sorted(set(saved) - {f.name for f in fields(State)})
    if unknown:
        raise OutputError(f"{path}: its state has {unknown}, which this code does not resume; remove it to start fresh")
    return State(**saved)


def _interrupt(signum: int, files: RunFiles, problem: Problem, config, state: State, digest, gens, started) -> NoReturn:
    """Checkpoint, flush the partial results (status "interrupted") and raise Interrupted."""
    _checkpoint(files.ckpt, state, digest, gens, started)
    write_run(_dataset(problem, config, state, "interrupted"), files.partial)
    name = signal.Signals(signum).name
    raise Interrupted(signum, f"{name} at step {state.step}: saved {files.ckpt}; the same command resumes the run")


def run(
    config: dict[str, Any],
    out: str | Path | None = None,
    quiet: bool = True,
    resume_any_code: bool = False,
    wait: bool = True,
) -> xr.Dataset:
    """Run one config end to end; with ``out``, write the NetCDF there (partial results to ``<out>.partial``).

    A checkpoint ``<out>.ckpt`` is written every ``checkpoint_every`` steps, and on SIGTERM/SIGINT (then
    :class:`~eoslab.runfiles.Interrupted` is raised), and resumed from if present (same config hash and, unless
    ``resume_any_code``, same code); it is removed when the run ends. If another process writes ``out``, wait
    for it and return what it made (``wait=False``: OutputError). Returns the run's Dataset.
    """
    with claimed(out) as files, caught_signals(enabled=out is not None) as received:
        return _run(config, files, quiet, resume_any_code, wait, received)


def _run(config: dict[str, Any], files: RunFiles, quiet: bool, resume_any_code: bool, wait: bool, received: list):
    config = validate(config)
    check_device(config["device"])
    digest = config_hash(config)
    problem = build_problem(config)
    f = objective(problem.model, problem.loss_fn, dict(problem.model.named_buffers()))
    layer_params = layers(problem.model)
    opt = config["optimizer"]
    rule = build_rule(opt, layer_params)
    if rule.stochastic and opt["batch_size"] > len(problem.X):
        raise ConfigError(f"optimizer.batch_size: {opt['batch_size']} exceeds the {len(problem.X)} training examples")
    m, b = config["measure"], config["measure"]["batch_size"] or opt["batch_size"]
    n_full = len(problem.X[: m["subset"]])
    if m["minibatch"] and b > len(problem.X):
        raise ConfigError(f"measure.batch_size: {b} exceeds the {len(problem.X)} training examples")
    if (m["interaction"] or m["interaction_exact"]) and b > n_full:
        raise ConfigError(f"measure.batch_size: {b} exceeds the {n_full} examples of the full-batch measures")
    theta0 = initial_params(problem.model, config)  # checks init.file before anything is created
    files.claim(wait, received)
    if (made := files.made_meanwhile(digest)) is not None:
        return made
    out, ckpt = files.out, files.ckpt
    train_gen = torch.Generator().manual_seed(config["seed"])
    measure_gen = torch.Generator().manual_seed(config["seed"] + 1_000_003)
    rule.curvature = _current_sharpness(problem, m, measure_gen)
    state = _load_checkpoint(ckpt, digest, resume_any_code)
    if state is None:
        state = State(0, theta0, train_gen.get_state(), measure_gen.get_state(), rule=rule.init(theta0))
    steps, state.stop_reason = last_step(config, len(problem.X))
    train_gen.set_state(state.train_rng)
    measure_gen.set_state(state.measure_rng)
    started = time.perf_counter() - state.elapsed
    from tqdm.auto import tqdm  # lazily: a quiet DAG job does not need it

    bar = tqdm(total=steps, initial=state.step, disable=quiet, desc=config["name"], dynamic_ncols=True)
    n_measured = len(state.measured.get("step", []))
    sync_every = 1 if rule.host_every_step else SYNC_EVERY
    synced = state.step  # steps before `synced` are checked on the host
    while True:
        t = state.step
        if t in config["save_params"]:
            state.saved[t] = flat_params(state.params)
        if t < steps:
            idx = next_batch(state, len(problem.X), config, train_gen)
            Xb, Yb = (problem.X, problem.Y) if idx is None else (problem.X[idx], problem.Y[idx])
            grads, loss = grad_and_value(f)(state.params, Xb, Yb)
            loss, gnorm = loss.detach(), grad_norm(grads).detach()  # read back by _read_back, not here
            if sync_every == 1:
                loss, gnorm = loss.item(), gnorm.item()
                if _is_diverged(loss, config) or not math.isfinite(gnorm):
                    state.diverged_step = t
                    break
                state.last_finite_loss = loss
        if is_measure_step(t, config, steps):
            if _read_back(state, config, synced):
                break
            synced = t
            if sync_every > 1 and t < steps and (_is_diverged(loss.item(), config) or not gnorm.isfinite()):
                state.diverged_step = t  # this step's batch too, before measuring at θ_t
                break
            values = measure(problem, state.params, config, state, measure_gen, rule)
            _record(state.measured, {"step": t} | _pad_missing(state.measured, values))
            n_measured += 1
            if _is_diverged(values["train_loss"], config):
                state.diverged_step = t
                break
            if t < steps and reached_target(values, config):
                state.stop_reason = "train_loss"
                break
            if "sharpness" in values:
                bar.set_postfix(loss=f"{values['train_loss']:.3g}", sharpness=f"{values['sharpness'][0].item():.4g}")
            if out is not None and config["flush_every"] and n_measured % config["flush_every"] == 0:
                state.elapsed = time.perf_counter() - started
                write_run(_dataset(problem, config, state, "running"), files.partial)
        if t == steps:
            break
        state.params, lr_eff = rule.step(state.params, grads, loss, gnorm, Batch(f, Xb, Yb), state.rule)
        for key, value in {"batch_loss": loss, "step_grad_norm": gnorm, "lr_eff": lr_eff}.items():
            state.per_iteration.setdefault(key, []).append(value)  # losses may stay on the device until read back
        state.step += 1
        bar.update()
        every = config["checkpoint_every"]
        checkpoint = ckpt is not None and every and state.step % every == 0 and state.step < steps
        if checkpoint or received or state.step - synced >= sync_every:
            if _read_back(state, config, synced):
                break
            synced = state.step
        if checkpoint:
            _checkpoint(ckpt, state, digest, (train_gen, measure_gen), started)
        if received:  # SIGTERM/SIGINT
            _interrupt(received[0], files, problem, config, state, digest, (train_gen, measure_gen), started)
    bar.close()
    state.elapsed = time.perf_counter() - started
    ds = _dataset(problem, config, state, "diverged" if state.diverged_step >= 0 else "complete")
    if out is not None:
        write_run(ds, out)
        files.finish()
    return ds
