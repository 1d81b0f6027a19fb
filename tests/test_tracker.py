"""SharpnessTracker: the engine's measurements in anyone's loop, right (dense Hessians) and cheaper when warm."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import dense_hessian, make_problem

import eoslab
from eoslab.curvature import layers


def test_tracker_matches_dense_and_warm_starts_save_products():
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    tracker = eoslab.SharpnessTracker(model, loss_fn, X, y, minibatch=4, batch_size=8, layers=True, tol=1e-8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for t in range(4):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
        m = tracker.measure(step=t)
        H = dense_hessian(model, loss_fn, X, y)
        assert m["sharpness"] == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-7)
        for layer, names in layers(model).items():
            block = dense_hessian(model, loss_fn, X, y, names)
            assert m["layer_sharpness"][layer] == pytest.approx(torch.linalg.eigvalsh(block)[-1].item(), rel=1e-6)
        assert isinstance(m["minibatch_sharpness"], eoslab.Estimate) and m["minibatch_sharpness"].values.shape == (4,)
        assert m["minibatch_sharpness"].mean >= m["batch_sharpness"].mean > 0  # λmax(H_B) ≥ any Rayleigh quotient
    cold = eoslab.top_eigenvalues(model, loss_fn, X, y, tol=1e-8, criterion="residual").n_matvecs  # the same rule
    assert [h["step"] for h in tracker.history] == [0, 1, 2, 3]
    assert tracker.history[-1]["n_hvp"] < cold  # warm-started from the previous step's eigenvector


def test_tracker_takes_explicit_params_and_top_k():
    model, loss_fn, X, y = make_problem("relu_ce", torch.float64)
    tracker = eoslab.SharpnessTracker(model, loss_fn, X, y, top_k=2, tol=1e-8)
    params = {k: 1.1 * p.detach() for k, p in model.named_parameters()}
    got = tracker(params)["sharpness"]
    model.load_state_dict(params)
    want = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, X, y)).flip(0)[:2]
    assert torch.allclose(got, want, rtol=1e-6)


def test_tracker_refuses_unknown_keys_and_missing_batch_size():
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    with pytest.raises(ValueError, match="minibatchs"):
        eoslab.SharpnessTracker(model, loss_fn, X, y, minibatchs=4)
    with pytest.raises(ValueError, match="needs batch_size"):
        eoslab.SharpnessTracker(model, loss_fn, X, y, minibatch=4)


def test_tracker_benchmark_runs():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "tracker_cost.py"
    out = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, check=True).stdout
    rows = re.findall(r"^(FullBS\S*)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["FullBS", "FullBS+MiniBS+BS+layers"]
    assert all(float(r[3]) < float(r[4]) for r in rows)  # warm starts take fewer products than cold ones


def test_tracker_measures_batchnorm_and_dropout_in_eval_mode_and_gives_training_back():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 3)
    ).double()
    _, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    model(X)  # training mode: the running statistics move away from their initial values
    tracker = eoslab.SharpnessTracker(model, loss_fn, X, y, tol=1e-9, layers=True)
    model[4].eval()  # a module's own flag is given back, whatever it was
    stats = model[1].running_mean.clone()
    m = tracker.measure()
    assert model.training and model[1].training and model[3].training and not model[4].training
    assert torch.equal(model[1].running_mean, stats)  # measuring did not touch the statistics
    model.eval()
    assert m["sharpness"] == pytest.approx(
        torch.linalg.eigvalsh(dense_hessian(model, loss_fn, X, y))[-1].item(), rel=1e-7
    )
    assert list(m["layer_sharpness"]) == ["0", "1", "4"]


def test_tracker_takes_a_data_loader_for_full_batch_measurements():
    from torch.utils.data import DataLoader, TensorDataset

    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    loader = DataLoader(TensorDataset(X, y), batch_size=10)
    keys = {"top_k": 2, "layers": True, "directional": True, "tol": 1e-9}
    one, batched = (
        eoslab.SharpnessTracker(model, loss_fn, X, y, **keys)(),
        eoslab.SharpnessTracker(model, loss_fn, loader, **keys)(),
    )
    assert torch.allclose(batched["sharpness"], one["sharpness"], rtol=1e-8)
    assert batched["layer_sharpness"] == pytest.approx(one["layer_sharpness"], rel=1e-7)
    assert batched["directional_sharpness"] == pytest.approx(one["directional_sharpness"], rel=1e-10)
    with pytest.raises(ValueError, match="minibatch: pick examples by index, so X and y must be tensors"):
        eoslab.SharpnessTracker(model, loss_fn, loader, minibatch=2, batch_size=4)


def test_tracker_reads_adams_preconditioner_from_the_optimizer():
    """λmax(D^½HD^½) with D = ηP⁻¹, P = (1 − β₁ᵗ)(√v̂ + ε) from torch.optim.Adam's state, against a dense Hessian."""
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-6)
    tracker = eoslab.SharpnessTracker(model, loss_fn, X, y, preconditioned=True, optimizer=opt, tol=1e-10)
    for t in range(1, 4):
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
        got = tracker.measure()["preconditioned_sharpness"]
        d = []
        for p in model.parameters():
            v = opt.state[p]["exp_avg_sq"]
            d.append((0.01 / ((1 - 0.9**t) * ((v / (1 - 0.99**t)).sqrt() + 1e-6))).reshape(-1))
        d = torch.cat(d).sqrt()
        want = torch.linalg.eigvalsh(d[:, None] * dense_hessian(model, loss_fn, X, y) * d[None, :])[-1].item()
        assert float(got) == pytest.approx(want, rel=1e-7)
        assert float(got) > 0.01 * tracker.measure()["sharpness"] * 10  # P⁻¹ scales H up (√v̂ ≪ 1 here)


def test_tracker_preconditioned_and_noise_kernel_at_a_given_lr():
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    tracker = eoslab.SharpnessTracker(
        model, loss_fn, X, y, lr=0.1, batch_size=4, preconditioned=True, noise_kernel=True, tol=1e-10
    )
    m = tracker.measure()
    lam = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, X, y))[-1].item()
    assert float(m["preconditioned_sharpness"]) == pytest.approx(0.1 * lam, rel=1e-7)  # D = 0.1·I
    ntk = eoslab.noise_kernel.ntk_eigenvalues(model, X)
    want = eoslab.noise_kernel.noise_kernel_norm(ntk, 0.1, 4, len(X), False, y.shape[1])
    assert m["noise_kernel_norm"] == pytest.approx(want, rel=1e-12)


def test_tracker_refuses_what_it_cannot_measure():
    model, loss_fn, X, y = make_problem("tanh_mse", torch.float64)
    with pytest.raises(ValueError, match=r"preconditioned=True needs optimizer= .* or lr="):
        eoslab.SharpnessTracker(model, loss_fn, X, y, preconditioned=True)
    with pytest.raises(ValueError, match="noise_kernel=True needs lr"):
        eoslab.SharpnessTracker(model, loss_fn, X, y, noise_kernel=True, batch_size=4)
    with pytest.raises(ValueError, match="not Adagrad"):
        eoslab.SharpnessTracker(model, loss_fn, X, y, preconditioned=True, optimizer=torch.optim.Adagrad([X]))
    tracker = eoslab.SharpnessTracker(
        model, loss_fn, X, y, preconditioned=True, optimizer=torch.optim.Adam(model.parameters())
    )
    with pytest.raises(ValueError, match="after its first step"):
        tracker.measure()
