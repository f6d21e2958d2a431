"""Hostile input against every command: each must fail with its exit code and one line that names
the file, key or argument at fault, never a traceback, and never touch the runs already there.

Each case runs the real command line in this process (``revrnn_cli.cli.main``). Before and after
it, every file of two finished runs (a language model and a translation model) is hashed: the
hashes must not change, whatever the case did. The runs are tiny (the quickstart's repeat task
shrunk with ``--set``, and the suite's tiny Multi30k), so the whole module takes seconds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from revrnn_cli import cli, runner
from revrnn_cli.errors import EXIT_DATA, EXIT_OK, EXIT_RESOURCE, EXIT_USAGE
from revrnn_cli.training.lock import RunLock

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
SHRINK = ["data.seq_len=8", "data.n_train=32", "data.n_valid=8", "data.n_test=8", "model.emb_size=8",
          "model.hidden_size=8", "train.epochs=1", "train.batch_size=8", "train.eval_batch_size=8",
          "train.log_interval=2", "device=cpu"]
TRANSLATION = {
    "task": "translation", "name": "adv_m30k", "seed": 2, "device": "cpu",
    "data": {"dataset": "multi30k", "n_train": 24, "n_valid": 8, "n_test": 4},
    "model": {"cell": "revgru", "emb_size": 8, "hidden_size": 8, "context": "emb", "chunk": 4},
    "train": {"lr": 0.5, "batch_size": 8, "eval_batch_size": 8, "epochs": 1, "log_interval": 1},
    "decode": {"beam_size": 2, "max_len": 6, "batch_size": 4},
}

PATH_LINE = "revrnn: reversible steps run on"  # the one informational line a run prints first


def shrunk(*extra: str) -> list[str]:
    return [a for s in [*SHRINK, *extra] for a in ("--set", s)]


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (hidden ones too), by path."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def read_only(path: Path, monkeypatch) -> None:
    """Make ``path`` read-only, for root too: root ignores permission bits, so os.access is taught
    to honour them for this path (what it reports for any other user)."""
    path.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        ro = str(path.resolve())

        def access(p, mode, *a, **k):
            if str(Path(p).resolve()) == ro and mode & os.W_OK:
                return False
            return real(p, mode, *a, **k)

        monkeypatch.setattr(os, "access", access)


@dataclass
class World:
    """What the cases act on: two finished runs, their spec, broken files and a scratch directory."""

    dir: Path
    run: Path
    m30k: Path
    spec: Path
    m30k_spec: Path
    scratch: Path = field(default=None)

    def protected(self) -> tuple[Path, ...]:
        return self.run, self.m30k


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_data) -> World:
    d = tmp_path_factory.mktemp("adversarial")
    run = d / "run"
    runner.train(QUICKSTART, SHRINK, run_dir=run, progress=False)
    m30k_spec = d / "m30k.yaml"
    m30k_spec.write_text(yaml.safe_dump({**TRANSLATION, "data": {**TRANSLATION["data"], **tiny_data}}))
    m30k = d / "m30k"
    runner.train(m30k_spec, [], run_dir=m30k, progress=False)
    return World(d, run, m30k, QUICKSTART, m30k_spec)


@dataclass
class Case:
    argv: Callable[[World], list]
    code: int
    needles: tuple[str, ...]
    setup: Callable[[World, object], None] | None = None
    leaves_nothing: str | None = None  # a path (relative to the scratch dir) that must not exist afterwards


def _write(w: World, name: str, data: str | bytes) -> Path:
    p = w.scratch / name
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def _copy_run(name: str, damage: Callable[[Path], None]):
    """Set-up: a damaged copy of the run (the run itself must stay as it is)."""
    def setup(w: World, mp) -> None:
        shutil.copytree(w.run, w.scratch / name)
        damage(w.scratch / name)
    return setup


def _edit_lr(run: Path) -> None:
    """config.yaml edited in a key that a resume may not change."""
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("lr: 1.0", "lr: 0.5"))


HELD: list[RunLock] = []


def _hold_lock(path_of: Callable[[World], Path]):
    def setup(w: World, mp) -> None:
        HELD.append(RunLock.acquire(path_of(w)))  # held by this process: "another process" for the command
    return setup


def _no_matplotlib(w: World, mp) -> None:
    import sys

    from revrnn_cli.memory import profile

    mp.setitem(sys.modules, "matplotlib", None)
    mp.setitem(sys.modules, "matplotlib.pyplot", None)
    mp.setattr(profile, "profile_row", lambda *a, **k: pytest.fail("the profile ran before --plot was checked"))


def _disk_full(w: World, mp) -> None:
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    mp.setattr(torch, "save", full)


def _translation_decoding_forbidden(w: World, mp) -> None:
    from revrnn_cli.tasks import decode

    read_only(w.m30k, mp)
    mp.setattr(decode, "translate_split", lambda *a, **k: pytest.fail("decoded before checking the directory"))


CASES: dict[str, Case] = {
    # ---- train: the spec file ----
    "train-missing-spec": Case(lambda w: ["train", w.scratch / "nope.yaml"], EXIT_USAGE, ("nope.yaml", "no such spec")),
    "train-spec-is-dir": Case(lambda w: ["train", w.scratch], EXIT_USAGE, ("is a directory",)),
    "train-spec-not-utf8": Case(lambda w: ["train", _write(w, "l1.yaml", "name: caf\u00e9\n".encode("latin-1"))],
                                EXIT_USAGE, ("l1.yaml", "UTF-8")),
    "train-spec-empty": Case(lambda w: ["train", _write(w, "e.yaml", "")], EXIT_USAGE, ("e.yaml", "empty")),
    "train-spec-comments": Case(lambda w: ["train", _write(w, "c.yaml", "# nothing\n")], EXIT_USAGE, ("c.yaml", "empty")),
    "train-spec-duplicate": Case(lambda w: ["train", _write(w, "d.yaml", "name: a\ntrain:\n  lr: 1\n  lr: 2\n")],
                                 EXIT_USAGE, ("d.yaml:4", "duplicate key 'lr'")),
    "train-spec-bad-yaml": Case(lambda w: ["train", _write(w, "y.yaml", "name: [a\n")], EXIT_USAGE, ("y.yaml", "invalid YAML")),
    "train-spec-list": Case(lambda w: ["train", _write(w, "list.yaml", "- a\n- b\n")], EXIT_USAGE, ("list.yaml", "mapping")),
    "train-spec-binary": Case(lambda w: ["train", _write(w, "b.yaml", b"\x00\x01\x02\xff")], EXIT_USAGE, ("b.yaml",)),
    # ---- train: overrides ----
    "train-unknown-key": Case(lambda w: ["train", w.spec, *shrunk("train.lrr=1")], EXIT_USAGE, ("train.lrr", "unknown key")),
    "train-wrong-type": Case(lambda w: ["train", w.spec, *shrunk("train.epochs=abc")], EXIT_USAGE, ("train.epochs",)),
    "train-lr-inf": Case(lambda w: ["train", w.spec, *shrunk("train.lr=.inf")], EXIT_USAGE, ("train.lr", "finite")),
    "train-lr-nan": Case(lambda w: ["train", w.spec, *shrunk("train.lr=.nan")], EXIT_USAGE, ("train.lr", "finite")),
    "train-lr-negative": Case(lambda w: ["train", w.spec, *shrunk("train.lr=-1")], EXIT_USAGE, ("train.lr",)),
    "train-set-no-equals": Case(lambda w: ["train", w.spec, "--set", "train.lr"], EXIT_USAGE, ("train.lr", "KEY=VALUE")),
    "train-set-empty-part": Case(lambda w: ["train", w.spec, "--set", "train..lr=1"], EXIT_USAGE, ("train..lr", "empty part")),
    "train-odd-hidden": Case(lambda w: ["train", w.spec, *shrunk("model.hidden_size=7")], EXIT_USAGE, ("hidden_size", "got 7")),
    "train-synthetic-key-on-ptb": Case(lambda w: ["train", w.spec, "--set", "data.dataset=ptb"], EXIT_USAGE,
                                       ("seq_len", "ptb")),
    "train-nproc-0": Case(lambda w: ["train", w.spec, "--nproc", "0"], EXIT_USAGE, ("--nproc",)),
    # ---- train: where the run goes ----
    "train-run-dir-holds-a-run": Case(lambda w: ["train", w.spec, *shrunk(), "--run-dir", w.run], EXIT_USAGE,
                                      ("already holds a run", "--overwrite", "--resume")),
    "train-run-dir-is-a-file": Case(lambda w: ["train", w.spec, *shrunk(), "--run-dir", _write(w, "f", "x")],
                                    EXIT_USAGE, ("--run-dir", "not a directory")),
    "train-run-dir-under-a-file": Case(lambda w: ["train", w.spec, *shrunk(), "--run-dir", _write(w, "g", "x") / "r"],
                                       EXIT_USAGE, ("--run-dir", "cannot create")),
    "train-runs-dir-is-a-file": Case(lambda w: ["train", w.spec, *shrunk(f"output.runs_dir={_write(w, 'h', 'x')}")],
                                     EXIT_USAGE, ("output.runs_dir",)),
    "train-runs-dir-under-a-file": Case(
        lambda w: ["train", w.spec, *shrunk(f"output.runs_dir={_write(w, 'i', 'x') / 'runs'}")],
        EXIT_USAGE, ("output.runs_dir", "cannot create")),
    "train-runs-dir-read-only": Case(lambda w: ["train", w.spec, *shrunk(f"output.runs_dir={w.scratch / 'ro'}")],
                                     EXIT_USAGE, ("output.runs_dir", "not writable"),
                                     setup=lambda w, mp: ((w.scratch / "ro").mkdir(), read_only(w.scratch / "ro", mp))),
    "train-run-dir-locked": Case(lambda w: ["train", w.spec, *shrunk(), "--run-dir", w.scratch / "busy"], EXIT_USAGE,
                                 ("busy", "is training in this run directory"),
                                 setup=lambda w, mp: ((w.scratch / "busy").mkdir(), _hold_lock(lambda w: w.scratch / "busy")(w, mp))),
    "train-overwrite-foreign-files": Case(lambda w: ["train", w.spec, *shrunk(), "--run-dir", w.scratch, "--overwrite"],
                                          EXIT_USAGE, ("not a run's", "notes.txt", "--overwrite"),
                                          setup=lambda w, mp: _write(w, "notes.txt", "mine")),
    # ---- train: failures before the first step leave no directory ----
    "train-too-large": Case(lambda w: ["train", w.spec, *shrunk("model.emb_size=4000000", "model.hidden_size=4000000"),
                                       "--run-dir", w.scratch / "big"], EXIT_RESOURCE, ("out of memory",),
                            leaves_nothing="big"),
    "train-no-corpus": Case(lambda w: ["train", w.spec, "--set", "data.dataset=ptb", "--set", "data.download=false",
                                       "--set", "data.vocab_size=10", "--set", "data.seq_len=20", "--set",
                                       "data.n_train=2000", "--set", "data.n_valid=200", "--set", "data.n_test=200",
                                       "--data-dir", w.scratch / "nodata", "--set", f"output.runs_dir={w.scratch / 'runs'}"],
                            EXIT_DATA, ("nodata", "ptb.train.txt"), leaves_nothing="runs/quickstart"),
    "train-no-cuda": Case(lambda w: ["train", w.spec, *shrunk("device=cuda"), "--run-dir", w.scratch / "gpu"], EXIT_USAGE,
                          ("cuda", "not available"), leaves_nothing="gpu"),
    "train-disk-full": Case(lambda w: ["train", w.spec, *shrunk(), "--run-dir", w.scratch / "full"], EXIT_RESOURCE,
                            ("full", ".pt: cannot write: No space left on device"), setup=_disk_full),
    # ---- train --resume ----
    "resume-missing": Case(lambda w: ["train", "--resume", w.scratch / "gone"], EXIT_USAGE, ("gone", "no such run")),
    "resume-yaml-as-checkpoint": Case(lambda w: ["train", "--resume", w.run / "config.yaml"], EXIT_USAGE,
                                      ("config.yaml", "not a revrnn checkpoint")),
    "resume-truncated-last": Case(lambda w: ["train", "--resume", w.scratch / "cut"], EXIT_USAGE,
                                  ("last.pt", "truncated", "best.pt is intact"),
                                  setup=_copy_run("cut", lambda r: (r / "last.pt").write_bytes((r / "last.pt").read_bytes()[:999]))),
    "resume-edited-config": Case(lambda w: ["train", "--resume", w.scratch / "edited"], EXIT_USAGE,
                                 ("config.yaml", "train.lr"), setup=_copy_run("edited", _edit_lr)),
    "resume-other-run-dir": Case(lambda w: ["train", "--resume", w.run, "--run-dir", w.scratch / "elsewhere"], EXIT_USAGE,
                                 ("--run-dir", "its own directory"), leaves_nothing="elsewhere"),
    "resume-overwrite": Case(lambda w: ["train", "--resume", w.run, "--overwrite"], EXIT_USAGE, ("--overwrite", "--resume")),
    "resume-read-only": Case(lambda w: ["train", "--resume", w.run, "--set", "train.epochs=2"], EXIT_USAGE,
                             ("not writable", "run directory"), setup=lambda w, mp: read_only(w.run, mp)),
    "resume-locked": Case(lambda w: ["train", "--resume", w.run, "--set", "train.epochs=2"], EXIT_USAGE,
                          ("is training in this run directory",), setup=_hold_lock(lambda w: w.run)),
    "resume-other-spec": Case(lambda w: ["train", "--resume", w.run, "--set", "model.hidden_size=16"], EXIT_USAGE,
                              ("model.hidden_size", "different spec")),
    "resume-finished": Case(lambda w: ["train", "--resume", w.run], EXIT_OK, ("nothing to train", "train.epochs")),
    # ---- evaluate ----
    "evaluate-missing": Case(lambda w: ["evaluate", w.scratch / "nope"], EXIT_USAGE, ("nope",)),
    "evaluate-yaml": Case(lambda w: ["evaluate", w.spec], EXIT_USAGE, ("quickstart.yaml", "not a revrnn checkpoint")),
    "evaluate-empty-file": Case(lambda w: ["evaluate", _write(w, "empty.pt", b"")], EXIT_USAGE, ("empty.pt", "empty file")),
    "evaluate-truncated": Case(lambda w: ["evaluate", _write(w, "t.pt", (w.run / "best.pt").read_bytes()[:2000])],
                               EXIT_USAGE, ("t.pt", "truncated")),
    "evaluate-foreign-torch-file": Case(lambda w: ["evaluate", w.scratch / "w.pt"], EXIT_USAGE,
                                        ("w.pt", "not a revrnn checkpoint"),
                                        setup=lambda w, mp: torch.save({"weight": torch.ones(2)}, w.scratch / "w.pt")),
    "evaluate-dir-without-checkpoints": Case(lambda w: ["evaluate", w.scratch], EXIT_USAGE, ("no last.pt or best.pt",)),
    "evaluate-bad-split": Case(lambda w: ["evaluate", w.run, "--split", "train"], EXIT_USAGE, ("--split",)),
    "evaluate-max-batches-0": Case(lambda w: ["evaluate", w.run, "--max-batches", "0"], EXIT_USAGE, ("--max-batches",)),
    "evaluate-beam-0": Case(lambda w: ["evaluate", w.m30k, "--beam", "0"], EXIT_USAGE, ("--beam",)),
    "evaluate-translation-read-only": Case(lambda w: ["evaluate", w.m30k, "--split", "test"], EXIT_USAGE,
                                           ("m30k", "not writable", "translations"), setup=_translation_decoding_forbidden),
    # ---- memprofile ----
    "memprofile-not-utf8": Case(lambda w: ["memprofile", _write(w, "m.yaml", b"name: \xff\n")], EXIT_USAGE, ("m.yaml", "UTF-8")),
    "memprofile-empty-spec": Case(lambda w: ["memprofile", _write(w, "me.yaml", "")], EXIT_USAGE, ("me.yaml", "empty")),
    "memprofile-seq-len-gap": Case(lambda w: ["memprofile", w.spec, "--seq-len", "10,,20"], EXIT_USAGE, ("--seq-len", "10,,20")),
    "memprofile-seq-len-word": Case(lambda w: ["memprofile", w.spec, "--seq-len", "ten"], EXIT_USAGE, ("--seq-len",)),
    "memprofile-seq-len-zero": Case(lambda w: ["memprofile", w.spec, "--seq-len", "0,5"], EXIT_USAGE, ("--seq-len",)),
    "memprofile-modes-gap": Case(lambda w: ["memprofile", w.spec, "--modes", "bptt,,store"], EXIT_USAGE,
                                 ("--modes", "empty item")),
    "memprofile-modes-unknown": Case(lambda w: ["memprofile", w.spec, "--modes", "fast"], EXIT_USAGE, ("--modes", "fast")),
    "memprofile-batch-0": Case(lambda w: ["memprofile", w.spec, "--batch", "0"], EXIT_USAGE, ("--batch",)),
    "memprofile-plot-no-matplotlib": Case(lambda w: ["memprofile", w.spec, *shrunk(), "--seq-len", "4", "--modes", "store",
                                                     "--no-peak", "--plot", w.scratch / "m.png"], EXIT_USAGE,
                                          ("--plot", "matplotlib"), setup=_no_matplotlib),
    "memprofile-plot-nowhere": Case(lambda w: ["memprofile", w.spec, "--plot", w.scratch / "no" / "dir" / "m.png"],
                                    EXIT_USAGE, ("--plot", "m.png")),
    "memprofile-odd-hidden": Case(lambda w: ["memprofile", w.spec, "--set", "model.hidden_size=7"], EXIT_USAGE,
                                  ("hidden_size", "got 7")),
    # ---- verify-reversal ----
    "verify-not-utf8": Case(lambda w: ["verify-reversal", _write(w, "v.yaml", b"cell: \xfe\n")], EXIT_USAGE, ("v.yaml", "UTF-8")),
    "verify-empty-spec": Case(lambda w: ["verify-reversal", _write(w, "ve.yaml", "")], EXIT_USAGE, ("ve.yaml", "empty")),
    "verify-duplicate-key": Case(lambda w: ["verify-reversal", _write(w, "vd.yaml", "cell: revgru\ncell: revlstm\n")],
                                 EXIT_USAGE, ("vd.yaml", "duplicate key 'cell'")),
    "verify-checks-not-mappings": Case(lambda w: ["verify-reversal", _write(w, "vc.yaml", "checks: [1, 2]\n")],
                                       EXIT_USAGE, ("vc.yaml", "checks")),
    "verify-unknown-key": Case(lambda w: ["verify-reversal", _write(w, "vu.yaml", "cell: revgru\nhiden: 8\n")],
                               EXIT_USAGE, ("vu.yaml", "hiden")),
    "verify-odd-hidden": Case(lambda w: ["verify-reversal", "--hidden", "7"], EXIT_USAGE, ("--hidden",)),
    "verify-forget-bits": Case(lambda w: ["verify-reversal", "--max-forget-bits", "4"], EXIT_USAGE, ("--max-forget-bits",)),
    "verify-steps-0": Case(lambda w: ["verify-reversal", "--steps", "0"], EXIT_USAGE, ("--steps",)),
    "verify-dropout-high": Case(lambda w: ["verify-reversal", "--dropout", "1.5"], EXIT_USAGE, ("--dropout",)),
    "verify-dropout-inf": Case(lambda w: ["verify-reversal", _write(w, "vi.yaml", "cell: revgru\ndropout: .inf\n")],
                               EXIT_USAGE, ("vi.yaml", "dropout")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, world, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    if name == "train-no-cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    world.scratch = tmp_path
    monkeypatch.chdir(tmp_path)
    before = tree_hashes(*world.protected())
    try:
        if case.setup:
            case.setup(world, monkeypatch)
        argv = [str(a) for a in case.argv(world)]
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        out, err = capsys.readouterr()
    finally:
        while HELD:
            HELD.pop().release()
        for p in (world.run, world.m30k, tmp_path / "ro"):
            if p.exists():
                p.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    assert e.value.code == case.code, err
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(PATH_LINE)]
    assert len(lines) == 1 and out == "", (out, err)
    for needle in case.needles:
        assert needle in err, (needle, err)
    if case.leaves_nothing:
        assert not (tmp_path / case.leaves_nothing).exists(), sorted(p.name for p in tmp_path.iterdir())
    assert tree_hashes(*world.protected()) == before, "an existing run was changed"


def test_every_command_is_attacked():
    per_command = {}
    for name in CASES:
        command = {"resume": "train", "verify": "verify-reversal"}.get(name.split("-")[0], name.split("-")[0])
        per_command[command] = per_command.get(command, 0) + 1
    assert sum(per_command.values()) >= 40
    assert set(per_command) == {"train", "evaluate", "memprofile", "verify-reversal"}
    assert min(per_command.values()) >= 8, per_command


def _plain(text: str) -> str:
    """Help text without its box drawing and line breaks."""
    return " ".join(text.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def test_help_texts_show_every_bracketed_default(capsys, monkeypatch):
    """Help is rendered as rich markup, where ``[spec's train.batch_size]`` is a (missing) style tag:
    unescaped, it vanished and left "Batch size ." behind."""
    import typer

    monkeypatch.setenv("COLUMNS", "400")  # one line per option: the help column is not interleaved

    group = typer.main.get_command(cli.app)
    checked = 0
    for name, command in group.commands.items():
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cli.main([name, "--help"])
        shown = _plain(capsys.readouterr().out)
        assert e.value.code == 0
        for param in command.params:
            help_text = getattr(param, "help", None) or ""
            if "[" in help_text:
                checked += 1
                assert _plain(help_text.replace("\\[", "[")) in shown, (name, param.name, shown)
        assert not re.search(r"\s[.;,](\s|$)", shown), (name, shown)  # what an eaten "[...]" leaves
    assert checked >= 10
