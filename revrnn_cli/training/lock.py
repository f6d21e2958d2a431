"""An exclusive lock on a run directory, held by the one process that trains in it.

Two processes writing one run directory interleave their ``metrics.jsonl`` lines and overwrite
each other's checkpoints, and neither notices. So a training process holds ``fcntl.flock`` on
``<run>/.lock`` for as long as it runs. The kernel drops a flock when its process ends, however
it ends (``kill -9`` and power loss included), so a crashed run never leaves a stale lock that
has to be removed by hand. The holder writes its pid into the file, so that the refusal can say
who holds it.

The file is removed on release, so that a finished run directory holds only the run. Removing a
lock file is racy in general (a waiter may have opened the old file just before it went away),
so :meth:`RunLock.acquire` checks, after locking, that the file it locked is still the one at the
path, and starts again otherwise. Without ``fcntl`` (Windows) there is no lock: the directory
checks of :mod:`.rundir` still apply.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

from ..errors import UserError, write_failed

__all__ = ["LOCK_NAME", "RunDirLocked", "RunLock", "ensure_free"]

#: Name of the lock file inside a run directory.
LOCK_NAME = ".lock"


class RunDirLocked(UserError):
    """Another live process trains in the directory (exit 2)."""


class RunLock:
    """A held lock on one directory; :meth:`release` (or process exit) gives it up."""

    def __init__(self, directory: Path, fd: int | None):
        self.directory, self._fd = Path(directory), fd

    @classmethod
    def acquire(cls, directory: Path) -> RunLock:
        """Lock ``directory`` without waiting; :class:`RunDirLocked` if a live process holds it."""
        directory = Path(directory)
        if fcntl is None:  # pragma: no cover
            return cls(directory, None)
        path = directory / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise write_failed(directory, e, note=" (a run directory must be writable)") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise _busy(directory, fd) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed the file as we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(directory, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file, then unlock (idempotent)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.directory / LOCK_NAME)
        except OSError:
            pass  # already gone (the directory was removed) or read-only: the unlock below is what counts
        os.close(self._fd)  # closing the last descriptor drops the flock
        self._fd = None


def ensure_free(directory: Path) -> None:
    """Raise :class:`RunDirLocked` if a live process holds ``directory``'s lock; take nothing.

    For a check before any work (``--resume`` of a run in progress) that must not write.
    """
    if fcntl is None:  # pragma: no cover
        return
    try:
        fd = os.open(Path(directory) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        raise _busy(Path(directory), fd) from None
    else:
        os.close(fd)  # closing drops the shared lock

def _busy(directory: Path, fd: int) -> RunDirLocked:
    """The refusal, naming the holder; closes ``fd``."""
    holder = _read_pid(fd)
    os.close(fd)
    who = f"process {holder}" if holder else "another process"
    return RunDirLocked(f"{directory}: {who} is training in this run directory; wait for it to finish, or stop "
                        f"it first")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
