"""Per-step metrics as JSON lines: one file per run, optionally mirrored to stdout.

JSON lines rather than CSV or a database because the file is appended to while the run is alive
and must stay readable if the process dies at any moment: each record is one self-contained line,
flushed as soon as it is written, so a crash loses at most the line being written, and
:func:`read_metrics` tolerates exactly that truncated last line. JSON has no NaN or infinity (a
diverging loss produces them), so they are written as null.

Resumed runs append to the same file, after cutting it back to what it held when the checkpoint
was written (:meth:`MetricsLogger.size` is saved in it, :func:`truncate_metrics` cuts): the steps
between that checkpoint and a crash are trained again, and must not be listed twice.

With ``--json`` the records are mirrored to stdout. If the reader of stdout goes away
(``revrnn train --json | head -1``), the file keeps every record and :attr:`stdout_closed` tells
the training loop, which saves and stops rather than training on unseen.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..console import emit_json
from ..errors import EXIT_DATA, UserError, write_failed

__all__ = ["MetricsLogger", "read_metrics", "truncate_metrics"]


def _plain(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, 0-d tensors / numpy scalars become numbers."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # torch / numpy scalar
        return _plain(obj.item())
    if isinstance(obj, numbers.Real):
        return _plain(float(obj))
    return str(obj)


class MetricsLogger:
    """Append one JSON object per :meth:`log` call to ``path`` and, if asked, to stdout.

    ``path=None`` logs nowhere on disk (e.g. a dry run). Adds ``"time"`` (unix seconds) unless the
    record has one, so records from a resumed run can be placed on one time axis.
    """

    def __init__(self, path: Path | None, json_stdout: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.json_stdout = json_stdout
        self.stdout_closed = False
        self._file: IO[bytes] | None = None
        self._size = 0
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # unbuffered bytes: every record reaches the OS in one write, and the size is exact
                self._file = open(self.path, "ab", buffering=0)
                self._size = self._file.seek(0, 2)
            except OSError as e:
                raise write_failed(self.path, e) from None

    @property
    def size(self) -> int | None:
        """Bytes in the file so far (None without a file): what a checkpoint records."""
        return self._size if self.path is not None else None

    def log(self, record: dict) -> None:
        """Write one record (a flat or nested dict of numbers, strings, lists)."""
        if self.path is not None and self._file is None:
            raise ValueError(f"{self.path}: metrics logger is closed")
        clean = _plain(record)
        clean.setdefault("time", time.time())
        if self._file is not None:
            line = (json.dumps(clean, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
            try:
                self._file.write(line)
            except OSError as e:
                raise write_failed(self.path, e) from None
            self._size += len(line)
        if self.json_stdout and not emit_json(clean):
            self.json_stdout, self.stdout_closed = False, True

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # unbuffered: nothing was pending; a failed write was reported already
                pass
            self._file = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict]:
    """All records of a metrics file, in order.

    A malformed *last* line is the signature of a crash mid-write and is dropped; a malformed line
    anywhere else means the file is damaged, which is a data error (exit 3) naming the line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: no such metrics file", exit_code=EXIT_DATA) from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read metrics: {e}", exit_code=EXIT_DATA) from None
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    records: list[dict] = []
    for n, (lineno, line) in enumerate(numbered):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if n == len(numbered) - 1:
                break
            raise UserError(f"{path}:{lineno}: malformed metrics line ({e})", exit_code=EXIT_DATA) from None
        records.append(rec)
    return records


def truncate_metrics(path: Path, size: int | None) -> None:
    """Cut ``path`` back to its first ``size`` bytes (None: leave it, e.g. an older checkpoint)."""
    path = Path(path)
    if size is None or not path.is_file() or path.stat().st_size <= size:
        return
    try:
        with open(path, "r+b") as f:
            f.truncate(size)
    except OSError as e:
        raise write_failed(path, e) from None
