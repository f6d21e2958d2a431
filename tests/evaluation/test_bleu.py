"""BLEU: perfect matches, a hand-computed example, multi-bleu.perl's formulas, detokenisation, empty output."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from revrnn_cli.evaluation import detokenize, sacre_bleu, tokenized_bleu

REFS_RAW = [
    "Two young, White males are outside near many bushes.",
    "A little girl climbing into a wooden playhouse.",
    "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.",
]


def multi_bleu_reference(hyps: list[list[str]], refs: list[list[str]]) -> float:
    """A direct transcription of multi-bleu.perl's arithmetic (one reference per sentence)."""
    correct, total = [0] * 4, [0] * 4
    c_len = r_len = 0
    for h, r in zip(hyps, refs):
        c_len += len(h)
        r_len += len(r)
        for n in range(1, 5):
            hc = Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
            rc = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            total[n - 1] += sum(hc.values())
            correct[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
    if any(c == 0 for c in correct):
        return 0.0
    bp = 1.0 if c_len >= r_len else math.exp(1 - r_len / c_len)
    return 100 * bp * math.exp(sum(math.log(c / t) for c, t in zip(correct, total)) / 4)


def test_references_against_themselves_score_100():
    refs_tok = [r.lower().split() for r in REFS_RAW]
    assert tokenized_bleu(refs_tok, refs_tok)["score"] == pytest.approx(100.0)
    assert sacre_bleu(REFS_RAW, REFS_RAW)["score"] == pytest.approx(100.0)
    # lowercased output against cased references: still 100, the comparison is case-insensitive
    assert sacre_bleu([r.lower() for r in REFS_RAW], REFS_RAW)["score"] == pytest.approx(100.0)


def test_hand_computed_example():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat":
    # p1 = 5/6, p2 = 3/5, p3 = 2/4, p4 = 1/3, BP = 1 -> BLEU = (1/12) ** (1/4) = 53.728...
    expected = 100 * (1 / 12) ** 0.25
    tok = tokenized_bleu([["the", "cat", "sat", "on", "the", "mat"]], [["the", "cat", "sat", "on", "a", "mat"]])
    assert tok["score"] == pytest.approx(expected, abs=1e-9)
    assert tok["precisions"] == pytest.approx([100 * 5 / 6, 60.0, 50.0, 100 / 3])
    assert tok["bp"] == 1.0 and tok["hyp_len"] == 6 and tok["ref_len"] == 6
    sb = sacre_bleu(["the cat sat on the mat"], ["The cat sat on a mat"])
    assert sb["score"] == pytest.approx(expected, abs=1e-9)


def test_brevity_penalty_and_zero_precision_follow_multi_bleu():
    refs = [["a", "b", "c", "d", "e", "f"], ["g", "h", "i", "j"]]
    hyps = [["a", "b", "c", "d", "e"], ["g", "h", "i", "x"]]
    got = tokenized_bleu(hyps, refs)
    assert got["score"] == pytest.approx(multi_bleu_reference(hyps, refs), abs=1e-9)
    assert got["bp"] == pytest.approx(math.exp(1 - 10 / 9))
    # no 4-gram matches anywhere -> 0 (multi-bleu.perl does not smooth)
    hyps0 = [["a", "b", "c", "x"], ["g", "h", "i", "y"]]
    assert multi_bleu_reference(hyps0, refs) == 0.0
    assert tokenized_bleu(hyps0, refs)["score"] == 0.0
    assert "smooth:none" in got["signature"] and "tok:none" in got["signature"]


def test_tokenized_bleu_matches_multi_bleu_arithmetic_on_a_messier_corpus():
    refs = [r.lower().split() for r in REFS_RAW]
    hyps = [
        ["two", "young", "white", "males", "are", "outside", "near", "bushes", "."],
        ["a", "little", "girl", "climbs", "into", "a", "wooden", "playhouse", ".", "."],
        ["ein", "boston", "terrier", "läuft", "über", "gras", "."],
    ]
    assert tokenized_bleu(hyps, refs)["score"] == pytest.approx(multi_bleu_reference(hyps, refs), abs=1e-9)


def test_empty_hypotheses():
    refs_tok = [r.lower().split() for r in REFS_RAW]
    assert tokenized_bleu([[], [], []], refs_tok)["score"] == 0.0
    assert sacre_bleu(["", "", ""], REFS_RAW)["score"] == 0.0
    # one empty line among good ones costs only its share (brevity penalty), no error
    mixed = tokenized_bleu([refs_tok[0], [], refs_tok[2]], refs_tok)
    assert 0.0 < mixed["score"] < 100.0
    assert 0.0 < sacre_bleu([REFS_RAW[0], "", REFS_RAW[2]], REFS_RAW)["score"] < 100.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        tokenized_bleu([["a"]], [["a"], ["b"]])
    with pytest.raises(ValueError, match="one hypothesis per reference"):
        sacre_bleu(["a", "b"], ["a"])


def test_sacre_bleu_signature_says_lowercased_13a():
    sig = sacre_bleu(["a b c d"], ["a b c d"])["signature"]
    assert "case:lc" in sig and "tok:13a" in sig and "nrefs:1" in sig
    assert "case:mixed" in sacre_bleu(["a b c d"], ["a b c d"], lowercase=False)["signature"]


def test_detokenize_undoes_moses_tokenisation():
    assert detokenize(["ein", "boston", "terrier", "läuft", "über", "saftig", "@-@", "grünes", "gras", "."], "de") == (
        "ein boston terrier läuft über saftig-grünes gras."
    )
    assert detokenize(["a", "man", "'s", "\"", "red", "\"", "hat", "."], "en") == 'a man\'s "red" hat.'
    assert detokenize([], "en") == ""


def test_detokenised_moses_output_scores_100_against_raw_references():
    from sacremoses import MosesTokenizer

    hyps = []
    for line in REFS_RAW:
        lang = "de" if "Terrier" in line else "en"
        toks = MosesTokenizer(lang).tokenize(line, aggressive_dash_splits=True, escape=False)
        hyps.append(detokenize([t.lower() for t in toks], lang))
    assert sacre_bleu(hyps, REFS_RAW)["score"] == pytest.approx(100.0)
