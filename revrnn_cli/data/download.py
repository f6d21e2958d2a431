"""Fetch a missing language-model corpus from the Hugging Face hub and write it in the standard layout.

The work is split into three parts so that each can be tested offline:

* :func:`fetch_lm_rows` is the only function that touches the network. It
  imports ``datasets`` lazily, because that import is slow and most runs never
  need it. Tests replace it with a fake.
* :func:`lm_rows_to_text` is a pure function that turns hub rows (one per
  line) into the exact bytes of the classic files: ``" " + tokens + " \\n"``,
  and ``" \\n"`` for a blank line. Applied to the rows of the local files it
  reproduces them byte for byte, so a downloaded corpus passes the same
  sha256 verification as a hand-copied one.
* :func:`write_text_atomic` writes through a temporary file in the target
  directory and then calls ``os.replace``. An interrupted download therefore
  leaves either no file or a complete one, never a truncated corpus that a
  later run would trust.

The ``datasets`` cache (the downloaded parquet and arrow files) goes into a
temporary directory that is deleted afterwards. So the corpus files are the
only data kept on disk. ``huggingface_hub`` may still cache the repository's
few-kilobyte dataset card in its own cache, which ``datasets`` does not let
us redirect.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from .corpora import SPLITS, LMCorpusSpec

__all__ = [
    "HubUnreachable",
    "hub_unreachable_reason",
    "fetch_lm_rows",
    "lm_rows_to_text",
    "write_text_atomic",
    "download_lm_corpus",
]

_OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_PROXY_ENV_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_TRUE = {"1", "true", "yes", "on"}


class HubUnreachable(ConnectionError):
    """The hub cannot be reached (offline mode, no route, DNS failure)."""


def hub_unreachable_reason(timeout: float = 3.0) -> str | None:
    """Return why the hub is unreachable, or ``None`` if it looks reachable.

    Why probe at all: with no network, ``datasets`` retries for about 25
    seconds before it gives up. Asking for a file should fail fast with a
    clear message instead. The probe respects the hub's own offline switches.
    It is skipped (returns ``None``) when an HTTPS proxy is configured,
    because a direct TCP connection says nothing about reachability through
    the proxy.
    """
    for var in _OFFLINE_ENV_VARS:
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var} is set"
    if any(os.environ.get(v) for v in _PROXY_ENV_VARS):
        return None
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc})"
    return None


def fetch_lm_rows(spec: LMCorpusSpec) -> dict[str, list[str]]:
    """Download the corpus' three splits from the hub. Returns ``split -> rows`` (one row per line).

    Raises :class:`HubUnreachable` when offline and ``ImportError`` when
    ``datasets`` is missing. Any other error from ``datasets`` passes through
    unchanged. The caller turns all of them into one user-facing message.
    """
    reason = hub_unreachable_reason()
    if reason is not None:
        raise HubUnreachable(f"Hugging Face hub unreachable: {reason}")
    import datasets  # lazy: heavy import, only needed on first use

    with tempfile.TemporaryDirectory(prefix="revrnn-hf-cache-", ignore_cleanup_errors=True) as cache:
        kwargs = {"cache_dir": cache}
        if spec.hf_data_dir is not None:
            kwargs["data_dir"] = spec.hf_data_dir
        if spec.hf_revision is not None:
            kwargs["revision"] = spec.hf_revision
        dsd = datasets.load_dataset(spec.hf_repo, spec.hf_config, **kwargs)
        rows = {split: list(dsd[spec.hf_splits[split]][spec.hf_column]) for split in SPLITS}
        del dsd  # release memory-mapped arrow files before the cache dir is removed
    return rows


def lm_rows_to_text(rows: Iterable[str | None]) -> str:
    """Render hub rows as the classic corpus file text: one line per row.

    A row with tokens becomes ``" " + " ".join(tokens) + " \\n"``. An empty or
    whitespace-only row (or ``None``) becomes ``" \\n"``. The tokens come from
    ``str.split()``, so the result does not depend on whether the hub stores
    a row stripped (PTB's ``sentence``) or with its original padding and
    newline (WikiText's ``text``). Both classic formats are exactly this
    canonical form.
    """
    out: list[str] = []
    for row in rows:
        tokens = row.split() if row else []
        out.append(" " + " ".join(tokens) + " \n" if tokens else " \n")
    return "".join(out)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` as UTF-8 with LF line endings to ``path``, atomically.

    The temporary file is created next to ``path`` (same filesystem), so
    ``os.replace`` is atomic. On any failure the temporary file is removed
    and the error propagates.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def download_lm_corpus(spec: LMCorpusSpec, corpus_dir: Path, splits: Sequence[str] = SPLITS) -> list[Path]:
    """Fetch ``spec`` from the hub and write the requested ``splits`` into ``corpus_dir``.

    Only the requested splits are written, so files that the user supplied
    are never overwritten. Returns the written paths. Errors are not wrapped
    here: the loader knows which files were needed and writes the message.
    """
    rows = fetch_lm_rows(spec)
    corpus_dir = Path(corpus_dir)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in splits:
        target = corpus_dir / spec.files[split]
        write_text_atomic(target, lm_rows_to_text(rows[split]))
        written.append(target)
    return written
