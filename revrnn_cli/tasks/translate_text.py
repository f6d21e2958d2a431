"""Translating raw sentences with a trained run: what ``revrnn translate`` does.

    revrnn translate runs/multi30k_revgru_small --input sentences.en > sentences.de
    echo "A man rides a bike." | revrnn translate runs/multi30k_revgru_small
    revrnn translate runs/multi30k_revgru_small --beam 1 --batch 64 --json < test.en | jq -r .translation

Input is raw text, one sentence per line, prepared exactly as the run's training data were: the
line stripped, Moses-tokenised for the source language with the corpus's options and lowercased
when the run's data were (:func:`~revrnn_cli.data.tokenize.tokenize_cached`, the function that
tokenised the corpus). The vocabularies are rebuilt from the run's corpus as training built them,
since a checkpoint holds only weights. Decoding is ``evaluate``'s (:func:`~.decode.decode_batch`:
beam search or greedy, then ``replace_unk`` from the attention), and the output is detokenised as
``evaluate`` detokenises before sacreBLEU.

Output is one line per input line, in input order, an empty line for an empty (or blank) one, and
is written batch by batch as the input arrives, so a pipe sees translations before its input ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..data.errors import DataError
from ..data.translation import ParallelSplit, batch_indices, load_parallel_corpus
from ..data.tokenize import tokenize_cached
from ..errors import UserError
from ..evaluation.bleu import detokenize
from ..models.nmt import Seq2Seq
from .decode import decode_batch
from .restore import restore


def read_lines(stream: BinaryIO, name: str) -> Iterator[str]:
    """Lines of a byte stream, decoded as UTF-8, without their line ends (``\\n`` or ``\\r\\n``).

    Only ``\\n`` ends a line (not the other characters ``str.splitlines`` breaks at), as when
    the corpus was read, so the output has exactly one line per input line."""
    for n, raw in enumerate(stream, 1):
        try:
            yield raw.decode("utf-8").rstrip("\n").rstrip("\r")
        except UnicodeDecodeError as e:
            raise DataError(f"{name}: line {n} is not valid UTF-8 (byte {e.start + 1})") from None


def chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive groups of ``size`` lines (the last may be shorter), each yielded as soon as it is full."""
    group: list[str] = []
    for line in lines:
        group.append(line)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class Translator:
    """A translation run, ready to translate batches of raw sentences."""

    def __init__(self, target: Path, *, beam: int | None = None, max_len: int | None = None,
                 batch: int | None = None, data_dir: str | None = None):
        run = restore(target, "translate", data_dir=data_dir)
        self.run, spec = run, run.spec
        self.data = spec.data
        update = {}
        for key, flag, value in (("beam_size", "--beam", beam), ("max_len", "--max-len", max_len),
                                 ("batch_size", "--batch", batch)):
            if value is not None:
                if value < 1:
                    raise UserError(f"{flag} must be at least 1, got {value}")
                update[key] = value
        self.cfg = spec.decode.model_copy(update=update)
        corpus = load_parallel_corpus(spec.data)
        self.src_vocab, self.tgt_vocab = corpus.src_vocab, corpus.tgt_vocab
        model = Seq2Seq(spec.model, len(self.src_vocab), len(self.tgt_vocab), spec.backprop)
        try:
            self.model = run.load_weights(model)
        except RuntimeError as e:  # shapes: the corpus gives other vocabularies than at training
            raise DataError(f"{run.checkpoint}: the weights do not fit the vocabularies the run's data give now "
                            f"({len(self.src_vocab)} source, {len(self.tgt_vocab)} target words): "
                            f"{str(e).splitlines()[-1].strip()}") from None
        self.lines = self.empty = 0
        self.seconds = 0.0

    def tokenize(self, lines: list[str]) -> list[list[str]]:
        """Source tokens of raw lines, as the run's corpus was tokenised (no cache: user text)."""
        return tokenize_cached([line.strip() for line in lines], self.data.src_lang, "", cache_dir=None,
                               lowercase=self.data.lowercase)

    def translate(self, lines: list[str]) -> list[dict]:
        """One record per line, in order: ``translation`` (detokenised), its ``tokens``, the
        ``source_tokens`` and the ``score`` (summed log-probability; None for an empty line)."""
        t0 = time.perf_counter()
        src_tok = self.tokenize(lines)
        todo = [i for i, t in enumerate(src_tok) if t]  # an empty source has nothing to encode
        out = [{"translation": "", "tokens": [], "source_tokens": [], "score": None} for _ in lines]
        if todo:
            split = ParallelSplit(src=[self.src_vocab.encode(src_tok[i]) for i in todo], tgt=[[] for _ in todo],
                                  src_tok=[src_tok[i] for i in todo], tgt_tok=[[] for _ in todo],
                                  tgt_raw=["" for _ in todo])
            for idx in batch_indices(split, self.cfg.batch_size, shuffle=False):
                for j, (words, score) in zip(idx, decode_batch(self.model, split, idx, self.tgt_vocab, self.cfg,
                                                               self.run.device, self.cfg.beam_size)):
                    out[todo[j]] = {"translation": detokenize(words, self.data.tgt_lang), "tokens": words,
                                    "source_tokens": src_tok[todo[j]], "score": score}
        self.lines += len(lines)
        self.empty += len(lines) - len(todo)
        self.seconds += time.perf_counter() - t0
        return out

    def stream(self, lines: Iterable[str]) -> Iterator[dict]:
        """Records for ``lines``, numbered from 1, translated ``batch`` lines at a time as they arrive."""
        n = 0
        for group in chunks(lines, self.cfg.batch_size):
            for rec in self.translate(group):
                n += 1
                yield {"line": n, **rec}


def open_input(name: str) -> tuple[BinaryIO, str]:
    """The byte stream ``--input`` names (``-``: standard input) and the name to report it by."""
    if name == "-":
        return sys.stdin.buffer, "<stdin>"
    path = Path(name)
    if not path.is_file():
        raise UserError(f"--input: {path}: no such file" + (" (a directory)" if path.is_dir() else ""))
    try:
        return path.open("rb"), str(path)
    except OSError as e:
        raise UserError(f"--input: {path}: cannot read: {e.strerror or e}") from None


__all__ = ["Translator", "chunks", "open_input", "read_lines"]
