"""A run's files on disk, and the process around them: what makes ``eoslab run`` safe to kill, preempt and rerun.

For ``--out RUN.nc`` a run owns four paths:

- ``RUN.nc``: the finished run (status complete or diverged), written once, at the end;
- ``RUN.nc.partial``: the results flushed while it runs (status running, or interrupted), removed at the end;
- ``RUN.nc.ckpt``: the checkpoint (plain tensors and numbers, loaded with ``torch.load(weights_only=True)``);
- ``RUN.nc.lock``: held (``flock``) while a process writes ``RUN.nc``, so two writers of one output cannot both run:
  the second waits (with a warning naming the first's pid) and uses the file the first made, or, with
  ``wait=False``, fails at once.

Every file is written whole (:func:`eoslab.store.write_bytes_atomic`: unique temporary sibling, fsync, rename,
fsync of the folder). SIGTERM (what SLURM sends at preemption and before its time limit) and SIGINT are turned
into a flag the run loop checks after each step: it checkpoints, flushes and raises :class:`Interrupted`; the
same command resumes. Exit statuses of the CLI: 2 bad input, 3 I/O error (:class:`OutputError`), 128 + signal
number when interrupted.
"""

import fcntl
import functools
import io
import json
import os
import signal
import stat
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xarray as xr

import eoslab
from eoslab.config import ConfigError, digest, source_digest
from eoslab.store import is_intact, open_run, stale_temps, write_atomic, write_bytes_atomic

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class OutputError(OSError):
    """An output or checkpoint that cannot be written (read-only folder, full disk, another writer): exit 3."""


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived; the run checkpointed and flushed its partial results."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


@functools.cache
def code_version() -> dict[str, Any]:
    """What code a run was made by: ``code_hash`` (SHA-256 of the eoslab package's sources, 12 hex digits),
    ``git_commit`` ("unknown" outside a git checkout) and ``git_dirty`` (1 if the sources differ from the
    commit, 0 if not, −1 unknown). Computed once per process."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", ".") if commit else None
    return {
        "code_hash": source_digest()[:12],
        "git_commit": commit or "unknown",
        "git_dirty": -1 if status is None else int(bool(status)),
    }


def move_aside(path: Path, reason: str) -> Path:
    """Rename ``path`` to ``<path>.<reason>`` (replacing an older one) and return the new path."""
    aside = path.with_name(f"{path.name}.{reason}")
    os.replace(path, aside)
    return aside


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """The attrs every file eoslab makes carries: the validated config (JSON) and its hash, the eoslab version,
    the code that made it (:func:`code_version`), torch's version and the device."""
    return {
        "config": json.dumps(config, sort_keys=True),
        "config_hash": digest(config),
        "eoslab_version": eoslab.__version__,
        **code_version(),
        "torch_version": str(torch.__version__),
        "device": config["device"],
    }


def check_out(out: str | Path, key: str = "--out") -> Path:
    """The path written for ``--out``: a symbolic link is followed (the run replaces the link's target, whose
    folder then holds the run's lock, checkpoint and partial results; the link stays), and a folder, FIFO, device or
    socket is refused with a ``ConfigError`` naming ``key`` (a run never replaces what is not a regular file)."""
    out = Path(out)
    if out.is_symlink():
        out = Path(os.path.realpath(out))
    if out.is_dir():
        raise ConfigError(f"{key}: {out} is a folder; give the run file's path, e.g. {out}/run.nc")
    if out.exists() and not out.is_file():
        mode = out.stat().st_mode
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ConfigError(f"{key}: {out} is {kind}, not a regular file; give a file path")
    return out


def write_run(ds: xr.Dataset, path: Path) -> None:
    """:func:`eoslab.store.write_atomic`, failing with one :class:`OutputError` line that names the path."""
    try:
        write_atomic(ds, path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write the run file ({error.strerror or error})") from error


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of plain tensors, numbers, strings, lists and dicts, written whole."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        write_bytes_atomic(buffer.getvalue(), path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write the checkpoint ({error.strerror or error})") from error


def load_checkpoint(path: Path, config_hash: str, any_code: bool = False) -> dict[str, Any] | None:
    """The saved state of a checkpoint written for ``config_hash`` by this code, else None.

    An unreadable checkpoint is moved to ``<path>.corrupt`` and one written by other code (another
    :func:`code_version` hash) to ``<path>.stale``, each with a warning, and the run starts fresh; ``any_code``
    resumes the latter anyway. A checkpoint of another config is ignored (and replaced at the next save).
    """
    if not path.exists():
        return None
    try:
        saved = torch.load(path, weights_only=True)
        state, digest, code = saved["state"], saved["config_hash"], saved["code_hash"]
    except Exception as error:  # truncated zip, not a checkpoint, an old pickle, ...: nothing to resume
        aside = move_aside(path, "corrupt")
        warnings.warn(f"{path}: unreadable checkpoint ({error}); moved to {aside}, starting fresh", stacklevel=2)
        return None
    if digest != config_hash:
        return None
    if code != code_version()["code_hash"] and not any_code:
        aside = move_aside(path, "stale")
        warnings.warn(
            f"{path}: written by other code ({code}, this is {code_version()['code_hash']}); moved to {aside}, "
            "starting fresh (move it back and pass --resume-any-code to resume it)",
            stacklevel=2,
        )
        return None
    return state


@dataclass
class RunFiles:
    """The paths of a run writing ``out`` (all None without one); :meth:`claim` takes them before compute."""

    out: Path | None
    lock_fd: int | None = None
    waited: bool = False

    @property
    def partial(self) -> Path | None:
        return None if self.out is None else self.out.with_name(self.out.name + ".partial")

    @property
    def ckpt(self) -> Path | None:
        return None if self.out is None else self.out.with_name(self.out.name + ".ckpt")

    @property
    def lock(self) -> Path | None:
        return None if self.out is None else self.out.with_name(self.out.name + ".lock")

    def claim(self, wait: bool = True, received: list[int] | None = None) -> None:
        """Check the output can be written, take its lock and remove temporary files a killed writer left.

        ``ConfigError`` if ``out`` is not a regular file (:func:`check_out`, which also follows a symbolic link);
        :class:`OutputError` (naming the path) if its folder cannot be made or written. If another process holds
        the lock: wait for it (``waited`` is then True; a signal in ``received`` stops the wait with
        :class:`Interrupted`), or with ``wait=False`` raise :class:`OutputError`.
        """
        if self.out is None:
            return
        self.out = check_out(self.out)
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.lock_fd = _lock(self.lock)
        except BlockingIOError:
            holder = self.lock.read_text().strip() or "?"
            message = f"{self.out}: another process (pid {holder}) is writing it (lock {self.lock})"
            if not wait:
                raise OutputError(f"{message}; wait for it or stop it") from None
            warnings.warn(f"{message}; waiting for it", stacklevel=2)
            self.lock_fd, self.waited = self._wait(received or []), True
        except OSError as error:
            raise OutputError(f"{self.out}: cannot write there ({error.strerror or error})") from error
        for path in (self.out, self.partial, self.ckpt):
            for tmp in stale_temps(path):
                tmp.unlink(missing_ok=True)

    def _wait(self, received: list[int]) -> int:
        while True:
            time.sleep(0.2)
            if received:
                name = signal.Signals(received[0]).name
                raise Interrupted(received[0], f"{name} while waiting for the lock of {self.out}")
            try:
                return _lock(self.lock)
            except BlockingIOError:
                continue

    def release(self) -> None:
        if self.lock_fd is not None:
            self.lock.unlink(missing_ok=True)
            os.close(self.lock_fd)
            self.lock_fd = None

    def made_meanwhile(self, config_hash: str) -> xr.Dataset | None:
        """After waiting for another writer: the finished run it left at ``out`` for this config, if any."""
        if not self.waited or not self.out.exists() or not is_intact(self.out):
            return None
        ds = open_run(self.out)
        return ds if ds.attrs.get("config_hash") == config_hash else None

    def finish(self) -> None:
        """After the final write: the checkpoint and the partial results are obsolete."""
        for path in (self.ckpt, self.partial):
            path.unlink(missing_ok=True)


def _lock(path: Path) -> int:
    """An exclusive ``flock`` on ``path`` (created, our pid written in it); BlockingIOError if another holds it.
    Retries if the holder removed the file between our open and our lock (the lock would be on a dead inode)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextmanager
def claimed(out: str | Path | None) -> Iterator[RunFiles]:
    """:class:`RunFiles` of ``out``, its lock (if claimed) released on the way out."""
    files = RunFiles(None if out is None else Path(out))
    try:
        yield files
    finally:
        files.release()


@contextmanager
def caught_signals(enabled: bool = True) -> Iterator[list[int]]:
    """While inside, SIGTERM and SIGINT append their number to the yielded list instead of killing the process.
    The first signal restores the previous handlers, so a second one acts as they do (the CLI's stop at once: one
    line, exit 128 + n, the last checkpoint kept). Only in the main thread; previous handlers come back on the way
    out."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        for s, h in previous.items():
            signal.signal(s, h)

    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def exit_status(error: BaseException) -> int:
    """The CLI's exit status for an error: 2 bad input, 128 + n interrupted by signal n, 3 other I/O errors."""
    if isinstance(error, ConfigError):
        return 2
    if isinstance(error, Interrupted):
        return 128 + error.signum
    return 3 if isinstance(error, OSError) else 1
