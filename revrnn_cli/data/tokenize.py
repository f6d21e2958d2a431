"""Moses tokenisation of parallel text (sacremoses), with an on-disk cache (reference `nmt/train_scripts/*.sh`,
`nmt/opts.py`).

Tokenising the 60k Multi30k sentences takes a few seconds, so the *cased*
Moses tokens of each file are cached as JSON under ``$REVRNN_CACHE_DIR`` (else
``~/.cache/revrnn``) in ``tokenized/``. The cache key hashes the file's
sha256, the language, the tokeniser options and the sacremoses version, so a
changed file or tokeniser can never be served stale tokens. A cache entry may
hold just a prefix of the file (runs with ``n_train`` etc. tokenise only what
they need); later runs extend it. Writes are atomic; an unreadable or
inconsistent entry is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from .download import write_text_atomic
from .paths import resolve_dir

__all__ = ["CACHE_DIR_ENV", "moses_tokenize", "resolve_cache_dir", "tokenize_cached"]

#: Environment variable naming the cache directory (tokenised corpora).
CACHE_DIR_ENV = "REVRNN_CACHE_DIR"
_DEFAULT_CACHE_DIR = Path("~/.cache/revrnn")

# Bump when the cache file layout or the tokenisation procedure changes.
_CACHE_FORMAT = 1
# The options passed to MosesTokenizer.tokenize (tokenizer.perl -a -no-escape).
_MOSES_OPTIONS = {"aggressive_dash_splits": True, "escape": False}


# --------------------------------------------------------------------------- tokenisation + cache


def resolve_cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``explicit`` > ``$REVRNN_CACHE_DIR`` > ``~/.cache/revrnn`` (empty = not given)."""
    return resolve_dir(explicit, CACHE_DIR_ENV, _DEFAULT_CACHE_DIR)


@cache
def _moses(lang: str):
    from sacremoses import MosesTokenizer  # lazy: only translation runs need it

    return MosesTokenizer(lang=lang)


@cache
def _sacremoses_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sacremoses")
    except PackageNotFoundError:  # pragma: no cover - vendored or unusual installs
        import sacremoses

        return str(getattr(sacremoses, "__version__", "unknown"))


def moses_tokenize(lines: Iterable[str], lang: str) -> list[list[str]]:
    """Moses tokens of each line, cased (``tokenizer.perl -a -no-escape -l lang``)."""
    tok = _moses(lang)
    return [tok.tokenize(line, **_MOSES_OPTIONS) for line in lines]


def _cache_key(source_sha256: str, lang: str) -> str:
    meta = {
        "format": _CACHE_FORMAT,
        "source_sha256": source_sha256,
        "lang": lang,
        "tokenizer": "sacremoses.MosesTokenizer.tokenize",
        "options": _MOSES_OPTIONS,
        "sacremoses": _sacremoses_version(),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode("utf-8")).hexdigest()


def _cache_path(cache_dir: Path, lang: str, key: str) -> Path:
    return cache_dir / "tokenized" / f"moses-{lang}-{key[:40]}.json"


def _read_cache(path: Path, key: str, total: int) -> list[str] | None:
    """The cached lines (tokens joined by one space) for a prefix of the file, or ``None`` if unusable."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return None
    if not isinstance(obj, dict) or obj.get("key") != key or obj.get("n_lines") != total:
        return None
    lines = obj.get("lines")
    if not isinstance(lines, list) or len(lines) > total:
        return None
    if not all(isinstance(line, str) and line == line.strip() for line in lines):
        return None
    return lines


def tokenize_cached(
    lines: Sequence[str],
    lang: str,
    source_sha256: str,
    n: int | None = None,
    cache_dir: Path | None = None,
    lowercase: bool = False,
) -> list[list[str]]:
    """Moses tokens of ``lines[:n]`` (all when ``n`` is None), served from / added to the cache.

    The cache holds the cased tokens; ``lowercase`` lowercases them afterwards
    (as ``lowercase.perl`` after ``tokenizer.perl``).

    ``lines`` are all lines of one file and ``source_sha256`` is that file's
    digest (the cache key). With ``cache_dir=None`` nothing is cached.
    Tokens never contain whitespace (sacremoses returns ``str.split()`` of its
    output), so a tokenised line is stored as one space-joined string.
    A cache that cannot be written only costs the speed-up: a warning, no error.
    """
    total = len(lines)
    n = total if n is None else min(n, total)
    if cache_dir is None:
        toks = moses_tokenize(lines[:n], lang)
        return [[w.lower() for w in t] for t in toks] if lowercase else toks
    key = _cache_key(source_sha256, lang)
    path = _cache_path(cache_dir, lang, key)
    cached = _read_cache(path, key, total) or []
    if len(cached) < n:
        fresh = [" ".join(toks) for toks in moses_tokenize(lines[len(cached):n], lang)]
        cached = cached + fresh
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps({"key": key, "n_lines": total, "lines": cached}, ensure_ascii=False))
        except OSError as exc:
            warnings.warn(f"could not write the tokenisation cache {path}: {exc}", RuntimeWarning, stacklevel=2)
    if lowercase:  # lowercasing never creates or removes whitespace, so per line = per token
        return [line.lower().split() for line in cached[:n]]
    return [line.split() for line in cached[:n]]
