"""Run directories: one folder per run, holding everything needed to reproduce or resume it.

A run directory is never reused: re-running a spec with the same name must not overwrite the
checkpoints and metrics of an earlier run (a common way to lose a week of results), so a fresh
``name-2``, ``name-3``, ... is chosen instead. Next to the checkpoints we write the exact config
(``config.yaml``) and the environment it ran in (``environment.json``): versions, hardware, git
commit, command line and seed, which is what one needs to explain a result months later.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import __version__
from ..errors import EXIT_USAGE, UserError
from .checkpoint import atomic_write

__all__ = ["make_run_dir", "write_config", "environment_record", "write_environment"]


def make_run_dir(root: Path, name: str) -> Path:
    """Create and return ``root/name``, or ``root/name-2``, ``-3``... if it exists and is not empty.

    An existing *empty* directory is reused (e.g. created by a run that failed before writing).
    ``mkdir`` without ``exist_ok`` makes the choice race-free between concurrent launches.
    """
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise UserError(f"{name!r} is not a valid run name (a single directory name is needed)",
                        exit_code=EXIT_USAGE)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        candidate = root / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            if candidate.is_dir() and not any(candidate.iterdir()):
                return candidate
        n += 1


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
