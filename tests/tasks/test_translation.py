"""Translation through the shared runner: train -> evaluate (BLEU, translations), exact resume, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from revrnn_cli import runner
from revrnn_cli.cli import main
from revrnn_cli.training.checkpoint import load_checkpoint

TINY = {
    "task": "translation",
    "name": "m30k_tiny",
    "seed": 3,
    "device": "cpu",
    "data": {"dataset": "multi30k", "n_train": 96, "n_valid": 24, "n_test": 12},
    "model": {"cell": "revgru", "emb_size": 16, "hidden_size": 16, "context": "emb+slice:4", "chunk": 4},
    "train": {"lr": 0.5, "clip": 5, "batch_size": 16, "eval_batch_size": 8, "epochs": 2, "schedule": "halve_on_rise",
              "lr_decay": 2, "weight_decay": 0, "log_interval": 2},
    "decode": {"beam_size": 3, "max_len": 20, "batch_size": 8},
}


@pytest.fixture(scope="module")
def tiny(tiny_data) -> dict:
    """TINY reading the suite's tiny Multi30k files."""
    return {**TINY, "data": {**TINY["data"], **tiny_data}}


def write(tmp_path, spec: dict, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return path


def records(path, event):
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == event]


def strip_time(rows):
    return [{k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    tmp = tmp_path_factory.mktemp("m30k")
    run = tmp / "run"
    summary = runner.train(write(tmp, tiny), [], run_dir=run, progress=False)
    return run, summary


def test_train_logs_encoder_and_decoder_memory(trained):
    run, summary = trained
    assert summary["stopped"] == "finished" and summary["epochs"] == 2
    assert math.isfinite(summary["valid_ppl"])
    for side in ("enc", "dec"):
        assert summary[f"{side}_ratio_used"] > 1  # both sides keep less than ordinary BPTT would
    train = records(run / "metrics.jsonl", "train")
    assert train and all("enc_ratio_used" in r and "dec_ratio_used" in r for r in train)
    valid = records(run / "metrics.jsonl", "valid")
    assert len(valid) == 2 and all(math.isfinite(r["ppl"]) for r in valid)


def test_evaluate_translates_and_scores(trained):
    run, _ = trained
    beam = runner.evaluate(run, "test", beam=None)
    assert beam["beam"] == 3 and beam["sentences"] == 12
    assert 0.0 <= beam["bleu"] <= 100.0 and 0.0 <= beam["bleu_tok"] <= 100.0
    assert "case:lc" in beam["bleu_signature"] and "tok:13a" in beam["bleu_signature"]
    lines = (run / "translations" / "test.best.beam3.txt").read_text().splitlines()
    assert len(lines) == 12
    assert len((run / "translations" / "test.best.beam3.tok").read_text().splitlines()) == 12
    greedy = runner.evaluate(run, "test", beam=1, max_sentences=5)
    assert greedy["sentences"] == 5 and (run / "translations" / "test.best.greedy.first5.txt").is_file()
    assert greedy["loss"] == beam["loss"]  # teacher-forced perplexity does not depend on decoding


def test_resume_is_exact(tmp_path, tiny):
    spec = write(tmp_path, tiny)
    full, part = tmp_path / "full", tmp_path / "part"
    runner.train(spec, [], run_dir=full, progress=False)
    runner.train(spec, ["train.max_steps=4"], run_dir=part, progress=False)  # stops mid-epoch 1
    runner.train(None, ["train.max_steps=9"], resume=part, progress=False)  # and mid-epoch 2
    runner.train(None, ["train.max_steps=null"], resume=part, progress=False)
    for event in ("train", "valid"):
        assert strip_time(records(part / "metrics.jsonl", event)) == strip_time(records(full / "metrics.jsonl", event))
    end_a, end_b = (strip_time(records(d / "metrics.jsonl", "end"))[-1] for d in (full, part))
    assert {**end_b, "run_dir": None} == {**end_a, "run_dir": None}
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(part / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_baseline_and_store_mode_train(tmp_path, tiny):
    for overrides in (["model.cell=lstm", "model.context=hidden"], ["train.backprop=store"]):
        s = runner.train(write(tmp_path, tiny), overrides + ["train.epochs=1", "train.max_steps=2"],
                         run_dir=tmp_path / "_".join(overrides).replace("=", "-"), progress=False)
        assert s["steps"] == 2 and math.isfinite(s["valid_loss"])


@pytest.mark.parametrize("override,needle", [
    ("model.context=slice:9", "model: context slice:N takes the first N units of h1: N must be in 1..8"),
    ("model.context=attn", "model.context: must be hidden, emb, slice:N or emb+slice:N"),
    ("model.cell=gru", "model: the gru baseline attends over its full hidden state"),
    ("decode.beam_size=0", "decode.beam_size"),
    ("data.src_lang=fr", "data.src_lang"),
    ("task=mt", "task: must be one of lm, translation"),
])
def test_spec_errors_are_one_line_exit_2(tmp_path, capsys, override, needle):
    with pytest.raises(SystemExit) as e:
        main(["train", str(write(tmp_path, TINY)), "--set", override])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "Traceback" not in err
