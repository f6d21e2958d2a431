"""Run directories are never reused, and removed again when a run fails before its first step;
config and environment records are written atomically."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from revrnn_cli import __version__
from revrnn_cli.errors import UserError
from revrnn_cli.training import environment_record, make_run_dir, write_config, write_environment
from revrnn_cli.training.lock import LOCK_NAME, RunLock
from revrnn_cli.training.rundir import RunDirectory


def test_make_run_dir_never_reuses_a_non_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    first = make_run_dir(root, "ptb")
    assert first == root / "ptb" and first.is_dir()
    assert make_run_dir(root, "ptb") == first  # still empty: nothing to protect

    (first / "last.pt").write_bytes(b"x")
    second = make_run_dir(root, "ptb")
    assert second == root / "ptb-2"
    (second / "metrics.jsonl").write_text("{}\n")
    assert make_run_dir(root, "ptb") == root / "ptb-3"
    assert (first / "last.pt").read_bytes() == b"x"


def test_make_run_dir_skips_a_file_with_the_name(tmp_path: Path) -> None:
    (tmp_path / "ptb").write_text("not a directory")
    assert make_run_dir(tmp_path, "ptb") == tmp_path / "ptb-2"


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_make_run_dir_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError):
        make_run_dir(tmp_path, name)


def test_write_config_keeps_spec_order(tmp_path: Path) -> None:
    config = {"model": {"cell": "revgru", "hidden_size": 650}, "data": {"corpus": "ptb"}, "train": {"lr": 1.0}}
    path = write_config(tmp_path, config)
    assert path == tmp_path / "config.yaml"
    assert yaml.safe_load(path.read_text()) == config
    assert path.read_text().index("model") < path.read_text().index("data")
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_environment_record_has_the_facts_and_is_json(tmp_path: Path) -> None:
    rec = environment_record(seed=11, device="cpu")
    for key in ("python", "platform", "torch", "cuda", "gpu", "numpy", "revrnn", "git_commit",
                "hostname", "argv", "seed", "device", "started"):
        assert key in rec, key
    assert rec["seed"] == 11 and rec["device"] == "cpu" and rec["revrnn"] == __version__
    assert rec["git_commit"] is None or len(rec["git_commit"]) >= 40
    assert datetime.fromisoformat(rec["started"]).utcoffset().total_seconds() == 0
    json.dumps(rec)
    path = write_environment(tmp_path, rec)
    assert json.loads(path.read_text()) == rec


def test_environment_record_without_git(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a repository
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    rec = environment_record(seed=0, device="cpu")
    assert rec["git_commit"] is None and rec["git_dirty"] is None

    monkeypatch.setenv("PATH", "")  # no git executable at all: still no failure
    assert environment_record(seed=0, device="cpu")["git_commit"] is None


def test_a_directory_holding_only_a_stale_lock_is_reused(tmp_path: Path) -> None:
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / LOCK_NAME).write_text("12345\n")  # left by a run killed before it wrote anything
    assert make_run_dir(tmp_path, "ptb") == tmp_path / "ptb"
    held = RunLock.acquire(tmp_path / "ptb")  # but not while a live process holds it
    try:
        assert make_run_dir(tmp_path, "ptb") == tmp_path / "ptb-2"
    finally:
        held.release()


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_start_removes_what_it_wrote(tmp_path: Path, existed: bool) -> None:
    target = tmp_path / "run"
    if existed:
        target.mkdir()
    with pytest.raises(RuntimeError):
        with RunDirectory.new(tmp_path, "x", explicit=target) as run:
            write_config(run.path, {"name": "x"})
            raise RuntimeError("no corpus")
    assert target.is_dir() == existed and (not existed or list(target.iterdir()) == [])


def test_a_run_that_trained_is_kept_whatever_stops_it(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with RunDirectory.new(tmp_path / "runs", "x") as run:
            write_config(run.path, {"name": "x"})
            run.trained = True
            raise KeyboardInterrupt
    assert sorted(p.name for p in (tmp_path / "runs" / "x").iterdir()) == ["config.yaml"]
