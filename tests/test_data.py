"""Tests for eoslab.data: shapes, determinism, standardisation, generators and file formats."""

import gzip
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from eoslab import data as D

# ---------------------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes():
    d = D.digits(n_train=100, n_test=50)
    assert d.X.shape == (100, 64) and d.X_test.shape == (50, 64)
    assert d.y.shape == (100,) and d.y_test.shape == (50,)
    assert d.X.dtype == torch.float32 and d.y.dtype == torch.int64
    assert d.num_classes == 10 and d.name == "digits"
    assert d.n == 100 and d.input_shape == (64,) and d.output_dim == 10
    assert int(d.y.min()) >= 0 and int(d.y.max()) <= 9
    full = D.digits(dtype=torch.float64)
    assert full.X.dtype == torch.float64 and full.n == 512 and full.X_test.shape[0] == 1797 - 512


def test_digits_determinism():
    a, b, c = D.digits(seed=3), D.digits(seed=3), D.digits(seed=4)
    for k in ("X", "y", "X_test", "y_test"):
        assert torch.equal(getattr(a, k), getattr(b, k))
    assert not torch.equal(a.X, c.X)
    # float64 and float32 are the same numbers up to rounding
    assert torch.allclose(D.digits(seed=3, dtype="float64").X.float(), a.X)


def test_digits_disjoint_and_raw():
    from sklearn.datasets import load_digits

    raw = {tuple(r) for r in load_digits().data}
    d = D.digits(n_train=300, n_test=400, standardize=False)
    tr = {tuple(r) for r in d.X.double().numpy()}
    te = {tuple(r) for r in d.X_test.double().numpy()}
    assert len(tr) == 300 and len(te) == 400  # the 1797 digit images are all distinct
    assert tr.isdisjoint(te) and tr <= raw and te <= raw
    with pytest.raises(ValueError):
        D.digits(n_train=1000, n_test=1000)


def test_digits_standardization():
    raw = D.digits(n_train=512, seed=1, standardize=False, dtype=torch.float64)
    d = D.digits(n_train=512, seed=1, dtype=torch.float64)
    mean, std = raw.X.mean(0), raw.X.std(0, unbiased=False)
    live = std > 0
    assert (~live).any()  # some border pixels are constant: guarded, only centred
    assert torch.allclose(d.X.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12)
    live_std = d.X[:, live].std(0, unbiased=False)
    assert torch.allclose(live_std, torch.ones_like(live_std))
    assert torch.all(d.X[:, ~live] == 0)
    # test set uses the train statistics
    expect = (raw.X_test - mean) / torch.where(live, std, torch.ones_like(std))
    assert torch.allclose(d.X_test, expect)


def test_targets_and_to():
    d = D.digits(n_train=20, n_test=5)
    oh = d.targets()
    assert oh.shape == (20, 10) and oh.dtype == torch.float32
    assert torch.equal(oh.argmax(1), d.y) and torch.all(oh.sum(1) == 1)
    assert torch.equal(d.targets("labels", test=True), d.y_test)
    assert d.targets(test=True).shape == (5, 10)
    with pytest.raises(ValueError):
        d.targets("probs")
    moved = d.to("cpu")
    assert torch.equal(moved.X, d.X) and moved.num_classes == 10
    r = D.synthetic_regression(n=30, d=4, n_test=7)
    assert r.targets() is r.y and r.output_dim == 4
    with pytest.raises(ValueError, match="regression"):
        r.targets("labels")


# ---------------------------------------------------------------------------------------------- mnist1d


def test_mnist1d():
    np_before, py_before = np.random.get_state(), random.getstate()  # noqa: NPY002
    d = D.mnist1d(n_train=80, n_test=25, seed=1)
    np_after = np.random.get_state()  # noqa: NPY002
    assert random.getstate() == py_before  # global RNG state untouched
    assert np.array_equal(np_after[1], np_before[1]) and np_after[2:] == np_before[2:]
    assert d.X.shape == (80, 40) and d.X_test.shape == (25, 40) and d.y.dtype == torch.int64
    assert d.num_classes == 10 and set(d.y.tolist()) <= set(range(10))
    d2 = D.mnist1d(n_train=80, n_test=25, seed=1)
    assert torch.equal(d.X, d2.X) and torch.equal(d.y_test, d2.y_test)
    assert not torch.equal(d.X, D.mnist1d(n_train=80, n_test=25, seed=2).X)


def test_mnist1d_matches_package():
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = 100, 7  # package split: train_split 0.8 -> 80 / 20
    state = np.random.get_state()  # noqa: NPY002
    ref = make_dataset(args)
    np.random.set_state(state)  # noqa: NPY002
    d = D.mnist1d(n_train=80, n_test=20, seed=7, dtype=torch.float64)
    assert np.array_equal(d.X.numpy(), ref["x"]) and np.array_equal(d.X_test.numpy(), ref["x_test"])
    assert np.array_equal(d.y.numpy(), ref["y"]) and np.array_equal(d.y_test.numpy(), ref["y_test"])


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic_regression_relation():
    n, dim = 20000, 10
    d = D.synthetic_regression(n=n, d=dim, seed=5, n_test=100, dtype=torch.float64)
    assert d.X.shape == (n, dim) and d.y.shape == (n, dim) and d.X_test.shape == (100, dim)
    assert d.num_classes is None and d.y.dtype == torch.float64
    X, Y = d.X.numpy(), d.y.numpy()
    B, *_ = np.linalg.lstsq(X, Y, rcond=None)  # Y ≈ X B with B = Vᵀ
    V = D.synthetic_teacher(d=dim, seed=5)
    assert np.abs(B - V.T).max() < 0.05  # SE ≈ 1/√n = 0.007
    assert abs((Y - X @ B).var() - 1.0) < 0.02
    assert abs(np.var(X) - 1) < 0.02
    # exact relation: E = X Vᵀ − Y is standard normal noise
    E = X @ V.T - Y
    assert abs(E.mean()) < 0.01 and abs(E.std() - 1) < 0.01
    # same on the test set
    Et = d.X_test.numpy() @ V.T - d.y_test.numpy()
    assert abs(Et.std() - 1) < 0.1


def test_synthetic_regression_determinism():
    a = D.synthetic_regression(n=50, seed=0)
    assert torch.equal(a.X, D.synthetic_regression(n=50, seed=0).X)
    assert not torch.equal(a.X, D.synthetic_regression(n=50, seed=1).X)
    assert torch.equal(a.y, D.synthetic_regression(n=50, seed=0, n_test=3).y)  # train independent of n_test
    assert a.X.dtype == torch.float32 and a.X_test.shape == (1000, 10)


def test_gaussian_linear_regression():
    d = D.gaussian_linear_regression(D=100, P=120, seed=0, dtype=torch.float64)
    J = d.X.numpy()
    assert J.shape == (100, 120) and d.y.shape == (100, 1) and d.num_classes is None
    assert d.X_test.shape == (0, 120) and d.y_test.shape == (0, 1)
    theta = J @ J.T / 100
    assert round(np.trace(theta), 3) == 0.998  # spec F7(d) smoke values
    assert round(2 / np.linalg.eigvalsh(theta).max(), 1) == 54.5
    big = D.gaussian_linear_regression(D=400, P=500, seed=1, dtype=torch.float64)
    assert abs(big.X.var().item() * 500 - 1) < 0.02  # Var J_ij = 1/P
    assert abs(big.y.var().item() - 1) < 0.2
    assert not torch.equal(d.X, D.gaussian_linear_regression(seed=1).X.double())


# ---------------------------------------------------------------------------------------------- CIFAR-10

N_BATCH = 20  # tiny batches: 5 x 20 train, 20 test


def _write_cifar(folder: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    imgs, labs = [], []
    for i, name in enumerate([*(f"data_batch_{j}" for j in range(1, 6)), "test_batch"]):
        x = rng.integers(0, 256, size=(N_BATCH, 3072), dtype=np.uint8)
        y = [(k + i) % 10 for k in range(N_BATCH)]  # every class twice per batch
        batch = {b"batch_label": name.encode(), b"labels": y, b"data": x, b"filenames": [b"f"] * N_BATCH}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        imgs.append(x)
        labs.append(np.array(y))
    return np.concatenate(imgs[:5]), np.concatenate(labs[:5]), imgs[5], labs[5]


def test_cifar10_first_exact(tmp_path):
    X, y, Xt, yt = _write_cifar(tmp_path / "cifar-10-batches-py")
    d = D.cifar10(tmp_path, n_train=30, n_test=7, standardize=False, dtype=torch.float64)
    assert d.X.shape == (30, 3, 32, 32) and d.X_test.shape == (7, 3, 32, 32) and d.num_classes == 10
    assert np.array_equal(d.X.numpy() * 255, X[:30].reshape(30, 3, 32, 32))  # crosses batch 1 -> 2
    assert np.array_equal(d.y.numpy(), y[:30]) and np.array_equal(d.y_test.numpy(), yt[:7])
    assert d.X[0, 1, 0, 0].item() * 255 == X[0, 1024]  # channel-major layout: G plane starts at 1024
    assert np.array_equal(d.X_test.numpy() * 255, Xt[:7].reshape(7, 3, 32, 32))
    # root may also be the batches folder itself; defaults: all test examples
    e = D.cifar10(tmp_path / "cifar-10-batches-py", n_train=30, standardize=False, dtype=torch.float64)
    assert torch.equal(e.X, d.X) and e.X_test.shape[0] == N_BATCH


def test_cifar10_standardization(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    raw = D.cifar10(tmp_path, n_train=50, standardize=False, dtype=torch.float64)
    d = D.cifar10(tmp_path, n_train=50, dtype=torch.float64)
    assert torch.allclose(d.X.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(d.X.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64))
    mean = raw.X.mean((0, 2, 3), keepdim=True)
    std = raw.X.std((0, 2, 3), unbiased=False, keepdim=True)
    assert torch.allclose(d.X_test, (raw.X_test - mean) / std)
    assert D.cifar10(tmp_path, n_train=50).X.dtype == torch.float32


def test_cifar10_balanced(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    first = D.cifar10(tmp_path, n_train=15, n_test=10, standardize=False)
    assert np.bincount(first.y.numpy(), minlength=10).tolist() == [2] * 5 + [1] * 5
    b = D.cifar10(tmp_path, n_train=30, n_test=10, subset="balanced", seed=0, standardize=False)
    assert np.bincount(b.y.numpy(), minlength=10).tolist() == [3] * 10
    assert np.bincount(b.y_test.numpy(), minlength=10).tolist() == [1] * 10
    odd = D.cifar10(tmp_path, n_train=23, subset="balanced", standardize=False)
    assert np.bincount(odd.y.numpy(), minlength=10).tolist() == [3] * 3 + [2] * 7
    b2 = D.cifar10(tmp_path, n_train=30, n_test=10, subset="balanced", seed=0, standardize=False)
    b3 = D.cifar10(tmp_path, n_train=30, n_test=10, subset="balanced", seed=1, standardize=False)
    assert torch.equal(b.X, b2.X) and not torch.equal(b.X, b3.X)
    with pytest.raises(ValueError, match="subset"):
        D.cifar10(tmp_path, n_train=10, subset="random")
    with pytest.raises(ValueError, match="n_train"):
        D.cifar10(tmp_path, n_train=101)


def test_cifar10_missing(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        D.cifar10(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "data_batch_1" in msg and "test_batch" in msg
    assert "cifar-10-python.tar.gz" in msg


# ---------------------------------------------------------------------------------------------- MNIST


def _idx(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_mnist(folder: Path, gz: bool, n: int = 40, n_test: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(_idx(arr))
        else:
            (folder / name).write_bytes(_idx(arr))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_exact(tmp_path, gz):
    arrs = _write_mnist(tmp_path if not gz else tmp_path / "MNIST" / "raw", gz)
    d = D.mnist(tmp_path, n_train=25, n_test=5, standardize=False, dtype=torch.float64)
    assert d.X.shape == (25, 1, 28, 28) and d.X_test.shape == (5, 1, 28, 28) and d.y.dtype == torch.int64
    assert np.array_equal(d.X.numpy()[:, 0] * 255, arrs["train-images-idx3-ubyte"][:25])
    assert np.array_equal(d.y.numpy(), arrs["train-labels-idx1-ubyte"][:25])
    assert np.array_equal(d.X_test.numpy()[:, 0] * 255, arrs["t10k-images-idx3-ubyte"][:5])
    assert np.array_equal(d.y_test.numpy(), arrs["t10k-labels-idx1-ubyte"][:5])
    s = D.mnist(tmp_path, n_train=25, dtype=torch.float64)
    assert s.X_test.shape[0] == 12
    assert abs(s.X.mean().item()) < 1e-12 and abs(s.X.std(unbiased=False).item() - 1) < 1e-12
    mean, std = d.X.mean(), d.X.std(unbiased=False)
    assert torch.allclose(s.X_test[:5], (d.X_test - mean) / std)


def test_mnist_balanced_and_idx(tmp_path):
    arrs = _write_mnist(tmp_path, gz=False)
    b = D.mnist(tmp_path, n_train=20, n_test=10, subset="balanced", seed=3)
    assert np.bincount(b.y.numpy(), minlength=10).tolist() == [2] * 10
    assert np.bincount(b.y_test.numpy(), minlength=10).tolist() == [1] * 10
    img = D.read_idx(tmp_path / "train-images-idx3-ubyte")
    assert img.shape == (40, 28, 28) and img.dtype == np.uint8
    assert np.array_equal(img, arrs["train-images-idx3-ubyte"])
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="idx"):
        D.read_idx(bad)


def test_mnist_missing(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")  # one file is not enough
    with pytest.raises(FileNotFoundError) as err:
        D.mnist(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "t10k-labels-idx1-ubyte" in msg and str(tmp_path / "MNIST" / "raw") in msg


# ---------------------------------------------------------------------------------------------- registry


def test_load_data():
    assert set(D.DATASETS) == {
        "digits",
        "mnist1d",
        "synthetic_regression",
        "gaussian_linear_regression",
        "cifar10",
        "mnist",
    }
    d = D.load_data({"name": "digits", "n_train": 64, "n_test": 10, "seed": 2, "dtype": "float64"})
    ref = D.digits(n_train=64, n_test=10, seed=2, dtype=torch.float64)
    assert torch.equal(d.X, ref.X) and d.X.dtype == torch.float64
    r = D.load_data({"name": "gaussian_linear_regression", "D": 10, "P": 12})
    assert r.X.shape == (10, 12)
    with pytest.raises(ValueError, match="allowed names: cifar10, digits"):
        D.load_data({"name": "imagenet"})
    with pytest.raises(ValueError, match="dtype"):
        D.load_data({"name": "digits", "dtype": "int32"})


# ---------------------------------------------------------------------------------- what every loader checks

_X, _y = np.zeros((4, 3)), np.array([0, 1, 2, 1])
SPLITS = {
    "empty training set": ((_X[:0], _y[:0], _X, _y, 3), r"toy: the training set is empty"),
    "fewer targets than inputs": ((_X, _y[:3], _X, _y, 3), r"toy: 4 training inputs but 3 targets"),
    "nan input": ((np.where(np.eye(4, 3), np.nan, 0.0), _y, _X, _y, 3), r"toy: the training inputs hold NaN"),
    "inf test input": ((_X, _y, _X + np.inf, _y, 3), r"toy: the test inputs hold NaN or infinite"),
    "nan regression target": ((_X, _X.copy() * np.nan, _X, _X, None), r"toy: the training targets hold NaN"),
    "float labels": ((_X, _y + 0.5, _X, _y, 3), r"toy: the training labels are float64, not integers"),
    "boolean labels": ((_X, _y > 0, _X, _y, 3), r"toy: the training labels are bool, not integers"),
    "label too large": ((_X, _y, _X, _y + 1, 3), r"toy: the test labels range over \[1, 3\], not \[0, 2\]"),
    "negative label": ((_X, _y - 1, _X, _y, 3), r"toy: the training labels range over \[-1, 1\], not \[0, 2\]"),
    "test inputs of another shape": ((_X, _y, np.zeros((4, 5)), _y, 3), r"toy: test inputs of shape \(5,\)"),
    "test targets of another width": ((_X, _X, _X, _X[:, :2], None), r"toy: test targets of shape \(2,\)"),
}


@pytest.mark.parametrize("case", list(SPLITS))
def test_loaded_arrays_are_checked_before_a_run_sees_them(case):
    (X, y, X_test, y_test, k), message = SPLITS[case]
    with pytest.raises(ValueError, match=message):
        D._pack(X, y, X_test, y_test, k, "toy", "float64")


@pytest.mark.parametrize(
    ("loader", "kwargs", "message"),
    [
        (D.digits, {"n_train": 0}, r"n_train=0 must lie in \[1, 1797\]"),
        (D.mnist1d, {"n_train": 0}, r"n_train must be >= 1"),
        (D.synthetic_regression, {"n": 0}, r"training set is empty"),
        (D.gaussian_linear_regression, {"D": 0}, r"training set is empty"),
    ],
)
def test_no_loader_returns_an_empty_training_set(loader, kwargs, message):
    with pytest.raises(ValueError, match=message):
        loader(**kwargs)
