"""Data for the reversible-RNN experiments: LM corpora, BPTT batching, toy tasks.

Everything the CLI and the training engine need is re-exported here, so they
can import from ``revrnn_cli.data``. User-facing problems (missing or corrupt
files, unknown names) are raised as :class:`DataError`, whose message is a
single printable line.
"""

from .batching import batchify, get_batch, sample_bptt_length
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

__all__ = [
    "DataError",
    "DATA_DIR_ENV",
    "resolve_data_dir",
    "EOS",
    "Vocabulary",
    "LMCorpus",
    "LM_CORPORA",
    "LM_CORPUS_SPECS",
    "LMCorpusSpec",
    "load_lm_corpus",
    "batchify",
    "get_batch",
    "sample_bptt_length",
    "SYNTHETIC_TASKS",
    "IGNORE_INDEX",
    "SyntheticSplits",
    "blank_id",
    "num_input_tokens",
    "sequence_length",
    "make_synthetic",
    "make_synthetic_splits",
]
