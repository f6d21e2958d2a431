"""The single exception type that the data layer shows to users.

Missing, truncated or corrupt corpus files are user mistakes (or network
trouble), not bugs. The CLI catches :class:`DataError`, prints ``str(error)``
and exits with its data-error code. So the message must stand on its own: one
line that names the file or directory and says what is wrong and what is
needed. A traceback would only hide that line.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DataError", "one_line"]


def one_line(text: object, limit: int | None = None) -> str:
    """Collapse ``text`` onto a single line. Optionally cut it to ``limit`` chars.

    Messages from deeper layers (``datasets``, ``OSError``) may span several
    lines. Embedding them unchanged would break the one-line contract of
    :class:`DataError`.
    """
    flat = " ".join(str(text).split())
    if limit is not None and len(flat) > limit:
        flat = flat[: max(0, limit - 1)].rstrip() + "…"
    return flat


class DataError(Exception):
    """A data problem that the user can fix: a file is missing, corrupt or unreadable.

    ``str(error)`` is always a single line, ready for the CLI to print. The
    optional ``path`` attribute holds the file or directory involved, for
    callers that want to act on it (for example, to suggest deleting it).
    """

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        message = one_line(message)
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None

    def __str__(self) -> str:
        return self.message
