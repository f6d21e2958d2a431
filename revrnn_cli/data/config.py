"""The ``data:`` section of an experiment spec."""

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
    """

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["ptb", "wikitext2", "repeat", "remember"] = "ptb"
    data_dir: str | None = None
    download: bool = True
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


assert set(LM_CORPORA) == {"ptb", "wikitext2"}
