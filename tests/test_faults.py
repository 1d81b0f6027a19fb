"""Fault injection: signals, kills, a second writer, unwritable outputs, a full disk, damaged checkpoints and run
files, checkpoints from other code, stale temporary files. Nothing is lost and nothing is silently wrong: a
resumed run equals an uninterrupted one, partial results never sit at the final path, and every failure is one
line naming the path with its own exit status (2 bad input, 3 I/O, 128 + n after signal n)."""

import errno
import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import eoslab.engine
import eoslab.runfiles
from eoslab.analysis import converged
from eoslab.cli import main
from eoslab.config import config_hash
from eoslab.figures.f1_sharpness_plateaus import plateau_rows
from eoslab.pipeline import runtime_request, set_aside_broken
from eoslab.runfiles import Interrupted, RunFiles, code_version
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
