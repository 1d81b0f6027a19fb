"""Tests for eoslab.models: shapes, names, parameter counts, init scaling, activations, torch.func, toys."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, stack_module_state, vmap

from eoslab.models import (
    ACTIVATIONS,
    MODELS,
    PRESETS,
    DiagonalLinearNet,
    LinearRegression,
    MatrixCompletion2x2,
    ScalarNet4,
    build_model,
    cnn,
    diagonal_net_data,
    eoss_cnn,
    matrix_completion_data,
    mlp,
    resnet,
    scalar_net_eos_init,
)

# torch's forward-mode AD (used by torch.func.hessian) loads its decompositions with torch.jit.script once.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def half_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((pred - target) ** 2).sum(-1).mean()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linear_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


# ------------------------------------------------------------------------------------------------------ mlp


def test_mlp_eoss_4x512_names_and_count() -> None:
    m = mlp(3072, 10, width=512, depth=4)
    assert isinstance(m, nn.Sequential)
    assert linear_names(m) == ["0", "2", "4", "6", "8"]
    expected = (3072 * 512 + 512) + 3 * (512 * 512 + 512) + (512 * 10 + 10)
    assert expected == 2_366_474
    assert n_params(m) == expected
    assert m(torch.randn(3, 3072)).shape == (3, 10)


def test_mlp_fox_three_layers_ten_units() -> None:
    # "3 layers, 10 units": f = W3 h(W2 h(X W1 + b1) + b2) + b3 → depth=2 hidden layers, 3 Linear layers.
    m = mlp(10, 10, width=10, depth=2, activation="sigmoid")
    assert linear_names(m) == ["0", "2", "4"]
    assert [tuple(p.shape) for p in m.parameters()] == [(10, 10), (10,)] * 3
    assert n_params(m) == 330
    assert m(torch.randn(7, 10)).shape == (7, 10)


def test_mlp_cohen_fc_tanh_and_linear_activation_keeps_names() -> None:
    m = build_model({"name": "fc_tanh"}, (3, 32, 32), 10)
    assert linear_names(m) == ["0", "2", "4"]
    assert n_params(m) == (3072 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)
    assert isinstance(m[1], nn.Tanh)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # flattens images itself
    lin = mlp(5, 2, width=4, depth=3, activation="linear")
    assert linear_names(lin) == ["0", "2", "4", "6"]
    assert all(isinstance(lin[i], nn.Identity) for i in (1, 3, 5))


def test_mlp_depth0_and_no_bias() -> None:
    m = mlp(6, 3, width=4, depth=0)
    assert linear_names(m) == ["0"] and m[0].weight.shape == (3, 6)
    nb = mlp(6, 3, width=4, depth=2, bias=False)
    assert all(not name.endswith("bias") for name, _ in nb.named_parameters())
    assert n_params(nb) == 6 * 4 + 4 * 4 + 4 * 3


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation_is_what_it_says(name: str) -> None:
    reference = {
        "linear": lambda z: z,
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "elu": F.elu,
        "gelu": F.gelu,
        "silu": F.silu,
        "softplus": F.softplus,
        "hardtanh": F.hardtanh,
    }
    assert set(reference) == set(ACTIVATIONS)
    torch.manual_seed(0)
    m = mlp(4, 2, width=16, depth=1, activation=name)
    seen = {}
    m[1].register_forward_hook(lambda mod, inp, out: seen.update(pre=inp[0], post=out))
    x = 3 * torch.randn(32, 4)
    m(x)
    pre, post = seen["pre"], seen["post"]
    assert torch.equal(pre, m[0](x))
    assert (pre < 0).any() and (pre > 1).any()  # the test exercises both sides of 0
    torch.testing.assert_close(post, reference[name](pre), rtol=0, atol=0)
    if name == "relu":
        assert (post >= 0).all() and (post == 0).any()
    if name == "sigmoid":
        assert ((post > 0) & (post < 1)).all()
    if name == "tanh":
        assert ((post > -1) & (post < 1)).all()


def test_unknown_activation_raises() -> None:
    with pytest.raises(ValueError, match="allowed"):
        mlp(2, 1, width=3, depth=1, activation="swishy")


# ----------------------------------------------------------------------------------------- init and seeding


@pytest.mark.parametrize(
    "make",
    [
        lambda s: mlp(12, 3, width=8, depth=3, activation="tanh", init_scale=s),
        lambda s: cnn(3, 10, width=4, depth=2, image_size=8, init_scale=s),
        lambda s: eoss_cnn(3, 10, fc_width=8, image_size=16, init_scale=s),
        lambda s: resnet(3, 10, width=4, init_scale=s),
        lambda s: mlp(12, 3, width=8, depth=2, activation="relu", init="eoss", init_scale=s),
        lambda s: DiagonalLinearNet(full=True, init_scale=s),
        lambda s: MatrixCompletion2x2(init_scale=s),
        lambda s: ScalarNet4(init_scale=s),
        lambda s: LinearRegression(5, 2, init_scale=s),
    ],
)
def test_init_scale_scales_every_parameter_exactly(make) -> None:
    torch.manual_seed(1312)
    base = dict(make(1.0).named_parameters())
    torch.manual_seed(1312)
    scaled = dict(make(0.2).named_parameters())
    assert base.keys() == scaled.keys()
    for k in base:
        assert torch.equal(scaled[k], base[k] * 0.2), k


def test_constructors_do_not_seed() -> None:
    torch.manual_seed(0)
    a, b = mlp(5, 2, 4, 1), mlp(5, 2, 4, 1)
    assert not torch.equal(a[0].weight, b[0].weight)
    torch.manual_seed(0)
    c = mlp(5, 2, 4, 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_eoss_init_matches_repo_rule() -> None:
    torch.manual_seed(0)
    m = mlp(2000, 10, width=1000, depth=1, activation="relu", init="eoss")
    assert all((layer.bias == 0).all() for layer in (m[0], m[2]))
    assert m[0].weight.std().item() == pytest.approx(math.sqrt(2 / 2000), rel=0.02)  # Kaiming fan_in
    t = mlp(1000, 1000, width=1000, depth=1, activation="tanh", init="eoss")
    xavier_tanh = 5 / 3 * math.sqrt(2 / 2000)
    assert t[0].weight.std().item() == pytest.approx(xavier_tanh, rel=0.02)
    with pytest.raises(ValueError, match="init"):
        mlp(2, 1, 3, 1, init="orthogonal")


# ----------------------------------------------------------------------------------------- convnets, resnet


def test_cnn_cohen_default_shapes_and_count() -> None:
    m = cnn(3, 10)  # locuslab cnn-relu: conv32-relu-pool, conv32-relu-pool, linear
    assert n_params(m) == (3 * 32 * 9 + 32) + (32 * 32 * 9 + 32) + (32 * 8 * 8 * 10 + 10)
    assert linear_names(m) == ["7"]
    assert isinstance(m[2], nn.MaxPool2d)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    mnist = build_model({"name": "cnn", "width": 8, "depth": 6, "pooling": "average"}, (1, 28, 28), 10)
    assert mnist(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # depth past the 1x1 map is fine


def test_lee_jang_6cnn_guess_has_six_layers_and_051M() -> None:
    m = build_model({"name": "lee_jang_6cnn"}, (3, 32, 32), 10)
    layers = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d | nn.Linear)]
    assert len(layers) == 6
    assert n_params(m) == 513_290
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_eoss_cnn_five_layers() -> None:
    m = build_model({"name": "eoss_cnn5"}, (3, 32, 32), 10)
    layers = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d | nn.Linear)]
    assert len(layers) == 5
    assert n_params(m) == 2_477_514
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet14_shapes_and_count() -> None:
    m = resnet(3, 10)
    convs = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    assert len(convs) + 1 == 14  # ResNet-14: 13 convs + fc
    assert n_params(m) == 172_042
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    r = build_model({"name": "resnet", "width": 4, "blocks_per_stage": [1, 1, 1, 1]}, (1, 28, 20), 3)
    assert r(torch.randn(2, 1, 28, 20)).shape == (2, 3)


def _copies(make, k: int = 3) -> list[nn.Module]:
    out = []
    for s in range(k):
        torch.manual_seed(s)
        out.append(make().double())
    return out


@pytest.mark.parametrize(
    ("make", "x_shape"),
    [
        (lambda: mlp(12, 3, width=8, depth=3, activation="gelu"), (5, 12)),
        (lambda: build_model({"name": "mlp", "width": 8, "depth": 2}, (3, 4, 4), 3), (5, 3, 4, 4)),
        (lambda: cnn(3, 4, width=4, depth=3, image_size=8, fc_width=6), (5, 3, 8, 8)),
        (lambda: eoss_cnn(3, 4, fc_width=6, image_size=12), (5, 3, 12, 12)),
        (lambda: resnet(3, 4, width=4, blocks_per_stage=(1, 2)), (5, 3, 8, 8)),
    ],
)
def test_functional_call_vmap_over_params_and_examples(make, x_shape) -> None:
    models = _copies(make)
    x = torch.randn(*x_shape, dtype=torch.float64)
    params, _ = stack_module_state(models)
    base = models[0]

    def f(p: dict, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (xb,))

    stacked = vmap(f, in_dims=(0, None))(params, x)
    expected = torch.stack([m(x) for m in models])
    torch.testing.assert_close(stacked, expected)
    assert not torch.equal(expected[0], expected[1])  # copies really differ
    # per example (unbatched inputs inside vmap), and both at once
    own = dict(base.named_parameters())
    torch.testing.assert_close(vmap(f, in_dims=(None, 0))(own, x), base(x))
    both = vmap(vmap(f, in_dims=(None, 0)), in_dims=(0, None))(params, x)
    torch.testing.assert_close(both, expected)


# ----------------------------------------------------------------------------------------------------- toys


def test_diagonal_net_data() -> None:
    X, y = diagonal_net_data()
    assert torch.equal(X, torch.eye(2)) and torch.equal(y, torch.tensor([[1.0], [-1.0]]))
    assert DiagonalLinearNet.data is diagonal_net_data


def test_diagonal_net_output_by_hand() -> None:
    a, B = torch.tensor([0.5, -2.0]), torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    net = DiagonalLinearNet(full=True, a=a, B=B)
    assert sorted(dict(net.named_parameters())) == ["B", "a"]
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
    by_hand = torch.stack([a @ B @ xi for xi in x]).unsqueeze(-1)
    torch.testing.assert_close(net(x), by_hand)
    # (1,0): 0.5·1 − 2·3 = −5.5; (0,1): 0.5·2 − 2·(−1) = 3
    torch.testing.assert_close(net(x[:2]), torch.tensor([[-5.5], [3.0]]))
    diag = DiagonalLinearNet(full=False, a=a, b=[2.0, 3.0])
    assert sorted(dict(diag.named_parameters())) == ["a", "b"]
    torch.testing.assert_close(diag(x), (x * torch.tensor([1.0, -6.0])).sum(1, keepdim=True))


@pytest.mark.parametrize("full", [True, False])
def test_diagonal_net_minimum_and_per_sample_hessians(full: bool) -> None:
    X, y = (t.double() for t in diagonal_net_data())
    a = torch.tensor([2.0, 0.5], dtype=torch.float64)
    b = torch.tensor([0.5, -2.0], dtype=torch.float64)  # a1 b1 = 1, a2 b2 = -1
    kwargs = {"B": torch.diag(b)} if full else {"b": b}
    net = DiagonalLinearNet(full=full, a=a, **kwargs)
    assert half_mse(net(X), y).item() == 0.0
    names = list(dict(net.named_parameters()))
    flat0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    shapes = [p.shape for p in net.parameters()]

    def loss_i(flat: torch.Tensor, i: int) -> torch.Tensor:
        chunks, k = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            chunks[name] = flat[k : k + shape.numel()].reshape(shape)
            k += shape.numel()
        return half_mse(functional_call(net, chunks, (X[i : i + 1],)), y[i : i + 1])

    extra = (a[1] ** 2, a[0] ** 2) if full else (0.0, 0.0)
    expected = [a[0] ** 2 + b[0] ** 2 + extra[0], a[1] ** 2 + b[1] ** 2 + extra[1]]  # the full 2×2 B adds a_j²
    for i in range(2):
        eig = torch.linalg.eigvalsh(hessian(loss_i)(flat0, i))
        assert torch.allclose(eig[:-1], torch.zeros_like(eig[:-1]), atol=1e-12)  # rank one
        assert eig[-1].item() == pytest.approx(expected[i].item(), rel=1e-12)


def test_matrix_completion() -> None:
    X, y = matrix_completion_data()
    assert X.shape == (3, 4) and y.shape == (3, 1)
    t = 3.0
    net = MatrixCompletion2x2(U=[[t], [t]], V=[[1 / t], [1 / t]])  # on the curve of minima
    torch.testing.assert_close(net.matrix(), torch.ones(2, 2))
    assert half_mse(net(X), y).item() == pytest.approx(0.0, abs=1e-12)
    U, V = torch.randn(2, 2), torch.randn(2, 2)
    net2 = MatrixCompletion2x2(rank=2, U=U, V=V)
    torch.testing.assert_close(net2(torch.eye(4)), (U @ V.T).reshape(4, 1))
    sym = MatrixCompletion2x2(symmetric=True, U=[[1.0], [2.0]])
    assert sorted(dict(sym.named_parameters())) == ["U"]
    torch.testing.assert_close(sym.matrix(), torch.tensor([[1.0, 2.0], [2.0, 4.0]]))


def test_scalar_net4_loss_formula() -> None:
    w = torch.tensor([0.7, 1.3, -0.4, 2.1])
    net = ScalarNet4(w=w)
    x = torch.zeros(6, 1)
    out = net(x)
    assert out.shape == (6, 1)
    prod = (w[0] * w[1] * w[2] * w[3]).item()
    assert half_mse(out, torch.ones(6, 1)).item() == pytest.approx((1 - prod) ** 2 / 2, rel=1e-6)
    assert net(torch.randn(3, 5)).shape == (3, 1)  # ignores the input's values and width


@pytest.mark.parametrize(("eta", "delta", "d0"), [(0.1, 0.3, 0.8), (0.05, 0.05, 1.2), (0.02, 1.0, 0.8)])
def test_scalar_net_eos_init(eta: float, delta: float, d0: float) -> None:
    w = scalar_net_eos_init(eta, delta, d0)
    assert w.dtype == torch.float64 and w[0] == w[1] and w[2] == w[3]
    x, y = w[0].item(), w[2].item()
    c = (eta**-2 - 4) ** 0.25 + delta
    assert x**2 - y**2 == pytest.approx(c**2, rel=1e-12)
    assert x * y == pytest.approx(d0, rel=1e-12)
    assert torch.equal(ScalarNet4.eos_init(eta, delta, d0).w.detach(), w)


def test_scalar_net_eos_minimum_has_sharpness_two_over_eta() -> None:
    eta = 0.1
    w = scalar_net_eos_init(eta, delta=0.0, d0=1.0)  # the EoS minimum itself
    net = ScalarNet4(w=w)
    x, target = torch.zeros(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)

    def loss(wv: torch.Tensor) -> torch.Tensor:
        return half_mse(functional_call(net, {"w": wv}, (x,)), target)

    assert loss(w).item() == pytest.approx(0.0, abs=1e-24)
    lam = torch.linalg.eigvalsh(hessian(loss)(w))[-1].item()
    assert lam == pytest.approx(2 / eta, rel=1e-10)
    assert lam == pytest.approx((1 / w**2).sum().item(), rel=1e-10)
    with pytest.raises(ValueError):
        scalar_net_eos_init(0.6, 0.1, 0.8)


def test_linear_regression() -> None:
    torch.manual_seed(0)
    assert (LinearRegression(7).theta == 0).all()  # default init_scale 0 → θ = 0
    net = LinearRegression(7, out_dim=2, init_scale=1.0)
    assert [name for name, _ in net.named_parameters()] == ["theta"]
    assert net.theta.abs().max() <= 1 / math.sqrt(7)
    x = torch.randn(4, 7)
    torch.testing.assert_close(net(x), x @ net.theta)
    theta = torch.randn(7, 1, dtype=torch.float64)
    fixed = LinearRegression(7, theta=theta)
    assert fixed.theta.dtype == torch.float64
    torch.testing.assert_close(fixed(x.double()), x.double() @ theta)


# ------------------------------------------------------------------------------------------------- registry


def test_build_model_dispatch_and_errors() -> None:
    assert {"mlp", "cnn", "resnet", "diagonal_net", "scalar_net4", "linear_regression"} <= set(MODELS)
    spec = {"name": "mlp", "width": 64, "depth": 3, "activation": "tanh", "init_scale": 1.0}
    m = build_model(spec, (64,), 10)
    assert linear_names(m) == ["0", "2", "4", "6"] and m[0].in_features == 64 and m[-1].out_features == 10
    with pytest.raises(ValueError, match=r"allowed: .*cnn.*mlp"):
        build_model({"name": "transformer"}, (64,), 10)
    with pytest.raises(ValueError, match="unknown spec keys"):
        build_model({"name": "mlp", "width": 4, "depth": 1, "widht": 3}, (64,), 10)
    with pytest.raises(ValueError, match="in_shape"):
        build_model({"name": "mlp", "width": 4, "depth": 1, "in_dim": 3}, (64,), 10)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model({"name": "cnn"}, (64,), 10)
    with pytest.raises(ValueError, match="out_dim"):
        build_model({"name": "scalar_net4"}, (1,), 3)
    # a preset with an override
    big = build_model({"name": "fox_mlp", "activation": "relu", "width": 25}, (10,), 10)
    assert isinstance(big[1], nn.ReLU) and big[0].out_features == 25


def test_build_model_toys_and_presets() -> None:
    assert isinstance(build_model({"name": "diagonal_net", "full": False}, (2,), 1), DiagonalLinearNet)
    assert isinstance(build_model({"name": "matrix_completion"}, (4,), 1), MatrixCompletion2x2)
    assert isinstance(build_model({"name": "scalar_net4"}, (1,), 1), ScalarNet4)
    lr = build_model({"name": "linear_regression"}, (120,), 1)
    assert lr.theta.shape == (120, 1)
    for name, spec in PRESETS.items():
        assert spec["name"] in MODELS, name
        shape = (10,) if spec["name"] == "mlp" else (3, 32, 32)
        assert isinstance(build_model({"name": name}, shape, 10), nn.Module)
