"""Word-level language-model corpora (Penn Treebank, WikiText-2) as token-id tensors.

Tokenisation follows awd-lstm-lm, pytorch/examples and the paper's
``language_modelling/data.py``: whitespace-split words, plus one ``<eos>`` at
the end of every line (a blank line gives just ``<eos>``). The vocabulary
comes from the training split only, in order of first appearance. The paper's
code builds it over all three splits. For these two corpora the result is
identical, because valid and test add no new word (both use ``<unk>``). Using
train alone means an unseen word in valid/test is reported as an error
instead of being given a silent new id.

Verification compares every split with the published token counts and
sha256 digests (see :mod:`.corpora`). Counts come first because they say
*how* a file is broken (truncated, extended). The digest catches an edit
that keeps the counts. Both checks together cost about one extra pass over
12 MB of text.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

import torch

from . import download as _download
from .corpora import SPLITS, LM_CORPORA, LMCorpusSpec, get_lm_spec
from .errors import DataError, one_line
from .paths import DATA_DIR_ENV, resolve_data_dir

__all__ = ["EOS", "Vocabulary", "LMCorpus", "load_lm_corpus", "tokenize_lm_text", "LM_CORPORA"]

#: End-of-line token appended to every line.
EOS = "<eos>"


class Vocabulary:
    """An immutable, bijective word <-> id mapping with ids ``0 .. len-1``.

    Build it with :meth:`from_tokens`, which keeps order of first appearance.
    The same training file then always gives the same ids, which makes
    checkpoints and embedding rows comparable across runs and machines.
    """

    __slots__ = ("_word2idx", "_idx2word")

    def __init__(self, words: Iterable[str]) -> None:
        idx2word = list(words)
        word2idx = {w: i for i, w in enumerate(idx2word)}
        if len(word2idx) != len(idx2word):
            raise ValueError("Vocabulary words must be unique")
        self._idx2word: tuple[str, ...] = tuple(idx2word)
        self._word2idx: dict[str, int] = word2idx

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> "Vocabulary":
        """Vocabulary of the distinct ``tokens``, ids in order of first appearance."""
        return cls(dict.fromkeys(tokens))

    @property
    def word2idx(self) -> Mapping[str, int]:
        """Read-only word -> id mapping."""
        return MappingProxyType(self._word2idx)

    @property
    def idx2word(self) -> tuple[str, ...]:
        """id -> word, as a tuple indexed by id."""
        return self._idx2word

    @property
    def eos_id(self) -> int:
        """Id of ``<eos>``. Raises ``KeyError`` if the vocabulary has none."""
        return self._word2idx[EOS]

    def __len__(self) -> int:
        return len(self._idx2word)

    def __contains__(self, word: object) -> bool:
        return word in self._word2idx

    def __iter__(self):
        return iter(self._idx2word)

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    def index(self, word: str) -> int:
        """Id of ``word``. Raises ``KeyError`` for an unknown word."""
        return self._word2idx[word]

    def word(self, idx: int) -> str:
        """Word for id ``idx``. Raises ``IndexError`` for an unknown id."""
        if idx < 0:
            raise IndexError(idx)
        return self._idx2word[idx]

    def encode(self, words: Sequence[str]) -> torch.Tensor:
        """1-D ``torch.long`` tensor of ids. Raises ``KeyError`` on the first unknown word."""
        ids = list(map(self._word2idx.__getitem__, words))
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """Words for ``ids`` (any iterable of ints or an integer tensor of any shape; flattened)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        return [self.word(int(i)) for i in ids]


@dataclass(frozen=True, eq=False)
class LMCorpus:
    """A loaded corpus: the training vocabulary and each split as a 1-D ``torch.long`` id tensor."""

    name: str
    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    def split(self, name: str) -> torch.Tensor:
        """The tensor for ``"train"``, ``"valid"`` or ``"test"``."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={getattr(self, s).numel():,}" for s in SPLITS)
        return f"LMCorpus(name={self.name!r}, vocab={len(self.vocab):,}, {sizes})"


def tokenize_lm_text(text: str) -> tuple[list[str], int]:
    """Split corpus text into tokens with ``<eos>`` closing every line. Returns ``(tokens, n_lines)``.

    This matches ``for line in open(f): line.split() + ['<eos>']``: universal
    newlines, and a final line without a trailing newline still counts. It
    works on the whole text at once, because a Python loop over two million
    words costs most of the load time.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    n_lines = text.count("\n")
    return text.replace("\n", f" {EOS} ").split(), n_lines


def load_lm_corpus(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    verify: bool = True,
) -> LMCorpus:
    """Load ``ptb`` or ``wikitext2`` from ``<data_dir>/ptb/`` or ``<data_dir>/wikitext-2/``.

    ``data_dir`` defaults to :func:`~revrnn_cli.data.paths.resolve_data_dir`.
    Missing files are fetched from the Hugging Face hub when ``download`` is
    true and the hub is reachable. Otherwise, or if the fetch fails for any
    reason, a :class:`DataError` names the directory and the files needed.
    With ``verify`` (the default), each split must match the published token
    count and sha256, and the vocabulary its published size. Every problem is
    raised as a one-line :class:`DataError`.
    """
    spec = get_lm_spec(name)
    corpus_dir = resolve_data_dir(data_dir) / spec.subdir
    paths = {split: corpus_dir / spec.files[split] for split in SPLITS}
    missing = [split for split in SPLITS if not paths[split].exists()]
    if missing:
        _obtain_missing(spec, corpus_dir, missing, download=download)

    train_tokens, train_sha = _read_split(spec, "train", paths["train"], verify=verify, download=download)
    vocab = Vocabulary.from_tokens(train_tokens)
    if verify:
        if len(vocab) != spec.vocab_size:
            raise DataError(
                f"{paths['train']}: corrupt {spec.title} training file: expected a vocabulary of "
                f"{spec.vocab_size:,} words (incl. {EOS}), found {len(vocab):,}{_repair_hint(download)}",
                path=paths["train"],
            )
        _check_digest(spec, "train", paths["train"], train_sha, download=download)
    tensors = {"train": vocab.encode(train_tokens)}
    del train_tokens
    for split in ("valid", "test"):
        tokens, digest = _read_split(spec, split, paths[split], verify=verify, download=download)
        if verify:
            _check_digest(spec, split, paths[split], digest, download=download)
        unknown = set(tokens).difference(vocab.word2idx)
        if unknown:
            examples = ", ".join(repr(w) for w in sorted(unknown)[:5])
            raise DataError(
                f"{paths[split]}: {len(unknown):,} word(s) do not occur in the training file "
                f"{paths['train'].name} (e.g. {examples}); the {spec.title} {split} file must only use "
                f"training words (rare words are <unk>)",
                path=paths[split],
            )
        tensors[split] = vocab.encode(tokens)
    return LMCorpus(name=spec.name, vocab=vocab, **tensors)


def _repair_hint(download: bool) -> str:
    if download:
        return "; replace it with the original file, or delete it to download it again"
    return "; replace it with the original file"


def _read_split(
    spec: LMCorpusSpec, split: str, path: Path, *, verify: bool, download: bool
) -> tuple[list[str], str | None]:
    """Read, decode and tokenize one split file. Returns ``(tokens, sha256 or None)``.

    With ``verify`` the token count is checked here. The digest is only
    computed and returned: the caller compares it after the vocabulary check,
    because a wrong vocabulary size says more about the damage than a
    mismatched hash.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read {spec.title} {split} file: {one_line(exc.strerror or exc)}", path=path
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: corrupt {spec.title} {split} file: not valid UTF-8 at byte {exc.start:,}"
            f"{_repair_hint(download)}",
            path=path,
        ) from None
    tokens, n_lines = tokenize_lm_text(text)
    if not verify:
        return tokens, None
    expected = spec.tokens[split]
    if len(tokens) != expected:
        kind = "truncated" if len(tokens) < expected else "corrupt"
        raise DataError(
            f"{path}: {kind} {spec.title} {split} file: expected {expected:,} tokens incl. {EOS} "
            f"({spec.lines[split]:,} lines), found {len(tokens):,} ({n_lines:,} lines)"
            f"{_repair_hint(download)}",
            path=path,
        )
    return tokens, hashlib.sha256(raw).hexdigest()


def _check_digest(spec: LMCorpusSpec, split: str, path: Path, digest: str | None, *, download: bool) -> None:
    if digest != spec.sha256[split]:
        raise DataError(
            f"{path}: {spec.title} {split} file differs from the published one although its token count "
            f"matches (sha256 {digest}, expected {spec.sha256[split]}){_repair_hint(download)}, "
            f"or set data.verify: false in the spec (--set data.verify=false) to use it as is",
            path=path,
        )


def _obtain_missing(spec: LMCorpusSpec, corpus_dir: Path, missing: list[str], *, download: bool) -> None:
    """Download the missing splits, or raise a :class:`DataError` that says how to provide them."""
    if download:
        try:
            _download.download_lm_corpus(spec, corpus_dir, missing)
        except _download.HubUnreachable as exc:
            reason = f"automatic download failed: {one_line(exc, 300)}"
        except Exception as exc:  # any other failure (HTTP, missing `datasets`, disk) -> one actionable message
            reason = f"automatic download from the Hugging Face hub failed: {type(exc).__name__}: {one_line(exc, 300)}"
        else:
            still = [s for s in missing if not (corpus_dir / spec.files[s]).exists()]
            if not still:
                return
            reason = "automatic download did not produce " + ", ".join(spec.files[s] for s in still)
    else:
        reason = "downloading is disabled"
    names = ", ".join(spec.files[s] for s in missing)
    raise DataError(
        f"{spec.title} not found: {corpus_dir} is missing {names} ({reason}). "
        f"Put {', '.join(spec.file_names())} into {corpus_dir}, or point --data-dir or "
        f"{DATA_DIR_ENV} at a directory that contains {spec.subdir}/",
        path=corpus_dir,
    )
