"""Multi30k task 1 (English–German) raw files: layout, published counts, hub download, verified reading.

The corpus lives in ``<data_dir>/multi30k/{train,val,test2016}.{en,de}``: one
raw, untokenised sentence per line, the files of a split parallel line by line
(see ``shared/data/README.md`` §3). These are the files the paper's
``nmt/download_multi30k.sh`` produces before tokenisation (WMT16 train/val with
the empty last line removed, and the WMT17 ``mmt_task1_test2016`` test set).

When files are missing and downloading is allowed, they are fetched from the
Hugging Face hub dataset ``bentrevett/multi30k`` (jsonl; splits ``train`` /
``validation`` / ``test`` with fields ``en`` / ``de``) and written in that
layout. As in :mod:`.download`, the work is split so that it can be tested
offline:

* :func:`fetch_multi30k_rows` is the only function that touches the network.
  Tests replace it with a fake.
* :func:`rows_to_lines` is pure: one hub row per output line, with any line
  break inside a row folded to a space (so the files stay parallel).
* files are written with :func:`.download.write_text_atomic`.

The hub copy is not guaranteed to be byte-identical to the paper's files (its
history has a "fix empty examples" commit, and its ``val.de`` / ``test.de`` may
be a different revision; the README lists two known ``val.de`` and ``test.de``
variants). So reading checks what must hold for *any* usable copy -- line
counts 29,000 / 1,014 / 1,000, no empty line, valid UTF-8 -- and reports
separately (:attr:`RawMulti30k.paper_bytes`) whether every file has the sha256
of the paper's copy, rather than rejecting a different copy.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from . import download as _download
from .corpora import SPLITS
from .errors import DataError, one_line
from .paths import DATA_DIR_ENV, resolve_data_dir

__all__ = [
    "MULTI30K_FILES",
    "MULTI30K_HF_REPO",
    "MULTI30K_HF_SPLITS",
    "MULTI30K_LANGS",
    "MULTI30K_LINES",
    "MULTI30K_SHA256",
    "MULTI30K_SUBDIR",
    "RawMulti30k",
    "RawSplit",
    "download_multi30k",
    "fetch_multi30k_rows",
    "multi30k_file",
    "read_multi30k",
    "rows_to_lines",
]

#: Languages of the corpus (either may be the source).
MULTI30K_LANGS: tuple[str, str] = ("en", "de")

#: Directory under the data dir.
MULTI30K_SUBDIR = "multi30k"

#: Our split name -> file stem (``<stem>.<lang>``).
MULTI30K_FILES: Mapping[str, str] = MappingProxyType({"train": "train", "valid": "val", "test": "test2016"})

#: Lines per file (= sentence pairs per split), shared/data/README.md §3.
MULTI30K_LINES: Mapping[str, int] = MappingProxyType({"train": 29_000, "valid": 1_014, "test": 1_000})

#: sha256 of the paper's files (shared/data/README.md §3), keyed by file name.
MULTI30K_SHA256: Mapping[str, str] = MappingProxyType(
    {
        "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
        "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
        "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
        "val.de": "366863c09b91e91c100bc87501a85fe1ce49270c2301de46d39075aee5ce8021",
        "test2016.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
        "test2016.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    }
)

MULTI30K_HF_REPO = "bentrevett/multi30k"

#: Our split name -> hub split name.
MULTI30K_HF_SPLITS: Mapping[str, str] = MappingProxyType({"train": "train", "valid": "validation", "test": "test"})

_TITLE = "Multi30k"
_LINE_BREAKS = re.compile(r"[\r\n]+")


def multi30k_file(split: str, lang: str) -> str:
    """File name of one side of a split, e.g. ``multi30k_file("valid", "de") == "val.de"``."""
    return f"{MULTI30K_FILES[split]}.{lang}"


def _all_files() -> list[str]:
    return [multi30k_file(s, lang) for s in SPLITS for lang in MULTI30K_LANGS]


# --------------------------------------------------------------------------- download


def fetch_multi30k_rows() -> dict[str, dict[str, list[str]]]:
    """Download the three splits from the hub. Returns ``split -> lang -> rows`` (our split names).

    Raises :class:`~.download.HubUnreachable` when offline and ``ImportError``
    when ``datasets`` is missing; anything else from ``datasets`` passes
    through. The ``datasets`` cache goes to a temporary directory that is
    deleted afterwards.
    """
    reason = _download.hub_unreachable_reason()
    if reason is not None:
        raise _download.HubUnreachable(f"Hugging Face hub unreachable: {reason}")
    import datasets  # lazy: heavy import, only needed on first use

    with tempfile.TemporaryDirectory(prefix="revrnn-hf-cache-", ignore_cleanup_errors=True) as cache:
        dsd = datasets.load_dataset(MULTI30K_HF_REPO, cache_dir=cache)
        rows = {
            split: {lang: list(dsd[MULTI30K_HF_SPLITS[split]][lang]) for lang in MULTI30K_LANGS}
            for split in SPLITS
        }
        del dsd  # release memory-mapped arrow files before the cache dir is removed
    return rows


def rows_to_lines(rows: Sequence[str | None]) -> str:
    """Render hub rows as file text: one row per line, LF-terminated.

    Line breaks inside a row become one space and trailing ``\\r``/``\\n`` are
    dropped, so row ``i`` is always line ``i``; other whitespace is kept as is.
    ``None`` becomes an empty line, which reading then rejects.
    """
    return "".join(_LINE_BREAKS.sub(" ", (row or "").rstrip("\r\n")) + "\n" for row in rows)


def _check_rows(rows: Mapping[str, Mapping[str, Sequence[str | None]]], splits: Sequence[str]) -> None:
    """Reject fetched rows that could not give a usable corpus, before anything is written."""
    for split in splits:
        for lang in MULTI30K_LANGS:
            got = rows[split][lang]
            if len(got) != MULTI30K_LINES[split]:
                raise ValueError(f"hub split {MULTI30K_HF_SPLITS[split]!r} has {len(got):,} {lang} rows, "
                                 f"expected {MULTI30K_LINES[split]:,}")
            empty = next((i for i, r in enumerate(got) if not (r or "").strip()), None)
            if empty is not None:
                raise ValueError(f"hub split {MULTI30K_HF_SPLITS[split]!r} has an empty {lang} row at index {empty}")


def download_multi30k(corpus_dir: Path, files: Sequence[str]) -> list[Path]:
    """Fetch the corpus and write the requested ``files`` (e.g. ``["val.de"]``) into ``corpus_dir``.

    Only the requested files are written, so files the user supplied are
    never overwritten. Returns the written paths. Errors are not wrapped here.
    """
    rows = fetch_multi30k_rows()
    wanted = {(s, lang) for s in SPLITS for lang in MULTI30K_LANGS if multi30k_file(s, lang) in files}
    _check_rows(rows, sorted({s for s, _ in wanted}))
    corpus_dir = Path(corpus_dir)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in SPLITS:
        for lang in MULTI30K_LANGS:
            if (split, lang) in wanted:
                target = corpus_dir / multi30k_file(split, lang)
                _download.write_text_atomic(target, rows_to_lines(rows[split][lang]))
                written.append(target)
    return written


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True, eq=False)
class RawSplit:
    """One split as raw text: ``lines[lang][i]`` is sentence ``i`` (stripped, never empty)."""

    lines: Mapping[str, list[str]]
    sha256: Mapping[str, str]  # lang -> sha256 of the whole file

    def __len__(self) -> int:
        return len(next(iter(self.lines.values())))


@dataclass(frozen=True, eq=False)
class RawMulti30k:
    """The verified raw corpus: ``splits[split]`` for ``train`` / ``valid`` / ``test``."""

    corpus_dir: Path
    splits: Mapping[str, RawSplit]
    paper_bytes: Mapping[str, bool] = field(default_factory=dict)  # file name -> equals the paper's copy

    @property
    def all_paper_bytes(self) -> bool:
        """Whether every file read is byte-identical to the paper's copy (README §3)."""
        return bool(self.paper_bytes) and all(self.paper_bytes.values())


def _repair_hint(download: bool) -> str:
    if download:
        return "; replace it with the original file, or delete it to download it again"
    return "; replace it with the original file"


def _read_file(path: Path, split: str, *, download: bool, verify: bool = True) -> tuple[list[str], str]:
    """Read one file; check UTF-8, no empty line and (``verify``) the published line count.

    Returns ``(lines, sha256)``.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {_TITLE} file: {one_line(exc.strerror or exc)}", path=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: corrupt {_TITLE} file: not valid UTF-8 at byte {exc.start:,}{_repair_hint(download)}", path=path
        ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    # split("\n"), not splitlines(): the latter also breaks at U+2028, \x1c... and would desynchronise the sides.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    expected = MULTI30K_LINES[split]
    if verify and len(lines) != expected:
        kind = "truncated" if len(lines) < expected else "corrupt"
        raise DataError(
            f"{path}: {kind} {_TITLE} {split} file: expected {expected:,} lines (one sentence each), "
            f"found {len(lines):,}{_repair_hint(download)}",
            path=path,
        )
    lines = [line.strip() for line in lines]
    empty = next((i for i, line in enumerate(lines) if not line), None)
    if empty is not None:
        raise DataError(
            f"{path}: corrupt {_TITLE} {split} file: line {empty + 1:,} is empty, so the sides are not "
            f"parallel sentence pairs{_repair_hint(download)}",
            path=path,
        )
    return lines, hashlib.sha256(raw).hexdigest()


def _obtain_missing(corpus_dir: Path, missing: list[str], *, download: bool) -> None:
    if download:
        try:
            download_multi30k(corpus_dir, missing)
        except _download.HubUnreachable as exc:
            reason = f"automatic download failed: {one_line(exc, 300)}"
        except Exception as exc:  # noqa: BLE001 -- HTTP, missing `datasets`, unexpected hub rows, disk -> one actionable message
            reason = (f"automatic download of {MULTI30K_HF_REPO} from the Hugging Face hub failed: "
                      f"{type(exc).__name__}: {one_line(exc, 300)}")
        else:
            still = [name for name in missing if not (corpus_dir / name).exists()]
            if not still:
                return
            reason = "automatic download did not produce " + ", ".join(still)
    else:
        reason = "downloading is disabled"
    raise DataError(
        f"{_TITLE} not found: {corpus_dir} is missing {', '.join(missing)} ({reason}). "
        f"Put {', '.join(_all_files())} (raw text, one sentence per line) into {corpus_dir}, or point "
        f"--data-dir or {DATA_DIR_ENV} at a directory that contains {MULTI30K_SUBDIR}/",
        path=corpus_dir,
    )


def read_multi30k(
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    langs: Sequence[str] = MULTI30K_LANGS,
    splits: Sequence[str] = SPLITS,
    verify: bool = True,
) -> RawMulti30k:
    """Read (fetching first if missing and allowed) and verify the raw Multi30k files.

    Every requested file must have no empty line and, with ``verify``, the
    published line count; the two sides of a split must have as many lines
    as each other. A problem is a one-line :class:`DataError`. Whether the
    bytes equal the paper's copy is reported in :attr:`RawMulti30k.paper_bytes`,
    not enforced (a hub copy may differ in bytes).
    """
    for lang in langs:
        if lang not in MULTI30K_LANGS:
            raise DataError(f"{_TITLE} has no language {lang!r}: choose from {', '.join(MULTI30K_LANGS)}")
    corpus_dir = resolve_data_dir(data_dir) / MULTI30K_SUBDIR
    needed = [multi30k_file(s, lang) for s in splits for lang in langs]
    missing = [name for name in needed if not (corpus_dir / name).exists()]
    if missing:
        _obtain_missing(corpus_dir, missing, download=download)
    out: dict[str, RawSplit] = {}
    paper: dict[str, bool] = {}
    for split in splits:
        lines, digests = {}, {}
        for lang in langs:
            name = multi30k_file(split, lang)
            lines[lang], digests[lang] = _read_file(corpus_dir / name, split, download=download, verify=verify)
            paper[name] = digests[lang] == MULTI30K_SHA256[name]
        counts = {lang: len(lines[lang]) for lang in langs}
        if len(set(counts.values())) > 1:
            names = " and ".join(f"{multi30k_file(split, lang)} ({n:,} lines)" for lang, n in counts.items())
            raise DataError(f"{corpus_dir}: {names} are not parallel: a {split} file must have one line per "
                            f"sentence pair on each side", path=corpus_dir)
        out[split] = RawSplit(lines=MappingProxyType(lines), sha256=MappingProxyType(digests))
    return RawMulti30k(corpus_dir=corpus_dir, splits=MappingProxyType(out), paper_bytes=MappingProxyType(paper))
