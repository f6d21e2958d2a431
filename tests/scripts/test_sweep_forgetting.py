"""scripts/sweep_forgetting.py without training: a row read from a synthetic run directory (memory
ratios combined as `revrnn compare` combines them, the state's health, CPU time over attempts,
divergence), and the tables and summary made from synthetic rows."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sweep_forgetting.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_forgetting", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _run_dir(tmp: Path, cell="revlstm", bits=3, valid=(300.0, 200.0), train=()) -> Path:
    run = tmp / "run"
    run.mkdir(parents=True)
    config = {"seed": 1111, "data": {"dataset": "ptb"},
              "model": {"cell": cell, "emb_size": 256, "hidden_size": 256, "layers": 1, "max_forget_bits": bits,
                        "cell_update": "paper"},
              "train": {"epochs": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    recs = [{"event": "start", "kernels": "fused C++ operators (cpu)", "parameters": 123, "time": 0.0}]
    recs += [{"event": "train", "epoch": 1, "step": 100 * (i + 1), "tokens_per_s": 1000.0 * (i + 1), "time": 60.0 * (i + 1),
              **t} for i, t in enumerate(train)]
    recs += [{"event": "valid", "epoch": e + 1, "ppl": v, "time": 200.0 + e} for e, v in enumerate(valid)]
    recs += [{"event": "end", "stopped": "finished", "epochs": len(valid), "max_state": 7.5, "time": 300.0}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return run


def test_a_row_combines_the_intervals_as_compare_does(sweep, tmp_path):
    train = [{"ratio_used": 20.0, "ratio_optimal": 25.0, "max_state": 3.0, "saturated_gates": 0.1},
             {"ratio_used": 40.0, "ratio_optimal": 50.0, "max_state": 9.0, "saturated_gates": 0.3}]
    run = _run_dir(tmp_path, train=train)
    p = sweep.Planned("ptb", "ptb_revlstm_small", ("model.max_forget_bits=3", sweep.PAPER))
    attempts = [{"step": "train", "rc": 143, "wall_s": 10.0, "cpu_s": 9.0},  # stopped, then resumed
                {"step": "train", "rc": 0, "wall_s": 20.0, "cpu_s": 18.0},
                {"step": "evaluate", "rc": 0, "wall_s": 3.0, "cpu_s": 2.5}]
    row = sweep.build_row(p, run, attempts, {"ppl": 190.0, "loss": math.log(190.0), "epoch": 2}, ["cmd"])
    assert row["ratio_used"] == pytest.approx(2 / (1 / 20 + 1 / 40))  # normal/used of the summed bits
    assert row["used_over_optimal"] == pytest.approx((1 / 20 + 1 / 40) / (1 / 25 + 1 / 50))
    assert row["ratio_optimal"] == pytest.approx(2 / (1 / 25 + 1 / 50))
    assert row["tokens_per_s"] == pytest.approx(1500.0)
    assert row["max_state"] == 9.0 and row["saturated_gates"] == pytest.approx(0.2)
    assert row["saturated_gates_last"] == pytest.approx(0.3)
    assert row["valid_ppl_by_epoch"] == [300.0, 200.0] and row["best_valid_ppl"] == 200.0
    assert (row["bits"], row["cell_update"], row["layers"], row["reversible"]) == (3, "paper", 1, True)
    assert (row["cpu_s"], row["train_cpu_s"], row["wall_s"], row["attempts"]) == (29.5, 27.0, 33.0, 2)
    assert row["test_ppl"] == 190.0 and row["exit_code"] == 0 and not row["diverged"]
    assert row["run"] == "ptb_revlstm_small__max_forget_bits=3__cell_update=paper"


def test_divergence_is_kept_with_its_reason(sweep, tmp_path):
    assert sweep.diverged_reason(0, [300.0, 200.0]) is None
    assert "exit 4" in sweep.diverged_reason(4, [300.0])
    assert "exit 5" in sweep.diverged_reason(5, [])
    assert "non-finite" in sweep.diverged_reason(0, [300.0, math.inf])
    assert "worse than the first" in sweep.diverged_reason(0, [300.0, 250.0, 310.0])
    run = _run_dir(tmp_path, bits=None, valid=(300.0,))
    row = sweep.build_row(sweep.Planned("ptb", "ptb_revlstm_small"), run, [{"step": "train", "rc": 4, "wall_s": 1.0,
                                                                            "cpu_s": 1.0}], None, [])
    assert row["diverged"] and row["bits"] == "none" and row["test_ppl"] is None


def _row(cell, bits=None, test=100.0, used=None, layers=1, dataset="ptb", diverged=None, cpu=600.0, epochs=4):
    rev = cell.startswith("rev")
    return {"spec": f"{dataset}_{cell}_small", "overrides": [] if bits is None else [f"model.max_forget_bits={bits}"],
            "run": f"{cell}-{bits}", "dataset": dataset, "cell": cell, "layers": layers, "reversible": rev,
            "bits": bits if rev else None, "cell_update": "paper", "valid_ppl_by_epoch": [2 * test, test + 5.0],
            "best_valid_ppl": test + 5.0, "test_ppl": test, "ratio_used": used, "ratio_optimal": used and used * 1.1,
            "used_over_optimal": used and 1.1, "tokens_per_s": 1234.0, "max_state": 8.0 if rev else None,
            "saturated_gates": 0.01 if rev else None, "cpu_s": cpu, "wall_s": cpu, "epochs": 2,
            "epochs_planned": epochs,
            "diverged": diverged is not None, "diverged_reason": diverged}


def test_tables_group_sort_and_compare_with_the_baseline(sweep):
    rows = [_row("revlstm", "none", 130.0, 10.0), _row("revlstm", 3, 110.0, 20.0), _row("lstm", test=100.0),
            _row("revlstm", 1, 150.0, 40.0, diverged="exit 4"), _row("gru", test=120.0),
            _row("revgru", 3, 126.0, 44.0), _row("lstm", test=90.0, dataset="wikitext2"),
            _row("lstm", test=95.0, layers=2), _row("revlstm", 3, 99.0, 20.0, dataset="wikitext2", epochs=1),
            _row("lstm", test=200.0, dataset="wikitext2", epochs=1)]
    text = sweep.table(rows)
    sections = [line for line in text.splitlines() if line.startswith("**")]
    assert sections == ["**Penn Treebank, 1 layer, 4 epochs**", "**Penn Treebank, 2 layers, 4 epochs**",
                        "**WikiText-2, 1 layer, 4 epochs**", "**WikiText-2, 1 layer, 1 epoch**"]
    # a shorter training is its own table, compared with the baseline trained as long
    assert "-50.5%" in text.split("1 epoch**")[1]
    ptb = text.split("**Penn Treebank, 2 layers")[0]
    models = [line.split("|")[1].strip() + " " + line.split("|")[2].strip() for line in ptb.splitlines()
              if line.startswith("| ") and not line.startswith("| model")]
    assert models == ["LSTM -", "RevLSTM 1", "RevLSTM 3", "RevLSTM none", "GRU -", "RevGRU 3"]
    assert "+10.0%" in ptb and "+30.0%" in ptb and "+5.0%" in ptb  # test ppl against the same-cell baseline
    assert "**yes**: exit 4" in ptb and "20.0×" in ptb and "22.0×" in ptb and "1.100" in ptb
    planned = [sweep.Planned("ptb", "ptb_lstm_small"), sweep.Planned("ptb", "ptb_gru_small", ("model.layers=2",))]
    s = sweep.summary(rows, planned)
    assert "total CPU time 1.67 h" in s and "revlstm-1 (exit 4)" in s
    assert "Missing: ptb_gru_small__layers=2" in s


def test_the_plan_puts_the_most_informative_rows_first(sweep):
    plan = sweep.plan()
    assert [p.group for p in plan] == sorted((p.group for p in plan), key=sweep.GROUPS.index)
    assert plan[0].overrides == ("model.max_forget_bits=3", sweep.PAPER)  # the paper's RevLSTM, explicitly
    assert len({p.key for p in plan}) == len(plan) == 23
    bounded = [p for p in plan if "model.cell_update=bounded" in p.overrides]  # the 2-layer row that trains
    assert [p.group for p in bounded] == ["ptb-2layer"] and "model.layers=2" in bounded[0].overrides
    assert all(sweep.PAPER in p.overrides for p in plan if "revlstm" in p.spec and p not in bounded)
    assert not any(sweep.PAPER in p.overrides for p in plan if "revlstm" not in p.spec)


def test_a_row_is_claimed_by_one_worker_at_a_time(sweep, tmp_path):
    p = sweep.Planned("ptb", "ptb_lstm_small")
    lock = tmp_path / f"{p.name}.lock"
    lock.write_text("1")  # a live process (init) holds it
    assert not sweep.claim(tmp_path, p) and sweep.others_running(tmp_path) == 1
    lock.write_text("999999999")  # a worker that died: its lock is taken over
    assert sweep.claim(tmp_path, p) and lock.read_text() == str(os.getpid())
    assert sweep.others_running(tmp_path) == 0
    sweep.release(tmp_path, p)
    assert not lock.exists()


def test_a_killed_worker_resumes_from_its_checkpoint(sweep, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert not sweep.should_resume(run, None)  # nothing to continue from: train afresh
    (run / "last.pt").write_bytes(b"x")
    assert sweep.should_resume(run, None)  # killed before it could record an attempt
    assert sweep.should_resume(run, 143)  # stopped by SIGTERM
    for rc in (0, sweep.EXIT_NONFINITE, sweep.EXIT_NUMERIC):  # ended on its own: no resume
        assert not sweep.should_resume(run, rc)


def test_a_blow_up_that_recovers_is_marked_unstable_not_diverged(sweep, tmp_path):
    train = [{"loss": 66716.8, "grad_norm": 4e4, "epoch": 1}, {"loss": 5.2, "grad_norm": 0.2, "epoch": 2}]
    row = sweep.build_row(sweep.Planned("ptb", "ptb_revlstm_small"), _run_dir(tmp_path, train=train),
                          [{"step": "train", "rc": 0, "wall_s": 1.0, "cpu_s": 1.0}], None, [])
    assert not row["diverged"] and row["max_grad_norm"] == 4e4 and row["max_train_loss_epoch"] == 1
    assert row["unstable"].startswith("training loss reached 66,717 nats/token in epoch 1")
    assert "no, but training loss reached 66,717" in sweep.table([row])
    assert "Unstable, then recovered: ptb_revlstm_small (training" in sweep.summary([row])
    row2 = sweep.build_row(sweep.Planned("ptb", "ptb_revlstm_small"), _run_dir(tmp_path / "b", train=train[1:]),
                           [{"step": "train", "rc": 0, "wall_s": 1.0, "cpu_s": 1.0}], None, [])
    assert row2["unstable"] is None
