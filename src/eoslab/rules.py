"""Update rules as objects, in the style of the Central Flows code (Cohen et al. 2024, arXiv:2410.24206): a rule
carries its own state and exposes its preconditioner.

A step is θ ← θ − D ⊙ s·u, with D the per-parameter step sizes of the schedule (:func:`eoslab.optim.step_sizes`),
u the rule's direction (g for GD, the momentum buffer, Adam's m̂/(√v̂ + ε)) and s the rule's scalar factor
(:data:`eoslab.optim.SCALES`; 1 unless NGD or √L-GD; the Armijo line search's η_t/lr). A rule

- initialises its state from θ (:meth:`Rule.init`: a dict of tensors and numbers, checkpointed with the run);
- steps from (θ, g, the batch loss L_B, ‖g‖, the batch, its state) (:meth:`Rule.step`);
- exposes its preconditioner D = η·P⁻¹ (:meth:`Rule.preconditioner`): η·I for GD/SGD, the layer-wise η_i = lr/λ_i
  of Fox's schedules, η/((1 − β₁ᵗ)(√v̂ + ε)) for Adam/RMSProp, so that λmax(D^½ H D^½) = η·λmax(P⁻¹H);
- says whether it draws mini-batches (``stochastic``) and whether it needs the batch loss and ‖g‖ on the host
  every step (``host_every_step``).

:data:`RULES` is the registry: ``optimizer.rule`` → class. Rule-specific keys (``momentum``, ``beta1``, ``beta2``)
are declared by the class (``keys``: default and description, from which :func:`key_schema` makes the config
schema's entries) and refused for rules that do not read them. A new rule is one class and one row here.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from eoslab.curvature import sample_batches
from eoslab.operators import Params
from eoslab.optim import SCALES, apply_step, armijo_step, step_sizes

Curvature = Callable[[Params, str, dict[str, Any]], dict[str, Any]]
"""(θ, "sharpness" | "layer_sharpness", rule state) → {"sharpness": λ} or {"layer_sharpness": {layer: λ_i}}."""


@dataclass(frozen=True)
class Batch:
    """The batch a step was taken on and its loss function f(θ; X, Y) (for line searches)."""

    f: Callable[[Params, Tensor, Tensor], Tensor]
    X: Tensor
    Y: Tensor


SCHEDULE_NEEDS: dict[str, str | None] = {
    "constant": None,
    "inv_initial_sharpness": "sharpness",
    "inv_sharpness": "sharpness",
    "layerwise": "layer_sharpness",
}
"""Step-size schedule → the curvature it reads at θ_t (``inv_initial_sharpness`` only at t = 0)."""


def sample(n: int, b: int, sampling: str, gen: torch.Generator, cursor: dict[str, Any] | None = None) -> Tensor:
    """One mini-batch of b example indices out of n: ``subset`` (b distinct, fresh each call) and ``iid`` (b with
    replacement) are one row of :func:`eoslab.curvature.sample_batches`, the estimators' sampler (the same draws);
    ``reshuffle`` takes consecutive slices of a permutation redrawn per epoch (``cursor`` carries the permutation
    and the position between calls)."""
    if sampling != "reshuffle":
        return sample_batches(n, b, 1, sampling == "iid", gen)[0]
    if cursor.get("perm") is None or cursor["pos"] + b > n:
        cursor["perm"], cursor["pos"] = torch.randperm(n, generator=gen), 0
    cursor["pos"] += b
    return cursor["perm"][cursor["pos"] - b : cursor["pos"]]


class Rule:
    """Gradient descent: u = g, s = 1 (``gd``). Subclasses change the direction, the factor or the preconditioner."""

    keys: ClassVar[dict[str, tuple[float, str]]] = {}
    """Rule-specific optimizer keys (each a coefficient in [0, 1)): name → (default, description)."""
    stochastic: ClassVar[bool] = False
    """Whether the rule steps on mini-batches of ``optimizer.batch_size`` examples."""
    scaled: ClassVar[bool] = False
    """Whether the step has a scalar factor s read from the batch loss or ‖g‖ (on the host)."""
    stateful: ClassVar[bool] = False
    """Whether the rule carries tensors from step to step (momentum buffers, moment estimates)."""

    def __init__(self, opt: dict[str, Any], layer_params: dict[str, list[str]], curvature: Curvature | None = None):
        self.opt, self.lr, self.layer_params, self.curvature = opt, opt["lr"], layer_params, curvature

    @property
    def host_every_step(self) -> bool:
        """Whether a step reads the batch loss or ‖g‖ on the host (a scalar factor or a sharpness-based schedule)."""
        return self.scaled or self.opt["schedule"] != "constant"

    def init(self, params: Params) -> dict[str, Any]:
        """The rule's state before the first step."""
        return {}

    def sizes(self, params: Params, state: dict[str, Any], curvature: Curvature | None = None) -> dict[str, float]:
        """Parameter name → η_k of the schedule at θ (the one place step sizes are computed); ``curvature``
        (default the rule's own) measures the sharpness a schedule reads."""
        need = SCHEDULE_NEEDS[self.opt["schedule"]]
        current: dict[str, Any] = {}
        if need and not (self.opt["schedule"] == "inv_initial_sharpness" and "initial_sharpness" in state):
            current = (curvature or self.curvature)(params, need, state)
            if "sharpness" in current:
                state.setdefault("initial_sharpness", current["sharpness"])
        initial = state.get("initial_sharpness")
        return step_sizes(self.opt["schedule"], self.lr, self.layer_params, initial_sharpness=initial, **current)

    def scale(self, params: Params, grads: Params, loss: float, gnorm: float, batch: Batch, state: dict) -> float:
        """The scalar factor s: 1."""
        return 1.0

    @classmethod
    def threshold(cls, opt: dict[str, Any]) -> float:
        """The quadratic stability threshold of λmax(D^½HD^½) = η·λmax(P⁻¹H): 2."""
        return 2.0

    def direction(self, grads: Params, state: dict[str, Any]) -> Params:
        """u: the gradient."""
        return grads

    def step(
        self, params: Params, grads: Params, loss: Any, gnorm: Any, batch: Batch, state: dict[str, Any]
    ) -> tuple[Params, list[float]]:
        """θ − D ⊙ s·u, and the effective step size η_i·s of every layer (``lr_eff``)."""
        sizes = self.sizes(params, state)
        scale = self.scale(params, grads, loss, gnorm, batch, state)
        new = apply_step(params, self.direction(grads, state), sizes, scale)
        return new, [sizes[names[0]] * scale for names in self.layer_params.values()]

    def preconditioner(
        self, params: Params, grads: Params, state: dict[str, Any], curvature: Curvature | None = None
    ) -> Params:
        """D at θ for the gradient g, as the next step would take it (state left unchanged): the schedule's η_k."""
        sizes = self.sizes(params, dict(state), curvature)
        return {k: v.new_full(v.shape, sizes[k]) for k, v in params.items()}


class Scaled(Rule):
    """GD with the scalar factor s of :data:`eoslab.optim.SCALES`: NGD (``ngd``) and √L-GD (``sqrt_gd``)."""

    scaled = True

    def scale(self, params: Params, grads: Params, loss: float, gnorm: float, batch: Batch, state: dict) -> float:
        return SCALES[self.opt["rule"]](gnorm, loss, self.opt["loss_offset"], self.opt["eps"])


class SGD(Rule):
    """Mini-batch SGD (``sgd``): GD's step on b examples drawn by :func:`sample`."""

    stochastic = True


class Armijo(Rule):
    """The Armijo line search (``armijo``, :func:`eoslab.optim.armijo_step`): s = η_t/lr, η_{t−1} in the state."""

    scaled = True

    def scale(self, params: Params, grads: Params, loss: float, gnorm: float, batch: Batch, state: dict) -> float:
        loss_at = lambda p: float(batch.f(p, batch.X, batch.Y))  # noqa: E731
        eta = armijo_step(loss_at, params, grads, loss, float(state.get("armijo", self.lr)))
        state["armijo"] = eta
        return eta / self.lr


class HeavyBall(Rule):
    """Heavy-ball momentum in PyTorch's form (``heavy_ball``): v ← βv + g, θ ← θ − ηv. On a quadratic it is stable
    iff ηλ < 2 + 2β (Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability",
    ICLR 2021, arXiv:2103.00065)."""

    keys: ClassVar[dict[str, tuple[float, str]]] = {"momentum": (0.9, "β of heavy-ball/Nesterov momentum, v ← βv + g")}
    stateful = True

    @classmethod
    def threshold(cls, opt: dict[str, Any]) -> float:
        """2 + 2β."""
        return 2 + 2 * opt["momentum"]

    def init(self, params: Params) -> dict[str, Any]:
        return {"buf": {k: torch.zeros_like(v) for k, v in params.items()}}

    def direction(self, grads: Params, state: dict[str, Any]) -> Params:
        beta = self.opt["momentum"]
        state["buf"] = {k: beta * v + grads[k] for k, v in state["buf"].items()}
        return state["buf"]


class Nesterov(HeavyBall):
    """Nesterov momentum in PyTorch's form (``nesterov``): v ← βv + g, θ ← θ − η(g + βv); stable on a quadratic iff
    ηλ < (2 + 2β)/(1 + 2β)."""

    def direction(self, grads: Params, state: dict[str, Any]) -> Params:
        buf = super().direction(grads, state)
        return {k: g + self.opt["momentum"] * buf[k] for k, g in grads.items()}

    @classmethod
    def threshold(cls, opt: dict[str, Any]) -> float:
        """(2 + 2β)/(1 + 2β)."""
        return (2 + 2 * opt["momentum"]) / (1 + 2 * opt["momentum"])


class Adam(Rule):
    """Adam (``adam``; Kingma & Ba 2015, arXiv:1412.6980): m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²,
    θ ← θ − η m̂/(√v̂ + ε) with m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ). Written θ ← θ − ηP⁻¹m, the preconditioner is
    P = (1 − β₁ᵗ)·diag(√v̂ + ε); full-batch Adam keeps λmax(P⁻¹H) at (2 + 2β₁)/((1 − β₁)η) (Cohen et al.,
    "Adaptive Gradient Methods at the Edge of Stability", 2022, arXiv:2207.14484)."""

    keys: ClassVar[dict[str, tuple[float, str]]] = {
        "beta1": (0.9, "Adam's β₁: m ← β₁m + (1 − β₁)g"),
        "beta2": (0.999, "Adam's and RMSProp's β₂: v ← β₂v + (1 − β₂)g²"),
    }
    stateful = True

    @property
    def beta1(self) -> float:
        return self.opt["beta1"]

    @classmethod
    def threshold(cls, opt: dict[str, Any]) -> float:
        """(2 + 2β₁)/(1 − β₁) (2 for RMSProp, β₁ = 0)."""
        b1 = opt.get("beta1", 0.0)
        return (2 + 2 * b1) / (1 - b1)

    def init(self, params: Params) -> dict[str, Any]:
        zeros = {k: torch.zeros_like(v) for k, v in params.items()}
        return {"t": 0, "m": zeros, "v": dict(zeros)}

    def _moment(self, grads: Params, state: dict[str, Any]) -> tuple[int, Params]:
        """(t + 1, v updated with g)."""
        b2 = self.opt["beta2"]
        return state["t"] + 1, {k: b2 * v + (1 - b2) * grads[k] ** 2 for k, v in state["v"].items()}

    def _p(self, t: int, v: Params) -> Params:
        """P = (1 − β₁ᵗ)(√v̂ + ε) per parameter."""
        b2 = self.opt["beta2"]
        return {k: (1 - self.beta1**t) * ((x / (1 - b2**t)).sqrt() + self.opt["eps"]) for k, x in v.items()}

    def direction(self, grads: Params, state: dict[str, Any]) -> Params:
        b1 = self.beta1
        state["t"], state["v"] = self._moment(grads, state)
        state["m"] = {k: b1 * m + (1 - b1) * grads[k] for k, m in state["m"].items()}
        p = self._p(state["t"], state["v"])
        return {k: m / p[k] for k, m in state["m"].items()}

    def preconditioner(
        self, params: Params, grads: Params, state: dict[str, Any], curvature: Curvature | None = None
    ) -> Params:
        """η·P⁻¹ with P from v updated with g: the preconditioner the step at θ takes."""
        p = self._p(*self._moment(grads, state))
        sizes = self.sizes(params, dict(state), curvature)
        return {k: sizes[k] / x for k, x in p.items()}


class RMSProp(Adam):
    """RMSProp (``rmsprop``): Adam with β₁ = 0 (v ← β₂v + (1 − β₂)g², θ ← θ − ηg/(√v̂ + ε), v̂ bias-corrected);
    full-batch it keeps λmax(P⁻¹H), P = diag(√v̂ + ε), at 2/η."""

    keys: ClassVar[dict[str, tuple[float, str]]] = {"beta2": Adam.keys["beta2"]}
    beta1 = 0.0


RULES: dict[str, type[Rule]] = {
    "gd": Rule,
    "sgd": SGD,
    "ngd": Scaled,
    "sqrt_gd": Scaled,
    "armijo": Armijo,
    "heavy_ball": HeavyBall,
    "nesterov": Nesterov,
    "rmsprop": RMSProp,
    "adam": Adam,
}
"""``optimizer.rule`` → its class (NGD and √L-GD are GD with the scalar factor of :data:`eoslab.optim.SCALES`)."""


def rule_options(opt: dict[str, Any]) -> dict[str, Any]:
    """``opt`` with the rule's own keys' defaults filled in; ValueError naming a key the rule does not read."""
    keys = RULES[opt["rule"]].keys
    foreign = sorted(set(key_schema()) - set(keys) & set(opt))
    if foreign:
        own = ", ".join(sorted(keys)) or "none"
        raise ValueError(f"optimizer: {foreign[0]!r} is not read by rule {opt['rule']!r} (its own keys: {own})")
    return {k: default for k, (default, _) in keys.items()} | opt


def key_schema() -> dict[str, dict[str, Any]]:
    """The JSON-schema entries of every rule-specific key (no schema default: a rule's defaults are filled in by
    :func:`rule_options` for that rule only, so configs of the other rules keep their hash)."""
    docs = {k: doc for cls in RULES.values() for k, (_, doc) in cls.keys.items()}
    return {k: {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "description": d} for k, d in docs.items()}


def build_rule(opt: dict[str, Any], layer_params: dict[str, list[str]], curvature: Curvature | None = None) -> Rule:
    """The rule object of a validated optimizer section."""
    return RULES[opt["rule"]](opt, layer_params, curvature)
