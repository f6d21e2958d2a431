"""Multi30k for translation: raw counts, Moses preprocessing, vocabularies, length filter, buckets, batches,
tokenisation cache, hub download (faked) and the errors for missing or damaged files.

What holds for any parallel corpus is tested on the suite's tiny Multi30k files (``tiny``); what is
about the real corpus (its counts, digests and sentences, the download of its rows) on the real one,
skipped when ``REVRNN_DATA_DIR`` does not name it. Tokenisation is the slow part, so the real tests
load the first few hundred pairs (``n_train`` etc.); the full split sizes are checked on the raw
files, which needs no tokenisation.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from revrnn_cli.data import (
    DataError,
    TranslationDataConfig,
    TranslationVocab,
    batch_indices,
    collate,
)
from revrnn_cli.data import download as dl
from revrnn_cli.data import multi30k as m30k
from revrnn_cli.data import tokenize as tok
from revrnn_cli.data.translation import BOS, EOS, PAD, UNK, load_parallel_corpus

# shared/data/README.md §3, repeated here on purpose.
PUBLISHED_LINES = {"train": 29_000, "valid": 1_014, "test": 1_000}
FILES = {"train": "train", "valid": "val", "test": "test2016"}
SMALL = {"n_train": 300, "n_valid": 120, "n_test": 80}
TINY = {"n_train": 200, "n_valid": 50, "n_test": 30}  # the tiny files hold 240 / 60 / 40 pairs


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("revrnn-cache")


@pytest.fixture(scope="module")
def small(real_data_dir, cache_dir):
    cfg = TranslationDataConfig(data_dir=str(real_data_dir), download=False, **SMALL)
    return load_parallel_corpus(cfg, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def tiny(tiny_data_dir, cache_dir):
    cfg = TranslationDataConfig(data_dir=str(tiny_data_dir), download=False, verify=False, **TINY)
    return load_parallel_corpus(cfg, cache_dir=cache_dir)


@pytest.fixture
def m30k_copy(real_data_dir, tmp_path) -> Path:
    """A private copy of the Multi30k files under ``tmp_path/multi30k``, for tests that damage them."""
    shutil.copytree(real_data_dir / "multi30k", tmp_path / "multi30k", ignore=shutil.ignore_patterns("alt"))
    for p in (tmp_path / "multi30k").iterdir():
        p.chmod(0o644)
    return tmp_path


# --------------------------------------------------------------------------- raw files


def test_full_raw_splits_have_the_published_line_counts(real_data_dir):
    for split, n in PUBLISHED_LINES.items():
        for lang in ("en", "de"):
            assert (real_data_dir / "multi30k" / f"{FILES[split]}.{lang}").read_bytes().count(b"\n") == n
    raw = m30k.read_multi30k(real_data_dir, download=False)
    assert {s: len(raw.splits[s]) for s in PUBLISHED_LINES} == PUBLISHED_LINES
    assert raw.all_paper_bytes and all(raw.paper_bytes.values()) and len(raw.paper_bytes) == 6


def test_raw_lines_are_parallel_and_stripped(real_data_dir):
    raw = m30k.read_multi30k(real_data_dir, download=False, splits=("test",))
    en, de = raw.splits["test"].lines["en"], raw.splits["test"].lines["de"]
    assert en[1] == "A Boston Terrier is running on lush green grass in front of a white fence."
    assert de[1] == "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun."
    assert all(line == line.strip() and line for line in en + de)


# --------------------------------------------------------------------------- preprocessing + vocab


def test_split_sizes_follow_the_limits(tiny):
    assert len(tiny.splits["valid"]) == 50 and len(tiny.splits["test"]) == 30
    assert len(tiny.splits["train"]) + tiny.n_filtered == 200
    assert tiny.src_lang == "en" and tiny.tgt_lang == "de" and not tiny.paper_bytes
    for sp in tiny.splits.values():
        n = len(sp)
        assert len(sp.src) == len(sp.tgt) == len(sp.src_tok) == len(sp.tgt_tok) == len(sp.tgt_raw) == n
        assert len(sp.src_raw) == len(sp.line) == n


def test_moses_aggressive_hyphens_no_escape_lowercase(small):
    assert small.paper_bytes and len(small.splits["test"]) == 80
    test = small.splits["test"]
    assert test.tgt_tok[1] == ["ein", "boston", "terrier", "läuft", "über", "saftig", "@-@", "grünes", "gras",
                               "vor", "einem", "weißen", "zaun", "."]
    assert test.tgt_raw[1] == "Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun."
    assert test.src_tok[0][:3] == ["a", "man", "in"]
    assert all(w == w.lower() for s in test.src_tok + test.tgt_tok for w in s)
    # no HTML escaping of quotes/ampersands (-no-escape)
    assert not any("&quot;" in w or "&amp;" in w or "&apos;" in w for s in small.splits["train"].tgt_tok for w in s)


def test_vocab_specials_and_order(tiny):
    for vocab, side in ((tiny.src_vocab, "src_tok"), (tiny.tgt_vocab, "tgt_tok")):
        assert vocab.itos[:4] == ["<blank>", "<unk>", "<s>", "</s>"]
        assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3) == (vocab.PAD, vocab.UNK, vocab.BOS, vocab.EOS)
        train_words = {w for s in getattr(tiny.splits["train"], side) for w in s}
        assert set(vocab.itos[4:]) == train_words  # all training words, nothing else (min_freq 1)
        counts = {}
        for s in getattr(tiny.splits["train"], side):
            for w in s:
                counts[w] = counts.get(w, 0) + 1
        keys = [(-counts[w], w) for w in vocab.itos[4:]]
        assert keys == sorted(keys)  # frequency descending, ties alphabetical


def test_ids_encode_tokens_and_unknown_words_map_to_unk(tiny):
    for sp in tiny.splits.values():
        for ids, toks in zip(sp.tgt, sp.tgt_tok):
            assert tiny.tgt_vocab.decode(ids) == [w if w in tiny.tgt_vocab else "<unk>" for w in toks]
            assert BOS not in ids and EOS not in ids and PAD not in ids
    train_ids = {i for s in tiny.splits["train"].src for i in s}
    assert UNK not in train_ids
    assert any(UNK in s for s in tiny.splits["valid"].src)  # the training pairs do not cover valid


def test_vocab_decode_strip_specials_and_rebuild():
    v = TranslationVocab.build([["b", "a", "b"], ["c"]], min_freq=1)
    assert v.itos == ["<blank>", "<unk>", "<s>", "</s>", "b", "a", "c"]
    assert v.encode(["a", "zzz"]) == [5, UNK]
    assert v.decode([BOS, 4, UNK, PAD, 5, EOS, 6]) == ["b", "<unk>", "a"]
    assert v.decode(torch.tensor([[4, 5]])) == ["b", "a"]
    assert v.decode([BOS, 4, EOS], strip_specials=False) == ["<s>", "b", "</s>"]
    assert TranslationVocab.build([["b", "a", "b"], ["c"]], min_freq=2).itos[4:] == ["b"]
    assert TranslationVocab.build([["b", "a", "b"], ["c"]], max_vocab=2).itos[4:] == ["b", "a"]
    assert TranslationVocab(v.itos).stoi == v.stoi
    with pytest.raises(ValueError):
        TranslationVocab(["a", "b"])


def test_length_filter_applies_to_train_only(tiny_data_dir, cache_dir):
    cfg = TranslationDataConfig(data_dir=str(tiny_data_dir), download=False, verify=False, max_len=10, **TINY)
    c = load_parallel_corpus(cfg, cache_dir=cache_dir)
    train = c.splits["train"]
    assert c.n_filtered > 0 and len(train) == 200 - c.n_filtered
    assert all(len(s) <= 10 and len(t) <= 10 for s, t in zip(train.src_tok, train.tgt_tok))
    # kept pairs are the original lines, in order, and filtered ones really were too long
    dropped = sorted(set(range(200)) - set(train.line))
    assert train.line == sorted(train.line) and len(dropped) == c.n_filtered
    assert len(c.splits["valid"]) == 50 and len(c.splits["test"]) == 30
    assert any(len(s) > 10 or len(t) > 10 for s, t in zip(c.splits["valid"].src_tok, c.splits["valid"].tgt_tok))
    # vocabularies come from the filtered training pairs only
    assert set(c.tgt_vocab.itos[4:]) == {w for s in train.tgt_tok for w in s}


def test_reverse_direction_de_en(real_data_dir, cache_dir, small):
    cfg = TranslationDataConfig(data_dir=str(real_data_dir), download=False, src_lang="de", tgt_lang="en", **SMALL)
    c = load_parallel_corpus(cfg, cache_dir=cache_dir)
    assert c.src_vocab.itos == small.tgt_vocab.itos and c.tgt_vocab.itos == small.src_vocab.itos
    assert c.splits["test"].src_tok == small.splits["test"].tgt_tok
    assert c.splits["test"].tgt_raw[1].startswith("A Boston Terrier")


def test_config_validation():
    assert TranslationDataConfig().model_dump() == {
        "dataset": "multi30k", "data_dir": None, "download": True, "verify": True, "src_lang": "en", "tgt_lang": "de",
        "max_len": 50, "lowercase": True, "min_freq": 1, "max_vocab": 50_000,
        "n_train": None, "n_valid": None, "n_test": None,
    }
    for bad in ({"src_lang": "de"}, {"tgt_lang": "fr"}, {"dataset": "iwslt"}, {"vocab_size": 3}, {"n_test": 0}):
        with pytest.raises(ValidationError):
            TranslationDataConfig(**bad)


# --------------------------------------------------------------------------- batching


def test_bucketing_covers_every_index_once_with_similar_lengths(tiny):
    train = tiny.splits["train"]
    g = torch.Generator().manual_seed(0)
    batches = batch_indices(train, 16, shuffle=True, generator=g, pool_factor=4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(train)))
    assert all(1 <= len(b) <= 16 for b in batches)
    for b in batches:
        lens = [len(train.src[i]) for i in b]
        assert lens == sorted(lens, reverse=True)  # decreasing source length inside a batch
    # buckets are much tighter than random batches
    spread = sum(max(len(train.src[i]) for i in b) - min(len(train.src[i]) for i in b) for b in batches)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1)).tolist()
    rand = [perm[k:k + 16] for k in range(0, len(perm), 16)]
    rand_spread = sum(max(len(train.src[i]) for i in b) - min(len(train.src[i]) for i in b) for b in rand)
    assert spread * 2 < rand_spread


def test_bucketing_is_deterministic_for_a_generator_state(tiny):
    train = tiny.splits["train"]
    a = batch_indices(train, 32, True, torch.Generator().manual_seed(7))
    b = batch_indices(train, 32, True, torch.Generator().manual_seed(7))
    c = batch_indices(train, 32, True, torch.Generator().manual_seed(8))
    assert a == b and a != c


def test_evaluation_batches_are_sorted_and_stable(tiny):
    valid = tiny.splits["valid"]
    batches = batch_indices(valid, 32, shuffle=False)
    assert batches == batch_indices(valid, 32, shuffle=False)
    assert sorted(i for b in batches for i in b) == list(range(len(valid)))
    maxima = [max(len(valid.src[i]) for i in b) for b in batches]
    assert maxima == sorted(maxima)
    with pytest.raises(ValueError):
        batch_indices(valid, 0, shuffle=False)


def test_collate_shapes_and_special_placement(tiny):
    valid = tiny.splits["valid"]
    idx = batch_indices(valid, 7, shuffle=False)[3]
    batch = collate(valid, idx)
    B = len(idx)
    S = max(len(valid.src[i]) for i in idx)
    T = max(len(valid.tgt[i]) for i in idx) + 1
    assert batch.src.shape == (S, B) and batch.tgt_in.shape == (T, B) and batch.tgt_out.shape == (T, B)
    assert batch.src.dtype == batch.tgt_in.dtype == batch.tgt_out.dtype == torch.long
    assert batch.index.tolist() == idx and batch.size == B
    assert batch.src_len.tolist() == [len(valid.src[i]) for i in idx]
    assert batch.tokens == sum(len(valid.tgt[i]) + 1 for i in idx) == int((batch.tgt_out != -100).sum())
    for j, i in enumerate(idx):
        s, y = valid.src[i], valid.tgt[i]
        assert batch.src[: len(s), j].tolist() == s and (batch.src[len(s):, j] == PAD).all()
        assert batch.tgt_in[:, j].tolist() == [BOS] + y + [PAD] * (T - 1 - len(y))
        assert batch.tgt_out[:, j].tolist() == y + [EOS] + [-100] * (T - 1 - len(y))
    moved = batch.to("cpu")
    assert torch.equal(moved.tgt_out, batch.tgt_out) and moved.tokens == batch.tokens


# --------------------------------------------------------------------------- tokenisation cache


def _cfg(data_dir, **kw):
    return TranslationDataConfig(**{"data_dir": str(data_dir), "download": False, **SMALL, **kw})


def _tiny_cfg(data_dir, **kw):
    return _cfg(data_dir, verify=False, **{**TINY, **kw})


def _count_tokenised(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = tok.moses_tokenize

    def counting(lines, lang):
        lines = list(lines)
        calls.append(len(lines))
        return real(lines, lang)

    monkeypatch.setattr(tok, "moses_tokenize", counting)
    return calls


def _same(a, b):
    for split in ("train", "valid", "test"):
        x, y = a.splits[split], b.splits[split]
        assert (x.src, x.tgt, x.src_tok, x.tgt_tok, x.tgt_raw) == (y.src, y.tgt, y.src_tok, y.tgt_tok, y.tgt_raw)
    assert a.src_vocab.itos == b.src_vocab.itos and a.tgt_vocab.itos == b.tgt_vocab.itos


def test_cache_round_trip_and_prefix_extension(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("REVRNN_CACHE_DIR", str(tmp_path / "cache"))
    calls = _count_tokenised(monkeypatch)
    first = load_parallel_corpus(_tiny_cfg(tiny_data_dir, n_train=50, n_valid=20, n_test=20))
    assert sum(calls) == 2 * (50 + 20 + 20)
    files = sorted((tmp_path / "cache" / "tokenized").glob("*.json"))
    assert len(files) == 6 and not list((tmp_path / "cache" / "tokenized").glob("*.part"))

    calls.clear()
    again = load_parallel_corpus(_tiny_cfg(tiny_data_dir, n_train=50, n_valid=20, n_test=20))
    assert calls == [] and again is not first
    _same(first, again)

    calls.clear()  # larger limits: only the missing lines are tokenised, and the result equals a cold run
    more = load_parallel_corpus(_tiny_cfg(tiny_data_dir, n_train=80, n_valid=20, n_test=30))
    assert sum(calls) == 2 * (30 + 0 + 10)
    _same(more, load_parallel_corpus(_tiny_cfg(tiny_data_dir, n_train=80, n_valid=20, n_test=30), cache_dir=False))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"\x00garbage{"),
        lambda p: p.write_text(p.read_text()[:-40], encoding="utf-8"),  # truncated JSON
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "key": "0" * 64})),
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "lines": [1, 2, 3]})),
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "lines": [" x", "y"]})),
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "n_lines": 7})),
    ],
    ids=["binary", "truncated", "wrong-key", "wrong-type", "untrimmed", "other-file-length"],
)
def test_corrupt_cache_is_rebuilt(tiny_data_dir, tmp_path, monkeypatch, damage):
    cfg = _tiny_cfg(tiny_data_dir, n_train=40, n_valid=10, n_test=10)
    good = load_parallel_corpus(cfg, cache_dir=tmp_path)
    for p in (tmp_path / "tokenized").glob("*.json"):
        damage(p)
    calls = _count_tokenised(monkeypatch)
    rebuilt = load_parallel_corpus(cfg, cache_dir=tmp_path)
    assert sum(calls) == 2 * 60  # nothing trusted
    _same(good, rebuilt)
    calls.clear()
    load_parallel_corpus(cfg, cache_dir=tmp_path)
    assert calls == []  # and the rebuilt cache is good again


def test_cache_key_depends_on_file_content(tiny_data_dir, tmp_path):
    raw = m30k.read_multi30k(tiny_data_dir, download=False, splits=("test",), langs=("en",), verify=False)
    lines = list(raw.splits["test"].lines["en"])
    a = tok.tokenize_cached(lines, "en", "a" * 64, 5, tmp_path)
    lines[0] = "Something else entirely."
    b = tok.tokenize_cached(lines, "en", "b" * 64, 5, tmp_path)
    assert a[1:] == b[1:] and a[0] != b[0] == ["Something", "else", "entirely", "."]
    assert len(list((tmp_path / "tokenized").glob("moses-en-*.json"))) == 2


def test_unwritable_cache_only_warns(tiny_data_dir, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match="tokenisation cache"):
        c = load_parallel_corpus(_tiny_cfg(tiny_data_dir, n_train=20, n_valid=5, n_test=5), cache_dir=blocker)
    assert len(c.splits["valid"]) == 5


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("REVRNN_CACHE_DIR", str(tmp_path / "c"))
    assert tok.resolve_cache_dir() == tmp_path / "c"
    assert tok.resolve_cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("REVRNN_CACHE_DIR", "")
    assert tok.resolve_cache_dir() == Path("~/.cache/revrnn").expanduser().absolute()


# --------------------------------------------------------------------------- download (faked) and errors


def _hub_rows(real_dir: Path) -> dict:
    """Rows as the hub holds them: one string per sentence, same order; some with a trailing newline."""
    rows = {}
    for split, stem in FILES.items():
        rows[split] = {}
        for lang in ("en", "de"):
            lines = (real_dir / "multi30k" / f"{stem}.{lang}").read_text(encoding="utf-8").split("\n")[:-1]
            rows[split][lang] = lines
    return rows


def test_fake_download_writes_the_standard_layout(real_data_dir, tmp_path, monkeypatch):
    calls = []

    def fake_fetch():
        calls.append(1)
        rows = _hub_rows(real_data_dir)
        rows["valid"]["en"] = [r + "\n" for r in rows["valid"]["en"]]  # row terminators are dropped
        return rows

    monkeypatch.setattr(m30k, "fetch_multi30k_rows", fake_fetch)
    c = load_parallel_corpus(_cfg(tmp_path, n_train=30, n_valid=10, n_test=10, download=True),
                             cache_dir=tmp_path / "cache")
    assert calls == [1] and c.paper_bytes
    names = sorted(p.name for p in (tmp_path / "multi30k").iterdir())
    assert names == sorted(f"{s}.{lang}" for s in FILES.values() for lang in ("en", "de"))
    for name in names:
        assert (tmp_path / "multi30k" / name).read_bytes() == (real_data_dir / "multi30k" / name).read_bytes()
    load_parallel_corpus(_cfg(tmp_path, download=True), cache_dir=tmp_path / "cache")
    assert calls == [1]  # files present: no second fetch


def test_fake_download_only_fills_missing_files(real_data_dir, tmp_path, monkeypatch):
    (tmp_path / "multi30k").mkdir()
    mine = (real_data_dir / "multi30k" / "val.de").read_bytes().replace(b"Ein ", b"EIN ")
    (tmp_path / "multi30k" / "val.de").write_bytes(mine)
    monkeypatch.setattr(m30k, "fetch_multi30k_rows", lambda: _hub_rows(real_data_dir))
    c = load_parallel_corpus(_cfg(tmp_path, download=True), cache_dir=tmp_path / "cache")
    assert (tmp_path / "multi30k" / "val.de").read_bytes() == mine
    assert not c.paper_bytes  # a different copy is accepted, and reported


def test_unexpected_hub_rows_are_rejected_before_writing(real_data_dir, tmp_path, monkeypatch):
    def short_fetch():
        rows = _hub_rows(real_data_dir)
        rows["test"]["de"] = rows["test"]["de"][:-1]
        return rows

    monkeypatch.setattr(m30k, "fetch_multi30k_rows", short_fetch)
    with pytest.raises(DataError) as info:
        load_parallel_corpus(_cfg(tmp_path, download=True), cache_dir=False)
    msg = str(info.value)
    assert "\n" not in msg and "999" in msg and "bentrevett/multi30k" in msg
    assert not (tmp_path / "multi30k").exists() or not any((tmp_path / "multi30k").iterdir())


def test_missing_files_offline_is_a_one_line_error(tmp_path, monkeypatch):
    def offline():
        raise dl.HubUnreachable("Hugging Face hub unreachable: cannot connect to huggingface.co:443")

    monkeypatch.setattr(m30k, "fetch_multi30k_rows", offline)
    with pytest.raises(DataError) as info:
        load_parallel_corpus(_cfg(tmp_path, download=True), cache_dir=False)
    msg = str(info.value)
    assert "\n" not in msg and "unreachable" in msg
    assert str(tmp_path / "multi30k") in msg and "train.en" in msg and "test2016.de" in msg
    assert "--data-dir" in msg and "REVRNN_DATA_DIR" in msg
    assert info.value.path == tmp_path / "multi30k"


def test_real_fetch_respects_hub_offline_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE"):
        load_parallel_corpus(_cfg(tmp_path, download=True), cache_dir=False)


def test_download_disabled_never_fetches(tmp_path, monkeypatch):
    def must_not_run():
        raise AssertionError("fetch called with download=False")

    monkeypatch.setattr(m30k, "fetch_multi30k_rows", must_not_run)
    with pytest.raises(DataError, match="downloading is disabled"):
        load_parallel_corpus(_cfg(tmp_path), cache_dir=False)


@pytest.mark.parametrize(
    "damage, expect",
    [
        (lambda b: b[: b.rindex(b"\n", 0, len(b) - 1) + 1], "truncated Multi30k valid file: expected 1,014 lines"),
        (lambda b: b.replace(b"\n", b"\n\n", 1)[: -(len(b.split(b"\n")[-2]) + 1)], "line 2 is empty"),
        (lambda b: b + b"one more line\n", "corrupt Multi30k valid file: expected 1,014 lines (one sentence each), found 1,015"),
        (lambda b: b"\xff" + b, "not valid UTF-8"),
    ],
    ids=["truncated", "empty-line", "extra-line", "not-utf8"],
)
def test_damaged_files_give_one_line_errors(m30k_copy, damage, expect):
    path = m30k_copy / "multi30k" / "val.en"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as info:
        load_parallel_corpus(_cfg(m30k_copy), cache_dir=False)
    msg = str(info.value)
    assert "\n" not in msg and expect in msg and str(path) in msg


def test_importing_the_package_does_not_import_sacremoses_or_sacrebleu():
    root = Path(__file__).resolve().parents[2]
    code = ("import sys, revrnn_cli.data, revrnn_cli.evaluation, revrnn_cli.models.search; "
            "print(sorted(m for m in ('sacremoses', 'sacrebleu', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_verify_false_reads_other_line_counts_but_keeps_sides_parallel(tiny_data_dir, tmp_path):
    with pytest.raises(DataError, match="expected 29,000 lines"):
        m30k.read_multi30k(tiny_data_dir, download=False)
    raw = m30k.read_multi30k(tiny_data_dir, download=False, verify=False)
    assert len(raw.splits["valid"]) == len((tiny_data_dir / "multi30k" / "val.en").read_text().splitlines())
    shutil.copytree(tiny_data_dir / "multi30k", tmp_path / "multi30k")
    path = tmp_path / "multi30k" / "val.de"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DataError) as info:
        m30k.read_multi30k(tmp_path, download=False, verify=False)
    msg = str(info.value)
    assert "\n" not in msg and "val.en" in msg and "val.de" in msg and "not parallel" in msg
