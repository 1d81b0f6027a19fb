"""Every curvature measurement against dense Hessians (float64: rel. err ≤ 1e-6; float32: ≤ 1e-3)."""

import itertools

import pytest
import torch
from helpers import PROBLEMS, dense_hessian, make_problem
from torch.func import functional_call, grad

import eoslab
from eoslab import operators
from eoslab.curvature import gamma, gradient_moments, interaction, layers, rho_b, sampled_rho_b
from eoslab.operators import HessianOperator, MiniBatchHessians, ParamSpace


def rel(a, b):
    return abs(a - b) / abs(b)


def test_top_k_eigenvalues_match_dense(problem64):
    model, loss_fn, X, y = problem64
    dense = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, X, y)).flip(0)[:3]
    res = eoslab.top_eigenvalues(model, loss_fn, X, y, k=3, tol=1e-9, criterion="residual")
    assert torch.allclose(res.values[0], dense, rtol=1e-6)
    assert res.converged and (res.residuals <= 1e-9 * res.values.abs()).all()
    assert eoslab.sharpness(model, loss_fn, X, y, tol=1e-9) == pytest.approx(dense[0].item(), rel=1e-6)


@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-4, 1e-6])
def test_tol_is_the_relative_accuracy_of_the_eigenvalues(problem64, tol):
    """The gap rule (``criterion="eigenvalue"``): every returned eigenvalue within tol of the dense one, at no more
    products than the default residual rule, which holds its residuals to tol."""
    model, loss_fn, X, y = problem64
    dense = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, X, y)).flip(0)[:3]
    gen = torch.Generator().manual_seed(0)
    res = eoslab.top_eigenvalues(model, loss_fn, X, y, k=3, tol=tol, generator=gen, criterion="eigenvalue")
    assert res.converged and ((res.values[0] - dense).abs() <= tol * dense).all()
    assert (res.errors <= tol * res.values.abs()).all() and (res.errors <= res.residuals).all()
    strict = eoslab.top_eigenvalues(model, loss_fn, X, y, k=3, tol=tol)
    assert (strict.residuals <= tol * strict.values.abs()).all() and (strict.errors == strict.residuals).all()
    assert res.n_matvecs <= strict.n_matvecs
    for value in (eoslab.sharpness(model, loss_fn, X, y, tol=tol), eoslab.sharpness(model, loss_fn, X, y)):
        assert rel(value, dense[0].item()) <= max(tol, 1e-3)


def test_lanczos_residuals_are_true_residuals(problem64):
    model, loss_fn, X, y = problem64
    H = dense_hessian(model, loss_fn, X, y)
    res = eoslab.top_eigenvalues(model, loss_fn, X, y, k=2, tol=1e-4)
    v, lam = res.vectors[0], res.values[0]
    true = (v @ H - lam[:, None] * v).norm(dim=-1)
    assert torch.allclose(res.residuals[0], true, rtol=1e-3, atol=1e-10)
    assert torch.allclose(v @ v.T, torch.eye(2, dtype=v.dtype), atol=1e-8)


@pytest.mark.parametrize("kind", PROBLEMS)
def test_float32_within_1e3(kind):
    model, loss_fn, X, y = make_problem(kind, torch.float32)
    m64, _, X64, y64 = make_problem(kind, torch.float64)
    dense = torch.linalg.eigvalsh(dense_hessian(m64, loss_fn, X64, y64))[-1].item()
    assert rel(eoslab.sharpness(model, loss_fn, X, y, tol=1e-4), dense) <= 1e-3
    for layer, value in eoslab.layer_sharpness(model, loss_fn, X, y, tol=1e-4).items():
        block = dense_hessian(m64, loss_fn, X64, y64, layers(m64)[layer])
        assert rel(value, torch.linalg.eigvalsh(block)[-1].item()) <= 1e-3
    batches = eoslab.sample_batches(len(X), 6, 3, generator=torch.Generator().manual_seed(1))
    mini = eoslab.minibatch_sharpness(model, loss_fn, X, y, 6, batches=batches, tol=1e-4)
    for j, idx in enumerate(batches):
        want = torch.linalg.eigvalsh(dense_hessian(m64, loss_fn, X64[idx], y64[idx]))[-1].item()
        assert rel(mini.values[j].item(), want) <= 1e-3


@pytest.mark.parametrize("reuse", [True, False])
def test_chunked_operator_is_the_full_batch_hessian(problem64, reuse):
    model, loss_fn, X, y = problem64
    H = dense_hessian(model, loss_fn, X, y)
    op = HessianOperator(model, loss_fn, X, y, chunk_size=5, reuse=reuse)
    V = torch.randn(3, op.dim, dtype=torch.float64)
    assert torch.allclose(op.matvec(V), V @ H, rtol=1e-10, atol=1e-12)
    assert torch.allclose(op.matvec(V[0]), H @ V[0], rtol=1e-10, atol=1e-12)
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = grad(lambda p: loss_fn(functional_call(model, p, (X,)), y))(params)
    assert torch.allclose(op.gradient, ParamSpace(g).flatten(g), rtol=1e-10, atol=1e-12)
    assert op.loss.item() == pytest.approx(loss_fn(model(X), y).item(), rel=1e-12)


def test_large_stacked_tangents_enter_as_cotangents_with_the_same_products(problem64, monkeypatch):
    """From COTANGENT_FROM elements the stacked mini-batch product takes V as g's cotangent: the dense per-batch
    H_j V_j, bit for bit the gᵀV path's."""
    model, loss_fn, X, y = problem64
    Xs, ys = X.reshape(4, -1, *X.shape[1:]), y.reshape(4, -1, *y.shape[1:])
    stacked = MiniBatchHessians(model, loss_fn, Xs, ys)
    V = torch.randn(4, stacked.dim, dtype=torch.float64)
    small = stacked.matvec(V)
    monkeypatch.setattr(operators, "COTANGENT_FROM", 1)
    large = stacked.matvec(V)
    assert torch.equal(small, large)
    for j in range(4):
        H = dense_hessian(model, loss_fn, Xs[j], ys[j])
        assert torch.allclose(large[j], H @ V[j], rtol=1e-10, atol=1e-12)


def test_layer_sharpness_is_top_eigenvalue_of_dense_block(problem64):
    model, loss_fn, X, y = problem64
    full = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, X, y))[-1].item()
    got = eoslab.layer_sharpness(model, loss_fn, X, y, tol=1e-9)
    assert list(got) == list(layers(model))
    for layer, names in layers(model).items():
        block = dense_hessian(model, loss_fn, X, y, names)
        assert got[layer] == pytest.approx(torch.linalg.eigvalsh(block)[-1].item(), rel=1e-6)
        assert got[layer] <= full * (1 + 1e-9)  # Cauchy interlacing


def test_layer_names_of_a_sequential():
    model, *_ = make_problem("tanh_mse", torch.float64)
    assert layers(model) == {"0": ["0.weight", "0.bias"], "2": ["2.weight", "2.bias"], "4": ["4.weight", "4.bias"]}


def test_minibatch_and_batch_sharpness_match_dense_per_batch(problem64):
    model, loss_fn, X, y = problem64
    batches = eoslab.sample_batches(len(X), 6, 5, generator=torch.Generator().manual_seed(1))
    mini = eoslab.minibatch_sharpness(model, loss_fn, X, y, 6, batches=batches, tol=1e-9)
    bs = eoslab.batch_sharpness(model, loss_fn, X, y, 6, batches=batches)
    for j, idx in enumerate(batches):
        H = dense_hessian(model, loss_fn, X[idx], y[idx])
        assert mini.values[j].item() == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-6)
        g = HessianOperator(model, loss_fn, X[idx], y[idx]).gradient
        assert bs.values[j].item() == pytest.approx((g @ H @ g / (g @ g)).item(), rel=1e-8)
    assert mini.mean == pytest.approx(mini.values.mean().item())
    assert mini.se == pytest.approx(mini.values.std().item() / 5**0.5)


def test_directional_sharpness_matches_dense(problem64):
    model, loss_fn, X, y = problem64
    H = dense_hessian(model, loss_fn, X, y)
    g = HessianOperator(model, loss_fn, X, y).gradient
    assert eoslab.directional_sharpness(model, loss_fn, X, y) == pytest.approx((g @ H @ g / (g @ g)).item(), rel=1e-10)


@pytest.mark.parametrize("b", [1, 2, 4])
def test_average_minibatch_sharpness_bounds_full_batch(problem64, b):
    """Seed 000 Lemma 1: E_B[λmax(H_B)] ≥ λmax(H), exact over the enumeration of all batches of a small set."""
    model, loss_fn, X, y = problem64
    X, y = X[:8], y[:8]
    full = eoslab.sharpness(model, loss_fn, X, y, tol=1e-9)
    every = torch.tensor(list(itertools.combinations(range(8), b)))
    avg = eoslab.minibatch_sharpness(model, loss_fn, X, y, b, batches=every, tol=1e-9).mean
    assert avg >= full * (1 - 1e-9)


def enumerate_interaction(model, loss_fn, X, y, b, replace):
    """tr(H S_b) and tr(S_b) by enumerating every mini-batch (ordered tuples with replacement, subsets without)."""
    n = len(X)
    H = dense_hessian(model, loss_fn, X, y)
    draws = itertools.product(range(n), repeat=b) if replace else itertools.combinations(range(n), b)
    gs = torch.stack([HessianOperator(model, loss_fn, X[list(B)], y[list(B)]).gradient for B in draws])
    return (gs @ H * gs).sum(-1).mean().item(), (gs * gs).sum(-1).mean().item()


@pytest.mark.parametrize("replace", [False, True])
def test_interaction_sharpness_exact_equals_enumeration(replace):
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    X, y = X[:7], y[:7]
    tr_HS, tr_S = enumerate_interaction(model, loss_fn, X, y, 3, replace)
    got = eoslab.interaction_sharpness(model, loss_fn, X, y, 3, exact=True, replace=replace)
    assert got.tr_HS == pytest.approx(tr_HS, rel=1e-10)
    assert got.tr_S == pytest.approx(tr_S, rel=1e-10)
    g = HessianOperator(model, loss_fn, X, y).gradient
    assert got.tr_Sn == pytest.approx((g @ g).item(), rel=1e-12)
    assert got.rho == pytest.approx(got.tr_Sn / tr_S)
    assert got.sharpness == pytest.approx(tr_HS / tr_S)


@pytest.mark.parametrize("replace", [False, True])
def test_interaction_sharpness_sampled_agrees_within_error_bars(replace):
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    exact = eoslab.interaction_sharpness(model, loss_fn, X, y, 4, exact=True, replace=replace)
    mc = eoslab.interaction_sharpness(
        model, loss_fn, X, y, 4, 4000, replace=replace, generator=torch.Generator().manual_seed(0)
    )
    assert abs(mc.tr_HS - exact.tr_HS) < 4 * mc.tr_HS_se
    assert abs(mc.tr_S - exact.tr_S) < 4 * mc.tr_S_se
    assert abs(mc.sharpness - exact.sharpness) < 4 * mc.sharpness_se
    assert abs(mc.rho - exact.rho) < 4 * mc.rho_se
    assert 0 < mc.sharpness_se < 0.05 * mc.sharpness


@pytest.mark.parametrize("exact", [True, False])
def test_interaction_streams_gradients_in_chunks(exact):
    """Any grad_chunk gives the same numbers (1e-10), and no HVP call ever sees more than grad_chunk rows."""
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    op = HessianOperator(model, loss_fn, X, y)
    rows = []
    matvec = op.matvec
    op.matvec = lambda v: rows.append(v.reshape(-1, op.dim).shape[0]) or matvec(v)
    kw = {"exact": exact, "generator": torch.Generator().manual_seed(0)}
    whole = interaction(op, X, y, 4, 30, grad_chunk=len(X), **kw)
    rows.clear()
    kw["generator"] = torch.Generator().manual_seed(0)
    chunked = interaction(op, X, y, 4, 30, grad_chunk=5, **kw)
    assert max(rows) == 5 and sum(rows) == (len(X) + 1 if exact else 30)
    for key in ("tr_HS", "tr_S", "tr_Sn", "tr_HS_se", "sharpness_se"):
        assert getattr(chunked, key) == pytest.approx(getattr(whole, key), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("replace", [False, True])
def test_rho_b_eq12_equals_enumeration_and_monte_carlo(replace):
    """Lee & Jang eq. 12 from ρ = ρ_1 equals ‖∇L‖²/E‖g_b‖² by enumerating every batch (1e-10), as does the
    pair-counting value from per-example gradients; Monte Carlo lies within 3 standard errors."""
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    X, y = X[:7], y[:7]
    op = HessianOperator(model, loss_fn, X, y)
    moments = gradient_moments(op, X, y, grad_chunk=3)
    g = op.gradient
    for b in (1, 2, 3) if replace else (1, 2, 3, 7):
        draws = itertools.product(range(7), repeat=b) if replace else itertools.combinations(range(7), b)
        gs = torch.stack([HessianOperator(model, loss_fn, X[list(B)], y[list(B)]).gradient for B in draws])
        want = (g @ g).item() / (gs * gs).sum(-1).mean().item()
        assert rho_b(moments.rho, 7, b, replace) == pytest.approx(want, rel=1e-10)
        assert moments.rho_b(b, replace) == pytest.approx(want, rel=1e-10)
        if b < 7:
            mc, se = sampled_rho_b(op, X, y, b, 2000, replace, torch.Generator().manual_seed(b))
            assert abs(mc - want) < 3 * se and 0 < se < 0.05 * want
    assert rho_b(0.1, 7, [1, 7], replace=False).tolist() == pytest.approx([0.1, 1.0])
    assert rho_b(0.01, 10**6, 10**6, replace=True) == pytest.approx(1 / (1e-6 / 0.01 + 1 - 1e-6))


def test_gamma():
    assert gamma(10, 1, replace=False) == 1.0
    assert gamma(10, 10, replace=False) == 0.0
    assert gamma(10, 4, replace=True) == 1.0


def test_hutchinson_trace(problem64):
    model, loss_fn, X, y = problem64
    H = dense_hessian(model, loss_fn, X, y)
    est = eoslab.hessian_trace(model, loss_fn, X, y, 2000, generator=torch.Generator().manual_seed(0))
    assert abs(est.mean - torch.trace(H).item()) < 4 * est.se
    names = layers(model)["0"]
    block = eoslab.hessian_trace(model, loss_fn, X, y, 2000, names=names, generator=torch.Generator().manual_seed(0))
    assert abs(block.mean - torch.trace(dense_hessian(model, loss_fn, X, y, names)).item()) < 4 * block.se


def test_gradient_norms(problem64):
    model, loss_fn, X, y = problem64
    loss_fn(model(X), y).backward()
    got = eoslab.gradient_norms(model, loss_fn, X, y)
    for layer, names in layers(model).items():
        want = torch.cat([model.get_parameter(k).grad.flatten() for k in names]).norm().item()
        assert got[layer] == pytest.approx(want, rel=1e-10)
    total = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    assert got[""] == pytest.approx(total, rel=1e-10)


def test_warm_start_needs_fewer_hvps():
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    gen = torch.Generator().manual_seed(0)
    before = eoslab.top_eigenvalues(model, loss_fn, X, y, tol=1e-6, generator=gen)
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = grad(lambda p: loss_fn(functional_call(model, p, (X,)), y))(params)  # one small GD step
    params = {k: v - 0.01 * g[k] for k, v in params.items()}
    strict = {"params": params, "tol": 1e-6, "criterion": "residual"}
    cold = eoslab.top_eigenvalues(model, loss_fn, X, y, generator=gen, **strict)
    warm = eoslab.top_eigenvalues(model, loss_fn, X, y, v0=before.vectors[0], **strict)
    assert warm.values[0, 0].item() == pytest.approx(cold.values[0, 0].item(), rel=1e-9)
    assert warm.n_matvecs < cold.n_matvecs


def test_chunk_size_keeps_no_graph(problem64):
    """chunk_size bounds memory: no chunk's gradient graph outlives a product, and H is unchanged."""
    model, loss_fn, X, y = problem64
    H = dense_hessian(model, loss_fn, X, y)
    bounded, reused = HessianOperator(model, loss_fn, X, y, chunk_size=5), HessianOperator(model, loss_fn, X, y)
    assert not bounded.reuse and bounded._graphs == [] and reused.reuse and len(reused._graphs) == 1
    v = torch.randn(bounded.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bounded.matvec(v), H @ v, rtol=1e-10, atol=1e-12) and bounded._graphs == []
    top = torch.linalg.eigvalsh(H)[-1].item()
    assert rel(eoslab.sharpness(model, loss_fn, X, y, chunk_size=5), top) <= 1e-3


def test_flatten_copies_non_contiguous_batched_parameters_into_place():
    """ParamSpace.flatten of transposed, batched and mixed-dtype tensors: the same vector as concatenating their
    row-major reshapes, and unflatten inverts it."""
    g = torch.Generator().manual_seed(0)
    tree = {
        "w": torch.randn(4, 5, 3, generator=g).transpose(1, 2),  # (4, 3, 5), non-contiguous
        "b": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "s": torch.randn(4, generator=g),  # a scalar parameter, batched
    }
    space = ParamSpace({"w": torch.zeros(3, 5), "b": torch.zeros(3), "s": torch.zeros(())})
    flat = space.flatten(tree, batch_dims=1)
    want = torch.cat([t.reshape(4, -1).double() for t in tree.values()], dim=-1)
    assert flat.dtype == torch.float64 and flat.shape == (4, 19) and torch.equal(flat, want)
    back = space.unflatten(flat)
    assert all(torch.equal(back[k], tree[k].double()) for k in tree)
