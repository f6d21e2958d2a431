"""A progress bar for training loops that costs next to nothing per step.

``update`` is called once per optimizer step, so it must not format strings or redraw: it only
hands the numbers to rich, whose refresh thread renders a few times a second and formats the
fields (loss, ppl, lr, tok/s) only then. The bar is for people, so it appears only when stderr is
a terminal; in logs and pipes every method is a no-op and nothing is printed.

rich's default is to redirect ``sys.stdout`` into the bar's console while it is live; that would
send the ``--json`` records (stdout) to stderr, so redirection is switched off.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.progress import Progress as _RichProgress
from rich.text import Text

from ..console import err

__all__ = ["Progress", "format_fields"]


def _number(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if v != 0 and abs(v) < 1e-2:
        return f"{v:.2e}"
    return f"{v:.4g}"


def format_fields(fields: dict[str, Any]) -> str:
    """``{"loss": 4.2131, "tok_s": 12345.6}`` -> ``"loss 4.213  tok/s 12,346"`` (``_s`` reads "per second")."""
    parts = []
    for k, v in fields.items():
        label = k[:-2] + "/s" if k.endswith("_s") else k
        parts.append(f"{label} {_number(v)}")
    return "  ".join(parts)


class _FieldsColumn(ProgressColumn):
    """Renders the task's custom fields; runs on rich's refresh, not on every update."""

    def render(self, task: Task) -> Text:
        return Text(format_fields(task.fields), style="progress.data.speed")


class Progress:
    """Progress bar on stderr; ``enabled=None`` means "only if stderr is a terminal".

    ``total=None`` shows an indeterminate bar (e.g. until the number of batches is known, then
    :meth:`set_total`). When disabled, no rich objects are created and every method returns at once.
    """

    def __init__(self, total: int | None, description: str, enabled: bool | None = None,
                 console: Console | None = None) -> None:
        self.console = console if console is not None else err
        self.enabled = self.console.is_terminal if enabled is None else bool(enabled)
        self._bar: _RichProgress | None = None
        self._task: Any = None
        if self.enabled:
            self._bar = _RichProgress(
                TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), _FieldsColumn(),
                console=self.console, refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, advance: int = 1, **fields: Any) -> None:
        """Advance by ``advance`` steps and replace the shown fields given (e.g. loss, ppl, lr, tok_s)."""
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, **fields)

    def set_total(self, n: int) -> None:
        """Set the number of steps once it is known (the bar stops being indeterminate)."""
        if self._bar is not None:
            self._bar.update(self._task, total=n)

    def set_description(self, description: str) -> None:
        """E.g. switch from ``epoch 3`` to ``valid``."""
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def log(self, msg: str) -> None:
        """Print a line above the bar (the bar stays at the bottom)."""
        if self._bar is not None:
            self._bar.console.print(msg, soft_wrap=True, highlight=False)
