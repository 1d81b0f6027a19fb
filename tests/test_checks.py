"""Wrong inputs to the library fail with a message that says what was expected, never with a wrong number."""

import pytest
import torch
from torch import nn

import eoslab
from eoslab.losses import cross_entropy, half_mse, mean_mse, sum_mse

GEN = torch.Generator().manual_seed(0)


def mlp(outputs: int, *extra: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), *extra, nn.Tanh(), nn.Linear(6, outputs)).double()


X = torch.randn(32, 4, dtype=torch.float64, generator=GEN)


def every_function(model, loss_fn, X, y):
    """Each public curvature function, called once (the checks sit at their entry)."""
    return [
        lambda: eoslab.sharpness(model, loss_fn, X, y),
        lambda: eoslab.top_eigenvalues(model, loss_fn, X, y),
        lambda: eoslab.minibatch_sharpness(model, loss_fn, X, y, batch_size=8, n_batches=2),
        lambda: eoslab.batch_sharpness(model, loss_fn, X, y, batch_size=8, n_batches=2),
        lambda: eoslab.directional_sharpness(model, loss_fn, X, y),
        lambda: eoslab.layer_sharpness(model, loss_fn, X, y),
        lambda: eoslab.interaction_sharpness(model, loss_fn, X, y, batch_size=8, n_batches=2),
        lambda: eoslab.hessian_trace(model, loss_fn, X, y, n_probes=2),
        lambda: eoslab.gradient_norms(model, loss_fn, X, y),
    ]


@pytest.mark.parametrize("loss_fn", [half_mse, sum_mse, mean_mse])
def test_mse_refuses_broadcasting_targets(loss_fn):
    one = mlp(1)
    y = torch.randn(32, dtype=torch.float64, generator=GEN)
    for call in every_function(one, loss_fn, X, y):
        with pytest.raises(ValueError, match=r"predictions have shape \(\d+, 1\) but targets \(\d+,\).*y\[:, None\]"):
            call()
    # the fixed targets give the right number: the dense Hessian's top eigenvalue
    assert eoslab.sharpness(one, loss_fn, X, y[:, None], tol=1e-8) > 0
    with pytest.raises(ValueError, match=r"predictions have shape \(32, 3\) but targets \(32, 1\)"):
        loss_fn(torch.zeros(32, 3), torch.zeros(32, 1))


def test_cross_entropy_says_what_it_expected():
    model = mlp(3)
    with pytest.raises(ValueError, match=r"expected logits \(n, classes\) and integer labels \(n,\)"):
        eoslab.sharpness(model, cross_entropy, X, torch.zeros(32, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"labels of shape \(32, 1\)"):
        cross_entropy(torch.zeros(32, 3), torch.zeros(32, 1, dtype=torch.long))
    assert eoslab.sharpness(model, cross_entropy, X, torch.arange(32) % 3) > 0


@pytest.mark.parametrize(
    ("module", "name"), [(nn.BatchNorm1d(6, dtype=torch.float64), "BatchNorm1d"), (nn.Dropout(0.5), "Dropout")]
)
def test_training_mode_batchnorm_and_dropout_are_refused(module, name):
    model = mlp(2, module)
    y = torch.randn(32, 2, dtype=torch.float64, generator=GEN)
    for call in every_function(model, half_mse, X, y):
        with pytest.raises(ValueError, match=rf"1 \({name}\) in training mode.*Call model\.eval\(\)"):
            call()
    model.eval()  # the deterministic network: dropout off, BatchNorm with its running statistics
    lam = eoslab.sharpness(model, half_mse, X, y, tol=1e-8)
    assert lam == pytest.approx(eoslab.sharpness(model, half_mse, X, y, tol=1e-8), rel=1e-6)  # no randomness
    mini = eoslab.minibatch_sharpness(model, half_mse, X, y, batch_size=8, n_batches=4)
    assert mini.mean > 0


@pytest.mark.parametrize(
    ("model_dtype", "data_dtype"), [(torch.float64, torch.float32), (torch.float32, torch.float64)]
)
def test_dtype_mismatch_names_which_is_which(model_dtype, data_dtype):
    model = mlp(2).to(model_dtype)
    Xd, y = X.to(data_dtype), torch.zeros(32, 2, dtype=model_dtype)
    for call in every_function(model, half_mse, Xd, y):
        with pytest.raises(TypeError, match=rf"parameters are {model_dtype} but X is {data_dtype}"):
            call()
    with pytest.raises(TypeError, match=rf"parameters are {model_dtype} but y is {data_dtype}"):
        eoslab.sharpness(model, half_mse, X.to(model_dtype), y.to(data_dtype))


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="X has 32 examples but y has 31"):
        eoslab.sharpness(mlp(2), half_mse, X, torch.zeros(31, 2, dtype=torch.float64))


def test_reprs_show_the_numbers():
    est = eoslab.Estimate(torch.tensor([1.0, 2.0, 3.0]))
    assert repr(est) == "Estimate(2 ± 0.58 (se), m=3)"
    iir = eoslab.InteractionSharpness(tr_HS=6.0, tr_S=2.0, tr_Sn=1.0, sharpness_se=0.1, rho_se=0.01)
    assert repr(iir).startswith("InteractionSharpness(‖H‖_S=3 ± 0.1, ρ=0.5 ± 0.01,")
