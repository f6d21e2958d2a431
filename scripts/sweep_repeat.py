"""How many hidden units each model needs for the repeat task, by sequence length (paper §4).

    python scripts/sweep_repeat.py                                  # the full grid (about 40 min on one thread)
    python scripts/sweep_repeat.py --models gru,nf_revgru --lengths 5,10 --sizes 4,8,16
    python scripts/sweep_repeat.py --task remember --models gru,revgru,nf_revgru --lengths 5,10
    python scripts/sweep_repeat.py --table docs/repeat_sweep.jsonl  # only print the table of saved rows

For every model (the spec ``experiments/<task>_<model>.yaml``) and sequence length, the hidden sizes
are tried from the smallest up. Each configuration trains in-process through the same
:class:`~revrnn_cli.tasks.lm.LMTask` and :class:`~revrnn_cli.training.loop.Trainer` as
``revrnn train``, with ``data.seq_len`` and ``model.emb_size`` = ``model.hidden_size`` overridden
(one layer: its width is the embedding's). It stops once the validation accuracy reaches
``--target`` (0.99), when the best accuracy has not improved by 0.005 for ``--patience`` epochs, or
after the spec's ``train.epochs``. The first size that reaches the target ends the search for that
model and length, unless ``--all-sizes``: larger sizes are assumed to reach it too (not measured).

One JSON row per configuration is appended to ``--out`` (``docs/repeat_sweep.jsonl``); a row already
there is not trained again, so an interrupted sweep continues where it stopped. The Markdown table
(smallest size that reached the target, per model and length; otherwise the best accuracy seen) is
printed at the end. One intra-op thread, as everywhere in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # sweeplib, also when imported by the tests
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from revrnn_cli.engine import deterministic_settings
from revrnn_cli.engine.fixed_point import FixedPointError
from revrnn_cli.errors import UserError
from revrnn_cli.runner import seed_everything
from revrnn_cli.spec import load_spec
from revrnn_cli.tasks.lm import LMTask
from revrnn_cli.training.loop import Trainer
from sweeplib import Recorder, git_commit, ints, load_rows  # noqa: E402

MODELS = ("gru", "revgru", "nf_revgru", "lstm", "revlstm", "nf_revlstm")
LABELS = {"gru": "GRU", "revgru": "RevGRU (3-bit buffer)", "nf_revgru": "NF-RevGRU (no forgetting)",
          "lstm": "LSTM", "revlstm": "RevLSTM (3-bit buffer)", "nf_revlstm": "NF-RevLSTM (no forgetting)"}
MIN_GAIN = 0.005  # an epoch "improves" when the best validation accuracy rises by at least this much


def train_one(spec_path: Path, seq_len: int, hidden: int, target: float, patience: int,
              extra: list[str] = ()) -> dict:
    """Train one configuration epoch by epoch; stop at ``target`` accuracy, on a plateau or at ``train.epochs``."""
    overrides = [f"data.seq_len={seq_len}", f"model.emb_size={hidden}", f"model.hidden_size={hidden}", *extra]
    spec, config = load_spec(spec_path, overrides)
    max_epochs = spec.train.epochs
    deterministic_settings()
    seed_everything(spec.seed)
    t0 = time.perf_counter()
    task = LMTask(spec, torch.device("cpu"))
    row = {"task": spec.data.dataset, "spec": spec_path.stem, "cell": spec.model.cell, "forget": spec.model.forget,
           "max_forget_bits": spec.model.max_forget_bits if spec.model.reversible and spec.model.forget else None,
           "vocab_size": spec.data.vocab_size, "seq_len": seq_len, "hidden": hidden,
           "parameters": sum(p.numel() for p in task.model.parameters()), "seed": spec.seed,
           "lr": spec.train.lr, "batch_size": spec.train.batch_size, "n_train": spec.data.n_train,
           "max_epochs": max_epochs, "target": target}
    accs: list[float] = []
    stopped, error = "max_epochs", None
    with tempfile.TemporaryDirectory(prefix="sweep_repeat_") as run_dir, Recorder("valid") as log:
        trainer = Trainer(spec.train, task, Path(run_dir), config, log, progress=False)
        best, since = -1.0, 0
        try:
            for epoch in range(1, max_epochs + 1):
                trainer.cfg.epochs = epoch  # one more epoch of the same run: state, optimizer and data order carry on
                trainer.fit()
                acc = float(log.records[-1]["accuracy"])
                accs.append(acc)
                if acc >= target:
                    stopped = "target"
                    break
                if acc >= best + MIN_GAIN:
                    best, since = acc, 0
                else:
                    since += 1
                    if since >= patience:
                        stopped = "plateau"
                        break
        except (UserError, FixedPointError) as e:  # a non-finite loss or a state overflow ends this configuration
            stopped, error = "error", f"{type(e).__name__}: {e}"
        test = task.evaluate("test")["accuracy"] if error is None else None
    row.update({"epochs": len(accs), "steps": trainer.state.step, "stopped": stopped,
                "reached": bool(accs) and max(accs) >= target, "best_valid_accuracy": max(accs, default=None),
                "final_valid_accuracy": accs[-1] if accs else None, "test_accuracy": test,
                "valid_accuracy_by_epoch": [round(a, 4) for a in accs], "seconds": round(time.perf_counter() - t0, 1)})
    if error:
        row["error"] = error
    return row


def _key(row: dict) -> tuple:
    return row["spec"], row["seq_len"], row["hidden"]


def table(rows: list[dict], target: float = 0.99) -> str:
    """Markdown: per model (row) and length (column) the smallest size reaching ``target``, else the best accuracy."""
    lengths = sorted({r["seq_len"] for r in rows})
    specs = [s for s in dict.fromkeys(r["spec"] for r in rows)]
    order = {f"{r['task']}_{m}": i for r in rows for i, m in enumerate(MODELS)}
    specs.sort(key=lambda s: order.get(s, len(MODELS)))
    out = ["| model | " + " | ".join(f"T = {k}" for k in lengths) + " |",
           "|---|" + "---:|" * len(lengths)]
    for s in specs:
        cells = []
        for k in lengths:
            runs = sorted((r for r in rows if r["spec"] == s and r["seq_len"] == k), key=lambda r: r["hidden"])
            if not runs:
                cells.append("")
                continue
            ok = [r for r in runs if r["reached"]]
            if ok:
                r = ok[0]
                cells.append(f"**{r['hidden']}** ({r['epochs']} ep)")
            else:
                r = max(runs, key=lambda r: r["best_valid_accuracy"] or 0.0)
                acc = r["best_valid_accuracy"]
                cells.append(f"> {runs[-1]['hidden']}: best {acc:.3f} at {r['hidden']}" if acc is not None else "error")
        name = LABELS.get(s.split("_", 1)[1], s) if "_" in s else s
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def accuracy_grid(rows: list[dict]) -> str:
    """Markdown: best validation accuracy of every configuration that was trained."""
    sizes = sorted({r["hidden"] for r in rows})
    out = ["| model | T | " + " | ".join(f"H = {h}" for h in sizes) + " |", "|---|---:|" + "---:|" * len(sizes)]
    specs = list(dict.fromkeys(r["spec"] for r in rows))
    order = {f"{r['task']}_{m}": i for r in rows for i, m in enumerate(MODELS)}
    specs.sort(key=lambda s: order.get(s, len(MODELS)))
    for s in specs:
        for k in sorted({r["seq_len"] for r in rows if r["spec"] == s}):
            by_h = {r["hidden"]: r for r in rows if r["spec"] == s and r["seq_len"] == k}
            cells = []
            for h in sizes:
                r = by_h.get(h)
                if r is None:
                    cells.append("")
                elif r["best_valid_accuracy"] is None:
                    cells.append("error")
                else:
                    cells.append(f"{r['best_valid_accuracy']:.3f}" + ("" if r["stopped"] != "plateau" else "ᵖ"))
            name = LABELS.get(s.split("_", 1)[1], s) if "_" in s else s
            out.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="repeat", choices=("repeat", "remember"))
    ap.add_argument("--models", default="gru,revgru,nf_revgru,lstm,revlstm,nf_revlstm")
    ap.add_argument("--lengths", default="5,10,20,40", type=ints)
    ap.add_argument("--sizes", default="2,4,8,16,32,64,128", type=ints)
    ap.add_argument("--target", default=0.99, type=float)
    ap.add_argument("--patience", default=6, type=int, help="epochs without a 0.005 gain before giving up")
    ap.add_argument("--all-sizes", action="store_true", help="also train the sizes above the first that reaches the target")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="further spec overrides for every configuration (e.g. train.epochs=10)")
    ap.add_argument("--out", default=ROOT / "docs" / "repeat_sweep.jsonl", type=Path)
    ap.add_argument("--table", type=Path, metavar="JSONL", help="only print the tables of saved rows")
    args = ap.parse_args(argv)
    if args.table:
        rows = load_rows(args.table)
        print(table(rows, args.target))
        print()
        print(accuracy_grid(rows))
        return 0

    torch.set_num_threads(1)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if not (ROOT / "experiments" / f"{args.task}_{m}.yaml").is_file():
            ap.error(f"no spec experiments/{args.task}_{m}.yaml")
    done = {_key(r): r for r in load_rows(args.out)}
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
           "commit": git_commit()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    for m in models:
        spec_path = ROOT / "experiments" / f"{args.task}_{m}.yaml"
        for k in args.lengths:
            for h in sorted(args.sizes):
                row = done.get((spec_path.stem, k, h))
                if row is None:
                    row = {**train_one(spec_path, k, h, args.target, args.patience, args.extra), **env}
                    with args.out.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
                    done[_key(row)] = row
                    print(f"{m:>11} T={k:<3} H={h:<4} acc={row['best_valid_accuracy'] or 0:.3f} "
                          f"epochs={row['epochs']:<3} {row['stopped']:<10} {row['seconds']:6.1f}s "
                          f"(total {time.perf_counter() - t_start:6.0f}s)", file=sys.stderr, flush=True)
                if row["reached"] and not args.all_sizes:
                    break
    rows = [r for r in done.values() if r["spec"] in {f"{args.task}_{m}" for m in models}]
    print(table(rows, args.target))
    print()
    print(accuracy_grid(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
