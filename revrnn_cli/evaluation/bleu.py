"""Corpus BLEU, two ways: the paper-comparable tokenised score and the standard detokenised sacreBLEU.

* :func:`tokenized_bleu` is what the paper reports (reference `nmt/train_scripts/*.sh`, `nmt/opts.py`): Moses'
  ``multi-bleu.perl`` on tokenised, lowercased hypotheses against the
  tokenised, lowercased references (``.tok.low``). It depends on the
  tokenisation, so it is only comparable with numbers computed the same way.
* :func:`sacre_bleu` is the reproducible number (Post 2018): the system output
  is detokenised (:func:`detokenize`) and scored against the *raw* reference
  lines with sacreBLEU's own 13a tokenisation. Our output is lowercased, so
  the score is case-insensitive (``lowercase=True``) and the signature says so
  (``case:lc``).

sacrebleu and sacremoses are imported lazily: only translation runs need them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

__all__ = ["detokenize", "sacre_bleu", "tokenized_bleu"]


@cache
def _detokenizer(lang: str):
    from sacremoses import MosesDetokenizer

    return MosesDetokenizer(lang=lang)


def detokenize(tokens: Sequence[str], lang: str) -> str:
    """Moses-detokenise one sentence (``detokenizer.perl -l lang``); joins ``@-@`` hyphen splits too."""
    return _detokenizer(lang).detokenize(list(tokens))


def _result(score, signature: str) -> dict:
    return {
        "score": float(score.score),
        "signature": signature,
        "precisions": [float(p) for p in score.precisions],
        "bp": float(score.bp),
        "ratio": float(score.sys_len / score.ref_len) if score.ref_len else 0.0,
        "hyp_len": int(score.sys_len),
        "ref_len": int(score.ref_len),
        "text": str(score),
    }


def _check_lengths(hyps: Sequence, refs: Sequence) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"BLEU needs one hypothesis per reference: got {len(hyps)} hypotheses, {len(refs)} references")


def sacre_bleu(hyps_detok: Sequence[str], refs_raw: Sequence[str], lowercase: bool = True) -> dict:
    """sacreBLEU of detokenised hypotheses against raw references (one reference per sentence).

    Default sacreBLEU settings (13a tokenisation, ``exp`` smoothing, corpus
    level), except ``lowercase``: our models are trained on lowercased text, so
    a cased comparison would only measure casing; the signature then reads
    ``case:lc``. Returns ``score`` (0–100), ``signature`` and the statistics
    ``precisions``, ``bp``, ``ratio``, ``hyp_len``, ``ref_len``, ``text``.
    Empty hypotheses are fine (they score nothing; all empty gives 0).
    """
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps_detok, refs_raw)
    bleu = BLEU(lowercase=lowercase)
    score = bleu.corpus_score(list(hyps_detok), [list(refs_raw)])
    return _result(score, str(bleu.get_signature()))


def tokenized_bleu(hyps_tok: Sequence[Sequence[str]], refs_tok: Sequence[Sequence[str]]) -> dict:
    """Corpus BLEU on token lists, equal to ``multi-bleu.perl`` (without ``-lc``; pass lowercased tokens).

    Computed with sacreBLEU set up to reproduce multi-bleu.perl exactly:

    * ``tokenize="none"``: the tokens are ours, joined by single spaces and
      split on whitespace again (Moses tokens contain no whitespace), just as
      multi-bleu.perl splits its input lines;
    * ``smooth_method="none"``: multi-bleu.perl does not smooth; an n-gram
      order with no match gives log(0) and so BLEU 0, as here;
    * corpus statistics (clipped n-gram matches summed over sentences, n = 1–4,
      geometric mean with equal weights), ``effective_order`` off, and the
      brevity penalty ``exp(1 - r/c)`` when c < r with c, r the total
      hypothesis and reference lengths -- the same formulas as the script;
    * ``force=True`` silences sacreBLEU's warning that the input looks
      tokenised, which here is intended.

    One difference: the script dies on an empty reference corpus or an empty
    output (division by zero); this returns 0 instead.
    Returns the same keys as :func:`sacre_bleu`.
    """
    from sacrebleu.metrics import BLEU

    _check_lengths(hyps_tok, refs_tok)
    bleu = BLEU(tokenize="none", smooth_method="none", force=True, lowercase=False)
    hyps = [" ".join(h) for h in hyps_tok]
    refs = [" ".join(r) for r in refs_tok]
    score = bleu.corpus_score(hyps, [refs])
    return _result(score, str(bleu.get_signature()))
