"""Registry of the word-level language-model corpora: file layout, published counts, hub source.

This module holds data only. The loader (:mod:`.lm`) and the downloader
(:mod:`.download`) both read it, and neither imports the other's internals.
The counts and digests were measured on the exact files the paper trained on
(see ``shared/data/README.md``). They are the reference that verification
checks against, so a truncated copy or a different "PTB" cannot quietly give
perplexities that look comparable to the paper's and are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from .errors import DataError

__all__ = ["SPLITS", "LMCorpusSpec", "LM_CORPORA", "LM_CORPUS_SPECS", "get_lm_spec"]

#: Split names, in the order the loaders process them. Train comes first because it defines the vocabulary.
SPLITS: tuple[str, str, str] = ("train", "valid", "test")


@dataclass(frozen=True)
class LMCorpusSpec:
    """Everything needed to locate, verify and re-create one corpus.

    ``tokens`` counts whitespace-split words plus one ``<eos>`` per line,
    blank lines included. That is the awd-lstm-lm / pytorch-examples
    convention, which the paper's code uses too.
    """

    name: str
    title: str
    subdir: str
    files: Mapping[str, str]  # split -> file name inside ``subdir``
    tokens: Mapping[str, int]  # split -> token count incl. <eos>
    lines: Mapping[str, int]  # split -> line count (diagnostics only)
    sha256: Mapping[str, str]  # split -> sha256 of the whole file
    vocab_size: int  # distinct training tokens incl. <eos>
    hf_repo: str
    hf_config: str | None  # builder config name passed to load_dataset
    hf_data_dir: str | None  # sub-directory inside the repo revision
    hf_revision: str | None
    hf_column: str
    hf_splits: Mapping[str, str]  # our split -> hub split

    def file_names(self) -> list[str]:
        return [self.files[s] for s in SPLITS]


def _ro(d: dict) -> Mapping:
    return MappingProxyType(dict(d))


_HF_SPLITS = _ro({"train": "train", "valid": "validation", "test": "test"})

_PTB = LMCorpusSpec(
    name="ptb",
    title="Penn Treebank",
    subdir="ptb",
    files=_ro({"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}),
    tokens=_ro({"train": 929_589, "valid": 73_760, "test": 82_430}),
    lines=_ro({"train": 42_068, "valid": 3_370, "test": 3_761}),
    sha256=_ro(
        {
            "train": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            "valid": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            "test": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        }
    ),
    vocab_size=10_000,
    # The main branch holds a loading script, and current `datasets` refuses to run scripts.
    # The hub's automatic parquet conversion keeps the same rows (column `sentence`), one per line.
    hf_repo="ptb-text-only/ptb_text_only",
    hf_config=None,
    hf_data_dir="penn_treebank",
    hf_revision="refs/convert/parquet",
    hf_column="sentence",
    hf_splits=_HF_SPLITS,
)

_WT2 = LMCorpusSpec(
    name="wikitext2",
    title="WikiText-2",
    subdir="wikitext-2",
    files=_ro({"train": "wiki.train.tokens", "valid": "wiki.valid.tokens", "test": "wiki.test.tokens"}),
    tokens=_ro({"train": 2_088_628, "valid": 217_646, "test": 245_569}),
    lines=_ro({"train": 36_718, "valid": 3_760, "test": 4_358}),
    sha256=_ro(
        {
            "train": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            "valid": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "test": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        }
    ),
    vocab_size=33_278,
    hf_repo="Salesforce/wikitext",
    hf_config="wikitext-2-v1",
    hf_data_dir=None,
    hf_revision=None,
    hf_column="text",
    hf_splits=_HF_SPLITS,
)

#: Canonical corpus names accepted by :func:`~revrnn_cli.data.lm.load_lm_corpus`.
LM_CORPORA: tuple[str, ...] = (_PTB.name, _WT2.name)

#: Name -> spec, for callers that want to show the expected layout (e.g. ``revrnn data info``).
LM_CORPUS_SPECS: Mapping[str, LMCorpusSpec] = _ro({_PTB.name: _PTB, _WT2.name: _WT2})

# The paper's code calls WikiText-2 `wt2`. Accept that spelling and the directory name too.
_ALIASES = {"wt2": "wikitext2", "wikitext-2": "wikitext2", "penn-treebank": "ptb", "penntreebank": "ptb"}


def get_lm_spec(name: str) -> LMCorpusSpec:
    """Look up a corpus by name (case-insensitive; the aliases ``wt2`` and ``wikitext-2`` work too)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return LM_CORPUS_SPECS[key]
    except KeyError:
        raise DataError(
            f"unknown language-model corpus {name!r}: choose one of {', '.join(LM_CORPORA)}"
        ) from None
