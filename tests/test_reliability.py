"""What ``revrnn train`` guarantees about run directories and resuming (README, "Reliability").

* a run directory is never overwritten unless asked (``--overwrite``), and is locked while a
  process trains in it; the lock dies with its process, however it ends;
* a resume of a finished run trains nothing and changes nothing; a resume cuts ``metrics.jsonl``
  back to its checkpoint and removes what a killed save left behind; an edited ``config.yaml``
  is used (or refused, like ``--set``);
* a closed stdout and a second Ctrl-C still leave a checkpoint from which the run continues
  exactly as if it had never stopped, and a line on stderr saying so.

The refusals themselves (exit codes, one-line messages, untouched runs) are in test_adversarial.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from revrnn_cli import cli, runner
from revrnn_cli.errors import EXIT_OK, EXIT_SIGINT, EXIT_SIGPIPE, EXIT_SIGTERM, EXIT_USAGE
from revrnn_cli.tasks.lm import LMTask
from revrnn_cli.training.checkpoint import load_checkpoint
from revrnn_cli.training.lock import LOCK_NAME, RunLock
from revrnn_cli.training.metrics import read_metrics

SYNTHETIC = {
    "name": "rel", "seed": 3, "device": "cpu",
    "data": {"dataset": "repeat", "vocab_size": 5, "seq_len": 12, "n_train": 64, "n_valid": 16, "n_test": 16},
    "model": {"cell": "revgru", "emb_size": 8, "hidden_size": 8, "layers": 2, "dropout": 0.2, "dropouth": 0.2,
              "dropouti": 0.2, "dropoute": 0.1, "wdrop": 0.3, "chunk": 4},
    "train": {"lr": 1.0, "clip": 1.0, "batch_size": 8, "eval_batch_size": 16, "random_bptt": False, "epochs": 2,
              "schedule": "none", "log_interval": 1},
}
# a token stream: carried hidden state, random BPTT lengths, every dropout on
PTB = {
    "name": "rel_ptb", "seed": 5, "device": "cpu",
    "data": {"dataset": "ptb"},
    "model": {"cell": "revlstm", "emb_size": 16, "hidden_size": 16, "layers": 2, "dropout": 0.3, "dropouth": 0.2,
              "dropouti": 0.3, "dropoute": 0.1, "wdrop": 0.3, "chunk": 4},
    "train": {"lr": 5.0, "clip": 0.25, "batch_size": 4, "eval_batch_size": 4, "bptt": 8, "random_bptt": True,
              "epochs": 2, "steps_per_epoch": 5, "eval_batches": 2, "log_interval": 1},
}
VOLATILE = ("time", "tokens_per_s", "run_dir", "checkpoint")


def write_spec(directory: Path, spec: dict, name: str = "spec.yaml", **sections) -> Path:
    spec = json.loads(json.dumps(spec))
    for section, values in sections.items():
        spec[section].update(values)
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def events(run: Path, *kinds: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_metrics(run / "metrics.jsonl")
            if r["event"] in kinds]


def hashes(run: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run.iterdir()) if p.is_file()}


def cli_main(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def start_cli(args, cwd: Path, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "COLUMNS")}
    return subprocess.Popen([sys.executable, "-m", "revrnn_cli", *map(str, args)], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, **popen)


def wait_for_step(run: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    """The step of the first ``train`` record the process logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        path = run / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == "train":
                return rec["step"]
        time.sleep(0.05)
    raise AssertionError(f"no training step logged (exit code {proc.poll()})")


# ---- run directories ------------------------------------------------------------------------------

def test_overwrite_replaces_a_run_and_nothing_else(tmp_path, capsys):
    spec = write_spec(tmp_path, SYNTHETIC, train={"epochs": 1})
    run = tmp_path / "run"
    runner.train(spec, [], run_dir=run, progress=False)
    assert (run / "best.pt").is_file()
    (run / "translations").mkdir()
    (run / ".last.pt.abc.tmp").write_bytes(b"left by a killed save")
    code, _, err = cli_main(["train", spec, "--run-dir", run, "--set", "train.max_steps=3", "--overwrite"], capsys)
    assert code == EXIT_OK, err
    # the old run is gone (its best.pt too: the new one ended before an epoch did), and no lock file is left
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "environment.json", "last.pt", "metrics.jsonl"]
    assert [r["event"] for r in read_metrics(run / "metrics.jsonl")].count("start") == 1
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 3


def test_a_second_process_is_refused_and_the_lock_dies_with_its_holder(tmp_path, capsys):
    spec = write_spec(tmp_path, SYNTHETIC, train={"epochs": 1000})
    run = tmp_path / "run"
    first = start_cli(["train", spec, "--run-dir", run], tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_step(run, first)
        before = (run / "config.yaml").read_bytes()
        for argv in (["train", "--resume", run], ["train", spec, "--run-dir", run, "--overwrite"]):
            code, out, err = cli_main(argv, capsys)
            assert code == EXIT_USAGE and out == ""
            assert [line for line in err.splitlines() if line.strip()] == [
                f"revrnn: error: {run}: process {first.pid} is training in this run directory; wait for it to "
                f"finish, or stop it first"]
        # the first run keeps writing (its own last.pt at each epoch end), so what is checked is that the
        # refused commands wrote nothing: the same config, and no second run started in the metrics
        assert (run / "config.yaml").read_bytes() == before
        assert [r["event"] for r in read_metrics(run / "metrics.jsonl")].count("start") == 1
        first.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
        assert first.wait(timeout=60) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (run / LOCK_NAME).exists()  # left behind, but not held
    RunLock.acquire(run).release()
    assert not (run / LOCK_NAME).exists()


def test_lock_files_are_reacquired_safely(tmp_path):
    a = RunLock.acquire(tmp_path)
    with pytest.raises(Exception, match="is training in this run directory"):
        RunLock.acquire(tmp_path)
    a.release()
    b = RunLock.acquire(tmp_path)  # the file was removed and created again
    assert b.held and int((tmp_path / LOCK_NAME).read_text()) == os.getpid()
    b.release()
    b.release()  # idempotent


# ---- resuming ---------------------------------------------------------------------------------------

def test_resume_of_a_run_at_max_steps_trains_nothing(tmp_path, capsys):
    spec = write_spec(tmp_path, SYNTHETIC)
    run = tmp_path / "run"
    runner.train(spec, ["train.max_steps=3"], run_dir=run, progress=False)
    before = hashes(run)
    for _ in range(2):
        code, out, err = cli_main(["train", "--resume", run, "--json"], capsys)
        assert code == EXIT_OK
        assert [line for line in err.splitlines() if line.strip()] == [
            f"revrnn: nothing to train: {run} is finished, it reached train.max_steps=3 (step 3); to train on, "
            f"raise train.epochs or train.max_steps (or lower train.min_lr) with --set"]
        assert json.loads(out)["stopped"] == "already_finished" and json.loads(out)["steps"] == 3
        assert hashes(run) == before  # not one more step, not one byte
    s = runner.train(None, ["train.max_steps=5"], resume=run, progress=False)
    assert s["steps"] == 5 and load_checkpoint(run / "last.pt")["loop"]["step"] == 5


def test_resume_after_a_kill_cuts_metrics_back_and_removes_temporary_files(tmp_path):
    spec = write_spec(tmp_path, SYNTHETIC)
    full, run = tmp_path / "full", tmp_path / "run"
    runner.train(spec, ["train.max_steps=9"], run_dir=full, progress=False)
    runner.train(spec, ["train.max_steps=4"], run_dir=run, progress=False)
    at_4 = (run / "last.pt").read_bytes()
    runner.train(None, ["train.max_steps=7"], resume=run, progress=False)
    # as if killed (kill -9) after logging step 7 but while writing its checkpoint: last.pt is step 4's
    (run / "last.pt").write_bytes(at_4)
    (run / ".last.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    runner.train(None, ["train.max_steps=9"], resume=run, progress=False)
    assert not list(run.glob(".*.tmp"))
    steps = [r["step"] for r in events(run, "train")]
    assert steps == list(range(1, 10))  # steps 5-7 were trained twice, and are listed once
    assert events(run, "train", "valid") == events(full, "train", "valid")
    assert [r["step"] for r in events(run, "resume")] == [4]  # the first resume's records went with its steps


def test_resume_uses_an_edited_config(tmp_path, capsys):
    spec = write_spec(tmp_path, SYNTHETIC, train={"epochs": 1})
    run = tmp_path / "run"
    runner.train(spec, [], run_dir=run, progress=False)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("epochs: 1", "epochs: 2"))  # what a resume may change
    s = runner.train(None, [], resume=run, progress=False)
    assert s["epochs"] == 2 and yaml.safe_load(cfg.read_text())["train"]["epochs"] == 2
    runner.train(None, ["train.epochs=3"], resume=run, progress=False)
    assert yaml.safe_load(cfg.read_text())["train"]["epochs"] == 3  # config.yaml follows the run


def test_resume_into_the_same_run_dir_is_accepted(tmp_path):
    spec = write_spec(tmp_path, SYNTHETIC)
    run = tmp_path / "run"
    runner.train(spec, ["train.max_steps=2"], run_dir=run, progress=False)
    s = runner.train(None, ["train.max_steps=3"], resume=run, run_dir=tmp_path / "." / "run", progress=False)
    assert s["steps"] == 3


def test_summary_has_no_best_validation_before_an_epoch_ended(tmp_path, capsys):
    spec = write_spec(tmp_path, SYNTHETIC)
    code, out, err = cli_main(["train", spec, "--run-dir", tmp_path / "run", "--set", "train.max_steps=2", "--json"],
                              capsys)
    assert code == EXIT_OK
    end = json.loads(out.splitlines()[-1])
    assert end["event"] == "end" and "valid_ppl" in end and "best_valid_ppl" not in end and "best_valid_loss" not in end
    assert "│ best_valid" not in err and " inf " not in err


# ---- stopping early leaves a run that continues exactly ---------------------------------------------

def _spec_and_full_run(tmp_path, tiny_data):
    spec = write_spec(tmp_path, {**PTB, "data": {**PTB["data"], **tiny_data}})
    runner.train(spec, [], run_dir=tmp_path / "full", progress=False)
    return spec


def test_a_second_ctrl_c_saves_the_state_before_the_abandoned_step(tmp_path, tiny_data, capsys, monkeypatch):
    spec = _spec_and_full_run(tmp_path, tiny_data)
    real, calls = LMTask.train_step, []

    def second_ctrl_c_mid_step(self, batch):
        calls.append(1)
        out = real(self, batch)  # the forward pass has drawn its dropout masks
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)  # "finish the step, then save"
            os.kill(os.getpid(), signal.SIGINT)  # "stop at once": before the step's update
        return out

    monkeypatch.setattr(LMTask, "train_step", second_ctrl_c_mid_step)
    run = tmp_path / "run"
    code, out, err = cli_main(["train", spec, "--run-dir", run], capsys)
    monkeypatch.undo()
    assert code == EXIT_SIGINT and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == (f"revrnn: SIGINT received again: abandoned step 4; saved the state after step 3 to "
                         f"{run / 'last.pt'} (continue with: revrnn train --resume {run})")
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == 3
    runner.train(None, [], resume=run, progress=False)
    assert events(run, "train", "valid") == events(tmp_path / "full", "train", "valid")  # as if never stopped


def test_a_first_ctrl_c_before_any_step_leaves_nothing(tmp_path, capsys, monkeypatch):
    real = LMTask.train_step

    def at_once(self, batch):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return real(self, batch)

    monkeypatch.setattr(LMTask, "train_step", at_once)
    run = tmp_path / "run"
    code, _, err = cli_main(["train", write_spec(tmp_path, SYNTHETIC), "--run-dir", run], capsys)
    assert code == EXIT_SIGINT
    assert err.splitlines()[-1] == ("revrnn: SIGINT received again: stopped before the first step of this run; "
                                    "nothing was trained, so nothing was saved")
    assert not run.exists()


def test_closed_stdout_saves_and_says_so(tmp_path):
    """``revrnn train --json | head -1``: the reader goes away after the first line."""
    spec = write_spec(tmp_path, SYNTHETIC, train={"epochs": 1000})
    run = tmp_path / "run"
    p = start_cli(["train", spec, "--run-dir", run, "--json"], tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = json.loads(p.stdout.readline())
        p.stdout.close()
        code = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read().decode()
    assert first["event"] == "start"
    assert code == EXIT_SIGPIPE, err
    step = load_checkpoint(run / "last.pt")["loop"]["step"]
    lines = [line for line in err.strip().splitlines() if not line.startswith("revrnn: reversible steps run on")]
    assert lines == [f"revrnn: stdout was closed: stopped after step {step}; saved {run / 'last.pt'} "
                                        f"(continue with: revrnn train --resume {run})"]
    assert read_metrics(run / "metrics.jsonl")[-1]["step"] == step  # the file kept every record
    s = runner.train(None, [f"train.max_steps={step + 2}"], resume=run, progress=False)
    assert s["steps"] == step + 2


def test_sigterm_message_names_the_checkpoint_and_the_way_on(tmp_path):
    spec = write_spec(tmp_path, SYNTHETIC, train={"epochs": 1000})
    run = tmp_path / "run"
    p = start_cli(["train", spec, "--run-dir", run], tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_step(run, p)
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    err = p.stderr.read().decode()
    step = load_checkpoint(run / "last.pt")["loop"]["step"]
    assert code == EXIT_SIGTERM
    assert err.strip().splitlines()[-1] == (f"revrnn: SIGTERM received: stopped after step {step}; saved "
                                            f"{run / 'last.pt'} (continue with: revrnn train --resume {run})")
    assert not (run / LOCK_NAME).exists()
