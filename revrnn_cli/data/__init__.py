"""Data for the reversible-RNN experiments: LM corpora, BPTT batching, toy tasks, parallel corpora (NMT).

Everything the CLI and the training engine need is re-exported here, so they
can import from ``revrnn_cli.data``. User-facing problems (missing or corrupt
files, unknown names) are raised as :class:`DataError`, whose message is a
single printable line.

The translation ids (``PAD`` = 0, ``UNK`` = 1, ``BOS`` = 2, ``EOS`` = 3) are
attributes of :class:`TranslationVocab` (and constants of
:mod:`.translation`); ``EOS`` here is the language models' ``"<eos>"`` word.
"""

from .batching import batchify, get_batch, sample_bptt_length
from .config import TranslationDataConfig
from .corpora import LM_CORPORA, LM_CORPUS_SPECS, LMCorpusSpec
from .errors import DataError
from .lm import EOS, LMCorpus, Vocabulary, load_lm_corpus
from .paths import DATA_DIR_ENV, resolve_data_dir
from .synthetic import (
    IGNORE_INDEX,
    SYNTHETIC_TASKS,
    SyntheticSplits,
    blank_id,
    make_synthetic,
    make_synthetic_splits,
    num_input_tokens,
    sequence_length,
)
from .translation import (
    CACHE_DIR_ENV,
    ParallelCorpus,
    ParallelSplit,
    TranslationBatch,
    TranslationVocab,
    batch_indices,
    collate,
    load_parallel_corpus,
    resolve_cache_dir,
)

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "EOS",
    "IGNORE_INDEX",
    "LM_CORPORA",
    "LM_CORPUS_SPECS",
    "SYNTHETIC_TASKS",
    "DataError",
    "LMCorpus",
    "LMCorpusSpec",
    "ParallelCorpus",
    "ParallelSplit",
    "SyntheticSplits",
    "TranslationBatch",
    "TranslationDataConfig",
    "TranslationVocab",
    "Vocabulary",
    "batch_indices",
    "batchify",
    "blank_id",
    "collate",
    "get_batch",
    "load_lm_corpus",
    "load_parallel_corpus",
    "make_synthetic",
    "make_synthetic_splits",
    "num_input_tokens",
    "resolve_cache_dir",
    "resolve_data_dir",
    "sample_bptt_length",
    "sequence_length",
]
