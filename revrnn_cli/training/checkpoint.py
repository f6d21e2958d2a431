"""Checkpoints: atomic writes, safe reads, spec compatibility and RNG state.

Why each piece exists:

* A training run is killed at arbitrary moments (Ctrl-C, SIGTERM from a scheduler, OOM, power
  loss). If ``last.pt`` were written in place, a kill mid-write would destroy the only resumable
  state. So every file goes to a temporary file in the *same* directory (``os.replace`` is atomic
  only within one file system), is fsynced, and then renamed over the target.
* Checkpoints are read with ``weights_only=True``: a ``.pt`` file is a pickle, and unpickling an
  untrusted file can run arbitrary code. Everything we save is plain containers and tensors, so
  the restricted unpickler loses nothing.
* Resuming with a different spec silently trains a different experiment; :func:`check_compatible`
  refuses it and names the first key that differs.
* Resumed runs must continue the *same* random sequence (dropout masks, batch order), so the RNG
  state of python, numpy and torch is saved in a form the restricted unpickler accepts. A
  multi-process run saves every rank's (``ranks``), so it resumes only with the same number of
  processes: :func:`check_world_size` says so in one line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

from ..errors import EXIT_USAGE, UserError, write_failed

try:  # numpy is a dependency, but the RNG helpers must not break if it is absent
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is installed in every supported environment
    _np = None

__all__ = ["RUN_KEYS", "atomic_write", "save_checkpoint", "load_checkpoint", "config_hash", "check_compatible",
           "rng_state", "set_rng_state", "check_world_size"]

_DEFAULT_IGNORE = ("train.epochs", "train.max_steps", "output")
_MISSING = object()


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """Permissions a plain ``open()`` would give: NamedTemporaryFile creates files 0600.

    Reading the umask means setting it briefly (process-wide), so it is done once and cached.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then rename it onto ``path``.

    Readers see either the old file or the complete new one, never a partial one; on any
    exception (including KeyboardInterrupt) the temporary file is removed and the error re-raised.
    A failed write (a full disk, a read-only directory) is one line naming ``path`` and saying
    that the previous version, if any, is unchanged (:func:`~revrnn_cli.errors.write_failed`).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    except OSError as e:
        raise write_failed(path, e) from None
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp.name, _file_mode())
        os.replace(tmp.name, path)
    except BaseException as e:
        try:
            os.unlink(tmp.name)
        except OSError:
            pass
        if isinstance(e, OSError):
            kept = f" (the previous {path.name} is unchanged)" if path.exists() else ""
            raise write_failed(path, e, note=kept) from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort, some platforms cannot open directories."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` with ``torch.save`` atomically (see :func:`atomic_write`)."""
    atomic_write(Path(path), lambda f: torch.save(payload, f))


#: What every checkpoint of ``revrnn train`` holds (:func:`load_checkpoint`'s ``require``).
RUN_KEYS = ("config", "model", "loop")


def load_checkpoint(path: Path, require: tuple[str, ...] = ()) -> dict:
    """Read a checkpoint on the CPU with the restricted (``weights_only``) unpickler.

    Every failure is a :class:`UserError` naming the file (exit code 2), never a traceback: what
    the file is instead (truncated, not a checkpoint at all, lacking the ``require``-d keys), and,
    when the run's other checkpoint (``last.pt`` / ``best.pt``) reads fine, that it can be used
    instead.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint", exit_code=EXIT_USAGE)
    try:
        payload = _read(path, require)
    except _Unreadable as e:
        raise UserError(f"{path}: {e}{_alternative(path)}", exit_code=EXIT_USAGE) from None
    return payload


class _Unreadable(Exception):
    """Why a file is not a readable checkpoint (one line)."""


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


def _read(path: Path, require: tuple[str, ...] = ()) -> dict:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise _Unreadable(f"cannot read checkpoint: {e.strerror or e}") from None
    if path.is_dir():
        raise _Unreadable("is a directory, not a checkpoint file")
    if head != _ZIP_MAGIC:
        what = "an empty file" if not head else "not a PyTorch archive"
        raise _Unreadable(f"not a revrnn checkpoint ({what}; checkpoints are the last.pt and best.pt of a run "
                          f"directory)")
    if not zipfile.is_zipfile(path):
        raise _Unreadable("truncated or damaged checkpoint (the archive ends early: was the disk full, or the "
                          "copy interrupted?)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged inside, forbidden objects...
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise _Unreadable("it contains Python objects other than tensors and plain containers, so it was not "
                              "written by revrnn (refusing to unpickle it)") from None
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _Unreadable(f"damaged checkpoint ({type(e).__name__}: {detail})") from None
    if not isinstance(payload, dict) or any(k not in payload for k in require):
        kind = f"a {type(payload).__name__}" if not isinstance(payload, dict) else f"no {', '.join(require)}"
        raise _Unreadable(f"not a revrnn checkpoint (a PyTorch file with {kind}; checkpoints are the last.pt and "
                          f"best.pt of a run directory)")
    return payload


def _alternative(path: Path) -> str:
    """``; <run>/best.pt is intact: use it instead`` when the run's other checkpoint reads fine."""
    other = {"last.pt": "best.pt", "best.pt": "last.pt"}.get(path.name)
    if other is None or not (path.parent / other).is_file():
        return ""
    try:
        _read(path.parent / other, RUN_KEYS)
    except _Unreadable:
        return ""
    return (f"; {path.parent / other} is intact: pass it instead (revrnn train --resume {path.parent / other}, "
            f"revrnn evaluate {path.parent / other})")


def config_hash(config: dict) -> str:
    """First 16 hex digits of sha256 over canonical JSON: equal configs hash equal whatever the key order."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of a nested mapping as (dotted key, value); tuples compare equal to lists."""
    if isinstance(obj, Mapping) and obj:
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, list(obj) if isinstance(obj, tuple) else obj


def _ignored(key: str, ignore: tuple[str, ...]) -> bool:
    return any(key == i or key.startswith(i + ".") for i in ignore)


def _show(value: Any) -> str:
    if value is _MISSING:
        return "not set"
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, default=str)


def check_compatible(ckpt: dict, config: dict, path: Path,
                     ignore: tuple[str, ...] = _DEFAULT_IGNORE, source: str = "here") -> None:
    """Refuse to resume from a checkpoint written by a different spec.

    Keys in ``ignore`` (dotted; a prefix covers its whole subtree) may legitimately change between
    a run and its resumption, e.g. training for more epochs. Raises :class:`UserError` (exit 2)
    naming the first differing key, in the order of the current config; ``source`` names where
    ``config`` came from (``in runs/x/config.yaml``).
    """
    if not isinstance(ckpt.get("config"), Mapping):
        raise UserError(f"{path}: checkpoint has no config, so it was not written by `revrnn train`",
                        exit_code=EXIT_USAGE)
    there = {k: v for k, v in _flatten(ckpt["config"]) if not _ignored(k, ignore)}
    here = {k: v for k, v in _flatten(config) if not _ignored(k, ignore)}
    for key in list(here) + [k for k in there if k not in here]:
        a, b = there.get(key, _MISSING), here.get(key, _MISSING)
        if a != b or isinstance(a, bool) != isinstance(b, bool):  # True == 1 in python, not in a spec
            raise UserError(f"{path} was written by a different spec: {key} is {_show(a)} there, "
                            f"{_show(b)} {source}", exit_code=EXIT_USAGE)


def check_world_size(ckpt: dict, world_size: int, path: Path | str) -> None:
    """Refuse to resume a checkpoint saved by a different number of processes (exit 2).

    Each rank's RNG streams and carried state are saved separately and belong to that rank's part
    of the batch; there is no faithful way to re-split them. Checkpoints without the field were
    written by one process.
    """
    saved = int(ckpt.get("world_size", 1))
    if saved != world_size:
        how = "one process (no torchrun)" if saved == 1 else (
            f"{saved} processes (revrnn train --nproc {saved}, or torchrun with nnodes x nproc_per_node = {saved})")
        raise UserError(f"{path} was saved by a run with world size {saved}, this run has world size {world_size}: "
                        f"resume it with {how}", exit_code=EXIT_USAGE)


def rng_state() -> dict:
    """Every global RNG a training step draws from, in types ``torch.load(weights_only=True)`` accepts.

    Only numpy's legacy global generator (``np.random.*``) is captured; ``Generator`` objects
    created by callers belong to them.
    """
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": (version, tuple(internal), gauss), "torch": torch.get_rng_state()}
    if _np is not None:
        kind, keys, pos, has_gauss, cached = _np.random.get_state()
        # int64 rather than uint32: uint32 tensors are not fully supported by every torch >= 2.2
        state["numpy"] = {"kind": str(kind), "keys": torch.from_numpy(keys.astype(_np.int64)),
                          "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured; parts absent on either side are skipped."""
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    if "torch" in state:
        torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    if "numpy" in state and _np is not None:
        s = state["numpy"]
        keys = s["keys"].cpu().numpy().astype(_np.uint32)
        _np.random.set_state((s["kind"], keys, int(s["pos"]), int(s["has_gauss"]), float(s["cached_gaussian"])))
    if "cuda" in state and torch.cuda.is_available():
        # a run resumed on fewer GPUs restores the devices it has
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.to(torch.uint8).cpu(), device=i)
