"""`revrnn translate` on a tiny translation run trained on a Multi30k-shaped corpus written here:
one line out per line in (empty ones too, in order), the training data's tokenisation, evaluate's
decoding, streaming; and the mistakes a user can make (wrong kind of run, missing or undecodable input)."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest
import yaml

from revrnn_cli import cli, runner
from revrnn_cli.data.multi30k import MULTI30K_FILES, MULTI30K_LINES
from revrnn_cli.data.translation import load_parallel_corpus
from revrnn_cli.errors import EXIT_DATA, EXIT_OK, EXIT_USAGE
from revrnn_cli.spec import load_spec
from revrnn_cli.tasks.translate_text import Translator

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.yaml"
NOUNS = {"dog": "Hund", "cat": "Katze", "man": "Mann", "woman": "Frau", "child": "Kind", "horse": "Pferd"}
ADJS = {"red": "rote", "small": "kleine", "old": "alte", "happy": "frohe"}
VERBS = {"runs": "läuft", "sleeps": "schläft", "jumps": "springt", "sits": "sitzt"}


def write_corpus(root: Path) -> None:
    """Raw, cased, punctuated sentence pairs with the published line counts (the loader checks them)."""
    d = root / "multi30k"
    d.mkdir(parents=True)
    rng = random.Random(0)
    for split, stem in MULTI30K_FILES.items():
        en, de = [], []
        for _ in range(MULTI30K_LINES[split]):
            a, n, v = rng.choice(list(ADJS)), rng.choice(list(NOUNS)), rng.choice(list(VERBS))
            en.append(f"A {a} {n} {v}.")
            de.append(f"Die {ADJS[a]} {NOUNS[n]} {VERBS[v]}.")
        (d / f"{stem}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (d / f"{stem}.de").write_text("\n".join(de) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("translate")
    write_corpus(tmp / "data")
    spec = {"task": "translation", "name": "mt_tiny", "seed": 3, "device": "cpu",
            "data": {"dataset": "multi30k", "data_dir": str(tmp / "data"), "download": False,
                     "n_train": 128, "n_valid": 16, "n_test": 8},
            "model": {"cell": "revgru", "emb_size": 16, "hidden_size": 16, "context": "emb+slice:4", "chunk": 4},
            "train": {"lr": 0.5, "clip": 5, "batch_size": 16, "eval_batch_size": 8, "epochs": 1, "weight_decay": 0,
                      "log_interval": 4},
            "decode": {"beam_size": 3, "max_len": 12, "batch_size": 4}}
    (tmp / "mt.yaml").write_text(yaml.safe_dump(spec))
    runner.train(tmp / "mt.yaml", [], run_dir=tmp / "mt", progress=False)
    runner.train(QUICKSTART, ["data.seq_len=8", "data.n_train=64", "data.n_valid=32", "train.epochs=1"],
                 run_dir=tmp / "lm", progress=False)
    return {"mt": tmp / "mt", "lm": tmp / "lm", "spec": tmp / "mt.yaml", "tmp": tmp}


def _main(argv, stdin: bytes | None = None, monkeypatch=None) -> int:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    return e.value.code


LINES = ["A red dog runs.", "", "A Zebra SLEEPS!", "   ", "An old horse jumps.", "A cat sits.", ""]


def test_stdin_gives_one_line_per_input_line_in_order(runs, capsys, monkeypatch):
    data = ("\n".join(LINES) + "\n").encode()
    assert _main(["translate", runs["mt"], "--batch", "2", "--json"], data, monkeypatch) == EXIT_OK
    out, err = capsys.readouterr()
    recs = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in recs] == list(range(1, len(LINES) + 1))
    for line, rec in zip(LINES, recs):
        # tokenised and lowercased as the training data were (Moses, then lowercase)
        assert rec["source_tokens"] == (line.lower().replace(".", " .").replace("!", " !").split())
        if line.strip():
            assert isinstance(rec["score"], float) and rec["score"] <= 0
        else:
            assert rec["translation"] == "" and rec["score"] is None
    assert f"translated {len(LINES)} line(s) (3 empty)" in err
    # the plain output: the same translations, one line each, empty lines kept
    assert _main(["translate", runs["mt"], "--batch", "3"], data, monkeypatch) == EXIT_OK
    out, _ = capsys.readouterr()
    assert out.split("\n")[:-1] == [r["translation"] for r in recs]


def test_translations_are_evaluates(runs, capsys, monkeypatch):
    """The test split's raw sources through `translate` give what `evaluate` wrote for them."""
    result = runner.evaluate(runs["mt"], "test", beam=1)
    expected = Path(result["translations"]).read_text(encoding="utf-8").splitlines()
    spec, _ = load_spec(runs["spec"])
    test = load_parallel_corpus(spec.data).splits["test"]
    source = runs["tmp"] / "test.en"
    source.write_text("\n".join(test.src_raw) + "\n", encoding="utf-8")
    assert _main(["translate", runs["mt"], "--input", source, "--beam", "1", "--json"]) == EXIT_OK
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source_tokens"] for r in recs] == test.src_tok
    assert [r["translation"] for r in recs] == expected


def test_translations_stream_batch_by_batch(runs):
    translator = Translator(runs["mt"], batch=2, beam=1)
    read = []

    def lines():
        for line in LINES:
            read.append(line)
            yield line

    it = translator.stream(lines())
    first = next(it)
    assert first["line"] == 1 and len(read) == 2  # written before the rest of the input was read
    assert len(list(it)) == len(LINES) - 1


def test_task_mismatch_is_one_line_exit_2(runs, capsys):
    for command, run, needle in (("translate", runs["lm"], "use revrnn generate"),
                                 ("generate", runs["mt"], "use revrnn translate")):
        assert _main([command, run]) == EXIT_USAGE
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and needle in err


def test_input_mistakes(runs, capsys):
    assert _main(["translate", runs["mt"], "--input", runs["tmp"] / "missing.en"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--input" in err and "missing.en" in err and len(err.strip().splitlines()) == 1
    bad = runs["tmp"] / "latin1.en"
    bad.write_bytes("A dog runs.\nA caf\xe9 sits.\n".encode("latin-1"))
    assert _main(["translate", runs["mt"], "--input", bad]) == EXIT_DATA
    err = capsys.readouterr().err
    assert f"{bad}: line 2 is not valid UTF-8" in err and len(err.strip().splitlines()) == 1
    assert _main(["translate", runs["mt"], "--beam", "0"]) == EXIT_USAGE
    assert "--beam" in capsys.readouterr().err
