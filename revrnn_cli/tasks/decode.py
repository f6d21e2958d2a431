"""Translating a split and scoring it: beam search or greedy, replace_unk, BLEU two ways (reference
`nmt/train_scripts/*.sh`, `nmt/opts.py`).

    revrnn evaluate runs/multi30k_revgru_small --split test            # beam 5 (the spec's), BLEU
    revrnn evaluate runs/multi30k_revgru_small --split test --beam 1   # greedy

Reported: ``bleu`` (sacreBLEU on detokenised output against the raw references, with its
signature: the reproducible number) and ``bleu_tok`` (multi-bleu.perl's number on tokenised,
lowercased text: what the paper reports). The translations are written next to the checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..data.translation import BOS, EOS, PAD, ParallelSplit, TranslationVocab, batch_indices, collate
from ..evaluation.bleu import detokenize, sacre_bleu, tokenized_bleu
from ..models.search import DecodeConfig, beam_search, greedy, replace_unk
from ..training.checkpoint import atomic_write


def translate_split(model, split: ParallelSplit, tgt_vocab: TranslationVocab, cfg: DecodeConfig, device,
                    beam: int | None = None, limit: int | None = None) -> tuple[list[list[str]], float]:
    """Tokenised translations of the split's sentences (in split order) and the seconds it took."""
    beam = cfg.beam_size if beam is None else beam
    n = len(split) if limit is None else min(limit, len(split))
    out: list[list[str] | None] = [None] * n
    model.eval()
    t0 = time.perf_counter()
    for idx in batch_indices(_Prefix(split, n), cfg.batch_size, shuffle=False):
        for i, (words, _) in zip(idx, decode_batch(model, split, idx, tgt_vocab, cfg, device, beam)):
            out[i] = words
    return out, time.perf_counter() - t0


def decode_batch(model, split: ParallelSplit, idx: list[int], tgt_vocab: TranslationVocab, cfg: DecodeConfig,
                 device, beam: int) -> list[tuple[list[str], float]]:
    """Tokenised translations of the split's sentences ``idx`` (decoded together, in that order) and
    their scores (summed log-probabilities, ``eos`` included when emitted)."""
    b = collate(split, idx).to(device)
    if beam == 1:
        hyps = greedy(model, b.src, b.src_len, cfg.max_len, bos=BOS, eos=EOS)
    else:
        hyps = beam_search(model, b.src, b.src_len, beam, cfg.max_len, bos=BOS, eos=EOS)
    out = []
    for i, h in zip(idx, hyps):
        words = [tgt_vocab.itos[t] for t in h.tokens]  # one word per attention row
        if cfg.replace_unk:
            words = replace_unk(words, h.attn, split.src_tok[i])
        out.append(([w for w, t in zip(words, h.tokens) if t not in (PAD, BOS)], h.score))
    return out


class _Prefix:
    """The first n pairs of a split, as :func:`batch_indices` sees a split (lengths only)."""

    def __init__(self, split: ParallelSplit, n: int):
        self.src, self.tgt, self.n = split.src[:n], split.tgt[:n], n

    def __len__(self) -> int:
        return self.n


def score(hyps: list[list[str]], split: ParallelSplit, tgt_lang: str) -> dict:
    """Both BLEU scores of tokenised hypotheses against the split's references."""
    n = len(hyps)
    detok = [detokenize(h, tgt_lang) for h in hyps]
    sacre = sacre_bleu(detok, split.tgt_raw[:n])
    tok = tokenized_bleu(hyps, split.tgt_tok[:n])
    return {"bleu": sacre["score"], "bleu_signature": sacre["signature"], "bleu_tok": tok["score"],
            "bleu_tok_detail": tok["text"], "sentences": n, "detok": detok}


def write_translations(out_dir: Path, stem: str, hyps: list[list[str]], detok: list[str]) -> list[Path]:
    """``<stem>.tok`` (tokenised, as scored by ``bleu_tok``) and ``<stem>.txt`` (detokenised), atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, lines in ((".tok", [" ".join(h) for h in hyps]), (".txt", detok)):
        path = out_dir / f"{stem}{suffix}"
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        atomic_write(path, lambda f, data=data: f.write(data))
        paths.append(path)
    return paths


__all__ = ["decode_batch", "score", "translate_split", "write_translations"]
