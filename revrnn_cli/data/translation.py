"""Parallel corpora for translation (Multi30k en↔de): tokenisation, vocabularies, length buckets, batches.

Preprocessing follows the paper's ``nmt/download_multi30k.sh`` + OpenNMT
``preprocess.py`` (reference `nmt/train_scripts/*.sh`, `nmt/opts.py`):

* Moses tokenisation with aggressive hyphen splitting and no escaping
  (``tokenizer.perl -a -no-escape -l <lang>``), here
  ``sacremoses.MosesTokenizer(lang).tokenize(line, aggressive_dash_splits=True, escape=False)``,
  *then* lowercasing (``lowercase.perl``). Tokenising before lowercasing
  matters: Moses' non-breaking prefixes are case-sensitive.
* Training pairs with more than ``max_len`` tokens (or none) on either side
  are dropped (``-src_seq_length/-tgt_seq_length 50``). Validation and test pairs are all
  kept: the test set is translated from raw text, and BLEU must cover all of it.
* One vocabulary per side, built from the (filtered) training split only, in
  torchtext order (frequency descending, ties alphabetical), words with
  ``count >= min_freq``, at most ``max_vocab`` words plus the four specials
  ``<blank>`` = 0 (pad), ``<unk>`` = 1, ``<s>`` = 2, ``</s>`` = 3. The ids of
  the specials are fixed here (OpenNMT puts ``<unk>`` first); only the
  numbering differs.

Tokenising and its cache live in :mod:`.tokenize`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import multi30k as _m30k
from .corpora import SPLITS
from .errors import DataError
from .tokenize import CACHE_DIR_ENV, moses_tokenize, resolve_cache_dir, tokenize_cached
from .synthetic import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    from .config import TranslationDataConfig

__all__ = [
    "BOS",
    "BOS_WORD",
    "CACHE_DIR_ENV",
    "EOS",
    "EOS_WORD",
    "PAD",
    "PAD_WORD",
    "UNK",
    "UNK_WORD",
    "ParallelCorpus",
    "ParallelSplit",
    "TranslationBatch",
    "TranslationVocab",
    "batch_indices",
    "collate",
    "load_parallel_corpus",
    "moses_tokenize",
    "resolve_cache_dir",
    "tokenize_cached",
]

PAD, UNK, BOS, EOS = 0, 1, 2, 3
PAD_WORD, UNK_WORD, BOS_WORD, EOS_WORD = "<blank>", "<unk>", "<s>", "</s>"
_SPECIALS = (PAD_WORD, UNK_WORD, BOS_WORD, EOS_WORD)

# --------------------------------------------------------------------------- vocabulary


class TranslationVocab:
    """Word <-> id mapping of one side: the four specials (ids 0–3) then words.

    ``itos[i]`` is the word of id ``i``; ``stoi`` maps words to ids.
    Unknown words encode to ``UNK``. Rebuild a saved vocabulary with
    ``TranslationVocab(itos)``.
    """

    PAD, UNK, BOS, EOS = PAD, UNK, BOS, EOS
    SPECIALS = _SPECIALS

    __slots__ = ("itos", "stoi")

    def __init__(self, itos: Iterable[str]) -> None:
        itos = list(itos)
        if tuple(itos[: len(_SPECIALS)]) != _SPECIALS:
            raise ValueError(f"a translation vocabulary must start with the specials {_SPECIALS}")
        stoi = {w: i for i, w in enumerate(itos)}
        if len(stoi) != len(itos):
            raise ValueError("vocabulary words must be unique")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = stoi

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_vocab: int | None = None) -> TranslationVocab:
        """Vocabulary of ``sentences`` as torchtext 0.2 / OpenNMT builds it.

        Words sorted by frequency (descending), ties alphabetically; words seen
        fewer than ``min_freq`` times are dropped; at most ``max_vocab`` words
        (the specials are not counted). Special strings occurring in the text
        are not added twice.
        """
        counts = Counter(w for sent in sentences for w in sent)
        for s in _SPECIALS:
            counts.pop(s, None)
        words = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        words = [w for w, c in words if c >= min_freq]
        if max_vocab is not None:
            words = words[:max_vocab]
        return cls([*_SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __repr__(self) -> str:
        return f"TranslationVocab(size={len(self)})"

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens``; unknown words become ``UNK``. No BOS/EOS is added."""
        get = self.stoi.get
        return [get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int] | torch.Tensor, strip_specials: bool = True) -> list[str]:
        """Words of ``ids``. With ``strip_specials``: stop at the first ``</s>`` and drop ``<blank>``/``<s>``.

        ``<unk>`` is kept (``replace_unk`` needs it).
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        out = []
        for i in ids:
            i = int(i)
            if strip_specials:
                if i == EOS:
                    break
                if i in (PAD, BOS):
                    continue
            out.append(self.itos[i])
        return out


# --------------------------------------------------------------------------- corpus


@dataclass(eq=False)
class ParallelSplit:
    """One split. Ids carry no BOS/EOS; tokens are Moses-tokenised (and lowercased if configured).

    ``line[i]`` is the 0-based line number of pair ``i`` in the raw files (the
    training split skips filtered pairs); ``src_raw``/``tgt_raw`` are the raw
    lines (``tgt_raw`` are the references for detokenised sacreBLEU).
    """

    src: list[list[int]]
    tgt: list[list[int]]
    src_tok: list[list[str]]
    tgt_tok: list[list[str]]
    tgt_raw: list[str]
    src_raw: list[str] = field(default_factory=list)
    line: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.src)

    def __repr__(self) -> str:
        return f"ParallelSplit(pairs={len(self):,})"


@dataclass(eq=False)
class ParallelCorpus:
    """Vocabularies and the ``train`` / ``valid`` / ``test`` splits of a parallel corpus."""

    src_vocab: TranslationVocab
    tgt_vocab: TranslationVocab
    splits: dict[str, ParallelSplit]
    src_lang: str = "en"
    tgt_lang: str = "de"
    n_filtered: int = 0  # training pairs dropped by the max_len filter
    paper_bytes: bool = False  # every raw file read is byte-identical to the paper's copy
    corpus_dir: Path | None = None

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v):,}" for k, v in self.splits.items())
        return (f"ParallelCorpus({self.src_lang}->{self.tgt_lang}, src_vocab={len(self.src_vocab):,}, "
                f"tgt_vocab={len(self.tgt_vocab):,}, {sizes})")


def load_parallel_corpus(cfg: TranslationDataConfig, *, cache_dir: str | os.PathLike[str] | None | bool = None) -> ParallelCorpus:
    """Load, tokenise, filter and index the corpus described by ``cfg``.

    ``cache_dir``: where tokenised files are cached (default
    :func:`resolve_cache_dir`); ``False`` disables the cache. Every data
    problem is a one-line :class:`DataError`.
    """
    if cfg.dataset != "multi30k":  # pragma: no cover - the config's Literal already forbids it
        raise DataError(f"unknown translation corpus {cfg.dataset!r}: choose multi30k")
    cache_root = None if cache_dir is False else resolve_cache_dir(None if cache_dir is True else cache_dir)
    src_lang, tgt_lang = cfg.src_lang, cfg.tgt_lang
    raw = _m30k.read_multi30k(cfg.data_dir, download=cfg.download, langs=(src_lang, tgt_lang), verify=cfg.verify)
    limits = {"train": cfg.n_train, "valid": cfg.n_valid, "test": cfg.n_test}

    toks: dict[str, dict[str, list[list[str]]]] = {}
    for split in SPLITS:
        rs = raw.splits[split]
        toks[split] = {}
        for lang in (src_lang, tgt_lang):
            toks[split][lang] = tokenize_cached(
                rs.lines[lang], lang, rs.sha256[lang], limits[split], cache_root, lowercase=cfg.lowercase
            )

    keep: dict[str, list[int]] = {}
    for split in SPLITS:
        s, t = toks[split][src_lang], toks[split][tgt_lang]
        if split == "train":
            # OpenNMT's filter_pred: 0 < len <= max_len on both sides.
            keep[split] = [i for i in range(len(s)) if 0 < len(s[i]) <= cfg.max_len and 0 < len(t[i]) <= cfg.max_len]
        else:
            keep[split] = list(range(len(s)))
    n_filtered = len(toks["train"][src_lang]) - len(keep["train"])
    if not keep["train"]:
        raise DataError(f"no Multi30k training pair has at most max_len={cfg.max_len} tokens on both sides")

    train_src = [toks["train"][src_lang][i] for i in keep["train"]]
    train_tgt = [toks["train"][tgt_lang][i] for i in keep["train"]]
    src_vocab = TranslationVocab.build(train_src, cfg.min_freq, cfg.max_vocab)
    tgt_vocab = TranslationVocab.build(train_tgt, cfg.min_freq, cfg.max_vocab)

    splits = {}
    for split in SPLITS:
        idx = keep[split]
        src_tok = [toks[split][src_lang][i] for i in idx]
        tgt_tok = [toks[split][tgt_lang][i] for i in idx]
        lines = raw.splits[split].lines
        splits[split] = ParallelSplit(
            src=[src_vocab.encode(s) for s in src_tok],
            tgt=[tgt_vocab.encode(t) for t in tgt_tok],
            src_tok=src_tok,
            tgt_tok=tgt_tok,
            tgt_raw=[lines[tgt_lang][i] for i in idx],
            src_raw=[lines[src_lang][i] for i in idx],
            line=list(idx),
        )
    return ParallelCorpus(
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        splits=splits,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        n_filtered=n_filtered,
        paper_bytes=raw.all_paper_bytes,
        corpus_dir=raw.corpus_dir,
    )


# --------------------------------------------------------------------------- batching


@dataclass
class TranslationBatch:
    """A padded batch, time-major.

    ``src`` [S, B] (``PAD``-padded), ``src_len`` [B]; ``tgt_in`` [T, B] =
    ``BOS y`` (``PAD``-padded); ``tgt_out`` [T, B] = ``y EOS`` padded with
    ``IGNORE_INDEX`` (-100); ``T = max len(y) + 1``. ``index`` [B] holds the
    positions in the split; ``tokens`` the number of non-ignored targets.
    """

    src: torch.Tensor
    src_len: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    index: torch.Tensor
    tokens: int

    @property
    def size(self) -> int:
        """Number of sentences B."""
        return int(self.src.size(1))

    def to(self, device: torch.device | str) -> TranslationBatch:
        """A copy on ``device`` (``index`` and ``src_len`` included)."""
        return TranslationBatch(
            src=self.src.to(device),
            src_len=self.src_len.to(device),
            tgt_in=self.tgt_in.to(device),
            tgt_out=self.tgt_out.to(device),
            index=self.index.to(device),
            tokens=self.tokens,
        )


def batch_indices(
    split: ParallelSplit,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    pool_factor: int = 100,
) -> list[list[int]]:
    """Length-bucketed batches of split positions; every position exactly once.

    With ``shuffle`` (training, as torchtext's ``pool``): positions are
    permuted, cut into pools of ``pool_factor * batch_size``, each pool is
    sorted by ``(src len, tgt len)`` and cut into batches, and the order of all
    batches is permuted. Everything random comes from ``generator`` (the global
    RNG if ``None``), so equal generator states give equal batches. Without
    ``shuffle`` (evaluation): the whole split is sorted by length, batches in
    that order (least padding). Within a batch, positions are ordered by
    decreasing source length (ready for ``pack_padded_sequence``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(split)
    src, tgt = split.src, split.tgt

    def key(i: int) -> tuple[int, int]:
        return len(src[i]), len(tgt[i])

    if shuffle:
        order = torch.randperm(n, generator=generator).tolist()
        pool = max(1, pool_factor) * batch_size
    else:
        order = list(range(n))
        pool = max(n, 1)
    batches: list[list[int]] = []
    for p in range(0, n, pool):
        chunk = sorted(order[p:p + pool], key=key)
        batches.extend(chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size))
    if shuffle:
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[k] for k in perm]
    return [sorted(b, key=lambda i: -len(src[i])) for b in batches]


def collate(split: ParallelSplit, idx: Sequence[int]) -> TranslationBatch:
    """Pad the pairs at positions ``idx`` (in that order) into a :class:`TranslationBatch`."""
    idx = [int(i) for i in idx]
    if not idx:
        raise ValueError("cannot collate an empty batch")
    srcs = [split.src[i] for i in idx]
    tgts = [split.tgt[i] for i in idx]
    S = max(len(s) for s in srcs)
    T = max(len(t) for t in tgts) + 1
    src = torch.tensor([s + [PAD] * (S - len(s)) for s in srcs], dtype=torch.long).t().contiguous()
    tgt_in = torch.tensor([[BOS] + t + [PAD] * (T - 1 - len(t)) for t in tgts], dtype=torch.long).t().contiguous()
    tgt_out = torch.tensor(
        [t + [EOS] + [IGNORE_INDEX] * (T - 1 - len(t)) for t in tgts], dtype=torch.long
    ).t().contiguous()
    return TranslationBatch(
        src=src,
        src_len=torch.tensor([len(s) for s in srcs], dtype=torch.long),
        tgt_in=tgt_in,
        tgt_out=tgt_out,
        index=torch.tensor(idx, dtype=torch.long),
        tokens=sum(len(t) + 1 for t in tgts),
    )
