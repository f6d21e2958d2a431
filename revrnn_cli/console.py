"""Output conventions: machine-readable JSON on stdout (only when asked), everything for people on
stderr (tables, progress, messages), so that ``revrnn … --json | jq`` always sees clean JSON."""

from __future__ import annotations

import json
import math
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


def emit_json(obj) -> None:
    """One JSON object on one line of stdout, flushed (safe to pipe, one object per line)."""
    sys.stdout.write(json.dumps(_clean(obj), separators=(",", ":")) + "\n")
    sys.stdout.flush()


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
