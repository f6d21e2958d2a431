"""Fixtures for the data tests: where the real corpora are, and loading them once per session.

Tests of the real corpora (their counts, digests, full loads) skip, saying so, when
``REVRNN_DATA_DIR`` does not name them; everything else runs on the suite's tiny corpora
(``tests/conftest.py``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from revrnn_cli.data import load_lm_corpus

# Published figures (shared/data/README.md). They are repeated here on purpose, so the
# tests do not trust the constants in revrnn_cli.data.corpora.
PUBLISHED = {
    "ptb": {
        "dir": "ptb",
        "files": {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"},
        "tokens": {"train": 929_589, "valid": 73_760, "test": 82_430},
        "vocab": 10_000,
    },
    "wikitext2": {
        "dir": "wikitext-2",
        "files": {"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"},
        "tokens": {"train": 2_088_628, "valid": 217_646, "test": 245_569},
        "vocab": 33_278,
    },
}


def _real_root() -> Path | None:
    env = os.environ.get("REVRNN_DATA_DIR")
    return Path(env) if env else None


@pytest.fixture(scope="session")
def published() -> dict:
    """The published per-corpus figures (layout, token counts, vocabulary sizes)."""
    return PUBLISHED


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The directory with the real corpora. Tests that use it are skipped only when it does not exist.

    A directory that exists but lacks a file is a broken setup. The tests then fail and say which file is missing.
    """
    root = _real_root()
    if root is None:
        pytest.skip("a check of the real corpora: REVRNN_DATA_DIR is not set")
    if not root.is_dir():
        pytest.skip(f"a check of the real corpora: REVRNN_DATA_DIR={root} is not a directory")
    return root


@pytest.fixture(scope="session")
def ptb_corpus(real_data_dir):
    return load_lm_corpus("ptb", real_data_dir, download=False)


@pytest.fixture(scope="session")
def wt2_corpus(real_data_dir):
    return load_lm_corpus("wikitext2", real_data_dir, download=False)


@pytest.fixture
def ptb_copy(real_data_dir, tmp_path) -> Path:
    """A private copy of the PTB files under ``tmp_path/ptb``, for tests that damage them. Returns ``tmp_path``."""
    shutil.copytree(real_data_dir / "ptb", tmp_path / "ptb")
    return tmp_path
