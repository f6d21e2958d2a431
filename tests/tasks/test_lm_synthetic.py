"""The toy-task experiments (paper §4): the repeat_* / remember_* specs, learning through the
real runner, and the sweep script's stopping rule and table (scripts/sweep_repeat.py).

The training runs are small (a 16-unit GRU, a few hundred sequences) and take about 2 s each on one
thread; the data generators themselves are tested in tests/data/test_data_synthetic.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from revrnn_cli import runner
from revrnn_cli.spec import load_spec
from revrnn_cli.tasks.lm import LMTask

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
REPEAT = {"gru": ("gru", True), "revgru": ("revgru", True), "nf_revgru": ("revgru", False),
          "lstm": ("lstm", True), "revlstm": ("revlstm", True), "nf_revlstm": ("revlstm", False)}
TOY_SPECS = sorted(EXPERIMENTS.glob("repeat_*.yaml")) + sorted(EXPERIMENTS.glob("remember_*.yaml"))
# a tiny GRU that learns the repeat task in a few seconds (8 epochs of 20 batches)
TINY = ["data.seq_len=10", "model.emb_size=16", "model.hidden_size=16", "data.n_train=640", "data.n_valid=100",
        "data.n_test=100", "train.epochs=8"]


def _sweep_module():
    spec = importlib.util.spec_from_file_location("sweep_repeat", ROOT / "scripts" / "sweep_repeat.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- the specs ------------------------------------------------------------------------------------

def test_every_repeat_model_has_a_spec():
    assert {p.stem for p in EXPERIMENTS.glob("repeat_*.yaml")} == {f"repeat_{m}" for m in REPEAT}
    assert {"remember_gru", "remember_revgru"} <= {p.stem for p in EXPERIMENTS.glob("remember_*.yaml")}


@pytest.mark.parametrize("path", TOY_SPECS, ids=lambda p: p.stem)
def test_toy_specs_validate_and_name_what_they_train(path):
    spec, _ = load_spec(path)
    task, model = path.stem.split("_", 1)
    assert spec.name == path.stem and spec.data.dataset == task and spec.data.synthetic
    cell, forget = REPEAT[model]
    assert (spec.model.cell, spec.model.forget) == (cell, forget)
    # one layer, whose width is emb_size (tied softmax): hidden_size is kept equal so the spec reads true
    assert spec.model.layers == 1 and spec.model.emb_size == spec.model.hidden_size
    m = spec.model
    assert m.dropout == m.dropouth == m.dropouti == m.dropoute == m.wdrop == 0.0
    if spec.model.reversible and forget:
        assert spec.model.max_forget_bits == 3


def test_repeat_specs_differ_only_in_the_model():
    """A like-for-like comparison: same data, size and training, only cell / forget (and backprop) differ."""
    base = load_spec(EXPERIMENTS / "repeat_gru.yaml")[1]
    for model in REPEAT:
        cfg = load_spec(EXPERIMENTS / f"repeat_{model}.yaml")[1]
        assert cfg["data"] == base["data"] and cfg["seed"] == base["seed"]
        assert {k: v for k, v in cfg["train"].items() if k != "backprop"} == \
               {k: v for k, v in base["train"].items() if k != "backprop"}
        assert {k: v for k, v in cfg["model"].items() if k not in ("cell", "forget", "max_forget_bits")} == \
               {k: v for k, v in base["model"].items() if k not in ("cell", "forget", "max_forget_bits")}


def test_task_data_follow_the_spec_and_its_seed():
    spec, _ = load_spec(EXPERIMENTS / "remember_gru.yaml", ["data.seq_len=4", "data.n_train=8"])
    a, b = LMTask(spec, torch.device("cpu")), LMTask(spec, torch.device("cpu"))
    other = LMTask(load_spec(EXPERIMENTS / "remember_gru.yaml", ["data.seq_len=4", "data.n_train=8", "seed=7"])[0],
                   torch.device("cpu"))
    for split in ("train", "valid", "test"):
        assert torch.equal(a.splits[split][0], b.splits[split][0]) and torch.equal(a.splits[split][1], b.splits[split][1])
    assert not torch.equal(a.splits["train"][0], other.splits["train"][0])
    x, y = a.splits["train"]  # [T, B]: time first, as the model reads it
    assert x.shape == y.shape == (8, 8)
    assert torch.equal(y[4:], x[:4]) and bool((x[4:] == spec.data.vocab_size).all())
    assert a.vocab_size == spec.data.vocab_size + 1  # the data symbols and BLANK


# ---- learning through the real runner -------------------------------------------------------------

def test_a_tiny_gru_learns_the_repeat_task(tmp_path):
    spec = EXPERIMENTS / "repeat_gru.yaml"
    summary = runner.train(spec, TINY, run_dir=tmp_path / "run", progress=False)
    chance = 1 / 8
    assert summary["valid_accuracy"] >= 0.9 > 4 * chance
    test = runner.evaluate(tmp_path / "run", split="test")
    assert test["accuracy"] >= 0.9 and test["tokens"] == 100 * 9  # targets: seq_len - 1 per sequence
    assert test["epoch"] == 8


def test_untrained_model_is_at_chance():
    spec, _ = load_spec(EXPERIMENTS / "repeat_gru.yaml", TINY)
    torch.manual_seed(0)
    task = LMTask(spec, torch.device("cpu"))
    assert task.evaluate("valid")["accuracy"] < 0.3


@pytest.mark.parametrize("model", ["nf_revgru", "revlstm"])
def test_reversible_toy_specs_train_by_reversal(tmp_path, model):
    overrides = ["data.seq_len=6", "model.emb_size=8", "model.hidden_size=8", "data.n_train=64", "data.n_valid=16",
                 "data.n_test=16", "train.epochs=1"]
    summary = runner.train(EXPERIMENTS / f"repeat_{model}.yaml", overrides, run_dir=tmp_path / "run", progress=False)
    assert summary["steps"] == 2 and 0.0 <= summary["valid_accuracy"] <= 1.0
    # the buffer's memory ratios: none for the no-forgetting cell, which stores nothing
    assert ("ratio_used" in summary) == (model == "revlstm")
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(e["event"] == "valid" and "accuracy" in e for e in events)


# ---- the sweep script -----------------------------------------------------------------------------

def test_sweep_stops_a_configuration_at_the_target():
    sweep = _sweep_module()
    row = sweep.train_one(EXPERIMENTS / "repeat_gru.yaml", 10, 16, target=0.95, patience=6,
                          extra=["data.n_train=640", "data.n_valid=100", "data.n_test=100"])
    assert row["reached"] and row["stopped"] == "target"
    assert row["epochs"] < row["max_epochs"] and row["steps"] == 20 * row["epochs"]
    assert row["valid_accuracy_by_epoch"][-1] >= 0.95 > max(row["valid_accuracy_by_epoch"][:-1], default=0)
    assert (row["seq_len"], row["hidden"], row["cell"], row["forget"]) == (10, 16, "gru", True)


def test_sweep_table_reports_the_smallest_size_or_the_best_accuracy():
    sweep = _sweep_module()

    def row(model, k, h, acc, epochs=5):
        return {"task": "repeat", "spec": f"repeat_{model}", "seq_len": k, "hidden": h, "reached": acc >= 0.99,
                "best_valid_accuracy": acc, "epochs": epochs, "stopped": "target" if acc >= 0.99 else "plateau"}

    rows = [row("gru", 5, 2, 0.5), row("gru", 5, 4, 0.995, 3), row("nf_revgru", 5, 4, 0.6), row("nf_revgru", 5, 8, 0.8),
            row("nf_revgru", 10, 4, 0.3)]
    lines = sweep.table(rows).splitlines()
    assert lines[0] == "| model | T = 5 | T = 10 |"
    assert lines[2] == "| GRU | **4** (3 ep) |  |"
    assert lines[3] == "| NF-RevGRU (no forgetting) | > 8: best 0.800 at 8 | > 4: best 0.300 at 4 |"
    grid = sweep.accuracy_grid(rows).splitlines()
    assert grid[0] == "| model | T | H = 2 | H = 4 | H = 8 |"
    assert grid[2] == "| GRU | 5 | 0.500ᵖ | 0.995 |  |"
