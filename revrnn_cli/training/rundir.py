"""Run directories: one folder per run, holding everything needed to reproduce or resume it.

What is guaranteed, and why:

* **Never overwritten.** Re-running a spec with the same name must not replace the checkpoints and
  metrics of an earlier run (a common way to lose a week of results): an automatic name takes the
  next free ``name-2``, ``name-3``...; an explicit ``--run-dir`` that already holds a run is
  refused unless ``--overwrite`` says to replace it (``--resume`` continues it instead).
* **One process at a time.** The process that trains holds the directory's lock (:mod:`.lock`)
  from before its first write to its exit; a second one is refused with one line.
* **Nothing left by a failed start.** A run that fails before its first training step (a missing
  corpus, no CUDA, a model too large for memory) removes the directory it created, so failures do
  not pile up as ``name-2``, ``name-3``... holding only ``config.yaml``.
* **Errors name the place.** A directory that cannot be created or written (a file in the way, a
  read-only parent) is one line naming it and the option that chose it, before any work.

Next to the checkpoints we write the exact config (``config.yaml``) and the environment it ran in
(``environment.json``): versions, hardware, git commit, command line and seed, which is what one
needs to explain a result months later.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
import yaml

from .. import __version__
from ..errors import EXIT_USAGE, UserError
from .checkpoint import atomic_write
from .lock import LOCK_NAME, RunLock

__all__ = ["RUN_FILES", "RunDirectory", "ensure_writable", "make_run_dir", "write_config", "environment_record",
           "write_environment"]

#: What a run writes into its directory (``translations/`` comes from ``revrnn evaluate``).
RUN_FILES = ("config.yaml", "environment.json", "metrics.jsonl", "last.pt", "best.pt", "translations")


def _is_temporary(name: str) -> bool:
    """A checkpoint or record being written by :func:`~.checkpoint.atomic_write` (``.last.pt.x1y2.tmp``)."""
    return name.startswith(".") and name.endswith(".tmp")


def _contents(directory: Path) -> list[str]:
    """Names in ``directory`` other than its lock file."""
    return sorted(p.name for p in directory.iterdir() if p.name != LOCK_NAME)


class RunDirectory:
    """The directory one training process writes, claimed before any work and held until it ends.

    Use it as a context manager: on exit the lock is released; if the block failed and
    :attr:`trained` is still False (no training step was taken), what this process wrote is
    removed again, and the directory too if this process created it.
    """

    def __init__(self, path: Path, lock: RunLock, created: bool):
        self.path, self.lock, self.created = Path(path), lock, created
        self.trained = False  # set by the runner once a step has been taken: from then on, keep everything

    # ---- claiming --------------------------------------------------------------------------------
    @classmethod
    def new(cls, runs_dir: Path | str, name: str, explicit: Path | str | None = None,
            overwrite: bool = False) -> RunDirectory:
        """A directory for a new run: ``explicit`` (``--run-dir``), else ``runs_dir/name[-N]``."""
        if explicit is None:
            return _claim_free_name(Path(runs_dir), name)
        path = Path(explicit)
        if path.exists() and not path.is_dir():
            raise UserError(f"--run-dir {path}: exists and is not a directory")
        created = _mkdir(path, "--run-dir")
        lock = RunLock.acquire(path)
        try:
            refuse_existing_run(path, overwrite)
            if overwrite:
                _remove_run_files(path)
        except BaseException:
            lock.release()
            raise
        return cls(path, lock, created)

    @classmethod
    def existing(cls, path: Path) -> RunDirectory:
        """The directory of a run to resume: writable, locked, cleared of stale temporary files.

        Temporary files are what a process killed while saving leaves behind (``kill -9``); with
        the lock held, no other process can be writing one.
        """
        path = Path(path)
        ensure_writable(path, "run directory", ": --resume writes its checkpoints and metrics there")
        run = cls(path, RunLock.acquire(path), created=False)
        run.trained = True  # a resumed run is never removed
        for name in _contents(path):
            if _is_temporary(name):
                try:
                    (path / name).unlink()
                except OSError:
                    pass
        return run

    # ---- releasing -------------------------------------------------------------------------------
    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None and not self.trained:
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                _remove_run_files(self.path)
        self.lock.release()


def refuse_existing_run(path: Path, overwrite: bool) -> None:
    """Refuse to start a new run in ``path`` if it holds anything (exit 2), unless ``overwrite``
    and everything in it is a run's own file: ``--overwrite`` replaces a run, never other files."""
    path = Path(path)
    if not path.is_dir():
        return
    names = _contents(path)
    if not names:
        return
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    if not overwrite:
        raise UserError(f"--run-dir {path}: already holds a run ({shown}); continue it with --resume {path}, "
                        f"replace it with --overwrite, or choose another --run-dir", exit_code=EXIT_USAGE)
    foreign = [n for n in names if n not in RUN_FILES and not _is_temporary(n)]
    if foreign:
        raise UserError(f"--run-dir {path}: holds files that are not a run's ({', '.join(foreign[:4])}); "
                        f"--overwrite replaces runs only: choose another --run-dir", exit_code=EXIT_USAGE)


def _remove_run_files(path: Path) -> None:
    for name in _contents(path) if path.is_dir() else []:
        if name in RUN_FILES or _is_temporary(name):
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                try:
                    target.unlink()
                except OSError:
                    pass


def _mkdir(path: Path, option: str) -> bool:
    """Create ``path`` (and its parents); True if it did not exist. Errors name ``option``."""
    try:
        path.mkdir(parents=True)
        return True
    except FileExistsError:
        if path.is_dir():
            return False
        raise UserError(f"{option} {path}: cannot create it: a file is in the way") from None
    except OSError as e:
        raise UserError(f"{option} {path}: cannot create it: {e.strerror or e}") from None


def _claim_free_name(root: Path, name: str) -> RunDirectory:
    """``root/name``, else ``root/name-2``, ``-3``...: the first that this process creates, or
    finds empty and unlocked (left by a run that failed before writing). ``mkdir`` without
    ``exist_ok`` and the lock make the choice race-free between concurrent launches."""
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise UserError(f"{name!r} is not a valid run name (a single directory name is needed)",
                        exit_code=EXIT_USAGE)
    if root.exists() and not root.is_dir():
        raise UserError(f"output.runs_dir {root}: exists and is not a directory")
    _mkdir(root, "output.runs_dir")
    ensure_writable(root, "output.runs_dir")
    n = 1
    while True:
        candidate = root / (name if n == 1 else f"{name}-{n}")
        n += 1
        try:
            candidate.mkdir()
            created = True
        except FileExistsError:
            if not candidate.is_dir() or _contents(candidate):
                continue
            created = False
        except OSError as e:
            raise UserError(f"output.runs_dir {root}: cannot create {candidate.name} in it: {e.strerror or e}") from None
        try:
            lock = RunLock.acquire(candidate)
        except UserError:
            continue  # another launch claimed it a moment ago
        if created or not _contents(candidate):
            return RunDirectory(candidate, lock, created)
        lock.release()


def make_run_dir(root: Path, name: str) -> Path:
    """Create and return ``root/name``, or ``root/name-2``, ``-3``... if it exists and is not empty
    (an existing *empty* directory is reused); the choice of :meth:`RunDirectory.new`, unlocked."""
    run = _claim_free_name(Path(root), name)
    run.lock.release()
    return run.path


def ensure_writable(directory: Path, what: str, why: str = "") -> None:
    """Refuse, in one line, a directory this process cannot write, before any work is done
    (rather than after an epoch, or after decoding a whole test set)."""
    directory = Path(directory)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(f"{what} {directory} is not writable{why} (check its permissions, or whether its file "
                        f"system is mounted read-only)")


def write_config(run_dir: Path, config: dict) -> Path:
    """Write ``config.yaml`` (keys in the spec's order, so it reads like the spec) atomically."""
    path = Path(run_dir) / "config.yaml"
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def _git(*args: str) -> str | None:
    """Output of a git command in the current directory, or None if git or a repository is absent."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cuda(device: str) -> tuple[str | None, str | None]:
    """(CUDA version torch was built with, name of the GPU the run uses) or Nones on CPU."""
    if not torch.cuda.is_available():
        return torch.version.cuda, None
    try:
        dev = torch.device(device)
        index = dev.index if dev.type == "cuda" and dev.index is not None else torch.cuda.current_device()
        return torch.version.cuda, torch.cuda.get_device_name(index)
    except (RuntimeError, AssertionError, ValueError):
        return torch.version.cuda, None


def _numpy_version() -> str | None:
    try:
        import numpy
    except ImportError:
        return None
    return numpy.__version__


def environment_record(seed: int, device: str) -> dict:
    """Everything about the machine and code that can change a result; JSON-serialisable.

    Never fails: facts that cannot be found (no git, no GPU) are None.
    """
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    cuda_version, gpu = _cuda(device)
    record: dict[str, Any] = {
        "revrnn": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": cuda_version,
        "gpu": gpu,
        "numpy": _numpy_version(),
        "git_commit": commit or None,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "hostname": socket.gethostname(),
        "argv": list(sys.argv),
        "seed": seed,
        "device": device,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return record


def write_environment(run_dir: Path, record: dict) -> Path:
    """Write ``environment.json`` atomically."""
    path = Path(run_dir) / "environment.json"
    text = json.dumps(record, indent=2, default=str) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path
