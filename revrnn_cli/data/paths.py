"""Where corpora live on disk.

There is one rule so that the CLI, the experiment scripts and the tests all
find the same files: an explicit argument (``--data-dir``) wins, then the
``REVRNN_DATA_DIR`` environment variable, then ``./data`` in the current
working directory. That last one is the repository's git-ignored ``data/``
folder when you run from the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_DIR_ENV", "DEFAULT_DATA_DIR", "resolve_data_dir", "resolve_dir"]

#: Environment variable that names the data directory when no explicit one is given.
DATA_DIR_ENV = "REVRNN_DATA_DIR"

#: Fallback data directory, relative to the current working directory.
DEFAULT_DATA_DIR = Path("data")


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the data directory: ``explicit`` > ``$REVRNN_DATA_DIR`` > ``./data``.

    An empty string, whether passed in or set in the environment, counts as
    "not given". That way ``REVRNN_DATA_DIR=`` cannot silently point at the
    current directory. ``~`` is expanded. The result is made absolute, so
    error messages show an unambiguous location. Symlinks are not resolved,
    so the user sees the path they typed. The directory need not exist: the
    loaders create it when they download.
    """
    return resolve_dir(explicit, DATA_DIR_ENV, DEFAULT_DATA_DIR)


def resolve_dir(explicit: str | os.PathLike[str] | None, env_var: str, default: Path) -> Path:
    """``explicit`` > ``$env_var`` > ``default``, an empty string counting as not given; ``~``
    expanded, made absolute (the rule of :func:`resolve_data_dir`, shared by the cache directory)."""
    if explicit is not None and str(explicit) != "":
        chosen = Path(explicit)
    else:
        env = os.environ.get(env_var, "")
        chosen = Path(env) if env != "" else default
    return chosen.expanduser().absolute()
