"""Bad input to ``eoslab run``: every case is answered by one line on standard error naming the key or the file,
exit status 2, and nothing written (the output's folder is not even created)."""

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import yaml
from helpers import TINY_RUN

from eoslab.cli import main

CONFIG = {**TINY_RUN, "steps": 2}


def with_(dotted: str, value) -> dict:
    """CONFIG with one key replaced (or added)."""
    config = json.loads(json.dumps(CONFIG))
    *path, last = dotted.split(".")
    node = config
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value
    return config


def idx_file(*, header: bytes | None = None, data: bytes = b"") -> bytes:
    """An idx file: images 2×28×28 by default, or the given header."""
    return (header if header is not None else struct.pack(">HBB3I", 0, 8, 3, 2, 28, 28)) + data


GOOD_LABELS = struct.pack(">HBBI", 0, 8, 1, 2) + b"\x01\x02"
GOOD_IMAGES = idx_file(data=bytes(2 * 28 * 28))


def mnist_files(folder, images: bytes = GOOD_IMAGES, labels: bytes = GOOD_LABELS, test: bytes = GOOD_IMAGES) -> dict:
    """The four MNIST files, the training images, training labels or test images replaced; returns the data section."""
    for name, raw in [
        ("train-images-idx3-ubyte", images),
        ("train-labels-idx1-ubyte", labels),
        ("t10k-images-idx3-ubyte", test),
        ("t10k-labels-idx1-ubyte", GOOD_LABELS),
    ]:
        (folder / name).write_bytes(raw)
    return {"name": "mnist", "root": str(folder), "n_train": 2, "n_test": 2}


def float_images(value: float) -> bytes:
    """Two 28×28 MNIST images of big-endian float32 ``value`` (idx type 0x0D)."""
    return idx_file(header=struct.pack(">HBB3I", 0, 0x0D, 3, 2, 28, 28), data=struct.pack(">f", value) * 2 * 784)


def cifar_batch(data=bytes(3072), labels=(0,)) -> bytes:
    return pickle.dumps({b"data": data, b"labels": list(labels)})


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
"""A billion laughs: 9^9 values from 664 bytes."""


def cifar_files(folder, first: bytes) -> dict:
    """The six CIFAR-10 batch files, the first replaced by ``first``; returns the data section."""
    good = pickle.dumps({b"data": bytes(3072), b"labels": [0]})
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(first if name == "data_batch_1" else good)
    return {"name": "cifar10", "root": str(folder), "n_train": 1, "n_test": 1}


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


# (case id, config to write (dict, or raw text), extra CLI args, data-file maker, what the line must name)
CASES = [
    ("lr-nan", with_("optimizer.lr", float("nan")), [], None, "optimizer.lr"),
    ("lr-inf", with_("optimizer.lr", float("inf")), [], None, "optimizer.lr"),
    ("lr-minus-inf", with_("optimizer.lr", float("-inf")), [], None, "optimizer.lr"),
    ("lr-zero", with_("optimizer.lr", 0), [], None, "optimizer.lr"),
    ("lr-text", with_("optimizer.lr", "fast"), [], None, "optimizer.lr"),
    ("lr-nan-override", CONFIG, ["--set", "optimizer.lr=.nan"], None, "optimizer.lr"),
    ("max-loss-nan", with_("divergence.max_loss", float("nan")), [], None, "divergence.max_loss"),
    ("steps-negative", with_("steps", -1), [], None, "steps"),
    ("steps-fraction", with_("steps", 1.5), [], None, "steps"),
    ("seed-negative", with_("seed", -1), [], None, "seed"),
    ("seed-huge", with_("seed", 2**40), [], None, "seed"),
    ("dtype-half", with_("dtype", "float16"), [], None, "dtype"),
    ("device-unknown", with_("device", "tpu"), [], None, "device"),
    ("device-cuda-absent", with_("device", "cuda"), [], None, "device"),
    ("device-cuda-index", with_("device", "cuda:7"), [], None, "device"),
    ("device-mps-absent", with_("device", "mps"), [], None, "device"),
    ("model-unknown", with_("model", {"name": "transformer"}), [], None, "model.name"),
    ("model-mlp-no-width-depth", with_("model", {"name": "mlp"}), [], None, "width"),
    ("model-unknown-key", with_("model.widht", 3), [], None, "widht"),
    ("model-width-text", with_("model.width", "wide"), [], None, "model"),
    ("model-width-negative", with_("model.width", -3), [], None, "model"),
    ("model-activation", with_("model.activation", "tanhh"), [], None, "tanhh"),
    ("loss-unknown", with_("loss", "hinge"), [], None, "loss"),
    (
        "cross-entropy-regression",
        with_("data", {"name": "synthetic_regression", "n": 8}),
        ["--set", "loss=cross_entropy"],
        None,
        "loss",
    ),
    ("rule-unknown", with_("optimizer.rule", "lion"), [], None, "optimizer.rule"),
    ("sgd-no-batch", with_("optimizer.rule", "sgd"), [], None, "optimizer.batch_size"),
    (
        "sgd-batch-too-big",
        CONFIG,
        ["--set", "optimizer.rule=sgd", "--set", "optimizer.batch_size=64"],
        None,
        "optimizer.batch_size",
    ),
    ("measure-every-zero", with_("measure.every", 0), [], None, "measure.every"),
    ("measure-needs-batch", with_("measure.minibatch", 3), [], None, "measure.batch_size"),
    ("unknown-top-key", with_("stpes", 3), [], None, "stpes"),
    ("data-unknown", with_("data", {"name": "imagenet"}), [], None, "data.name"),
    ("data-n-train-too-big", with_("data.n_train", 5000), [], None, "n_train"),
    ("data-n-train-text", with_("data.n_train", "many"), [], None, "data"),
    ("cifar-no-root", with_("data", {"name": "cifar10"}), [], None, "root"),
    ("cifar-missing", with_("data", {"name": "cifar10", "root": "nowhere"}), [], None, "nowhere"),
    ("cifar-not-a-pickle", None, [], lambda d: cifar_files(d, b"GIF89a not a pickle"), "data_batch_1"),
    ("cifar-truncated", None, [], lambda d: cifar_files(d, pickle.dumps({b"data": bytes(3072)})[:40]), "data_batch_1"),
    ("cifar-runs-code", None, [], lambda d: cifar_files(d, pickle.dumps({b"data": Payload()})), "data_batch_1"),
    ("mnist-short-header", None, [], lambda d: mnist_files(d, b"\x00\x00"), "train-images"),
    (
        "mnist-short-dims",
        None,
        [],
        lambda d: mnist_files(d, idx_file(header=b"\x00\x00\x08\x03\x00\x00")),
        "train-images",
    ),
    ("mnist-truncated", None, [], lambda d: mnist_files(d, idx_file(data=bytes(100))), "train-images"),
    ("yaml-syntax", "data: {name: digits\nsteps: [", [], None, "run.yaml"),
    ("config-a-list", "- data\n- model\n", [], None, "top level"),
    ("config-a-number", "3\n", [], None, "top level"),
    ("config-empty", "", [], None, "required property"),
    ("config-binary", b"\xff\xfe\x00binary", [], None, "run.yaml"),
    ("override-not-key-value", CONFIG, ["--set", "optimizer.lr"], None, "optimizer.lr"),
    ("override-bad-yaml", CONFIG, ["--set", "optimizer.lr=[0.1"], None, "optimizer.lr"),
    ("override-into-a-number", CONFIG, ["--set", "steps.x=1"], None, "steps"),
    ("threads-zero", CONFIG, ["--threads", "0"], None, "--threads"),
    # the issue's classes: bad data recorded as a result
    ("mnist-nan-pixels", None, [], lambda d: mnist_files(d, float_images(float("nan"))), "train-images"),
    ("mnist-float-pixels", None, [], lambda d: mnist_files(d, float_images(0.5)), "train-images"),
    ("mnist-label-200", None, [], lambda d: mnist_files(d, labels=GOOD_LABELS[:-2] + b"\xc8\x01"), "train-labels"),
    (
        "mnist-label-minus-1",
        None,
        [],
        lambda d: mnist_files(d, labels=struct.pack(">HBBI", 0, 9, 1, 2) + b"\xff\x01"),
        "train-labels",
    ),
    (
        "mnist-test-other-shape",
        None,
        [],
        lambda d: mnist_files(d, test=idx_file(header=struct.pack(">HBB3I", 0, 8, 3, 2, 32, 32), data=bytes(2048))),
        "t10k-images",
    ),
    ("cifar-nan-pixels", None, [], lambda d: cifar_files(d, cifar_batch(np.full(3072, np.nan))), "data_batch_1"),
    ("cifar-float-pixels", None, [], lambda d: cifar_files(d, cifar_batch(np.full(3072, 0.5))), "data_batch_1"),
    ("cifar-float-labels", None, [], lambda d: cifar_files(d, cifar_batch(labels=[0.7])), "data_batch_1"),
    ("cifar-label-200", None, [], lambda d: cifar_files(d, cifar_batch(labels=[200])), "data_batch_1"),
    ("cifar-label-minus-1", None, [], lambda d: cifar_files(d, cifar_batch(labels=[-1])), "data_batch_1"),
    ("data-n-train-zero", with_("data.n_train", 0), [], None, "n_train"),
    ("data-n-train-true", with_("data.n_train", True), [], None, "data.n_train"),
    ("regression-n-zero", with_("data", {"name": "synthetic_regression", "n": 0}), [], None, "training set is empty"),
    ("model-width-true", with_("model.width", True), [], None, "model.width"),
    ("steps-true", with_("steps", True), [], None, "steps"),
    # config and command line
    ("lr-400-digits", with_("optimizer.lr", 10**400), [], None, "optimizer.lr"),
    ("tol-400-digits", with_("measure.tol", 10**400), [], None, "measure.tol"),
    ("n-train-400-digits", with_("data.n_train", 10**400), [], None, "data.n_train"),
    ("lr-400-digits-override", CONFIG, ["--set", f"optimizer.lr={10**400}"], None, "optimizer.lr"),
    ("threads-2-31", CONFIG, ["--threads", "2147483648"], None, "--threads"),
    ("yaml-recursive-alias", "data: &d {name: digits, again: *d}\n", [], None, "recursive alias *d"),
    ("yaml-alias-bomb", BOMB, [], None, "expands to more than"),
    ("yaml-duplicate-key", yaml.safe_dump(CONFIG) + "optimizer: {lr: 50.0}\n", [], None, "duplicate key 'optimizer'"),
    ("yaml-duplicate-nested", "data: {name: digits, n_train: 32, n_train: 8}\n", [], None, "duplicate key 'n_train'"),
    ("yaml-too-big", "# " + "x" * (1 << 20) + "\n", [], None, "at most"),
    ("init-file-missing", with_("init", {"file": "nowhere.nc", "step": 0}), [], None, "init.file: nowhere.nc"),
]


@pytest.mark.filterwarnings("error")  # a warning would be a second line on standard error
@pytest.mark.parametrize(("config", "args", "make_data", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(config, args, make_data, names, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    if make_data is not None:
        config = with_("data", make_data(data))
    path = tmp_path / "run.yaml"
    if isinstance(config, bytes):
        path.write_bytes(config)
    else:
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    out = tmp_path / "out" / "run.nc"
    assert main(["run", str(path), "--out", str(out), "--quiet", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("eoslab: error:") and err.count("\n") == 1, err
    assert names in err, err
    assert "this ran" not in captured.out
    assert not out.parent.exists()


def test_at_least_thirty_cases_and_every_class_of_the_issue():
    ids = {c[0] for c in CASES}
    assert len(ids) == len(CASES) >= 30
    for needed in ["lr-nan", "lr-inf", "device-cuda-absent", "yaml-syntax", "config-a-list", "cifar-not-a-pickle"]:
        assert needed in ids
    assert {"cifar-truncated", "mnist-short-header", "model-mlp-no-width-depth"} <= ids


def test_out_is_a_folder(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["run", str(path), "--out", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eoslab: error: --out:") and str(folder) in err and err.count("\n") == 1
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["results", "run.yaml"]


@pytest.mark.parametrize(
    ("source", "names"),
    [("missing", "missing.yaml"), ("folder", "folder"), ("json", "config")],
)
def test_unreadable_config_sources(source, names, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    args = {
        "missing": [str(tmp_path / "missing.yaml")],
        "folder": [str(tmp_path / "folder")],
        "json": ["--json", '{"data": {"name": '],
    }[source]
    assert main(["run", *args, "--out", str(tmp_path / "out" / "run.nc"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eoslab: error:") and names in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_gzip_idx_that_is_not_gzip(tmp_path):
    from eoslab.data import read_idx

    (tmp_path / "x-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"x-idx3-ubyte\.gz"):
        read_idx(tmp_path / "x-idx3-ubyte.gz")
    good = gzip.compress(idx_file(data=bytes(2 * 28 * 28)))
    (tmp_path / "y-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"y-idx3-ubyte\.gz"):
        read_idx(tmp_path / "y-idx3-ubyte.gz")
