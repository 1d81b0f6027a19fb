"""Models: plain ``torch.nn`` networks and the papers' analytic toys, built from config dicts.

Every model here is a pure function of (parameters, input) with no buffers, no BatchNorm, no in-place ops
on inputs and no data-dependent Python control flow, so ``torch.func.functional_call`` and ``torch.func.vmap``
work over examples (one unbatched input at a time) and over stacked copies of the parameters.

Seeding: constructors draw their initial parameters from the *global* torch RNG and never seed it. Call
``torch.manual_seed(seed)`` (or use ``torch.random.fork_rng``) before building a model to get a reproducible
initialisation; the same seed and the same arguments give bit-identical parameters.

dtype: parameters are created in ``torch.get_default_dtype()`` (float32 unless changed); call ``.double()``
for float64 runs of tiny nets. Toys given explicit tensor values keep their dtype.

``build_model({"name": "mlp", "width": 64, "depth": 2, ...}, in_shape, out_dim)`` dispatches on ``MODELS``;
``PRESETS`` holds the papers' named architectures as config dicts (``{"name": "fc_tanh"}`` works too).
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "hardtanh": nn.Hardtanh,
}
"""Activation name → module class. "linear" is ``nn.Identity`` (a module, so layer indices stay fixed)."""

INITS = ("default", "eoss")
"""``"default"``: PyTorch's own layer init. ``"eoss"``: the EoSS repository's re-initialisation."""


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by (case-insensitive) name; ValueError lists the allowed names."""
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[key]()


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; allowed: {', '.join(INITS)}")


def _eoss_init_(model: nn.Module, act: str, resnet: bool = False) -> None:
    """The EoSS repo's ``initialize_mlp``/``initialize_cnn``/``initialize_resnet`` (``utils/nets.py``).

    MLP/CNN: Xavier-normal with the tanh gain for tanh nets, else Kaiming-normal (fan_in, relu).
    ResNet: Kaiming-normal (fan_out, relu). Biases zero. The repo then multiplies the weights by
    ``--init-scale``; here the caller's ``init_scale`` multiplies every parameter (biases are zero anyway).
    """
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            if resnet:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif act.lower() == "tanh":
                nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


@torch.no_grad()
def _scale_(model: nn.Module, init_scale: float) -> None:
    for p in model.parameters():
        p.mul_(init_scale)


def _finish(model: nn.Module, act: str, init: str, init_scale: float, resnet: bool = False) -> None:
    _check_init(init)
    if init == "eoss":
        _eoss_init_(model, act, resnet=resnet)
    _scale_(model, init_scale)


# ---------------------------------------------------------------------------------------------------------
# Fully connected networks
# ---------------------------------------------------------------------------------------------------------


class MLP(nn.Sequential):
    """``nn.Sequential`` of Linear/activation modules; first flattens the last ``flatten_dims`` input dims.

    With ``flatten_dims=1`` (flat inputs) the forward is exactly ``nn.Sequential``'s. Flattening the *last*
    dims (not ``flatten(1)``) keeps it correct both on a batch (n, *in_shape) and on a single unbatched
    example under ``vmap``.
    """

    def __init__(self, *layers: nn.Module, flatten_dims: int = 1) -> None:
        super().__init__(*layers)
        self.flatten_dims = flatten_dims

    def forward(self, x: Tensor) -> Tensor:
        if self.flatten_dims > 1:
            x = x.flatten(-self.flatten_dims)
        return super().forward(x)


def mlp(
    in_dim: int,
    out_dim: int,
    width: int,
    depth: int,
    activation: str = "tanh",
    bias: bool = True,
    init_scale: float = 1.0,
    *,
    init: str = "default",
    flatten_dims: int = 1,
) -> MLP:
    """Fully connected net with ``depth`` hidden layers of ``width`` units (``depth + 1`` Linear layers).

    Reproduces: Cohen et al.'s ``fc-tanh``/``fc-relu`` (locuslab/edge-of-stability; widths [200, 200]
    → ``width=200, depth=2``); Andreyev & Beneventano's (EoSS) "MLP, 4 hidden layers, hidden size 512"
    (``width=512, depth=4``, the repo's ``mlp_l`` preset, ReLU there); Fox's "3 layers,
    10 units" f = W₃ h(W₂ h(X W₁ + b₁) + b₂) + b₃ (``width=10, depth=2``: 3 Linear layers, biases in
    all of them); Arora et al.'s 784-128-10 / 64-256-10 GELU nets (``depth=1``).

    A plain ``nn.Sequential`` (subclass :class:`MLP`): Linear, activation, Linear, ..., Linear, so the Linear
    layers are named "0", "2", ..., "2·depth" whatever the activation ("linear" is ``nn.Identity``).
    Input (n, in_dim), output (n, out_dim); with ``flatten_dims=k`` the last k input dims are flattened first
    (images (n, 3, 32, 32) with ``in_dim=3072, flatten_dims=3``).

    Init: PyTorch's default ``nn.Linear`` init, then *every* parameter is multiplied by ``init_scale``
    (the EoSS repo's ``--init-scale 0.2`` makes training start flat). ``init="eoss"`` first
    re-initialises as the EoSS repo does (Kaiming-normal fan_in, or Xavier-normal with tanh gain for
    tanh; zero biases): for ReLU its weights are ≈√6× larger than PyTorch's default at the same scale.
    Does not seed: seed the global RNG before calling.
    """
    if depth < 0 or width < 1:
        raise ValueError(f"need depth >= 0 and width >= 1, got depth={depth}, width={width}")
    dims = [in_dim] + [width] * depth
    layers: list[nn.Module] = []
    for d_in, d_out in itertools.pairwise(dims):
        layers += [nn.Linear(d_in, d_out, bias=bias), make_activation(activation)]
    layers.append(nn.Linear(dims[-1], out_dim, bias=bias))
    model = MLP(*layers, flatten_dims=flatten_dims)
    _finish(model, activation, init, init_scale)
    return model


# ---------------------------------------------------------------------------------------------------------
# Convolutional networks
# ---------------------------------------------------------------------------------------------------------


def cnn(
    in_channels: int,
    num_classes: int,
    width: int = 32,
    depth: int = 2,
    activation: str = "relu",
    image_size: int = 32,
    init_scale: float = 1.0,
    *,
    fc_width: int | None = None,
    pooling: str = "max",
    bias: bool = True,
    init: str = "default",
) -> nn.Sequential:
    """Cohen-style convnet: ``depth`` × [conv 3×3 'same' (``width`` channels) → activation → 2×2 pool] → head.

    Reproduces: Cohen et al.'s ``cnn-relu``/``cnn-tanh``/``cnn-elu`` (locuslab/edge-of-stability
    ``convnet``: widths [32, 32], max pooling; ``cnn-avgpool-*`` with ``pooling="average"``) exactly,
    including layer order and biases; ``width=32, depth=2`` is that default. The head is ``Flatten``
    → [Linear(·, ``fc_width``) → activation] → Linear(·, ``num_classes``), the hidden layer only when
    ``fc_width`` is given. A pool is skipped once the feature map is 1×1, so any depth is valid.
    Input (n, in_channels, image_size, image_size).

    What is known about the papers' CNNs:

    - Seed 000 (EoSS), Fig. 2 "CNN, 5 layers": not described in the paper. Its repository's ``CNN``
      is 3 *valid* 3×3 convs (64, 64, 128) with max-pools after the 2nd and 3rd and a 512-unit hidden
      FC layer (2.48M parameters on CIFAR-10). That exact net is :func:`eoss_cnn`, not this function.
    - Lee & Jang's "6CNN", 0.51M parameters, on CIFAR-10-8k: only the name, the depth (6)
      and the parameter count are known. ``PRESETS["lee_jang_6cnn"]`` is a guess that matches both:
      ``width=128, depth=4, fc_width=128`` (4 convs + 2 FC = 6 layers, 513,290 parameters on CIFAR-10).
      The paper's LSSR heatmaps (Fig. 5) used BatchNorm; this model never has BatchNorm.

    Init: PyTorch default (or ``init="eoss"``), then every parameter × ``init_scale``. Does not seed.
    """
    if pooling not in ("max", "average"):
        raise ValueError(f"unknown pooling {pooling!r}; allowed: max, average")
    layers: list[nn.Module] = []
    size, prev = image_size, in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(prev, width, kernel_size=3, padding=1, bias=bias), make_activation(activation)]
        if size > 1:
            layers.append(nn.MaxPool2d(2) if pooling == "max" else nn.AvgPool2d(2))
            size //= 2
        prev = width
    layers.append(nn.Flatten(start_dim=-3))  # last three dims: works on (n, C, H, W) and on (C, H, W) in vmap
    features = prev * size * size
    if fc_width is not None:
        layers += [nn.Linear(features, fc_width, bias=bias), make_activation(activation)]
        features = fc_width
    layers.append(nn.Linear(features, num_classes, bias=bias))
    model = nn.Sequential(*layers)
    _finish(model, activation, init, init_scale)
    return model


def eoss_cnn(
    in_channels: int = 3,
    num_classes: int = 10,
    fc_width: int = 512,
    activation: str = "relu",
    image_size: int = 32,
    init_scale: float = 1.0,
    *,
    init: str = "default",
) -> nn.Sequential:
    """Seed 000's (EoSS, Fig. 2) "CNN, 5 layers", as in its repository (``utils/nets.py``, ``CNN``).

    conv3×3 valid (64) → act → conv3×3 valid (64) → act → maxpool 2 → conv3×3 valid (128) → act
    → maxpool 2 → Flatten → Linear(128·6·6, ``fc_width``) → act → Linear(``fc_width``, ``num_classes``):
    3 conv + 2 FC layers, 2,477,514 parameters on CIFAR-10. The repo trains it with b=8, η=0.02 and
    ``--init-scale 0.3`` on its own init (``init="eoss"`` here). Input (n, in_channels, image_size,
    image_size). Does not seed.
    """
    act = make_activation
    size = ((image_size - 4) // 2 - 2) // 2
    if size < 1:
        raise ValueError(f"image_size {image_size} too small for eoss_cnn (needs >= 12)")
    model = nn.Sequential(
        nn.Conv2d(in_channels, 64, 3),
        act(activation),
        nn.Conv2d(64, 64, 3),
        act(activation),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3),
        act(activation),
        nn.MaxPool2d(2),
        nn.Flatten(start_dim=-3),
        nn.Linear(128 * size * size, fc_width),
        act(activation),
        nn.Linear(fc_width, num_classes),
    )
    _finish(model, activation, init, init_scale)
    return model


class BasicBlock(nn.Module):
    """Residual block without normalisation: act(shortcut(x) + conv(act(conv(x)))).

    The shortcut is parameter-free ("option A" of He et al.'s CIFAR ResNets, as in the akamaster ResNets that
    locuslab's ``resnet32`` uses): stride-2 subsampling and zero-padding of the new channels.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, act: str, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
        self.act1 = make_activation(act)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=bias)
        self.act2 = make_activation(act)
        self.stride = stride
        self.pad = c_out - c_in

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.act1(self.conv1(x)))
        shortcut = x
        if self.stride != 1:  # fixed at construction: not data-dependent
            shortcut = shortcut[..., :: self.stride, :: self.stride]
        if self.pad:  # channel dim is -3 for (n, C, H, W) and for (C, H, W) under vmap
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return self.act2(out + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet without BatchNorm: stem conv → :class:`BasicBlock` stages → global avg pool → fc."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 16,
        blocks_per_stage: Sequence[int] = (2, 2, 2),
        act: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=bias)
        self.act = make_activation(act)
        blocks: list[nn.Module] = []
        c = width
        for i, n_blocks in enumerate(blocks_per_stage):
            c_out = width * 2**i
            for j in range(n_blocks):
                blocks.append(BasicBlock(c, c_out, stride=2 if (i > 0 and j == 0) else 1, act=act, bias=bias))
                c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.blocks(self.act(self.stem(x)))
        return self.fc(h.mean(dim=(-2, -1)))


def resnet(
    in_channels: int,
    num_classes: int,
    width: int = 16,
    blocks_per_stage: Sequence[int] = (2, 2, 2),
    activation: str = "relu",
    init_scale: float = 1.0,
    *,
    bias: bool = True,
    init: str = "default",
) -> ResNet:
    """Small CIFAR-style ResNet without BatchNorm; the defaults are Andreyev & Beneventano's (EoSS, Fig. 2) "ResNet-14".

    Depth = 2·Σ blocks_per_stage + 2 (stem + fc): (2, 2, 2) → ResNet-14, (3, 3, 3) → ResNet-20 (what
    the EoSS repo's ``resnet`` preset actually builds). Stage i has ``width·2^i`` channels; the first
    block of every stage after the first has stride 2. 172,042 parameters for ResNet-14, width 16,
    10 classes.

    Simplification, stated: the residual branch is conv3×3 → act → conv3×3 with biases, added to a
    parameter-free identity/option-A shortcut, then act. No BatchNorm, no Fixup/SkipInit scalars: with
    PyTorch's default (small) init each branch adds little variance, so the forward pass stays bounded. The
    EoSS repo's no-BN ResNet (``utils/resnet_new.py``) was not available to compare against.
    Input (n, in_channels, H, W) with any H, W ≥ 1 (global average pooling). Init: PyTorch default (or
    ``init="eoss"``: Kaiming-normal fan_out), then every parameter × ``init_scale``. Does not seed.
    """
    model = ResNet(in_channels, num_classes, width, tuple(blocks_per_stage), act=activation, bias=bias)
    _finish(model, activation, init, init_scale, resnet=True)
    return model


# ---------------------------------------------------------------------------------------------------------
# Analytic toys (docs/f0_analytic_toys.md): parameters are exactly the papers' variables
# ---------------------------------------------------------------------------------------------------------


ParamValue = Tensor | Sequence[Any] | None
"""An explicit parameter value: a tensor (keeps its dtype), a nested list, or None (draw one)."""


def _param(value: ParamValue, shape: tuple[int, ...], draw: Callable[[], Tensor]) -> nn.Parameter:
    """An explicit value (tensor keeps its dtype; lists use the default dtype), else ``draw()``."""
    t = draw() if value is None else torch.as_tensor(value).clone()
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if tuple(t.shape) != shape:
        raise ValueError(f"expected shape {shape}, got {tuple(t.shape)}")
    return nn.Parameter(t)


def diagonal_net_data() -> tuple[Tensor, Tensor]:
    """Seed 000 App. C's two data points z₁ = ((1, 0), 1), z₂ = ((0, 1), −1): X (2, 2), y (2, 1)."""
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([[1.0], [-1.0]])
    return X, y


class DiagonalLinearNet(nn.Module):
    """Andreyev & Beneventano (EoSS) App. C two-layer linear net f(x) = aᵀ B x on x ∈ ℝ².

    ``full=True``: parameters ``a`` ∈ ℝ² and ``B`` ∈ ℝ^{2×2} (6 parameters). ``full=False``: ``a``, ``b`` ∈ ℝ²
    with B = diag(b), i.e. f(x) = Σ a_i b_i x_i (4 parameters). With the half-MSE loss on
    :func:`diagonal_net_data`, a diagonal minimum has a₁b₁ = 1, a₂b₂ = −1. The per-sample Hessians there are
    rank one with eigenvalue λ₁ = a₁² + b₁² (+ a₂² with the full B) and λ₂ = a₂² + b₂² (+ a₁²): the seed's
    a_i² + b_i² holds only for the diagonal-only B.

    Input (n, 2) → output (n, 1). Unset parameters are drawn N(0, 1)·``init_scale`` (global RNG, not seeded).
    """

    data = staticmethod(diagonal_net_data)

    def __init__(
        self,
        full: bool = True,
        a: ParamValue = None,
        B: ParamValue = None,
        b: ParamValue = None,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.full = full
        self.a = _param(a, (2,), lambda: torch.randn(2) * init_scale)
        if full:
            if b is not None:
                raise ValueError("full=True takes B (2x2), not b")
            self.B = _param(B, (2, 2), lambda: torch.randn(2, 2) * init_scale)
        else:
            if B is not None:
                raise ValueError("full=False takes b (the diagonal of B), not B")
            self.b = _param(b, (2,), lambda: torch.randn(2) * init_scale)

    def forward(self, x: Tensor) -> Tensor:
        h = x @ self.B.T if self.full else x * self.b  # self.full is fixed at construction
        return (h @ self.a).unsqueeze(-1)


def matrix_completion_data(
    target: Sequence[Sequence[float]] | Tensor = ((1.0, 1.0), (1.0, 1.0)),
    observed: Sequence[tuple[int, int]] = ((0, 0), (0, 1), (1, 0)),
) -> tuple[Tensor, Tensor]:
    """Observed entries of a 2×2 target as one-hot measurements: X (k, 4) = e_{2i+j}, y (k, 1) = M*_ij.

    Our choice (the paper does not pin it down): rank-one all-ones target, (1, 1) entry unobserved, so the minima
    u₁v₁ = u₁v₂ = u₂v₁ = 1 form a curve (scale t: u = (t, t), v = (1/t, 1/t)) along which the sharpness grows.
    """
    M = torch.as_tensor(target, dtype=torch.get_default_dtype())
    X = torch.zeros(len(observed), 4)
    for k, (i, j) in enumerate(observed):
        X[k, 2 * i + j] = 1.0
    y = torch.stack([M[i, j] for i, j in observed]).unsqueeze(-1)
    return X, y


class MatrixCompletion2x2(nn.Module):
    """Seed 000 (EoSS) Fig. 4's 2×2 matrix completion, in our reading (the paper's model is under-specified).

    The paper says only "2×2 matrix completion with (a, b) and itself transposed". Natural reading
    used here: factors U, V ∈ ℝ^{2×r} (rank ``rank``, default 1, so U = (a, b)ᵀ), M = U Vᵀ, and the model
    predicts the observed entries. ``symmetric=True`` is the other reading, M = U Uᵀ (no V). An input
    row x ∈ ℝ⁴ is a one-hot (or any linear) measurement of vec(M) in row-major order:
    f(x) = ⟨x, vec(U Vᵀ)⟩, so the data are :func:`matrix_completion_data`. Input (n, 4) → output (n, 1).
    Not for quantitative reproduction (spec Appendix item 3). Unset factors are drawn
    N(0, 1)·``init_scale``. Does not seed.
    """

    data = staticmethod(matrix_completion_data)

    def __init__(
        self,
        rank: int = 1,
        symmetric: bool = False,
        U: ParamValue = None,
        V: ParamValue = None,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.symmetric = symmetric
        self.U = _param(U, (2, rank), lambda: torch.randn(2, rank) * init_scale)
        if symmetric:
            if V is not None:
                raise ValueError("symmetric=True has no V")
        else:
            self.V = _param(V, (2, rank), lambda: torch.randn(2, rank) * init_scale)

    def matrix(self) -> Tensor:
        """The completed 2×2 matrix U Vᵀ (or U Uᵀ)."""
        return self.U @ (self.U if self.symmetric else self.V).T

    def forward(self, x: Tensor) -> Tensor:
        return (x @ self.matrix().reshape(4)).unsqueeze(-1)


def scalar_net_eos_init(eta: float, delta: float, d0: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """EoS initialisation of Zhu et al.'s 4-layer scalar net: w = (x, x, y, y).

    Solves x² − y² = c², x·y = d₀ with x > 0, where c = c* + δ and c* = (η⁻² − 4)^{1/4} is the balance
    at which the minimum's sharpness 2√(c⁴ + 4) equals 2/η (needs η < 1/2). Spec [M]: δ ∈ [0.05, 1],
    d₀ ∈ {0.8, 1.2} ends at sharpness in (2/η − 20η/3, 2/η); d₀ = 1 exactly is a fixed point; δ < 0
    ends at the gradient-flow value 2√(c⁴ + 4) < 2/η.
    """
    if not 0 < eta < 0.5:
        raise ValueError(f"need 0 < eta < 1/2 for c* = (eta^-2 - 4)^(1/4) to exist, got {eta}")
    c_star = (eta**-2 - 4.0) ** 0.25
    c2 = (c_star + delta) ** 2
    x2 = (c2 + math.sqrt(c2 * c2 + 4.0 * d0 * d0)) / 2.0
    x = math.sqrt(x2)
    y = d0 / x
    return torch.tensor([x, x, y, y], dtype=dtype)


class ScalarNet4(nn.Module):
    """Zhu et al. (2023)'s 4-layer scalar linear network (as discussed in Fox 2023, §2).

    One parameter ``w`` ∈ ℝ⁴; the output is w₁w₂w₃w₄ whatever the input. It accepts a dummy input x of shape
    (n, k) and returns (n, 1) filled with the product, so that ``half_mse`` against target 1 is exactly
    (1 − w₁w₂w₃w₄)²/2. At a minimum λmax = Σ_i 1/w_i². ``w=None`` draws U(0.3, 2.5)·``init_scale`` (our
    random initialisations, which mostly catapult); use :meth:`eos_init` for the EoS band. Does not seed.
    """

    def __init__(self, w: ParamValue = None, init_scale: float = 1.0) -> None:
        super().__init__()
        self.w = _param(w, (4,), lambda: torch.empty(4).uniform_(0.3, 2.5) * init_scale)

    @classmethod
    def eos_init(cls, eta: float, delta: float, d0: float, dtype: torch.dtype = torch.float64) -> ScalarNet4:
        """A net at :func:`scalar_net_eos_init`'s w = (x, x, y, y)."""
        return cls(w=scalar_net_eos_init(eta, delta, d0, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x[..., :1], dtype=self.w.dtype) + self.w.prod()


class LinearRegression(nn.Module):
    """Seed 001 (stochastic EoS, 𝒦) linear regression f(x) = x θ, θ ∈ ℝ^{P×out_dim}, no bias.

    With L = (1/2D)‖Jθ − y‖² (``half_mse``, out_dim 1) the Hessian is JᵀJ/D, whose nonzero spectrum is the
    NTK Θ = JJᵀ/D's (the λ_α of the 𝒦 formula, docs/f7_stochastic_eos.md). Input (n, P) →
    output (n, out_dim). θ is ``nn.Linear``'s default draw U(±1/√P) times ``init_scale``, default 0 → θ = 0
    (the RNG is still advanced, so later draws do not depend on ``init_scale``). Does not seed.
    """

    def __init__(self, P: int, out_dim: int = 1, init_scale: float = 0.0, theta: ParamValue = None) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(P)
        shape = (P, out_dim)
        self.theta = _param(theta, shape, lambda: torch.empty(shape).uniform_(-bound, bound) * init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.theta


# ---------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "eoss_cnn": eoss_cnn,
    "resnet": resnet,
    "diagonal_net": DiagonalLinearNet,
    "matrix_completion": MatrixCompletion2x2,
    "scalar_net4": ScalarNet4,
    "linear_regression": LinearRegression,
}
"""Model name → constructor. ``build_model`` fills the shape arguments from ``in_shape``/``out_dim``."""

PRESETS: dict[str, dict[str, Any]] = {
    # Cohen et al. (locuslab/edge-of-stability archs.py)
    "fc_tanh": {"name": "mlp", "width": 200, "depth": 2, "activation": "tanh"},
    "fc_relu": {"name": "mlp", "width": 200, "depth": 2, "activation": "relu"},
    "fc_elu": {"name": "mlp", "width": 200, "depth": 2, "activation": "elu"},
    "cnn_relu": {"name": "cnn", "width": 32, "depth": 2, "activation": "relu"},
    "cnn_tanh": {"name": "cnn", "width": 32, "depth": 2, "activation": "tanh"},
    "cnn_elu": {"name": "cnn", "width": 32, "depth": 2, "activation": "elu"},
    # Seed 000 (EoSS), Fig. 2/3: repo defaults (their init, scaled)
    "eoss_mlp": {
        "name": "mlp",
        "width": 512,
        "depth": 4,
        "activation": "relu",
        "init": "eoss",
        "init_scale": 0.2,
    },
    "eoss_cnn5": {"name": "eoss_cnn", "init": "eoss", "init_scale": 0.3},
    "resnet14": {"name": "resnet", "width": 16, "blocks_per_stage": (2, 2, 2)},
    # Lee & Jang "6CNN": a guess matching 6 layers / 0.51M parameters (the paper gives no more)
    "lee_jang_6cnn": {"name": "cnn", "width": 128, "depth": 4, "fc_width": 128, "activation": "relu"},
    # Seed 003 (Fox): 3 Linear layers of 10 units, biases everywhere, PyTorch default init
    "fox_mlp": {"name": "mlp", "width": 10, "depth": 2, "activation": "tanh"},
}
"""Named paper architectures as ``build_model`` specs; extra keys in a spec override the preset's."""


def _image_shape(name: str, in_shape: tuple[int, ...]) -> tuple[int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"{name} needs image inputs (C, H, W), got in_shape {in_shape}")
    c, h, w = in_shape
    if h != w and name != "resnet":
        raise ValueError(f"{name} needs square images, got in_shape {in_shape}")
    return c, h


def _shape_kwargs(name: str, in_shape: tuple[int, ...], out_dim: int) -> dict[str, Any]:
    if name == "mlp":
        return {"in_dim": math.prod(in_shape), "out_dim": out_dim, "flatten_dims": len(in_shape)}
    if name in ("cnn", "eoss_cnn"):
        c, size = _image_shape(name, in_shape)
        return {"in_channels": c, "num_classes": out_dim, "image_size": size}
    if name == "resnet":
        c, _ = _image_shape(name, in_shape)
        return {"in_channels": c, "num_classes": out_dim}
    if name == "linear_regression":
        if len(in_shape) != 1:
            raise ValueError(f"linear_regression needs flat inputs (P,), got in_shape {in_shape}")
        return {"P": in_shape[0], "out_dim": out_dim}
    expected_in = {"diagonal_net": (2,), "matrix_completion": (4,)}.get(name)
    if expected_in is not None and in_shape != expected_in:
        raise ValueError(f"{name} needs in_shape {expected_in}, got {in_shape}")
    if out_dim != 1:
        raise ValueError(f"{name} has a scalar output (out_dim 1), got out_dim {out_dim}")
    return {}


def build_model(spec: Mapping[str, Any], in_shape: Sequence[int], out_dim: int) -> nn.Module:
    """Build ``MODELS[spec["name"]]`` (or a ``PRESETS`` entry) for inputs of one-example shape ``in_shape``.

    ``spec`` is a config dict, e.g. ``{"name": "mlp", "width": 64, "depth": 3, "activation": "tanh"}``;
    its other keys are the constructor's keyword arguments, except the shape arguments (in_dim/out_dim,
    in_channels, num_classes, image_size, P), which come from ``in_shape`` (e.g. (64,) or (3, 32, 32))
    and ``out_dim``.
    An ``mlp`` on image inputs flattens them itself. Unknown names or keys raise ValueError. Does not seed:
    call ``torch.manual_seed`` first.
    """
    spec = dict(spec)
    if "name" not in spec:
        raise ValueError("model spec needs a 'name'")
    name = spec.pop("name")
    if name in PRESETS:
        preset = dict(PRESETS[name])
        name = preset.pop("name")
        spec = {**preset, **spec}
    if name not in MODELS:
        allowed = ", ".join([*sorted(MODELS), *sorted(PRESETS)])
        raise ValueError(f"unknown model {name!r}; allowed: {allowed}")
    in_shape = tuple(int(s) for s in in_shape)
    shape_kwargs = _shape_kwargs(name, in_shape, int(out_dim))
    constructor = MODELS[name]
    params = inspect.signature(constructor).parameters
    allowed_keys = sorted(k for k in params if k not in shape_kwargs and k != "self")
    clash = sorted(set(spec) & set(shape_kwargs))
    unknown = sorted(set(spec) - set(allowed_keys))
    if clash:
        raise ValueError(f"{name}: {clash} come from in_shape/out_dim; do not set them in the spec")
    if unknown:
        raise ValueError(f"{name}: unknown spec keys {unknown}; allowed: {allowed_keys}")
    if "blocks_per_stage" in spec:
        spec["blocks_per_stage"] = tuple(spec["blocks_per_stage"])
    return constructor(**shape_kwargs, **spec)
