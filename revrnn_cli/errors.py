"""Exit codes and the user-facing error type shared by every command.

Scripts rely on these codes (``revrnn train … || handle $?``), so they are fixed here, once:

    0   success
    1   a check failed (verify-reversal: not exact, or gradients disagree)
    2   usage or spec error (bad argument, unknown key, wrong type, impossible combination)
    3   data error (missing, corrupt or truncated data files)
    4   non-finite values (loss, gradient, or NaN/inf reaching the fixed-point engine): stopped, never trained on
    5   numerical error in the fixed-point engine (state overflow, failed reversal)
    6   out of resources: not enough memory for the model, or no space left on the disk
    130 interrupted by SIGINT (after saving), 143 terminated by SIGTERM (after saving),
    141 stdout closed while writing --json lines (after saving; 128 + SIGPIPE, as a shell reports it)
"""

from __future__ import annotations

import errno
from pathlib import Path

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_NONFINITE = 4
EXIT_NUMERIC = 5
EXIT_RESOURCE = 6
EXIT_SIGINT = 130
EXIT_SIGPIPE = 141
EXIT_SIGTERM = 143


class UserError(Exception):
    """An error caused by input the user can fix; printed as one line, never as a traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SpecError(UserError):
    """A spec file or override that does not validate: names the file, the key and what is allowed."""

    exit_code = EXIT_USAGE


class ResourceError(UserError):
    """The machine ran out of something the run needs (memory, disk space): not the user's input,
    but nothing a traceback would help with either."""

    exit_code = EXIT_RESOURCE


# what torch and the C allocator say when an allocation fails (CPU and CUDA)
_MEMORY_MESSAGES = ("not enough memory", "defaultcpuallocator", "can't allocate memory", "out of memory",
                    "cannot allocate memory")


def out_of_memory(exc: BaseException) -> ResourceError | None:
    """A one-line :class:`ResourceError` if ``exc`` is a failed allocation, else None.

    torch reports a failed CPU allocation as a ``RuntimeError`` whose text names the allocator
    (and CUDA's as ``torch.OutOfMemoryError``, also a ``RuntimeError``), so the text is all there
    is to recognise it by.
    """
    text = str(exc)
    if not isinstance(exc, MemoryError) and not any(m in text.lower() for m in _MEMORY_MESSAGES):
        return None
    size = ""
    for marker in ("tried to allocate ", "Tried to allocate "):
        if marker in text:
            amount = text.split(marker, 1)[1].split()
            if amount and amount[0].isdigit():
                size = f" (an allocation of {_human_bytes(int(amount[0]))} failed)"
            elif len(amount) > 1:
                size = f" (an allocation of {amount[0]} {amount[1].rstrip('.;,')} failed)"
            break
    return ResourceError(f"out of memory{size}: make the model or the batch smaller, or use a machine "
                         f"with more memory")


def write_failed(path: Path | str, exc: OSError, note: str = "") -> UserError:
    """One line for a failed write of ``path``: a full disk (or quota) is a :class:`ResourceError`
    (exit 6); anything else (permissions, a read-only file system, a file in the way) names the
    path and the reason (exit 2)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    cls = ResourceError if exc.errno in (errno.ENOSPC, errno.EDQUOT) else UserError
    return cls(f"{path}: cannot write: {reason}{note}")


def _human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover
