"""Multi-process training (DistributedDataParallel over gloo on the CPU) against one process.

Two worker processes (this file run as a script, with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT
set as torchrun sets them) train tiny specs through :func:`revrnn_cli.runner.train`; the same specs
train here in one process. With every dropout off, the two must follow the same trajectory: the
same logged losses and, after several SGD steps (clipping active, an epoch boundary with its
evaluation and hidden-state reset in between), the same parameters to float rounding. That holds
only if DDP really averages the gradients of the custom reversible autograd path and the loss is
normalised by the global token count. The workers also check an exact two-process resume, and
``revrnn train --nproc 2`` runs once end to end.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import yaml

from revrnn_cli import cli, runner
from revrnn_cli.errors import EXIT_NONFINITE, EXIT_NUMERIC, EXIT_OK, EXIT_USAGE, UserError
from revrnn_cli.training.checkpoint import load_checkpoint
from revrnn_cli.training.distributed import DistContext, shard
from revrnn_cli.training.metrics import read_metrics
from revrnn_cli.training.signals import GracefulStop

NO_DROPOUT = {"dropout": 0.0, "dropouth": 0.0, "dropouti": 0.0, "dropoute": 0.0, "wdrop": 0.0}

PTB = {
    "name": "ddp_ptb",
    "seed": 7,
    "data": {"dataset": "ptb"},
    "model": {"cell": "revlstm", "emb_size": 16, "hidden_size": 16, "layers": 2, "chunk": 4, **NO_DROPOUT},
    "train": {"backprop": "reverse", "lr": 1.0, "clip": 0.25, "batch_size": 4, "eval_batch_size": 4,
              "test_batch_size": 2, "bptt": 8, "random_bptt": True, "epochs": 2, "steps_per_epoch": 3,
              "eval_batches": 2, "log_interval": 1},
}

SYNTHETIC = {
    "name": "ddp_syn",
    "seed": 3,
    "data": {"dataset": "repeat", "vocab_size": 5, "seq_len": 12, "n_train": 40, "n_valid": 10, "n_test": 10},
    "model": {"cell": "revgru", "emb_size": 8, "hidden_size": 8, "layers": 2, "chunk": 4, **NO_DROPOUT},
    "train": {"lr": 1.0, "clip": 1.0, "batch_size": 8, "eval_batch_size": 3, "random_bptt": False, "epochs": 2,
              "schedule": "none", "log_interval": 1},
}


TRANSLATION = {
    "task": "translation",
    "name": "ddp_m30k",
    "seed": 5,
    "data": {"dataset": "multi30k", "n_train": 48, "n_valid": 12, "n_test": 4},
    "model": {"cell": "revgru", "emb_size": 8, "hidden_size": 8, "context": "emb+slice:2", "chunk": 4,
              "dropouti": 0.0, "dropouth": 0.0, "dropouto": 0.0, "dropouts": 0.0},
    "train": {"lr": 0.5, "clip": 5.0, "batch_size": 8, "eval_batch_size": 6, "epochs": 2, "schedule": "none",
              "weight_decay": 0.0, "log_interval": 1},
}


def _variant(base: dict, model: dict | None = None, train: dict | None = None) -> dict:
    spec = json.loads(json.dumps(base))
    spec["model"].update(model or {})
    spec["train"].update(train or {})
    if spec["model"]["cell"] in ("lstm", "gru"):
        spec["train"].pop("backprop", None)
    return spec


VARIANTS = {
    "reverse": _variant(PTB),
    "store": _variant(PTB, train={"backprop": "store"}),
    "baseline": _variant(PTB, model={"cell": "lstm"}),
    "synthetic": _variant(SYNTHETIC),  # sequences sharded per batch, 40 = 5 batches of 8
    "translation": _variant(TRANSLATION),  # sentence batches sharded; the loss divides by global sentences
}
# every dropout on, for the exact two-process resume
DROPOUT = _variant(PTB, model={"dropout": 0.3, "dropouth": 0.2, "dropouti": 0.3, "dropoute": 0.1, "wdrop": 0.3})


def _on_tiny_data(spec: dict, tiny_data: dict) -> dict:
    """A corpus-backed spec reading the suite's tiny corpora (synthetic specs need no files)."""
    if spec["data"]["dataset"] in ("repeat", "remember"):
        return spec
    return {**spec, "data": {**spec["data"], **tiny_data}}


def _write(directory: Path, name: str, spec: dict) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ)  # carries the hub's offline switches (tests/conftest.py)
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "RANK", "WORLD_SIZE", "LOCAL_RANK",
              "TORCHELASTIC_RUN_ID"):
        env.pop(k, None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def _start_workers(jobs: list[dict], directory: Path, world: int = 2) -> list[subprocess.Popen]:
    jobs_file = directory / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port)
        log = open(directory / f"worker{rank}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, __file__, str(jobs_file)], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=directory))
    return procs


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(deadline - time.monotonic(), 1)))
        except subprocess.TimeoutExpired:
            p.kill()
            codes.append(p.wait())
    return codes


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data):
    d = tmp_path_factory.mktemp("ddp")
    specs = {name: _write(d, name, _on_tiny_data(spec, tiny_data)) for name, spec in VARIANTS.items()}
    dropout = _write(d, "dropout", _on_tiny_data(DROPOUT, tiny_data))
    jobs = [{"spec": str(specs[n]), "overrides": [], "run_dir": str(d / f"ddp_{n}")} for n in VARIANTS]
    jobs += [
        {"spec": str(dropout), "overrides": ["train.max_steps=5"], "run_dir": str(d / "full")},
        {"spec": str(dropout), "overrides": ["train.max_steps=2"], "run_dir": str(d / "part")},
        {"resume": str(d / "part"), "overrides": ["train.max_steps=5"]},
    ]
    t0 = time.monotonic()
    procs = _start_workers(jobs, d)
    try:
        single = {n: runner.train(specs[n], [], run_dir=d / f"one_{n}") for n in VARIANTS}
    finally:
        codes = _wait(procs, timeout=240)
    logs = "\n".join((d / f"worker{r}.log").read_text() for r in range(2))
    assert codes == [0, 0], logs
    return {"dir": d, "single": single, "seconds": time.monotonic() - t0, "logs": logs}


def _params(run: Path) -> dict:
    return load_checkpoint(run / "last.pt")["model"]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_two_processes_match_one_process(runs, name):
    d = runs["dir"]
    one, two = read_metrics(d / f"one_{name}" / "metrics.jsonl"), read_metrics(d / f"ddp_{name}" / "metrics.jsonl")
    train1, train2 = [r for r in one if r["event"] == "train"], [r for r in two if r["event"] == "train"]
    assert [r["step"] for r in train2] == [r["step"] for r in train1] and len(train1) >= 6
    for a, b in zip(train1, train2):  # the whole batch's loss, gradient norm and (synthetic) accuracy
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), (a, b)
        assert b.get("accuracy") == a.get("accuracy")
        if "ratio_used" in a and name != "translation":  # (each rank pads its sentences to its own
            # longest, so the stored slice and padded decoder steps are legitimately fewer in two processes)
            assert b["ratio_used"] == pytest.approx(a["ratio_used"], rel=1e-6)
    valid1, valid2 = [r for r in one if r["event"] == "valid"], [r for r in two if r["event"] == "valid"]
    assert len(valid2) == len(valid1) == 2
    for a, b in zip(valid1, valid2):  # sharded evaluation, sums added over the ranks (of parameters that
        # differ at the rounding level, see below: the same tolerance as the training losses)
        assert b["tokens"] == a["tokens"] and b["loss"] == pytest.approx(a["loss"], rel=1e-5)
    assert train1[-1]["loss"] < train1[0]["loss"]  # it learns: the parameters moved
    p1, p2 = _params(d / f"one_{name}"), _params(d / f"ddp_{name}")
    for k in p1:
        # Float tolerance, relative to each tensor's scale: rounding differs (half batches, gradient
        # sums added in another order), and in a reversible cell a rounding-level change of a gate
        # occasionally moves a fixed-point state or a quantised forget gate by one unit, which later
        # steps carry on. One process's own `reverse` against `store` differs by as much (~7e-5 of
        # the scale here). Gradients that were not averaged, or a loss normalised by the rank's own
        # token count, miss by orders of magnitude more (~1e-1).
        err = float((p2[k] - p1[k]).abs().max()) / float(p1[k].abs().max())
        assert err < 3e-4, f"{name} {k}: largest difference {err:.2e} of the tensor's scale"


def test_only_rank_zero_writes(runs):
    run = runs["dir"] / "ddp_reverse"
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "environment.json", "last.pt",
                                                     "metrics.jsonl"]
    recs = read_metrics(run / "metrics.jsonl")
    assert [r["event"] for r in recs].count("start") == 1 and [r["event"] for r in recs].count("end") == 1
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    payload = load_checkpoint(run / "last.pt")
    assert payload["world_size"] == 2 and len(payload["ranks"]) == 2
    h0, h1 = (r["task"]["hidden"]["rev"][0] for r in payload["ranks"])
    assert h0.shape == h1.shape and h0.shape[0] == 2 and not torch.equal(h0, h1)  # its own 2 of the 4 columns
    assert "Traceback" not in runs["logs"]


def test_two_process_resume_is_exact(runs):
    """Per-rank RNG states (dropout masks differ per rank) and hidden states come back on resume."""
    d = runs["dir"]
    full, part = read_metrics(d / "full" / "metrics.jsonl"), read_metrics(d / "part" / "metrics.jsonl")
    assert [r["step"] for r in part if r["event"] == "resume"] == [2]
    strip = ("time", "tokens_per_s", "run_dir", "checkpoint")
    ta = [{k: v for k, v in r.items() if k not in strip} for r in full if r["event"] in ("train", "valid")]
    tb = [{k: v for k, v in r.items() if k not in strip} for r in part if r["event"] in ("train", "valid")]
    assert tb == ta and len(ta) >= 5
    pa, pb = _params(d / "full"), _params(d / "part")
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_resume_with_another_world_size_is_refused(runs, capsys):
    run = runs["dir"] / "ddp_reverse"
    with pytest.raises(UserError) as e:
        runner.train(None, [], resume=run)
    assert e.value.exit_code == EXIT_USAGE
    assert "world size 2" in str(e.value) and "world size 1" in str(e.value)
    capsys.readouterr()
    with pytest.raises(SystemExit) as ex:
        cli.main(["train", "--resume", str(run), "--nproc", "3"])
    _, err = capsys.readouterr()
    assert ex.value.code == EXIT_USAGE
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "world size 2" in lines[0] and "world size 3" in lines[0], err


def test_nproc_launches_two_processes(tmp_path):
    """``revrnn train --nproc 2``: one JSON stream from rank 0; a child's exit code comes back."""
    spec = _write(tmp_path, "syn", _variant(SYNTHETIC, train={"epochs": 1, "log_interval": 5}))
    cmd = [sys.executable, "-m", "revrnn_cli", "train", str(spec), "--nproc", "2"]
    env = _env()
    ok = subprocess.Popen([*cmd, "--run-dir", str(tmp_path / "run"), "--json"], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bad = subprocess.Popen([*cmd, "--set", "train.batch_size=3", "--run-dir", str(tmp_path / "bad")], env=env,
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = ok.communicate(timeout=240)
    bad_out, bad_err = bad.communicate(timeout=240)
    assert ok.returncode == EXIT_OK, err
    recs = [json.loads(line) for line in out.splitlines()]  # every stdout line is JSON, from rank 0 only
    assert [r["event"] for r in recs].count("start") == 1 and recs[-1]["event"] == "end"
    assert recs[-1]["steps"] == 5 and (tmp_path / "run" / "last.pt").is_file()
    assert err.count("training finished") == 1
    assert bad.returncode == EXIT_USAGE, bad_err
    assert "train.batch_size 3 must be divisible" in bad_err and bad_out == ""


def test_a_diverging_two_process_run_stops_on_every_rank(tmp_path, tiny_data):
    """A diverging reverse-mode run (its loss computed in the backward pass) ends on both ranks with
    the non-finite guard or the engine's numeric error, one line, no hang."""
    spec = _write(tmp_path, "div", _on_tiny_data(_variant(PTB, train={"lr": 1e30, "clip": 0.0}), tiny_data))
    cmd = [sys.executable, "-m", "revrnn_cli", "train", str(spec), "--nproc", "2", "--run-dir", str(tmp_path / "run")]
    res = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert res.returncode in (EXIT_NONFINITE, EXIT_NUMERIC), res.stderr
    assert "Traceback" not in res.stderr
    assert "revrnn: error: " in res.stderr


def test_shard_covers_the_range_in_rank_order():
    for n in range(23):
        for world in (1, 2, 3, 4, 8):
            parts = [shard(n, r, world) for r in range(world)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert shard(20, 1, 2) == slice(10, 20) and DistContext(1, 2).shard(5) == slice(3, 5)
    assert DistContext().shard(7) == slice(0, 7)
    with pytest.raises(ValueError):
        shard(4, 2, 2)


def test_single_process_context_is_a_no_op():
    ctx = DistContext()
    model = torch.nn.Linear(2, 2)
    assert ctx.data_parallel(model) is model and ctx.is_data_parallel(model)
    assert ctx.all_reduce_sum([1, 2.5]) == [1.0, 2.5] and ctx.all_reduce_max(3) == 3.0
    assert ctx.gather_object({"a": 1}) == [{"a": 1}] and ctx.broadcast_object(5) == 5
    assert ctx.on_main(lambda x: x + 1, 1) == 2


def test_torchrun_forwarded_signal_is_not_a_second_signal(monkeypatch, capsys):
    """Under torchrun a worker gets Ctrl-C twice (terminal, then torchrun): the copy must not abort."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    with GracefulStop(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the forwarded copy, at once
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            time.sleep(0.001)
        assert stop.requested and stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):  # another kind of signal still aborts
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert capsys.readouterr().err == ""  # announce=False: ranks other than 0 stay quiet


# ---- the worker: this file run as a script under RANK / WORLD_SIZE ----------------------------------

def _worker(jobs_file: str) -> int:
    torch.set_num_threads(1)
    from revrnn_cli.training import distributed

    ctx = distributed.init()
    assert ctx.world_size == int(os.environ["WORLD_SIZE"]) > 1
    try:
        for job in json.loads(Path(jobs_file).read_text()):
            if "resume" in job:
                runner.train(None, job["overrides"], resume=Path(job["resume"]))
            else:
                runner.train(Path(job["spec"]), job["overrides"], run_dir=Path(job["run_dir"]))
    except BaseException:  # noqa: BLE001 - reported, then a non-zero exit
        traceback.print_exc()
        return 1
    finally:
        distributed.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
