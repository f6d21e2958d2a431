"""Training logs the health of a reversible model's states: the largest |state| and the fraction of
forget gates quantised to exactly 1 per interval, in metrics.jsonl and the run summary, and warns
once, with the remedy, when a state grows toward the bound."""

from __future__ import annotations

import json

import yaml

from revrnn_cli import runner
from revrnn_cli.training import loop
from revrnn_cli.training.metrics import read_metrics

SPEC = {
    "name": "health",
    "seed": 3,
    "data": {"dataset": "repeat", "vocab_size": 5, "seq_len": 12, "n_train": 64, "n_valid": 16, "n_test": 16},
    "model": {"cell": "revlstm", "emb_size": 8, "hidden_size": 8, "layers": 1, "dropout": 0.0, "dropouti": 0.0,
              "dropoute": 0.0, "wdrop": 0.0, "chunk": 4},
    "train": {"lr": 1.0, "clip": 1.0, "batch_size": 8, "eval_batch_size": 16, "random_bptt": False, "epochs": 1,
              "schedule": "none", "log_interval": 2},
}


def _train(tmp_path, name):
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    return runner.train(spec, [], run_dir=tmp_path / name, progress=False)


def test_intervals_and_summary_report_state_health(tmp_path):
    summary = _train(tmp_path, "a")
    recs = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["event"] == "train"]
    assert recs and all(0 < r["max_state"] < 10 and 0 <= r["saturated_gates"] <= 1 for r in recs)
    assert summary["max_state"] == max(r["max_state"] for r in recs)
    assert "kernels" in json.loads((tmp_path / "a" / "environment.json").read_text())


def test_one_warning_with_the_remedy_when_a_state_grows(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "STATE_WARN", 1e-3)  # every state of this run passes it
    _train(tmp_path, "b")
    err = capsys.readouterr().err
    assert err.count("warning: a recurrent state reached") == 1
    assert "train.clip" in err and "train.lr" in err


def test_no_warning_for_healthy_states(tmp_path, capsys):
    _train(tmp_path, "c")
    assert "recurrent state reached" not in capsys.readouterr().err
