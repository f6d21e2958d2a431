"""The ``data:`` section of an experiment spec (:class:`DataConfig`; :class:`TranslationDataConfig` for NMT)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .corpora import LM_CORPORA
from .synthetic import SYNTHETIC_TASKS

_SYNTHETIC_ONLY = ("vocab_size", "seq_len", "n_train", "n_valid", "n_test")


class DataConfig(BaseModel):
    """Which data set, where it lives, and (for the synthetic tasks) how to generate it.

    ``dataset``: ``ptb`` / ``wikitext2`` (word-level corpora, read from ``data_dir``, else
    ``REVRNN_DATA_DIR``, else ``./data``; fetched with ``datasets`` when absent and online) or
    ``repeat`` / ``remember`` (the paper's toy tasks, generated from the seed; no files).
    ``verify: false`` reads a corpus whose token counts or sha256 differ from the published ones
    (an edited or home-made copy) instead of refusing it.
    """

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["ptb", "wikitext2", "repeat", "remember"] = "ptb"
    data_dir: str | None = None
    download: bool = True
    verify: bool = True
    vocab_size: int = Field(10, ge=2)
    seq_len: int = Field(20, ge=2)
    n_train: int = Field(2000, ge=1)
    n_valid: int = Field(200, ge=1)
    n_test: int = Field(200, ge=1)

    @property
    def synthetic(self) -> bool:
        return self.dataset in SYNTHETIC_TASKS

    @model_validator(mode="after")
    def _synthetic_fields(self):
        if not self.synthetic:
            defaults = {k: DataConfig.model_fields[k].default for k in _SYNTHETIC_ONLY}
            stray = sorted(k for k in _SYNTHETIC_ONLY if getattr(self, k) != defaults[k])
            if stray:
                raise ValueError(f"{stray[0]} only applies to the synthetic data sets {SYNTHETIC_TASKS}, "
                                 f"not to {self.dataset}")
        return self


class TranslationDataConfig(BaseModel):
    """A parallel corpus for translation and how to preprocess it (reference `nmt/train_scripts/*.sh`,
    `nmt/opts.py`; loader: :mod:`.translation`).

    ``dataset``: ``multi30k`` (task 1, en–de; raw files read from ``<data_dir>/multi30k/``, ``data_dir``
    else ``REVRNN_DATA_DIR`` else ``./data``; fetched from the hub dataset ``bentrevett/multi30k`` when
    absent, online and ``download``). The defaults are the paper's preprocessing.
    ``n_train`` / ``n_valid`` / ``n_test`` keep the first N sentence pairs of a split (train: before
    the length filter), for small CPU runs and tests; ``None`` keeps all. ``verify: false`` accepts
    files whose line counts differ from the published ones (both sides must still be parallel).
    """

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["multi30k"] = "multi30k"
    data_dir: str | None = None
    download: bool = True
    verify: bool = True
    # Translation direction; the paper's Multi30K experiments are en→de (reference `nmt/train_scripts/*.sh`,
    # `nmt/opts.py`).
    src_lang: Literal["en", "de"] = "en"
    tgt_lang: Literal["en", "de"] = "de"
    # preprocess.py -src_seq_length/-tgt_seq_length 50: longer training pairs are dropped (reference
    # `nmt/train_scripts/*.sh`, `nmt/opts.py`).
    max_len: int = Field(50, ge=1)
    # download_multi30k.sh lowercases (lowercase.perl, preprocess.py -lower) after Moses tokenisation (reference
    # nmt scripts).
    lowercase: bool = True
    # preprocess.py defaults: no minimum frequency, at most 50,000 words per side, specials not counted (reference
    # nmt/opts.py).
    min_freq: int = Field(1, ge=1)
    max_vocab: int = Field(50_000, ge=1)
    n_train: int | None = Field(None, ge=1)
    n_valid: int | None = Field(None, ge=1)
    n_test: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _distinct_langs(self):
        if self.src_lang == self.tgt_lang:
            raise ValueError(f"src_lang and tgt_lang must differ (both are {self.tgt_lang!r})")
        return self


assert set(LM_CORPORA) == {"ptb", "wikitext2"}
