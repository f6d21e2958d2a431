"""Training runs end to end: run directories, evaluation, exact resumption, refusing a foreign
checkpoint, graceful SIGINT/SIGTERM, the non-finite guard, missing data and ``--json`` output.

Command-line runs are subprocesses (started together where independent, since importing torch is
most of their cost); the resume comparisons run in-process through :mod:`revrnn_cli.runner`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from revrnn_cli import cli, runner
from revrnn_cli.errors import EXIT_DATA, EXIT_NONFINITE, EXIT_NUMERIC, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, UserError
from revrnn_cli.spec import load_spec
from revrnn_cli.training.checkpoint import load_checkpoint
from revrnn_cli.training.metrics import read_metrics

SYNTHETIC = {
    "name": "tiny",
    "seed": 3,
    "data": {"dataset": "repeat", "vocab_size": 5, "seq_len": 12, "n_train": 64, "n_valid": 16, "n_test": 16},
    "model": {"cell": "revgru", "emb_size": 8, "hidden_size": 8, "layers": 2, "dropout": 0.2, "dropouth": 0.2,
              "dropouti": 0.2, "dropoute": 0.1, "wdrop": 0.3, "chunk": 4},
    "train": {"lr": 1.0, "clip": 1.0, "batch_size": 8, "eval_batch_size": 16, "random_bptt": False, "epochs": 2,
              "schedule": "none", "log_interval": 2},
}

PTB = {
    "name": "tiny_ptb",
    "seed": 5,
    "data": {"dataset": "ptb"},
    "model": {"cell": "revlstm", "emb_size": 16, "hidden_size": 16, "layers": 2, "dropout": 0.3, "dropouth": 0.2,
              "dropouti": 0.3, "dropoute": 0.1, "wdrop": 0.3, "chunk": 4},
    "train": {"lr": 5.0, "clip": 0.25, "batch_size": 4, "eval_batch_size": 4, "test_batch_size": 4, "bptt": 8,
              "random_bptt": True, "epochs": 2, "steps_per_epoch": 5, "eval_batches": 2, "log_interval": 1},
}



def write_spec(directory: Path, spec: dict, name: str = "spec.yaml", **sections) -> Path:
    spec = json.loads(json.dumps(spec))
    for section, values in sections.items():
        spec[section].update(values)
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _env() -> dict:
    env = dict(os.environ)  # carries the hub's offline switches (tests/conftest.py)
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        env.pop(k, None)
    return env


def start_cli(args, cwd: Path, tag: str):
    out, err = open(cwd / f"{tag}.out", "w+b"), open(cwd / f"{tag}.err", "w+b")
    p = subprocess.Popen([sys.executable, "-m", "revrnn_cli", *map(str, args)], cwd=cwd, env=_env(), stdout=out,
                         stderr=err, stdin=subprocess.DEVNULL)
    return p, out, err, args


def finish(started, timeout: float = 240) -> subprocess.CompletedProcess:
    p, out, err, args = started
    try:
        rc = p.wait(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out.seek(0)
    err.seek(0)
    res = subprocess.CompletedProcess(args, rc, out.read().decode(), err.read().decode())
    out.close()
    err.close()
    return res


def run_cli_many(cases: dict, cwd: Path) -> dict:
    started = {tag: start_cli(args, cwd, tag) for tag, args in cases.items()}
    return {tag: finish(s) for tag, s in started.items()}


def json_lines(text: str) -> list[dict]:
    lines = text.splitlines()
    out = []
    for line in lines:
        obj = json.loads(line)  # every line, none blank or human
        assert isinstance(obj, dict)
        out.append(obj)
    return out


def err_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


VOLATILE = ("time", "tokens_per_s", "run_dir", "checkpoint")


def events(records: list[dict], *kinds: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records if r["event"] in kinds]


# ---- command-line runs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_runs")
    spec = write_spec(d, SYNTHETIC)
    ptb = write_spec(d, PTB, "ptb.yaml")
    nonfinite = write_spec(d, SYNTHETIC, "nonfinite.yaml", model={"cell": "gru", "max_forget_bits": 3},
                           train={"lr": 1e30, "clip": 0.0})
    empty = d / "empty_data"
    empty.mkdir()
    first = run_cli_many({
        "train": ["train", spec, "--run-dir", d / "run", "--json"],
        "nonfinite": ["train", nonfinite, "--run-dir", d / "nonfinite"],
        "nodata": ["train", ptb, "--data-dir", empty, "--set", "data.download=false", "--run-dir", d / "nodata"],
    }, d)
    second = {}
    if first["train"].returncode == EXIT_OK:
        second = run_cli_many({
            "evaluate": ["evaluate", d / "run", "--json"],
            "again": ["train", d / "run" / "config.yaml", "--run-dir", d / "again", "--json"],
        }, d)
    return {"dir": d, "spec": spec, "empty": empty, **first, **second}


def test_train_json_stdout_is_only_json_lines(cli_runs):
    res = cli_runs["train"]
    assert res.returncode == EXIT_OK, res.stderr
    recs = json_lines(res.stdout)
    kinds = [r["event"] for r in recs]
    assert kinds[0] == "start" and kinds[-1] == "end"
    assert kinds.count("valid") == SYNTHETIC["train"]["epochs"]
    steps_per_epoch = SYNTHETIC["data"]["n_train"] // SYNTHETIC["train"]["batch_size"]
    total = steps_per_epoch * SYNTHETIC["train"]["epochs"]
    assert [r["step"] for r in recs if r["event"] == "train"] == list(
        range(SYNTHETIC["train"]["log_interval"], total + 1, SYNTHETIC["train"]["log_interval"]))
    assert recs[-1]["stopped"] == "finished" and recs[-1]["steps"] == total
    # the human summary went to stderr
    assert "training finished" in res.stderr


def test_train_stderr_has_no_warnings(cli_runs):
    res = cli_runs["train"]
    assert res.returncode == EXIT_OK
    assert "Warning" not in res.stderr, res.stderr


def test_run_directory_contents(cli_runs):
    run = cli_runs["dir"] / "run"
    for name in ("config.yaml", "environment.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    # config.yaml is the merged, validated spec
    _, expected = load_spec(cli_runs["spec"])
    assert yaml.safe_load((run / "config.yaml").read_text()) == expected
    env = json.loads((run / "environment.json").read_text())
    assert env["seed"] == SYNTHETIC["seed"] and env["torch"] == torch.__version__
    # metrics.jsonl: valid JSON lines, the same records as on stdout
    file_lines = (run / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in file_lines]
    assert file_lines == cli_runs["train"].stdout.splitlines()
    assert {"start", "train", "valid", "end"} <= {r["event"] for r in recs}
    for r in recs:
        if r["event"] == "train":
            assert math.isfinite(r["loss"]) and r["ppl"] == math.exp(r["loss"])
            assert 0 <= r["accuracy"] <= 1
    # checkpoints load and carry the config they were trained with
    start = recs[0]
    for name in ("last", "best"):
        payload = load_checkpoint(run / f"{name}.pt")
        assert payload["config"] == expected
        assert payload["config_hash"] == start["config_hash"]
    assert load_checkpoint(run / "last.pt")["loop"]["step"] == recs[-1]["steps"]


def test_evaluate_json(cli_runs):
    res = cli_runs["evaluate"]
    assert res.returncode == EXIT_OK, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    obj = json.loads(lines[0])
    recs = read_metrics(cli_runs["dir"] / "run" / "metrics.jsonl")
    assert Path(obj["checkpoint"]).name == "best.pt"
    assert obj["split"] == "valid"
    assert obj["config_hash"] == recs[0]["config_hash"]
    # best.pt holds the epoch with the best validation loss, evaluated the same way
    assert obj["loss"] == recs[-1]["best_valid_loss"]
    assert obj["loss"] == min(r["loss"] for r in recs if r["event"] == "valid")
    assert obj["ppl"] == math.exp(obj["loss"])
    assert obj["tokens"] > 0


def _main(argv, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_evaluate_test_split_of_a_checkpoint_file(cli_runs, capsys):
    assert cli_runs["train"].returncode == EXIT_OK
    code, out, err = _main(["evaluate", cli_runs["dir"] / "run" / "last.pt", "--split", "test", "--json"], capsys)
    assert code == EXIT_OK, err
    obj = json.loads(out)
    assert Path(obj["checkpoint"]).name == "last.pt" and obj["split"] == "test"
    assert math.isfinite(obj["loss"]) and obj["ppl"] == math.exp(obj["loss"])
    assert obj["step"] == load_checkpoint(cli_runs["dir"] / "run" / "last.pt")["loop"]["step"]
    # evaluating the same checkpoint twice gives the same loss
    code, out2, _ = _main(["evaluate", cli_runs["dir"] / "run" / "last.pt", "--split", "test", "--json"], capsys)
    assert code == EXIT_OK and json.loads(out2)["loss"] == obj["loss"]


@pytest.mark.parametrize("args, needle", [(["--split", "train"], "--split"), (["--max-batches", "0"], "--max-batches")])
def test_evaluate_bad_arguments_exit_2(cli_runs, capsys, args, needle):
    code, out, err = _main(["evaluate", cli_runs["dir"] / "run", *args], capsys)
    assert code == EXIT_USAGE and out == ""
    assert len(err_lines(err)) == 1 and needle in err


def test_evaluate_missing_run_exit_2(tmp_path, capsys):
    code, out, err = _main(["evaluate", tmp_path / "nope"], capsys)
    assert code == EXIT_USAGE and out == ""
    assert "nope" in err and "Traceback" not in err


def test_saved_config_reproduces_the_run(cli_runs):
    res = cli_runs["again"]
    assert res.returncode == EXIT_OK, res.stderr
    first = json_lines(cli_runs["train"].stdout)
    again = json_lines(res.stdout)
    assert events(again, "train", "valid") == events(first, "train", "valid")
    assert again[0]["config_hash"] == first[0]["config_hash"]


def test_nonfinite_loss_exits_4(cli_runs):
    res = cli_runs["nonfinite"]
    assert res.returncode == EXIT_NONFINITE, res.stderr
    assert "Traceback" not in res.stderr
    assert "non-finite" in res.stderr
    assert res.stdout == ""
    # what was logged before is still valid JSON (no NaN literals)
    for r in read_metrics(cli_runs["dir"] / "nonfinite" / "metrics.jsonl"):
        assert r["event"] in ("start", "train")


def test_nonfinite_message_points_to_an_existing_checkpoint(cli_runs):
    res = cli_runs["nonfinite"]
    assert res.returncode == EXIT_NONFINITE
    line = next(x for x in err_lines(res.stderr) if "non-finite" in x)
    if "checkpoint" in line and "last.pt" in line:
        assert (cli_runs["dir"] / "nonfinite" / "last.pt").is_file(), \
            f"the message names a checkpoint that was never written: {line}"


def test_nonfinite_reversible_model_is_reported_as_non_finite(tmp_path, capsys):
    """The same divergence with a reversible cell: NaN activations must not be turned into integers.

    Accepted: the loop's non-finite guard (exit 4), or the engine's numeric error (exit 5) if its
    message says that values were non-finite rather than blaming an ordinary state overflow.
    """
    spec = write_spec(tmp_path, SYNTHETIC, train={"lr": 1e30, "clip": 0.0})
    code, out, err = _main(["train", spec, "--run-dir", tmp_path / "run"], capsys)
    assert "Traceback" not in err
    line = next((x for x in err_lines(err) if "error" in x), "")
    assert code == EXIT_NONFINITE or (code == EXIT_NUMERIC and "non-finite" in line.lower()), (code, line)


def test_a_loss_known_only_after_backward_is_still_guarded(tmp_path, capsys, monkeypatch):
    """Reverse mode computes the language model's loss in the backward pass (Segment.defer_loss):
    a non-finite value found there stops the run with exit 4 before any update is applied."""
    import revrnn_cli.models.lm as lm
    from revrnn_cli.training import loop

    real, seen = lm.chunk_loss, []

    def nan_loss(*a, **k):
        loss, correct = real(*a, **k)
        return loss * float("nan"), correct

    def no_update(self, *a, **k):
        raise AssertionError("an update was applied after a non-finite loss")

    monkeypatch.setattr(lm, "chunk_loss", nan_loss)
    monkeypatch.setattr(torch.optim.SGD, "step", no_update)
    orig = loop.Trainer._train_step

    def spy(self, *a, **k):
        try:
            return orig(self, *a, **k)
        finally:
            seen.append(self.task.model.rnn.backprop)

    monkeypatch.setattr(loop.Trainer, "_train_step", spy)
    spec = write_spec(tmp_path, SYNTHETIC)
    code, out, err = _main(["train", spec, "--run-dir", tmp_path / "run"], capsys)
    assert code == EXIT_NONFINITE, err
    assert seen == ["reverse"]  # the deferred path ran, once
    line = next(x for x in err_lines(err) if "non-finite" in x)
    assert "training loss" in line and "Traceback" not in err


def test_missing_data_exits_3_naming_the_directory(cli_runs):
    res = cli_runs["nodata"]
    assert res.returncode == EXIT_DATA, res.stderr
    assert res.stdout == ""
    lines = err_lines(res.stderr)
    assert len(lines) == 1, res.stderr
    assert str(cli_runs["empty"]) in lines[0]
    assert "Traceback" not in res.stderr


# ---- graceful interruption ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Two long runs, one stopped with SIGTERM and one with SIGINT once they have logged a step."""
    d = tmp_path_factory.mktemp("signals")
    spec = write_spec(d, SYNTHETIC, train={"epochs": 1000, "log_interval": 1})
    sigs = {"term": signal.SIGTERM, "int": signal.SIGINT}
    started = {tag: start_cli(["train", spec, "--run-dir", d / tag], d, tag) for tag in sigs}
    seen = {}
    try:
        deadline = time.monotonic() + 120
        while len(seen) < len(sigs) and time.monotonic() < deadline:
            for tag, sig in sigs.items():
                p = started[tag][0]
                if tag in seen or p.poll() is not None:
                    continue
                metrics = d / tag / "metrics.jsonl"
                lines = metrics.read_text().splitlines() if metrics.exists() else []
                steps = []
                for x in lines:
                    try:  # the child may be half-way through writing this line
                        rec = json.loads(x)
                    except ValueError:
                        continue
                    if rec.get("event") == "train":
                        steps.append(rec["step"])
                if steps:
                    p.send_signal(sig)
                    seen[tag] = steps[-1]
            time.sleep(0.05)
    finally:
        results = {tag: finish(s, timeout=60) for tag, s in started.items()}
    return {"dir": d, "seen": seen, "results": results, "spec": spec}


@pytest.mark.parametrize("tag, code", [("term", EXIT_SIGTERM), ("int", EXIT_SIGINT)])
def test_signal_saves_and_exits(interrupted, tag, code):
    assert tag in interrupted["seen"], interrupted["results"][tag].stderr
    res = interrupted["results"][tag]
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr
    run = interrupted["dir"] / tag
    assert "saved" in res.stderr and "last.pt" in res.stderr
    payload = load_checkpoint(run / "last.pt")
    assert payload["loop"]["step"] >= interrupted["seen"][tag]
    assert payload["loop"]["epoch"] < 1000
    _, expected = load_spec(interrupted["spec"])
    assert payload["config"] == expected
    recs = read_metrics(run / "metrics.jsonl")
    assert recs[-1]["event"] == "train"
    assert recs[-1]["step"] == payload["loop"]["step"]  # log_interval 1: the saved step was logged


def test_interrupted_run_resumes(interrupted):
    run = interrupted["dir"] / "term"
    step = load_checkpoint(run / "last.pt")["loop"]["step"]
    summary = runner.train(None, [f"train.max_steps={step + 2}"], resume=run)
    assert summary["stopped"] == "max_steps" and summary["steps"] == step + 2
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in recs if r["event"] == "train"][-2:] == [step + 1, step + 2]


# ---- exact resumption ----------------------------------------------------------------------------

def _resume_equality(tmp_path, spec_dict, stops):
    spec = write_spec(tmp_path, spec_dict)
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    full = runner.train(spec, [], run_dir=full_dir)
    assert full["stopped"] == "finished"
    first = runner.train(spec, [f"train.max_steps={stops[0]}"], run_dir=part_dir)
    assert first["stopped"] == "max_steps" and first["steps"] == stops[0]
    for k in stops[1:]:
        s = runner.train(None, [f"train.max_steps={k}"], resume=part_dir)
        assert s["stopped"] == "max_steps" and s["steps"] == k
    last = runner.train(None, ["train.max_steps=null"], resume=part_dir)
    assert last["stopped"] == "finished"

    a, b = read_metrics(full_dir / "metrics.jsonl"), read_metrics(part_dir / "metrics.jsonl")
    assert [r["step"] for r in b if r["event"] == "resume"] == list(stops)
    ta, tb = events(a, "train"), events(b, "train")
    assert len(ta) > 0
    assert tb == ta  # every logged training loss, ppl, grad norm, accuracy, memory ratio: identical
    assert events(b, "valid") == events(a, "valid")
    end_a, end_b = events(a, "end")[-1], events(b, "end")[-1]
    assert end_b == end_a
    pa, pb = load_checkpoint(full_dir / "last.pt"), load_checkpoint(part_dir / "last.pt")
    assert pa["model"].keys() == pb["model"].keys()
    for k in pa["model"]:
        assert torch.equal(pa["model"][k], pb["model"][k]), k
    return a


def test_resume_is_exact_synthetic(tmp_path):
    # log_interval 2 and odd stops: the resumed run continues a half-filled logging interval
    a = _resume_equality(tmp_path, SYNTHETIC, stops=(5, 11))
    assert all("accuracy" in r for r in a if r["event"] == "train")


def test_resume_is_exact_ptb_stream(tmp_path, tiny_data):
    # carried hidden state, random BPTT lengths, every dropout on; stops mid-epoch in both epochs
    a = _resume_equality(tmp_path, {**PTB, "data": {**PTB["data"], **tiny_data}}, stops=(3, 7))
    steps = [r["step"] for r in a if r["event"] == "train"]
    assert steps == list(range(1, PTB["train"]["epochs"] * PTB["train"]["steps_per_epoch"] + 1))


def test_resume_from_a_different_spec_is_refused(tmp_path, capsys):
    spec = write_spec(tmp_path, SYNTHETIC)
    run = tmp_path / "run"
    runner.train(spec, ["train.max_steps=2"], run_dir=run)
    before = (run / "last.pt").read_bytes()
    with pytest.raises(UserError) as e:
        runner.train(None, ["model.hidden_size=10"], resume=run)
    assert e.value.exit_code == EXIT_USAGE
    assert "model.hidden_size" in str(e.value)
    # through the command line: exit 2, one line, and the checkpoint is left alone
    capsys.readouterr()
    with pytest.raises(SystemExit) as e2:
        cli.main(["train", "--resume", str(run), "--set", "train.lr=0.5"])
    out, err = capsys.readouterr()
    assert e2.value.code == EXIT_USAGE
    assert out == ""
    assert len(err_lines(err)) == 1 and "train.lr" in err
    other = write_spec(tmp_path, SYNTHETIC, "other.yaml", model={"cell": "revlstm"})
    with pytest.raises(SystemExit) as e3:
        cli.main(["train", str(other), "--resume", str(run)])
    assert e3.value.code == EXIT_USAGE
    assert "model.cell" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == before
    # what a resumed run may change is accepted
    s = runner.train(None, ["train.max_steps=3", "train.log_interval=1"], resume=run)
    assert s["steps"] == 3
