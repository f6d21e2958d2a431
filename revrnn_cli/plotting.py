"""What every ``--plot`` needs: matplotlib (the optional ``[plot]`` extra) and a writable file name.

Both are checked when the command starts, before any profiling or reading, so a missing extra or a
mistyped directory costs one line (exit 2) instead of the work that came before the figure.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

INSTALL_HINT = "pip install 'revrnn[plot]' (or pip install matplotlib)"


def require_matplotlib(flag: str = "--plot"):
    """``matplotlib.pyplot`` on the file-only Agg backend; a :class:`UserError` when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(f"{flag} needs matplotlib: {INSTALL_HINT}") from None
    return plt


def check_plot_path(path: Path, flag: str = "--plot") -> Path:
    """``path`` if a figure can be written there: its directory exists and matplotlib knows its format
    (``.png``; ``.svg`` and ``.pdf`` work too)."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise UserError(f"{flag}: {path}: unknown figure format {path.suffix!r}; use .png (or .svg, .pdf)")
    if not path.parent.is_dir():
        raise UserError(f"{flag}: {path}: no such directory {path.parent}")
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a directory")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag}: {path}: cannot write there (not writable)")
    return path


def prepare_plot(path: Path | None, flag: str = "--plot"):
    """Both checks for an optional ``--plot FILE``; returns pyplot, or None when no figure was asked for."""
    if path is None:
        return None
    plt = require_matplotlib(flag)
    check_plot_path(path, flag)
    return plt


def save(fig, path: Path, flag: str = "--plot") -> Path:
    """Write ``fig`` to ``path`` and close it; an unwritable file is a one-line error."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path)
    except OSError as e:
        raise UserError(f"{flag}: cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(fig)
    return Path(path)


__all__ = ["INSTALL_HINT", "check_plot_path", "prepare_plot", "require_matplotlib", "save"]
