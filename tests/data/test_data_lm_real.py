"""Loading the real PTB and WikiText-2 files: counts, vocabulary, <eos>, exact round trip."""

from __future__ import annotations

import pytest
import torch

from revrnn_cli.data import DATA_DIR_ENV, EOS, DataError, LM_CORPORA, load_lm_corpus
from revrnn_cli.data.corpora import get_lm_spec

SPLITS = ("train", "valid", "test")


@pytest.fixture(params=["ptb", "wikitext2"])
def corpus(request):
    fixture = {"ptb": "ptb_corpus", "wikitext2": "wt2_corpus"}[request.param]
    return request.getfixturevalue(fixture)


def _render(corpus, ids: torch.Tensor) -> str:
    """Rebuild the file text from ids: lines end at <eos>, rendered in the classic ' w1 w2 \\n' format."""
    words = corpus.vocab.decode(ids)
    lines, current = [], []
    for w in words:
        if w == EOS:
            lines.append(" " + " ".join(current) + " \n" if current else " \n")
            current = []
        else:
            current.append(w)
    assert not current, "stream must end with <eos>"
    return "".join(lines)


def test_published_token_counts_and_vocab(corpus, published):
    pub = published[corpus.name]
    assert len(corpus.vocab) == pub["vocab"]
    for split in SPLITS:
        t = corpus.split(split)
        assert t.dtype == torch.long and t.dim() == 1
        assert t.numel() == pub["tokens"][split]


def test_one_eos_per_line(corpus, real_data_dir, published):
    pub = published[corpus.name]
    eos = corpus.vocab.eos_id
    for split in SPLITS:
        n_lines = (real_data_dir / pub["dir"] / pub["files"][split]).read_bytes().count(b"\n")
        assert int((corpus.split(split) == eos).sum()) == n_lines


def test_ids_round_trip_to_the_exact_file_bytes(corpus, real_data_dir, published):
    pub = published[corpus.name]
    for split in SPLITS:
        text = (real_data_dir / pub["dir"] / pub["files"][split]).read_text(encoding="utf-8")
        assert _render(corpus, corpus.split(split)) == text


def test_vocabulary_is_in_order_of_first_appearance_in_train(corpus):
    train = corpus.train
    # Every id is at most one above the largest id seen before it, and all ids are used.
    prev_max = torch.cummax(train, dim=0).values
    assert int(train[0]) == 0
    assert bool((train[1:] <= prev_max[:-1] + 1).all())
    assert int(train.max()) == len(corpus.vocab) - 1
    assert int(torch.unique(train).numel()) == len(corpus.vocab)


def test_valid_and_test_use_training_ids(corpus):
    for split in ("valid", "test"):
        t = corpus.split(split)
        assert int(t.min()) >= 0 and int(t.max()) < len(corpus.vocab)


def test_ptb_first_sentence_and_eos(ptb_corpus, real_data_dir):
    first_line = (real_data_dir / "ptb" / "ptb.train.txt").open(encoding="utf-8").readline().split()
    n = len(first_line)
    assert ptb_corpus.vocab.decode(ptb_corpus.train[: n + 1]) == first_line + [EOS]
    assert ptb_corpus.train[:n].tolist() == list(range(n))  # all new words, in order
    assert ptb_corpus.vocab.eos_id == n
    assert "<unk>" in ptb_corpus.vocab


def test_wikitext_blank_lines_give_bare_eos(wt2_corpus, real_data_dir):
    lines = (real_data_dir / "wikitext-2" / "wiki.train.tokens").read_text(encoding="utf-8").split("\n")[:4]
    assert lines[0] == " " and lines[2] == " "  # the file opens with a blank line, a heading, a blank line
    eos = wt2_corpus.vocab.eos_id
    assert eos == 0  # the first line is blank, so <eos> is the first token seen
    heading = lines[1].split()
    expected = [EOS] + heading + [EOS, EOS] + lines[3].split() + [EOS]
    assert wt2_corpus.vocab.decode(wt2_corpus.train[: len(expected)]) == expected


def test_default_data_dir_comes_from_env(monkeypatch, real_data_dir, ptb_corpus):
    monkeypatch.setenv(DATA_DIR_ENV, str(real_data_dir))
    again = load_lm_corpus("ptb", download=False)
    assert torch.equal(again.train, ptb_corpus.train)
    assert again.vocab.idx2word == ptb_corpus.vocab.idx2word


def test_unknown_corpus_name_lists_choices():
    with pytest.raises(DataError) as info:
        load_lm_corpus("imdb", download=False)
    msg = str(info.value)
    assert "imdb" in msg and all(name in msg for name in LM_CORPORA)
    assert "\n" not in msg


@pytest.mark.parametrize("alias, canonical", [("WT2", "wikitext2"), ("wikitext-2", "wikitext2"), ("PTB", "ptb")])
def test_aliases(alias, canonical):
    assert get_lm_spec(alias).name == canonical
