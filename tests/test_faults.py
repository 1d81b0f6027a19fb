"""Fault injection: signals, kills, a second writer, unwritable outputs, a full disk, damaged checkpoints and run
files, checkpoints from other code, stale temporary files. Nothing is lost and nothing is silently wrong: a
resumed run equals an uninterrupted one, partial results never sit at the final path, and every failure is one
line naming the path with its own exit status (2 bad input, 3 I/O, 128 + n after signal n)."""

import errno
import json
import os
import pickle
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import eoslab.engine
import eoslab.limits
import eoslab.runfiles
import eoslab.sweep
from eoslab.analysis import converged
from eoslab.cli import STOPPED, main
from eoslab.config import config_hash
from eoslab.figures.f1_sharpness_plateaus import plateau_rows
from eoslab.pipeline import runtime_request, set_aside_broken
from eoslab.runfiles import Interrupted, RunFiles, code_version
from eoslab.snakelock import snakemake_pids
from eoslab.store import RunFileError, is_intact, open_run, open_runs, to_dataset, write_atomic

CONFIG = {
    "dtype": "float64",
    "data": {"name": "digits", "n_train": 32, "n_test": 8},
    "model": {"name": "mlp", "width": 4, "depth": 1},
    "optimizer": {"rule": "sgd", "lr": 0.5, "batch_size": 8, "sampling": "reshuffle"},
    "steps": 30,
    "measure": {"every": 5, "minibatch": 2, "trace": 2},
    "checkpoint_every": 0,
    "flush_every": 0,
}


def same_numbers(a: xr.Dataset, b: xr.Dataset) -> None:
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert {k: v for k, v in a.attrs.items() if k != "wall_time_s"} == {
        k: v for k, v in b.attrs.items() if k != "wall_time_s"
    }


@pytest.fixture(scope="module")
def uninterrupted():
    return eoslab.engine.run(CONFIG)


def signal_at_measurement(monkeypatch, k: int, signum: int = signal.SIGTERM) -> None:
    """Send ourselves ``signum`` during the k-th measurement (as SLURM would, at any moment)."""
    real, calls = eoslab.engine.measure, []

    def measure(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(eoslab.engine, "measure", measure)


def interrupt(monkeypatch, out, config=CONFIG, k: int = 3) -> Interrupted:
    handler = signal.getsignal(signal.SIGTERM)
    signal_at_measurement(monkeypatch, k)
    with pytest.raises(Interrupted) as caught:
        eoslab.engine.run(config, out)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGTERM) == handler  # our handler is gone again
    return caught.value


# ----------------------------------------------------------------------------------------------------- signals


def test_sigterm_checkpoints_flushes_and_resumes_identically(tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "run.nc"
    error = interrupt(monkeypatch, out)  # during the measurement at t = 10: stops after that step
    assert error.signum == signal.SIGTERM and "SIGTERM at step 11" in str(error) and str(out) in str(error)
    assert not out.exists() and not (tmp_path / "run.nc.lock").exists()
    saved = torch.load(tmp_path / "run.nc.ckpt", weights_only=True)  # plain tensors and numbers only
    assert saved["state"]["step"] == 11 and saved["code_hash"] == code_version()["code_hash"]
    partial = open_run(tmp_path / "run.nc.partial")
    assert partial.attrs["status"] == "interrupted" and list(partial.step.values) == [0, 5, 10]
    with pytest.raises(RunFileError, match="not a finished run"):
        open_runs([tmp_path / "run.nc.partial"])
    assert open_runs([tmp_path / "run.nc.partial"], partial=True).sizes["run"] == 1
    same_numbers(eoslab.engine.run(CONFIG, out), uninterrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc"]


def test_signals_to_a_real_process_then_the_same_command_resumes(tmp_path, uninterrupted):
    """SIGINT, then SIGTERM to `eoslab run` processes; the third command finishes: equal to an uninterrupted run."""
    config = {**CONFIG, "steps": 1500, "measure": {"every": 25}, "flush_every": 1}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run.nc"
    command = [sys.executable, "-m", "eoslab.cli", "run", str(path), "--out", str(out), "--threads", "1", "--quiet"]
    steps_at_signal = []
    for signum, status in [(signal.SIGINT, 130), (signal.SIGTERM, 143)]:
        partial = tmp_path / "run.nc.partial"
        before = partial.stat().st_mtime_ns if partial.exists() else 0
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:  # wait for this process's first flush
            if partial.exists() and partial.stat().st_mtime_ns > before:
                break
            time.sleep(0.005)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == status, err
        assert err.startswith("eoslab: interrupted:") and err.count("\n") == 1 and str(out) in err
        steps_at_signal.append(torch.load(f"{out}.ckpt", weights_only=True)["state"]["step"])
        assert not out.exists()
    assert 0 < steps_at_signal[0] < steps_at_signal[1] < 1500
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    same_numbers(open_run(out), eoslab.engine.run(config))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc", "run.yaml"]


# -------------------------------------------------------------------------------------------------- checkpoints


class Payload:
    """Unpickled by a loader that runs code, it creates the file ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "runs-code", "empty"])
def test_unreadable_checkpoint_is_moved_aside_and_the_run_starts_fresh(damage, tmp_path, monkeypatch, uninterrupted):
    out, ckpt = tmp_path / "run.nc", tmp_path / "run.nc.ckpt"
    if damage == "truncated":
        interrupt(monkeypatch, out)
        ckpt.write_bytes(ckpt.read_bytes()[:500])
    else:
        payload = {
            "garbage": b"\x00\x01 not a checkpoint",
            "runs-code": pickle.dumps(Payload(str(tmp_path / "ran")), protocol=2),
            "empty": b"",
        }
        ckpt.write_bytes(payload[damage])
    with pytest.warns(UserWarning, match="unreadable checkpoint") as record:
        ds = eoslab.engine.run(CONFIG, out)
    (message,) = [str(w.message) for w in record if "unreadable" in str(w.message)]
    assert message.startswith(f"{ckpt}: unreadable checkpoint") and "starting fresh" in message
    same_numbers(ds, uninterrupted)
    assert (tmp_path / "run.nc.ckpt.corrupt").exists() and not ckpt.exists()
    assert not (tmp_path / "ran").exists()


def test_checkpoint_of_other_code_is_not_resumed_unless_asked(tmp_path, monkeypatch, uninterrupted):
    out, ckpt = tmp_path / "run.nc", tmp_path / "run.nc.ckpt"
    interrupt(monkeypatch, out)
    other = {**code_version(), "code_hash": "0123456789ab"}
    monkeypatch.setattr(eoslab.runfiles, "code_version", lambda: other)  # as if src/ had changed since
    monkeypatch.setattr(eoslab.engine, "code_version", lambda: other)
    loaded = []
    real = eoslab.engine._load_checkpoint

    def spy(*args):
        state = real(*args)
        loaded.append(None if state is None else state.step)
        return state

    monkeypatch.setattr(eoslab.engine, "_load_checkpoint", spy)
    with pytest.warns(UserWarning, match="written by other code") as record:
        fresh = eoslab.engine.run(CONFIG, out)
    assert any("--resume-any-code" in str(w.message) for w in record)
    assert loaded == [None] and (tmp_path / "run.nc.ckpt.stale").exists() and not ckpt.exists()
    (tmp_path / "run.nc.ckpt.stale").rename(ckpt)
    resumed = eoslab.engine.run(CONFIG, out, resume_any_code=True)  # asked: resumed from step 11
    assert loaded[-1] == 11
    assert fresh.attrs["code_hash"] == resumed.attrs["code_hash"] == "0123456789ab"
    for ds in (fresh, resumed):
        for name in ds.data_vars:
            np.testing.assert_array_equal(ds[name].values, uninterrupted[name].values)


# ------------------------------------------------------------------------------------------- writers and I/O


def test_a_second_writer_of_one_output_waits_or_is_refused(tmp_path, monkeypatch, capsys, uninterrupted):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "run.nc"
    first = RunFiles(out)
    first.claim()  # another `eoslab run --out run.nc` (an flock: per open file, so this process counts too)
    try:
        assert main(["run", str(path), "--out", str(out), "--quiet", "--no-wait"]) == 3
        err = capsys.readouterr().err
        assert err.startswith("eoslab: error:") and err.count("\n") == 1
        assert "another process" in err and f"pid {os.getpid()}" in err and str(out) in err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc.lock", "run.yaml"]

        def first_finishes():
            write_atomic(uninterrupted, out)
            first.release()

        threading.Timer(1.0, first_finishes).start()
        never_measure(monkeypatch)  # the second one uses what the first made
        with pytest.warns(UserWarning, match=rf"another process \(pid {os.getpid()}\).*waiting for it"):
            assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    finally:
        first.release()
    same_numbers(open_run(out), uninterrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc", "run.yaml"]


def never_measure(monkeypatch):
    def measure(*args, **kwargs):
        raise AssertionError("computed before the output was checked")

    monkeypatch.setattr(eoslab.engine, "measure", measure)


def test_unwritable_output_fails_before_compute_with_exit_3(tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "file").write_text("")
    never_measure(monkeypatch)
    assert main(["run", str(path), "--out", str(tmp_path / "file" / "run.nc"), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("eoslab: error:") and err.count("\n") == 1 and str(tmp_path / "file" / "run.nc") in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=stat.S_IRUSR | stat.S_IXUSR)
        assert main(["run", str(path), "--out", str(locked / "run.nc"), "--quiet"]) == 3
        assert "Permission denied" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["final", "checkpoint", "flush"])
def test_full_disk_is_exit_3_naming_the_file_and_leaves_no_temporary_file(what, tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.yaml"
    config = {**CONFIG, "checkpoint_every": 4 if what == "checkpoint" else 0, "flush_every": int(what == "flush")}
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run.nc"
    real_fsync = os.fsync

    def full_disk(fd):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err
    target = {"final": out, "checkpoint": tmp_path / "run.nc.ckpt", "flush": tmp_path / "run.nc.partial"}[what]
    kind = "checkpoint" if what == "checkpoint" else "run file"
    assert err == f"eoslab: error: {target}: cannot write the {kind} (No space left on device)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_final_write_fsyncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)) or real_fsync(fd))
    write_atomic(to_dataset({"step": [0], "train_loss": [1.0]}, {}, ["0"], {"status": "complete"}), tmp_path / "a.nc")
    assert synced == [False, True]


def test_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    out = tmp_path / "run.nc"
    left = [tmp_path / ".run.nc.a1b2.tmp", tmp_path / ".run.nc.ckpt.x9.tmp", tmp_path / ".run.nc.partial.z.tmp"]
    other = tmp_path / ".other.nc.q.tmp"  # another run's: not ours to remove
    for p in [*left, other]:
        p.write_bytes(b"half")
    eoslab.engine.run({**CONFIG, "steps": 2}, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.nc.q.tmp", "run.nc"]


# ---------------------------------------------------------------------------------------------- run files


def run_file(tmp_path, status: str = "complete"):
    values = np.full(50, 1234.5678)
    ds = to_dataset({"step": list(range(50)), "train_loss": values.tolist()}, {}, ["0"], {"status": status})
    path = tmp_path / "run.nc"
    write_atomic(ds, path)
    return path, np.float64(1234.5678).tobytes()


def test_corrupt_bytes_inside_a_variable_are_detected(tmp_path):
    path, needle = run_file(tmp_path)
    raw = bytearray(path.read_bytes())
    at = raw.find(needle * 50)
    assert at > 0
    raw[at + 8 * 17 : at + 8 * 17 + 8] = np.float64(0.5).tobytes()  # one value changed, as bit rot would
    path.write_bytes(bytes(raw))
    with pytest.raises(RunFileError, match="'train_loss' fails its checksum") as error:
        open_run(path)
    assert str(path) in str(error.value) and f"snakemake --cores 1 {path}" in str(error.value)
    assert not is_intact(path)


def test_truncated_run_file_is_detected_and_the_dag_makes_it_again(tmp_path):
    path, _ = run_file(tmp_path)
    good, _ = run_file(tmp_path / "good") if (tmp_path / "good").mkdir() is None else None
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(RunFileError, match="not a readable run file") as error:
        open_runs([good, path])
    assert str(path) in str(error.value)
    unfinished, _ = run_file(tmp_path / "unfinished" if (tmp_path / "unfinished").mkdir() is None else None, "running")
    assert set_aside_broken([good, path, unfinished, tmp_path / "absent.nc"]) == [path, unfinished]
    assert not path.exists() and (tmp_path / "run.nc.corrupt").exists() and good.exists()


# ------------------------------------------------------------------------------------ provenance and the cache


def test_cache_key_is_what_changes_the_numbers(tmp_path):
    h = config_hash(CONFIG)
    for key, value in [("checkpoint_every", 7), ("flush_every", 3), ("name", "other")]:
        assert config_hash({**CONFIG, key: value}) == h, key
    for key, value in [("seed", 1), ("steps", 31), ("dtype", "float32")]:
        assert config_hash({**CONFIG, key: value}) != h, key
    ds = eoslab.engine.run({**CONFIG, "steps": 1})
    assert len(ds.attrs["code_hash"]) == 12 and ds.attrs["git_dirty"] in (-1, 0, 1)


def test_runtime_request_has_headroom_and_uses_what_the_run_measured(tmp_path):
    out = tmp_path / "run.nc"
    assert runtime_request(60, out, 1000) == 75 + 5 + 2
    partial = to_dataset({"step": [0, 100], "train_loss": [1.0, 0.5]}, {}, ["0"], {"wall_time_s": 600.0})
    write_atomic(partial.assign_attrs(status="interrupted"), f"{out}.partial")
    assert runtime_request(60, out, 1000) == int(np.ceil(1.25 * 6 * 900 / 60)) + 7  # 6 s a step, 900 to go


# --------------------------------------------------------------------------------------- figures and sampling


def test_diverged_runs_are_left_out_of_summaries(tmp_path):
    paths = []
    for name, lr in [("ok", 0.1), ("boom", 500.0)]:
        paths.append(tmp_path / f"{name}.nc")
        config = {**CONFIG, "optimizer": {"rule": "gd", "lr": lr}, "measure": {"every": 5}}
        eoslab.engine.run({**config, "divergence": {"max_loss": 1e3}}, paths[-1])
    runs = open_runs(paths)
    assert list(runs["diverged"].values) == [0, 1]
    assert list(converged(runs).run.values) == ["ok"]
    ok, boom = plateau_rows(runs)
    assert np.isfinite(ok["fullbs_mean"]) and boom["diverged"] and "fullbs_mean" not in boom
    assert boom["diverged_step"] == int(runs["diverged_step"].values[1]) >= 0
    from eoslab.plotting import run_label

    assert run_label(runs, 1).endswith(f"(diverged at t={boom['diverged_step']})") and "diverged" not in run_label(
        runs, 0
    )


@pytest.mark.parametrize("sampling", ["subset", "reshuffle", "iid", None])
def test_measurement_batches_sample_as_sgd_does(sampling):
    """With b = n, batches drawn without replacement hold every example once: each MiniBS equals FullBS and
    tr(S_b) = 0 (ρ = 1); drawn with replacement (only for iid SGD) they repeat examples and both differ."""
    n = 16
    opt = {"rule": "gd", "lr": 0.1} if sampling is None else {"rule": "sgd", "lr": 0.1, "batch_size": 4}
    config = {
        **CONFIG,
        "data": {"name": "digits", "n_train": n, "n_test": 4},
        "optimizer": opt | ({"sampling": sampling} if sampling else {}),
        "steps": 0,
        "measure": {"batch_size": n, "minibatch": 3, "interaction": 3, "tol": 1e-10, "max_iter": 300},
    }
    ds = eoslab.engine.run(config)
    full = ds.sharpness.sel(eig=1).values[0]
    mini = ds.minibatch_sharpness.values[0]
    if sampling == "iid":
        assert np.all(np.abs(mini - full) > 1e-6 * full) and ds.rho.values[0] < 0.99
    else:
        np.testing.assert_allclose(mini, full, rtol=1e-8)
        np.testing.assert_allclose(ds.rho.values[0], 1.0, rtol=1e-8)


def test_dag_parse_reads_a_run_file_again_only_when_it_changed(tmp_path, monkeypatch):
    path, needle = run_file(tmp_path)
    memo = tmp_path / "memo" / "intact.json"
    assert set_aside_broken([path], memo) == [] and memo.exists()
    opened = []
    monkeypatch.setattr("eoslab.store.is_intact", lambda p, **kw: opened.append(p) or is_intact(p, **kw))
    assert set_aside_broken([path], memo) == [] and opened == []  # unchanged: the memo answers
    raw = bytearray(path.read_bytes())
    at = raw.find(needle * 50)
    raw[at : at + 8] = np.float64(0.5).tobytes()  # same size, new bytes: the stamp (mtime, ctime) changes
    path.write_bytes(bytes(raw))
    assert set_aside_broken([path], memo) == [path] and opened == [path]
    assert (tmp_path / "run.nc.corrupt").exists()


# ------------------------------------------------------------------------- edited, foreign and unfinished files

GD = {**CONFIG, "optimizer": {"rule": "gd", "lr": 500.0}, "measure": {"every": 5}}
DIVERGES = {**GD, "divergence": {"max_loss": 1e3}, "save_params": [0]}


@pytest.fixture(scope="module")
def diverged_file(tmp_path_factory):
    """A finished, diverged run under its pipeline name ``<name>-<hash>.nc``."""
    path = tmp_path_factory.mktemp("runs") / f"boom-{config_hash(DIVERGES)}.nc"
    assert eoslab.engine.run(DIVERGES, path).attrs["status"] == "diverged"
    return path


def edit_attrs(path, **attrs):
    with h5py.File(path, "r+") as f:
        for key, value in attrs.items():
            if value is None:
                del f.attrs[key]
            else:
                f.attrs[key] = value


def rewrite(path, **attrs):
    """Rewritten with valid checksums (as eoslab would write it), the global attributes changed."""
    write_atomic(open_run(path).assign_attrs(**attrs), path)


EDITS = {
    "status-edited": (lambda p: edit_attrs(p, status="complete", diverged=0), "global attributes fail their checksum"),
    "eta-edited": (lambda p: edit_attrs(p, eta=0.01), "global attributes fail their checksum"),
    "config-edited": (lambda p: edit_attrs(p, config="{}"), "global attributes fail their checksum"),
    "file-checksum-deleted": (lambda p: edit_attrs(p, checksum=None), "global attributes have no checksum"),
    "variable-checksum-deleted": (
        lambda p: h5py.File(p, "r+")["train_loss"].attrs.__delitem__("checksum"),
        "'train_loss' has no checksum",
    ),
    "older-format": (lambda p: edit_attrs(p, format_version=None), "run-file format None"),
    "hash-not-of-its-config": (lambda p: rewrite(p, config_hash="0123456789ab"), "not the hash of its config"),
    "copied-to-another-config": (None, "not 0123456789ab as its name says"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edited_or_foreign_run_files_are_refused_and_remade(edit, diverged_file, tmp_path):
    change, message = EDITS[edit]
    path = tmp_path / (diverged_file.name if change else "boom-0123456789ab.nc")
    shutil.copy(diverged_file, path)
    if change:
        change(path)
    with pytest.raises(RunFileError, match=re.escape(message)) as error:
        open_run(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)
    assert not is_intact(path) and set_aside_broken([path]) == [path] and not path.exists()


@pytest.mark.parametrize("source", ["missing", "folder", "running", "edited", "fifo"])
def test_init_file_must_be_a_finished_intact_run_checked_before_anything_is_created(
    source, diverged_file, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "source.nc"
    if source == "folder":
        path.mkdir()
    elif source == "fifo":
        os.mkfifo(path)
    elif source != "missing":
        shutil.copy(diverged_file, path)
        rewrite(path, status="running") if source == "running" else edit_attrs(path, status="complete")
    config = {**CONFIG, "init": {"file": str(path), "step": 0}}
    never_measure(monkeypatch)
    out = tmp_path / "out" / "run.nc"
    assert main(["run", "--json", json.dumps(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eoslab: error: init.file: {path}") and err.count("\n") == 1, err
    assert not out.parent.exists()


def test_a_finished_source_is_accepted(diverged_file, tmp_path):
    ds = eoslab.engine.run({**CONFIG, "steps": 1, "init": {"file": str(diverged_file), "step": 0}}, tmp_path / "a.nc")
    assert ds.attrs["status"] == "complete"


# --------------------------------------------------------------------------------------------- odd --out paths

SWEEP = {**CONFIG, "steps": 4, "sweep": {"grid": {"optimizer.lr": [0.1, 0.2]}}}
LIMIT = {**GD, "optimizer": {"rule": "gd"}, "search": {"eta0": 1.0, "T": 2, "R": 1}}


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
@pytest.mark.parametrize("command", ["run", "sweep", "limit"])
def test_out_that_is_not_a_regular_file_is_refused_before_compute(command, kind, tmp_path, monkeypatch, capsys):
    out = {"fifo": tmp_path / "out.nc", "device": Path(os.devnull), "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(out)
    for module in (eoslab.engine, eoslab.sweep, eoslab.limits):
        monkeypatch.setattr(module, "build_problem", lambda *a: pytest.fail("computed before --out was checked"))
    config = {"run": CONFIG, "sweep": SWEEP, "limit": LIMIT}[command]
    assert main([command, "--json", json.dumps(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    what = {"fifo": "is a FIFO", "device": "is a device", "folder": "is a folder"}[kind]
    assert err.startswith(f"eoslab: error: --out: {out} {what}") and err.count("\n") == 1, err
    assert kind != "fifo" or stat.S_ISFIFO(out.stat().st_mode)


def test_symlinked_out_is_followed_the_target_replaced_and_the_link_kept(tmp_path, uninterrupted):
    target, link = tmp_path / "store" / "run.nc", tmp_path / "run.nc"
    target.parent.mkdir()
    target.write_bytes(b"old bytes")
    link.symlink_to(target)
    assert main(["run", "--json", json.dumps(CONFIG), "--out", str(link), "--quiet"]) == 0
    assert link.is_symlink() and link.resolve() == target
    same_numbers(open_run(target), uninterrupted)
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.nc"]  # no lock or checkpoint left beside it


# ------------------------------------------------------------------------------- interrupts: one line, resumable


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "eoslab.cli", *args, "--threads", "1", "--quiet"]


def signal_when(proc: subprocess.Popen, path: Path, signums: list[int]) -> str:
    """Send ``signums`` to ``proc`` (back to back) once ``path`` exists; its standard error."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not path.exists():
        time.sleep(0.005)
    for signum in signums:
        proc.send_signal(signum)
    return proc.communicate(timeout=120)[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_checkpointing_is_one_line_and_resumable(signum, tmp_path):
    config = {**CONFIG, "steps": 300, "measure": {"every": 50}, "checkpoint_every": 20}
    out = tmp_path / "run.nc"
    proc = subprocess.Popen(
        cli("run", "--json", json.dumps(config), "--out", str(out)), stderr=subprocess.PIPE, text=True
    )
    err = signal_when(proc, tmp_path / "run.nc.ckpt", [signum, signum])
    assert proc.returncode == 128 + signum, err
    assert err.startswith("eoslab: interrupted:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()
    assert main(["run", "--json", json.dumps(config), "--out", str(out), "--quiet"]) == 0  # the same command
    same_numbers(open_run(out), eoslab.engine.run(config))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.nc"]


def test_a_second_sigterm_while_checkpointing_stops_at_once_and_the_run_resumes(
    tmp_path, monkeypatch, capsys, uninterrupted
):
    out, real_save = tmp_path / "run.nc", eoslab.engine.save_checkpoint

    def save_checkpoint(*args):  # the second SIGTERM arrives while the first one's checkpoint is written
        os.kill(os.getpid(), signal.SIGTERM)
        real_save(*args)

    signal_at_measurement(monkeypatch, 3)
    monkeypatch.setattr(eoslab.engine, "save_checkpoint", save_checkpoint)
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    assert main(["run", "--json", json.dumps(CONFIG), "--out", str(out), "--quiet"]) == 143
    err = capsys.readouterr().err
    assert err == f"eoslab: interrupted: SIGTERM: stopped at once; {STOPPED}\n"
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no checkpoint yet, nothing half-written, no lock
    monkeypatch.undo()
    assert main(["run", "--json", json.dumps(CONFIG), "--out", str(out), "--quiet"]) == 0
    same_numbers(open_run(out), uninterrupted)


SWEEP_LR = {**CONFIG, "steps": 40, "measure": {"every": 20}, "sweep": {"grid": {"optimizer.lr": [0.1, 0.2, 0.3, 0.4]}}}


@pytest.fixture(scope="module")
def whole_sweep():
    return eoslab.sweep.run_sweep(SWEEP_LR)


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM, signal.SIGTERM]], ids=["ctrl-c", "twice"])
def test_ctrl_c_in_a_sweep_is_one_line_and_the_sweep_resumes_from_finished_cells(
    signals, tmp_path, capsys, whole_sweep
):
    out, partial = tmp_path / "sweep.nc", tmp_path / "sweep.nc.partial"
    command = cli("sweep", "--json", json.dumps(SWEEP_LR), "--out", str(out))
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    err = signal_when(proc, partial, signals)
    assert proc.returncode == 128 + signals[0], err
    assert err.startswith("eoslab: interrupted:") and err.count("\n") == 1 and "Traceback" not in err, err
    done_before = open_run(partial).sizes["cell"]
    assert 1 <= done_before < 4 and not out.exists()
    assert main(["sweep", "--json", json.dumps(SWEEP_LR), "--out", str(out)]) == 0  # the same command, not quiet
    assert capsys.readouterr().out.startswith(f"cell {done_before + 1}/4")  # resumed after the finished cells
    for name in whole_sweep.data_vars:
        np.testing.assert_array_equal(open_run(out)[name].values, whole_sweep[name].values, err_msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.nc"]


def test_make_figures_unlocks_only_a_lock_whose_snakemake_is_gone(tmp_path):
    fake = tmp_path / "bin" / "snakemake"  # a process whose command line is Snakemake's, working in tmp_path
    fake.parent.mkdir()
    fake.write_text("import time\ntime.sleep(60)\n")
    check = [sys.executable, "-m", "eoslab.snakelock", str(tmp_path)]
    assert subprocess.run(check, check=False).returncode == 1  # no lock: nothing to unlock
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.input.lock").write_text("data/runs/x.nc\n")
    live = subprocess.Popen([sys.executable, str(fake), "--cores", "2"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while live.pid not in snakemake_pids(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert snakemake_pids(tmp_path) == [live.pid] and snakemake_pids(tmp_path / "bin") == []
        beside = subprocess.run(check, capture_output=True, text=True, check=False)
        assert beside.returncode == 1 and f"pid {live.pid}" in beside.stderr
    finally:
        live.kill()
        live.wait()
    assert subprocess.run(check, check=False).returncode == 0  # its owner is gone: stale, unlock it
