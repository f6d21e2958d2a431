"""Checkpoints: atomic save, restricted load, config hashing and the resume compatibility check."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
import torch

from revrnn_cli.errors import EXIT_RESOURCE, EXIT_USAGE, ResourceError, UserError
from revrnn_cli.training import (check_compatible, config_hash, load_checkpoint, save_checkpoint)
from revrnn_cli.training.checkpoint import RUN_KEYS


class Opaque:
    """Not a tensor or plain container: the restricted unpickler must refuse it."""

    def __init__(self) -> None:
        self.x = 1


def _config() -> dict:
    return {"model": {"cell": "revgru", "hidden_size": 1150, "layers": 3},
            "train": {"epochs": 40, "max_steps": None, "lr": 0.001, "seed": 1},
            "output": {"dir": "runs", "name": "x"}}


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    payload = {"step": 7, "weights": torch.arange(6.0).reshape(2, 3), "config": _config()}
    save_checkpoint(path, payload)
    back = load_checkpoint(path)
    assert back["step"] == 7 and back["config"] == _config()
    assert torch.equal(back["weights"], payload["weights"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_failed_save_keeps_previous_checkpoint_and_no_temp_files(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(ResourceError) as info:  # one line, exit 6, naming the file; never a traceback
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert info.value.exit_code == EXIT_RESOURCE
    assert str(info.value) == f"{path}: cannot write: No space left on device (the previous last.pt is unchanged)"

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_interrupted_save_leaves_no_file_at_all(tmp_path: Path, monkeypatch) -> None:
    def interrupted(obj, f, *args, **kwargs):
        f.write(b"\x80\x02partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.pt", {"step": 1})
    assert list(tmp_path.iterdir()) == []


def test_saved_file_gets_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_load_refuses_arbitrary_python_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"obj": Opaque()}, path)  # plain torch.save, as a foreign file would be written
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert info.value.exit_code == EXIT_USAGE
    assert str(path) in str(info.value) and "not written by revrnn" in str(info.value)


def test_load_missing_and_corrupt_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(UserError, match="no such checkpoint") as info:
        load_checkpoint(missing)
    assert str(info.value) == f"{missing}: no such checkpoint" and info.value.exit_code == 2

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(UserError) as info:
        load_checkpoint(corrupt)
    assert str(corrupt) in str(info.value) and info.value.exit_code == 2

    truncated = tmp_path / "truncated.pt"
    save_checkpoint(tmp_path / "full.pt", {"w": torch.randn(1000)})
    for cut in (500, 4):
        truncated.write_bytes((tmp_path / "full.pt").read_bytes()[:cut])
        with pytest.raises(UserError) as info:
            load_checkpoint(truncated)
        assert str(truncated) in str(info.value) and info.value.exit_code == 2
        assert "truncated" in str(info.value) and "Errno" not in str(info.value)

    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\ntrain:\n  lr: 1\n")  # a spec given where a checkpoint belongs
    for bad in (spec, tmp_path / "empty.pt"):
        bad.touch()
        with pytest.raises(UserError) as info:
            load_checkpoint(bad)
        assert str(info.value).startswith(f"{bad}: not a revrnn checkpoint") and "IndexError" not in str(info.value)
    with pytest.raises(UserError, match="not a revrnn checkpoint"):
        load_checkpoint(tmp_path / "full.pt", require=RUN_KEYS)  # a PyTorch file, but no run's


def test_unreadable_last_points_to_an_intact_best(tmp_path: Path) -> None:
    payload = {"config": {"name": "x"}, "model": {"w": torch.ones(2)}, "loop": {"step": 3}}
    for name in ("last.pt", "best.pt"):
        save_checkpoint(tmp_path / name, payload)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(UserError) as info:
        load_checkpoint(last, require=RUN_KEYS)
    msg = str(info.value)
    assert "truncated" in msg and f"{tmp_path / 'best.pt'} is intact" in msg and "\n" not in msg
    (tmp_path / "best.pt").write_bytes(b"garbage")  # both broken: no false hope
    with pytest.raises(UserError) as info:
        load_checkpoint(last, require=RUN_KEYS)
    assert "intact" not in str(info.value)


def test_config_hash_is_stable_and_order_independent() -> None:
    a = {"model": {"hidden_size": 650, "cell": "revgru"}, "train": {"lr": 0.1}}
    b = {"train": {"lr": 0.1}, "model": {"cell": "revgru", "hidden_size": 650}}
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16 and int(config_hash(a), 16) >= 0
    # the canonical form is pinned: if it drifted, hashes of old runs would stop matching
    assert config_hash({"b": [1, 2], "a": 1}) == hashlib.sha256(b'{"a":1,"b":[1,2]}').hexdigest()[:16]
    assert config_hash(a) != config_hash({**a, "train": {"lr": 0.2}})


def test_check_compatible_names_first_differing_key(tmp_path: Path) -> None:
    path = Path("runs/x/last.pt")
    ckpt = {"config": _config()}
    here = _config()
    here["model"]["hidden_size"] = 650
    with pytest.raises(UserError) as info:
        check_compatible(ckpt, here, path)
    assert str(info.value) == ("runs/x/last.pt was written by a different spec: "
                               "model.hidden_size is 1150 there, 650 here")
    assert info.value.exit_code == 2


def test_check_compatible_ignores_ignored_keys() -> None:
    here = _config()
    here["train"]["epochs"] = 80
    here["train"]["max_steps"] = 1000
    here["output"] = {"dir": "elsewhere", "name": "y", "extra": True}
    check_compatible({"config": _config()}, here, Path("last.pt"))  # no error

    with pytest.raises(UserError, match="train.epochs"):
        check_compatible({"config": _config()}, here, Path("last.pt"), ignore=("output",))


def test_check_compatible_added_removed_and_bool_keys() -> None:
    here = _config()
    here["model"]["tie_weights"] = True
    with pytest.raises(UserError, match=r"model.tie_weights is not set there, true here"):
        check_compatible({"config": _config()}, here, Path("a.pt"))
    with pytest.raises(UserError, match=r"model.tie_weights is true there, not set here"):
        check_compatible({"config": here}, _config(), Path("a.pt"))
    flag = _config()
    flag["train"]["seed"] = True  # True == 1 in python, but not the same spec
    with pytest.raises(UserError, match="train.seed"):
        check_compatible({"config": _config()}, flag, Path("a.pt"))
    with pytest.raises(UserError, match="has no config"):
        check_compatible({"step": 3}, _config(), Path("a.pt"))


def test_check_compatible_after_save_load(tmp_path: Path) -> None:
    """Configs come back from torch.load unchanged (tuples vs lists must not count as a change)."""
    cfg = _config()
    cfg["model"]["sizes"] = (1, 2)
    save_checkpoint(tmp_path / "c.pt", {"config": cfg})
    here = _config()
    here["model"]["sizes"] = [1, 2]
    check_compatible(load_checkpoint(tmp_path / "c.pt"), here, tmp_path / "c.pt")
