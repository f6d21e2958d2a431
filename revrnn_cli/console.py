"""Output conventions: machine-readable JSON on stdout (only when asked), everything for people on
stderr (tables, progress, messages), so that ``revrnn … --json | jq`` always sees clean JSON."""

from __future__ import annotations

import json
import math
import os
import sys

from rich.console import Console

err = Console(stderr=True, highlight=False)
if not err.is_terminal:  # logs and pipes: no wrapping of tables at the default 80 columns
    err = Console(stderr=True, highlight=False, width=160)


def _clean(obj):
    """JSON has no NaN or infinity: emit null for them rather than invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


_closed_stdout = None  # the sys.stdout whose reader went away (``revrnn train --json | head -1``)


def emit_json(obj) -> bool:
    """One JSON object on one line of stdout, flushed (safe to pipe, one object per line).

    Returns False, writing nothing, once the reader of stdout has gone away: a closed pipe is
    not an error of the command (the training loop then saves and stops, see
    :mod:`revrnn_cli.training.metrics`). Descriptor 1 is then pointed at the null device, so that
    the interpreter's last flush at exit does not fail a second time.
    """
    if _closed_stdout is not None and _closed_stdout is sys.stdout:
        return False
    try:
        sys.stdout.write(json.dumps(_clean(obj), separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_went_away()
        return False
    return True


def _stdout_went_away() -> None:
    global _closed_stdout
    _closed_stdout = sys.stdout
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real descriptor (a captured stream): nothing to flush at exit
        pass


def fail(message: str) -> None:
    """A one-line error for people, on stderr."""
    err.print(f"[bold red]revrnn: error:[/] {message}", soft_wrap=True, markup=True)


def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
