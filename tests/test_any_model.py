"""The curvature library on anyone's model: frozen and tied parameters, attention, torch's own losses, data
loaders, the Gauss–Newton matrix and the operators as linear operators, each against dense matrices (float64)."""

import pytest
import torch
from helpers import PROBLEMS, dense_hessian, make_problem
from scipy.sparse.linalg import eigsh
from torch import nn
from torch.func import functional_call, hessian, jacrev
from torch.utils.data import DataLoader, TensorDataset

import eoslab
from eoslab.curvature import layers
from eoslab.losses import cross_entropy, half_mse
from eoslab.operators import HessianOperator, MiniBatchHessians, ParamSpace, differentiable_attention

GEN = torch.Generator().manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float64, generator=GEN)


def top(H):
    return torch.linalg.eigvalsh(H)[-1].item()


def frozen_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    model[0].requires_grad_(False)
    return model, randn(32, 4), randn(32, 2)


def test_frozen_parameters_are_held_fixed_by_default():
    model, X, y = frozen_mlp()
    trainable = ["2.weight", "2.bias", "4.weight", "4.bias"]
    want = top(dense_hessian(model, half_mse, X, y, trainable))
    every = top(dense_hessian(model, half_mse, X, y))
    assert abs(every - want) > 1e-3 * want  # the frozen layer would change the number
    assert eoslab.sharpness(model, half_mse, X, y, tol=1e-9) == pytest.approx(want, rel=1e-7)
    assert list(eoslab.layer_sharpness(model, half_mse, X, y)) == ["2", "4"]
    assert list(eoslab.gradient_norms(model, half_mse, X, y)) == ["2", "4", ""]
    # names= still chooses: a list, a regular expression or a predicate
    assert eoslab.sharpness(model, half_mse, X, y, names=[k for k, _ in model.named_parameters()], tol=1e-9) == (
        pytest.approx(every, rel=1e-7)
    )
    block = top(dense_hessian(model, half_mse, X, y, ["4.weight", "4.bias"]))
    for names in (["4.weight", "4.bias"], r"^4\.", lambda name: name.startswith("4.")):
        assert eoslab.sharpness(model, half_mse, X, y, names=names, tol=1e-9) == pytest.approx(block, rel=1e-7)
    with pytest.raises(ValueError, match=r"names='\^9' selects no parameter"):
        eoslab.sharpness(model, half_mse, X, y, names="^9")
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="model: every parameter has requires_grad=False; choose some with names="):
        eoslab.sharpness(model, half_mse, X, y)


class TiedLM(nn.Module):
    """A bigram language model whose output layer reuses its embedding (tied weights)."""

    def __init__(self, vocab: int = 7, width: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


def test_tied_weights_are_one_block_named_for_both():
    torch.manual_seed(0)
    model = TiedLM().double()
    X, y = torch.randint(0, 7, (40,), generator=GEN), torch.randint(0, 7, (40,), generator=GEN)
    assert layers(model) == {"embed+head": ["embed.weight", "head.bias"], "mix": ["mix.weight", "mix.bias"]}
    got = eoslab.layer_sharpness(model, cross_entropy, X, y, tol=1e-10)
    for layer, names in layers(model).items():
        assert got[layer] == pytest.approx(top(dense_hessian(model, cross_entropy, X, y, names)), rel=1e-7)
    assert eoslab.sharpness(model, cross_entropy, X, y, tol=1e-10) == pytest.approx(
        top(dense_hessian(model, cross_entropy, X, y)), rel=1e-7
    )


class TinyTransformer(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.embed = nn.Linear(3, width)
        self.block = nn.TransformerEncoderLayer(width, 2, dim_feedforward=6, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        return self.head(self.block(self.embed(x)).mean(1))


def autograd_hessian(model, loss_fn, X, y, names=None):
    """The dense Hessian by reverse-over-reverse autograd (torch.func's jacrev/jacfwd through
    nn.TransformerEncoderLayer disagree with it and with finite differences by ~6 % on torch 2.13)."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    theta = {k: params[k] for k in (names or params)}
    space = ParamSpace(theta)

    def f(vec):
        return loss_fn(functional_call(model, params | space.unflatten(vec), (X,)), y)

    with differentiable_attention():
        return torch.autograd.functional.hessian(f, space.flatten(theta), vectorize=True)


def test_tiny_transformer_every_function_matches_dense():
    torch.manual_seed(0)
    model = TinyTransformer().double().eval()
    X, y = randn(12, 3, 3), randn(12, 2)
    fast = torch.backends.mha.get_fastpath_enabled()
    H = autograd_hessian(model, half_mse, X, y)
    top3 = torch.linalg.eigvalsh(H).flip(0)[:3]
    assert torch.allclose(eoslab.sharpness(model, half_mse, X, y, k=3, tol=1e-10), top3, rtol=1e-7)
    g = HessianOperator(model, half_mse, X, y).gradient
    assert eoslab.directional_sharpness(model, half_mse, X, y) == pytest.approx((g @ H @ g / (g @ g)).item(), rel=1e-9)
    for layer, value in eoslab.layer_sharpness(model, half_mse, X, y, tol=1e-10).items():
        assert value == pytest.approx(top(autograd_hessian(model, half_mse, X, y, layers(model)[layer])), rel=1e-6)
    batches = eoslab.sample_batches(12, 4, 3, generator=GEN)
    mini = eoslab.minibatch_sharpness(model, half_mse, X, y, 4, batches=batches, tol=1e-10)
    bs = eoslab.batch_sharpness(model, half_mse, X, y, 4, batches=batches)
    for j, idx in enumerate(batches):
        Hb = autograd_hessian(model, half_mse, X[idx], y[idx])
        gb = HessianOperator(model, half_mse, X[idx], y[idx]).gradient
        assert mini.values[j].item() == pytest.approx(top(Hb), rel=1e-7)
        assert bs.values[j].item() == pytest.approx((gb @ Hb @ gb / (gb @ gb)).item(), rel=1e-9)
    exact = eoslab.hessian_trace(model, half_mse, X, y, 3 * len(H), method="hutch++", generator=GEN)
    assert exact.mean == pytest.approx(torch.trace(H).item(), rel=1e-8)
    ia = eoslab.interaction_sharpness(model, half_mse, X, y, 12, exact=True)  # b = n: S_b = ∇L∇Lᵀ
    assert ia.sharpness == pytest.approx((g @ H @ g / (g @ g)).item(), rel=1e-9)
    assert eoslab.gradient_norms(model, half_mse, X, y)[""] == pytest.approx(g.norm().item(), rel=1e-12)
    # the user's attention settings are theirs again
    assert torch.backends.mha.get_fastpath_enabled() == fast
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()


def test_any_torch_loss_gets_the_shape_check():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    X, y = randn(32, 4), randn(32)
    message = r"MSELoss: predictions have shape \((32|8), 1\) but targets \((32|8),\).*use y\[:, None\]"
    for call in (
        lambda: eoslab.sharpness(model, nn.MSELoss(), X, y),
        lambda: eoslab.minibatch_sharpness(model, nn.MSELoss(), X, y, batch_size=8, n_batches=2),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    H = dense_hessian(model, lambda p, t: ((p - t) ** 2).mean(), X, y[:, None])
    assert eoslab.sharpness(model, nn.MSELoss(), X, y[:, None], tol=1e-10) == pytest.approx(top(H), rel=1e-7)


def bad_arguments():
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    params = {k: p.detach() for k, p in model.named_parameters()}
    nan = X.clone()
    nan[3, 1] = float("nan")
    return [
        (lambda: eoslab.sharpness(model, loss_fn, X[:0], y[:0]), "X is empty"),
        (lambda: eoslab.sharpness(model, loss_fn, X, y, k=500), r"k=500 exceeds the number of parameters .*\(147\)"),
        (lambda: eoslab.minibatch_sharpness(model, loss_fn, X, y, 4, n_batches=0), "n_batches must be an integer ≥ 1"),
        (lambda: eoslab.interaction_sharpness(model, loss_fn, X, y, 30, exact=True), "batch_size=30 exceeds .* n=24"),
        (
            lambda: eoslab.sharpness(model, loss_fn, X, y, params={"0.weight": params["0.weight"]}),
            r"params must give every parameter .*missing \['0.bias'",
        ),
        (lambda: eoslab.sharpness(nn.Tanh(), loss_fn, X, y), r"model \(Tanh\) has no parameters"),
        (lambda: eoslab.sharpness(model, loss_fn, nan, y), r"X has non-finite values"),
        (
            lambda: eoslab.sharpness(model, loss_fn, X, y, params=params | {"0.bias": params["0.bias"] / 0}),
            r"params\['0.bias'\] has non-finite values",
        ),
        (lambda: eoslab.sharpness(model, loss_fn, X, y, max_iter=0), "max_iter must be an integer ≥ 1"),
        (lambda: eoslab.sharpness(model, loss_fn, X, y, tol=0), "tol must be positive"),
        (lambda: eoslab.hessian_trace(model, loss_fn, X, y, 0), "n_probes must be an integer ≥ 1"),
        (lambda: eoslab.sharpness(model, loss_fn, X, y, curvature="fisher"), "curvature must be one of"),
        (lambda: eoslab.sharpness(model, loss_fn, X), "y is missing"),
    ]


@pytest.mark.parametrize("case", range(len(bad_arguments())))
def test_bad_arguments_are_refused_before_compute(case, monkeypatch):
    call, message = bad_arguments()[case]
    monkeypatch.setattr(HessianOperator, "matvec", lambda *a: pytest.fail("computed before refusing"))
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("kind", PROBLEMS)
def test_a_data_loader_gives_the_one_tensor_result(kind):
    """Batches of 7 (the last one short), weighted by size: every full-batch function equals its tensor value."""
    model, loss_fn, X, y = make_problem(kind, torch.float64)
    loader = DataLoader(TensorDataset(X, y), batch_size=7)
    for fn, kw in (
        (eoslab.top_eigenvalues, {"k": 2, "tol": 1e-10}),
        (eoslab.hessian_trace, {"n_probes": 5}),
    ):
        one = fn(model, loss_fn, X, y, generator=torch.Generator().manual_seed(0), **kw)
        batched = fn(model, loss_fn, loader, generator=torch.Generator().manual_seed(0), **kw)
        assert torch.allclose(batched.values, one.values, rtol=1e-9)
    assert eoslab.sharpness(model, loss_fn, iter(loader), tol=1e-10) == pytest.approx(
        eoslab.sharpness(model, loss_fn, X, y, tol=1e-10), rel=1e-9
    )  # a one-shot iterator too
    for fn, kw in (
        (eoslab.directional_sharpness, {}),
        (eoslab.gradient_norms, {}),
        (eoslab.layer_sharpness, {"tol": 1e-10}),
    ):
        assert fn(model, loss_fn, loader, **kw) == pytest.approx(fn(model, loss_fn, X, y, **kw), rel=1e-9)
    with pytest.raises(ValueError, match="minibatch_sharpness samples examples by index: pass X and y as tensors"):
        eoslab.minibatch_sharpness(model, loss_fn, loader, None, 4)
    exact = eoslab.interaction_sharpness(model, loss_fn, loader, None, 4, exact=True)
    assert exact.sharpness == pytest.approx(eoslab.interaction_sharpness(model, loss_fn, X, y, 4, exact=True).sharpness)
    with pytest.raises(ValueError, match=r"interaction_sharpness \(sampled; exact=True reads batches\) samples"):
        eoslab.interaction_sharpness(model, loss_fn, loader, None, 4)


def dense_ggn(model, loss_fn, X, y):
    """G = Jᵀ H_f J with J the Jacobian of the outputs and H_f the loss's Hessian in the outputs (dense)."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    space = ParamSpace(params)
    out = model(X).detach()
    J = jacrev(lambda vec: functional_call(model, space.unflatten(vec), (X,)))(space.flatten(params))
    J = J.reshape(out.numel(), -1)
    Hf = hessian(lambda p: loss_fn(p.reshape(out.shape), y))(out.flatten())
    return J.T @ Hf @ J


@pytest.mark.parametrize("kind", PROBLEMS)
def test_gauss_newton_matches_dense(kind):
    model, loss_fn, X, y = make_problem(kind, torch.float64)
    G = dense_ggn(model, loss_fn, X, y)
    op = HessianOperator(model, loss_fn, X, y, curvature="ggn", chunk_size=10)
    V = torch.randn(3, op.dim, dtype=torch.float64, generator=GEN)
    assert torch.allclose(op.matvec(V), V @ G, rtol=1e-9, atol=1e-12)
    assert eoslab.sharpness(model, loss_fn, X, y, curvature="ggn", tol=1e-10) == pytest.approx(top(G), rel=1e-7)
    batches = eoslab.sample_batches(len(X), 6, 2, generator=GEN)
    mini = eoslab.minibatch_sharpness(model, loss_fn, X, y, 6, batches=batches, curvature="ggn", tol=1e-10)
    for j, idx in enumerate(batches):
        assert mini.values[j].item() == pytest.approx(top(dense_ggn(model, loss_fn, X[idx], y[idx])), rel=1e-7)


def test_operators_are_linear_operators(problem64):
    model, loss_fn, X, y = problem64
    H = dense_hessian(model, loss_fn, X, y)
    op = HessianOperator(model, loss_fn, X, y)
    V = torch.randn(op.dim, 2, dtype=torch.float64, generator=GEN)
    assert torch.allclose(op @ V[:, 0], H @ V[:, 0], rtol=1e-10, atol=1e-12)
    assert torch.allclose(op @ V, H @ V, rtol=1e-10, atol=1e-12)
    values = eigsh(op.to_scipy(), k=2, which="LA", tol=1e-10, return_eigenvectors=False)
    assert sorted(values) == pytest.approx(torch.linalg.eigvalsh(H)[-2:].tolist(), rel=1e-8)
    batches = eoslab.sample_batches(len(X), 6, 2, generator=GEN)
    mb = MiniBatchHessians(model, loss_fn, X[batches], y[batches])
    blocks = torch.block_diag(*(dense_hessian(model, loss_fn, X[i], y[i]) for i in batches))
    W = torch.randn(2, op.dim, dtype=torch.float64, generator=GEN)
    assert torch.allclose((mb @ W).flatten(), blocks @ W.flatten(), rtol=1e-10, atol=1e-12)
    x = W.flatten().numpy()
    assert mb.to_scipy() @ x == pytest.approx((blocks @ W.flatten()).numpy(), rel=1e-9, abs=1e-12)


def test_torch_functional_losses_are_checked_and_own_functions_trusted():
    model = nn.Sequential(nn.Linear(4, 1)).double()
    X, y = randn(16, 4), randn(16)
    with pytest.raises(ValueError, match=r"mse_loss: predictions have shape \(16, 1\) but targets \(16,\)"):
        eoslab.sharpness(model, torch.nn.functional.mse_loss, X, y)
    # a function of one's own may use its targets as it likes: here not at all (the Hessian of mean(f) is 0)
    assert eoslab.sharpness(model, lambda pred, _: pred.mean(), X, y, tol=1e-9) == pytest.approx(0.0, abs=1e-12)
