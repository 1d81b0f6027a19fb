"""Datasets: small in-memory train/test splits as torch tensors.

Every loader is a plain function returning :class:`Data`, deterministic in its ``seed`` (local numpy
generators only; global RNG state is never changed) and cast to a float ``dtype`` (float32 by default,
float64 works). Numbers are generated/processed in float64 and cast at the end, so the float32 and float64
versions of a dataset agree up to rounding. Nothing is downloaded and nothing is cached on disk: CIFAR-10
and MNIST are read from files you provide (see :func:`cifar10`, :func:`mnist`).

``load_data({"name": "digits", "n_train": 512, ...})`` dispatches on ``DATASETS``.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import pickle
import random
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

SUBSETS = ("first", "balanced")


@dataclass(frozen=True, eq=False)
class Data:
    """A train/test split.

    Classification: ``y``/``y_test`` are int64 labels of shape (n,) and ``num_classes`` is set.
    Regression: ``y``/``y_test`` are float of shape (n, d) and ``num_classes`` is None.
    """

    X: Tensor
    y: Tensor
    X_test: Tensor
    y_test: Tensor
    num_classes: int | None
    name: str

    @property
    def n(self) -> int:
        """Number of training examples."""
        return self.X.shape[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. (64,) or (3, 32, 32)."""
        return tuple(self.X.shape[1:])

    @property
    def output_dim(self) -> int:
        """Model output width: ``num_classes`` for classification, d for regression."""
        return self.num_classes if self.num_classes is not None else self.y.shape[1]

    @property
    def is_classification(self) -> bool:
        return self.num_classes is not None

    def targets(self, kind: str = "onehot", test: bool = False) -> Tensor:
        """Training (or test) targets.

        ``"onehot"``: float targets for MSE (one-hot e_y in X's dtype; regression: y itself).
        ``"labels"``: int64 labels (classification only, e.g. for cross-entropy).
        """
        y = self.y_test if test else self.y
        if kind == "labels":
            if self.num_classes is None:
                raise ValueError(f"{self.name} is a regression dataset: it has no labels")
            return y
        if kind != "onehot":
            raise ValueError(f"unknown target kind {kind!r}; use 'onehot' or 'labels'")
        if self.num_classes is None:
            return y
        return torch.nn.functional.one_hot(y, self.num_classes).to(self.X.dtype)

    def to(self, device: torch.device | str) -> Data:
        """A copy with all tensors on ``device``."""
        return replace(self, **{k: getattr(self, k).to(device) for k in ("X", "y", "X_test", "y_test")})


# ---------------------------------------------------------------------------------------------- helpers


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    out = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(out, torch.dtype) or not out.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype (e.g. 'float32', 'float64'), got {dtype!r}")
    return out


def _pack(
    X: np.ndarray,
    y: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    num_classes: int | None,
    name: str,
    dtype: torch.dtype | str,
) -> Data:
    """numpy arrays -> Data; inputs (and regression targets) in ``dtype``, labels int64, after :func:`_check_split`."""
    _check_split(X, y, X_test, y_test, num_classes, name)
    dt = _as_dtype(dtype)
    ydt = torch.int64 if num_classes is not None else dt

    def conv(a: np.ndarray, t: torch.dtype) -> Tensor:
        return torch.as_tensor(np.ascontiguousarray(a)).to(t)

    return Data(conv(X, dt), conv(y, ydt), conv(X_test, dt), conv(y_test, ydt), num_classes, name)


def _check_split(
    X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, num_classes: int | None, name: str
) -> None:
    """What every loader's arrays must satisfy before a run trains on them, else ``ValueError`` naming the split:
    at least one training example, as many targets as inputs, test inputs (and regression targets) shaped like the
    training ones, finite numbers, and class labels that are integers in [0, num_classes)."""
    if len(X) < 1:
        raise ValueError(f"{name}: the training set is empty (n_train, n or D is 0); a run needs at least 1 example")
    for split, inputs, targets in (("training", X, y), ("test", X_test, y_test)):
        if len(inputs) != len(targets):
            raise ValueError(f"{name}: {len(inputs)} {split} inputs but {len(targets)} targets")
        if not np.isfinite(inputs).all():
            raise ValueError(f"{name}: the {split} inputs hold NaN or infinite values")
        if num_classes is None and not np.isfinite(targets).all():
            raise ValueError(f"{name}: the {split} targets hold NaN or infinite values")
        if num_classes is not None:
            _check_labels(targets, num_classes, f"{name}: the {split} labels")
    for what, a, b in (("inputs", X, X_test), ("targets", y, y_test)):
        if a.shape[1:] != b.shape[1:] and len(b):
            raise ValueError(f"{name}: test {what} of shape {b.shape[1:]}, training {what} of shape {a.shape[1:]}")


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    """Class labels are integers (not floats, not booleans) in [0, num_classes); else ``ValueError`` naming ``what``."""
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{what} are {labels.dtype}, not integers")
    if len(labels) and not (labels.min() >= 0 and labels.max() < num_classes):
        raise ValueError(f"{what} range over [{labels.min()}, {labels.max()}], not [0, {num_classes - 1}]")


def _check_pixels(images: np.ndarray, what: str) -> None:
    """Image files store unsigned bytes (0..255): anything else (floats, NaN, negative numbers) is not the dataset."""
    if images.dtype.kind not in "iu" or (images.size and not (images.min() >= 0 and images.max() <= 255)):
        kind = images.dtype if images.dtype.kind not in "iu" else f"values in [{images.min()}, {images.max()}]"
        raise ValueError(f"{what}: pixels are {kind}, not unsigned bytes 0..255")


def _standardize(X: np.ndarray, X_test: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both arrays with the mean/std of ``X`` over ``axis`` (zero std -> divide by 1)."""
    mean = X.mean(axis=axis, keepdims=True)
    std = X.std(axis=axis, keepdims=True)
    std = np.where(std > 1e-12, std, 1.0)
    return (X - mean) / std, (X_test - mean) / std


def _check_n(n: int, total: int, what: str) -> None:
    """``n`` examples of ``total`` exist; a training set (``what`` = "n_train") needs at least one."""
    low = int(what == "n_train")
    if not low <= n <= total:
        raise ValueError(f"{what}={n} must lie in [{low}, {total}]")


def _select(labels: np.ndarray, n: int | None, subset: str, rng: np.random.Generator, k: int, what: str) -> np.ndarray:
    """Indices of ``n`` examples (all if None).

    ``"first"``: the first n in file order. ``"balanced"``: n // k per class (the first n % k classes get one
    more), drawn at random with ``rng`` and returned in file order.
    """
    n = len(labels) if n is None else n
    _check_n(n, len(labels), what)
    if subset == "first":
        return np.arange(n)
    if subset != "balanced":
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    counts = n // k + (np.arange(k) < n % k)
    idx = []
    for c in range(k):
        pool = np.flatnonzero(labels == c)
        if counts[c] > len(pool):
            raise ValueError(f"balanced subset needs {counts[c]} of class {c}; only {len(pool)} exist")
        idx.append(rng.choice(pool, size=counts[c], replace=False))
    return np.sort(np.concatenate(idx))


# ---------------------------------------------------------------------------------------------- loaders


def digits(
    n_train: int = 512,
    n_test: int | None = None,
    seed: int = 0,
    standardize: bool = True,
    dtype: torch.dtype | str = torch.float32,
) -> Data:
    """scikit-learn's 8x8 digits (1797 examples, ships with sklearn), X of shape (n, 64), 10 classes.

    A random permutation (``seed``) gives ``n_train`` training examples and a disjoint set of ``n_test``
    test examples (default: all the rest). ``standardize``: per-feature, with train mean/std (constant
    features are only centred). Raw pixel values are 0..16.
    """
    # the CSV that sklearn.datasets.load_digits reads, without importing sklearn.datasets (1.3 s per process)
    sklearn = Path(importlib.util.find_spec("sklearn").origin).parent
    table = np.loadtxt(sklearn / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    X_all, y_all = table[:, :-1], table[:, -1].astype(np.int64)
    total = len(y_all)
    _check_n(n_train, total, "n_train")
    n_test = total - n_train if n_test is None else n_test
    _check_n(n_test, total - n_train, "n_test")
    perm = np.random.default_rng(seed).permutation(total)
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    X, X_test = X_all[tr], X_all[te]
    if standardize:
        X, X_test = _standardize(X, X_test, axis=(0,))
    return _pack(X, y_all[tr], X_test, y_all[te], 10, "digits", dtype)


def mnist1d(n_train: int = 4000, n_test: int = 1000, seed: int = 0, dtype: torch.dtype | str = torch.float32) -> Data:
    """MNIST-1D (Greydanus 2020), generated in memory with the ``mnist1d`` package: X (n, 40), 10 classes.

    ``make_dataset`` is called with the package's default arguments, ``num_samples`` = n_train + n_test
    (rounded up to a multiple of 10) and ``seed``; the first n_train of its shuffled examples are the train
    set, the next n_test the test set. The package standardises all examples jointly (one global mean/std).
    n_train=4000, n_test=1000, seed=42 gives the package's default dataset. ~1 s per 5000 examples; the
    package's download/cache path is never used, and its global ``random``/``np.random`` seeding is undone.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    if n_train < 1 or n_test < 0:
        raise ValueError("n_train must be >= 1 and n_test >= 0")
    args = get_dataset_args()
    args.num_samples = 10 * math.ceil((n_train + n_test) / 10)
    args.seed = seed
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (undo mnist1d's seeding)
    try:
        ds = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    X_all = np.concatenate([ds["x"], ds["x_test"]]).astype(np.float64)
    y_all = np.concatenate([ds["y"], ds["y_test"]]).astype(np.int64)
    n = n_train + n_test
    return _pack(X_all[:n_train], y_all[:n_train], X_all[n_train:n], y_all[n_train:n], 10, "mnist1d", dtype)


def synthetic_regression(
    n: int = 5000, d: int = 10, seed: int = 0, n_test: int = 1000, dtype: torch.dtype | str = torch.float32
) -> Data:
    """Teacher regression of Fox 2023, §3.1.1 (F5/F6): Y = X Vᵀ − E, X, V, E with i.i.d. N(0, 1) entries.

    X is (n, d), V is (d, d), Y is (n, d). Draw order from ``np.random.default_rng(seed)``: V, then X and E
    (train), then X_test and E_test, so V depends only on (d, seed) (see :func:`synthetic_teacher`) and the
    train set does not depend on ``n_test``.
    """
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((d, d))
    X = rng.standard_normal((n, d))
    Y = X @ V.T - rng.standard_normal((n, d))
    X_test = rng.standard_normal((n_test, d))
    Y_test = X_test @ V.T - rng.standard_normal((n_test, d))
    return _pack(X, Y, X_test, Y_test, None, "synthetic_regression", dtype)


def synthetic_teacher(d: int = 10, seed: int = 0) -> np.ndarray:
    """The teacher matrix V (d, d), float64, used by ``synthetic_regression(d=d, seed=seed)``."""
    return np.random.default_rng(seed).standard_normal((d, d))


def gaussian_linear_regression(
    D: int = 100, P: int = 120, seed: int = 0, dtype: torch.dtype | str = torch.float32
) -> Data:
    """F7 linear-regression setup (Agarwala & Pennington 2024, Fig. 1): D examples with P i.i.d. Gaussian features.

    X = J with J_ij ~ N(0, 1/P), so tr(J Jᵀ / D) ≈ 1; targets y ~ N(0, 1), shape (D, 1) (the paper's target
    scale is not stated; pure-noise targets are our choice). Both drawn from ``np.random.default_rng(seed)``,
    J first (seed 0 gives the smoke profile's J: tr Θ = 0.998, 2/λmax = 54.5). The test set is empty
    (shapes (0, P) and (0, 1)): the targets carry no signal to generalise.
    """
    rng = np.random.default_rng(seed)
    J = rng.standard_normal((D, P)) / math.sqrt(P)
    y = rng.standard_normal((D, 1))
    return _pack(J, y, np.zeros((0, P)), np.zeros((0, 1)), None, "gaussian_linear_regression", dtype)


_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def _cifar_dir(root: Path) -> Path:
    searched = (root / "cifar-10-batches-py", root)
    for d in searched:
        if all((d / f).is_file() for f in _CIFAR_FILES):
            return d
    raise FileNotFoundError(
        f"CIFAR-10 not found: searched {' and '.join(str(d) for d in searched)} for the files "
        f"{', '.join(_CIFAR_FILES)}. Put the CIFAR-10 python version (cifar-10-python.tar.gz extracted, "
        f"i.e. the folder cifar-10-batches-py) under {root}. Nothing is downloaded."
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: uint8 images (N, 3, 32, 32) and int64 labels; ValueError names a bad file."""
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        raw = batch[b"data"]
        images = np.frombuffer(raw, np.uint8) if isinstance(raw, bytes) else np.asarray(raw)
        labels = np.asarray(batch[b"labels"])
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({error.__class__.__name__}: {error})") from error
    _check_pixels(images, str(path))
    _check_labels(labels, 10, f"{path}: labels")
    if images.size % 3072 or labels.ndim != 1 or images.size // 3072 != len(labels):
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({images.shape} pixels, {labels.shape} labels)")
    return images.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar(paths: list[Path], need: int | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and labels of the batches, stopping once ``need`` examples are read."""
    data, labels = [], []
    for p in paths:
        images, y = _read_cifar_batch(p)
        data.append(images)
        labels.append(y)
        if need is not None and sum(len(a) for a in labels) >= need:
            break
    return np.concatenate(data), np.concatenate(labels)


def cifar10(
    root: str | Path,
    n_train: int | None = 5000,
    n_test: int | None = None,
    subset: str = "first",
    seed: int = 0,
    standardize: bool = True,
    dtype: torch.dtype | str = torch.float32,
) -> Data:
    """CIFAR-10 from the standard python distribution: X (n, 3, 32, 32), 10 classes.

    ``root`` is the folder holding ``cifar-10-batches-py`` or that folder itself. ``subset``: ``"first"``
    takes the first n examples in file order (Cohen et al.'s "cifar10-5k"); ``"balanced"`` takes n/10 per
    class at random (``seed``). The choice matters: class imbalance changes the loss landscape (and with it
    the sharpness), so name it with the result. The same rule picks the test set (None = all 10000).
    Pixels are scaled to [0, 1]; ``standardize``: per channel, with the selected train set's mean/std.
    """
    d = _cifar_dir(Path(root))
    rng = np.random.default_rng(seed)
    need = n_train if subset == "first" else None
    Xa, ya = _read_cifar([d / f for f in _CIFAR_FILES[:5]], need)
    tr = _select(ya, n_train, subset, rng, 10, "n_train")
    Xb, yb = _read_cifar([d / "test_batch"], None)
    te = _select(yb, n_test, subset, rng, 10, "n_test")
    X, X_test = Xa[tr] / 255.0, Xb[te] / 255.0
    if standardize:
        X, X_test = _standardize(X, X_test, axis=(0, 2, 3))
    return _pack(X, ya[tr], X_test, yb[te], 10, "cifar10", dtype)


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an idx file (plain or gzip): magic 0x00 0x00 <type code> <ndim>, big-endian uint32 dims, data."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"{path}: damaged gzip file ({error})") from error
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (magic bytes {raw[:4].hex()})")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes; {ndim} dimensions need {header})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = header + math.prod(shape) * dtype.itemsize
    if len(raw) < need:
        raise ValueError(f"{path}: truncated idx file ({len(raw)} bytes; its header {shape} needs {need})")
    return np.frombuffer(raw, dtype=dtype, count=math.prod(shape), offset=header).reshape(shape)


def _mnist_files(root: Path) -> list[Path]:
    searched = (root, root / "MNIST" / "raw")
    for d in searched:
        found = [next((p for p in (d / f, d / f"{f}.gz") if p.is_file()), None) for f in _MNIST_FILES]
        if all(p is not None for p in found):
            return [p for p in found if p is not None]
    raise FileNotFoundError(
        f"MNIST not found: searched {' and '.join(str(d) for d in searched)} for the files "
        f"{', '.join(_MNIST_FILES)} (each plain or .gz). Put the four standard idx files under {root}. "
        "Nothing is downloaded."
    )


def mnist(
    root: str | Path,
    n_train: int | None = 1000,
    n_test: int | None = None,
    subset: str = "first",
    seed: int = 0,
    standardize: bool = True,
    dtype: torch.dtype | str = torch.float32,
) -> Data:
    """MNIST from the standard idx files (plain or .gz) in ``root`` or ``root/MNIST/raw``: X (n, 1, 28, 28).

    ``subset``/``seed``/``n_test`` as in :func:`cifar10` (None = all 10000 test images). Pixels are scaled to
    [0, 1]; ``standardize``: one mean/std (the single channel) from the selected train set.
    """
    paths = _mnist_files(Path(root))
    Xa, ya, Xb, yb = (read_idx(p) for p in paths)
    for X_, y_, p, q in ((Xa, ya, paths[0], paths[1]), (Xb, yb, paths[2], paths[3])):
        if X_.ndim != 3 or y_.ndim != 1 or len(X_) != len(y_):
            raise ValueError(f"malformed MNIST files near {p}: images {X_.shape}, labels {y_.shape}")
        _check_pixels(X_, str(p))
        _check_labels(y_, 10, f"{q}: labels")
    if Xa.shape[1:] != Xb.shape[1:]:
        raise ValueError(f"{paths[2]}: test images of shape {Xb.shape[1:]}, training images {Xa.shape[1:]}")
    rng = np.random.default_rng(seed)
    tr = _select(ya, n_train, subset, rng, 10, "n_train")
    te = _select(yb, n_test, subset, rng, 10, "n_test")
    X, X_test = Xa[tr, None] / 255.0, Xb[te, None] / 255.0
    if standardize:
        X, X_test = _standardize(X, X_test, axis=(0, 2, 3))
    return _pack(X, ya[tr].astype(np.int64), X_test, yb[te].astype(np.int64), 10, "mnist", dtype)


# ---------------------------------------------------------------------------------------------- registry

DATASETS: dict[str, Callable[..., Data]] = {
    "digits": digits,
    "mnist1d": mnist1d,
    "synthetic_regression": synthetic_regression,
    "gaussian_linear_regression": gaussian_linear_regression,
    "cifar10": cifar10,
    "mnist": mnist,
}


def load_data(spec: Mapping[str, Any]) -> Data:
    """``DATASETS[spec["name"]](**rest)``, e.g. ``{"name": "digits", "n_train": 512, "dtype": "float64"}``."""
    kwargs = dict(spec)
    name = kwargs.pop("name", None)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed names: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](**kwargs)
