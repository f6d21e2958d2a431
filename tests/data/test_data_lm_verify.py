"""Damaged corpus files must fail with a one-line DataError naming the file; tokenisation and Vocabulary units."""

from __future__ import annotations

import pytest
import torch

from revrnn_cli.data import EOS, DataError, Vocabulary, load_lm_corpus
from revrnn_cli.data.lm import tokenize_lm_text


def _load_error(data_dir, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_lm_corpus("ptb", data_dir, download=False, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- damaged real files


def test_truncated_train_file(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.train.txt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _load_error(ptb_copy)
    assert str(path) in msg
    assert "truncated" in msg and "929,589" in msg
    found = len(tokenize_lm_text(data[: len(data) // 2].decode())[0])
    assert f"{found:,}" in msg


def test_test_file_cut_mid_line(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.test.txt"
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # no trailing newline any more
    msg = _load_error(ptb_copy)
    assert str(path) in msg and "82,430" in msg


def test_extended_valid_file(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.valid.txt"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(" the end \n")
    msg = _load_error(ptb_copy)
    assert str(path) in msg and "corrupt" in msg and "73,760" in msg and "73,763" in msg


def test_edit_that_keeps_counts_is_caught_by_sha256(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.valid.txt"
    text = path.read_text(encoding="utf-8")
    assert " the " in text
    path.write_text(text.replace(" the ", " a ", 1), encoding="utf-8")
    msg = _load_error(ptb_copy)
    assert str(path) in msg and "sha256" in msg

    # Without verification the edited file loads, and the edit is visible in the ids.
    corpus = load_lm_corpus("ptb", ptb_copy, download=False, verify=False)
    assert corpus.valid.numel() == 73_760
    assert "a" in corpus.vocab.decode(corpus.valid)


def test_new_word_in_train_changes_vocab_size(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.train.txt"
    lines = path.read_text(encoding="utf-8").split("\n")
    words = lines[5].split()
    words[0] = "zzz-never-seen"
    lines[5] = " " + " ".join(words) + " "
    path.write_text("\n".join(lines), encoding="utf-8")
    msg = _load_error(ptb_copy)
    assert str(path) in msg and "10,000" in msg and "10,001" in msg


def test_unknown_word_in_valid_is_an_error_even_unverified(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.valid.txt"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(" qqq-unseen-word \n")
    msg = _load_error(ptb_copy, verify=False)
    assert str(path) in msg and "qqq-unseen-word" in msg


def test_invalid_utf8(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.test.txt"
    data = bytearray(path.read_bytes())
    data[100] = 0xFF
    path.write_bytes(bytes(data))
    msg = _load_error(ptb_copy)
    assert str(path) in msg and "UTF-8" in msg and "100" in msg


def test_unreadable_path(ptb_copy):
    path = ptb_copy / "ptb" / "ptb.test.txt"
    path.unlink()
    path.mkdir()
    msg = _load_error(ptb_copy)
    assert str(path) in msg and "cannot read" in msg


# --------------------------------------------------------------------------- small fake corpora


def _write_fake_ptb(root, train: str, valid: str, test: str):
    d = root / "ptb"
    d.mkdir(parents=True)
    for name, text in (("ptb.train.txt", train), ("ptb.valid.txt", valid), ("ptb.test.txt", test)):
        (d / name).write_text(text, encoding="utf-8", newline="")
    return root


def test_fake_corpus_unverified_layout_and_ids(tmp_path):
    root = _write_fake_ptb(tmp_path, " b a \n \n a c \n", " a \n", " c b \n")
    corpus = load_lm_corpus("ptb", root, download=False, verify=False)
    assert corpus.vocab.idx2word == ("b", "a", EOS, "c")
    assert corpus.train.tolist() == [0, 1, 2, 2, 1, 3, 2]
    assert corpus.valid.tolist() == [1, 2]
    assert corpus.test.tolist() == [3, 0, 2]


def test_fake_corpus_fails_verification(tmp_path):
    root = _write_fake_ptb(tmp_path, " b a \n", " a \n", " b \n")
    msg = _load_error(root)
    assert "ptb.train.txt" in msg and "929,589" in msg


@pytest.mark.parametrize(
    "text, tokens, lines",
    [
        ("", [], 0),
        (" \n", [EOS], 1),
        (" a b \n \n c \n", ["a", "b", EOS, EOS, "c", EOS], 3),
        (" a b \n c", ["a", "b", EOS, "c", EOS], 2),  # last line without newline still ends with <eos>
        (" a\r\n b \r\n", ["a", EOS, "b", EOS], 2),  # CRLF
        ("a\rb\n", ["a", EOS, "b", EOS], 2),  # lone CR is a line break (universal newlines)
        ("a\tb  c\n", ["a", "b", "c", EOS], 1),
    ],
)
def test_tokenize_lm_text(text, tokens, lines):
    assert tokenize_lm_text(text) == (tokens, lines)


def test_tokenize_matches_line_by_line_reference():
    text = " x y \n\n  z\t\n \n w"
    reference = []
    for line in text.splitlines():
        reference += line.split() + [EOS]
    assert tokenize_lm_text(text)[0] == reference


# --------------------------------------------------------------------------- Vocabulary


def test_vocabulary_first_appearance_and_round_trip():
    vocab = Vocabulary.from_tokens(["c", "a", "c", EOS, "b", "a"])
    assert vocab.idx2word == ("c", "a", EOS, "b")
    assert dict(vocab.word2idx) == {"c": 0, "a": 1, EOS: 2, "b": 3}
    assert len(vocab) == 4 and vocab.eos_id == 2
    ids = vocab.encode(["b", "c", EOS])
    assert ids.dtype == torch.long and ids.tolist() == [3, 0, 2]
    assert vocab.decode(ids) == ["b", "c", EOS]
    assert vocab.decode(torch.tensor([[1, 3]])) == ["a", "b"]
    assert vocab.index("a") == 1 and vocab.word(1) == "a"
    assert "a" in vocab and "zz" not in vocab
    assert list(vocab) == ["c", "a", EOS, "b"]


def test_vocabulary_rejects_unknowns_and_mutation():
    vocab = Vocabulary(["x", "y"])
    with pytest.raises(KeyError):
        vocab.encode(["z"])
    with pytest.raises(IndexError):
        vocab.word(2)
    with pytest.raises(IndexError):
        vocab.word(-1)
    with pytest.raises(TypeError):
        vocab.word2idx["z"] = 2  # read-only view
    with pytest.raises(ValueError):
        Vocabulary(["x", "x"])


# --------------------------------------------------------------------------- data.verify: false


def test_a_home_made_corpus_is_refused_unless_verification_is_off(tiny_data_dir):
    msg = _load_error(tiny_data_dir)
    assert "ptb.train.txt" in msg and "929,589" in msg
    corpus = load_lm_corpus("ptb", tiny_data_dir, download=False, verify=False)
    text = (tiny_data_dir / "ptb" / "ptb.train.txt").read_text(encoding="utf-8")
    assert corpus.train.numel() == len(tokenize_lm_text(text)[0])
    assert len(corpus.vocab) == len(set(tokenize_lm_text(text)[0]))


def test_digest_mismatch_advice_names_a_real_option(tiny_data_dir, monkeypatch):
    """A copy whose counts match but whose bytes differ: the message's way out must exist and work."""
    import dataclasses
    import re

    from revrnn_cli.data import lm as lm_mod
    from revrnn_cli.spec import load_spec

    real = lm_mod.get_lm_spec("ptb")
    counts = {s: len(tokenize_lm_text((tiny_data_dir / "ptb" / real.files[s]).read_text())[0]) for s in real.files}
    vocab = len(set(tokenize_lm_text((tiny_data_dir / "ptb" / real.files["train"]).read_text())[0]))
    monkeypatch.setattr(lm_mod, "get_lm_spec", lambda name: dataclasses.replace(real, tokens=counts, vocab_size=vocab))
    msg = _load_error(tiny_data_dir)
    assert "sha256" in msg and "verification off" not in msg
    option = re.search(r"--set (\S+)\)", msg).group(1)
    spec, _ = load_spec(None, [option], base={"data": {"dataset": "ptb"}})
    assert spec.data.verify is False
    load_lm_corpus("ptb", tiny_data_dir, download=False, verify=spec.data.verify)  # and it works
