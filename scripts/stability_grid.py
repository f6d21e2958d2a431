"""Does a recipe that trains an LSTM also train the RevLSTM? A short-run grid on Penn Treebank.

    python scripts/stability_grid.py --data-dir DIR                 # the grid of docs/stability.md
    python scripts/stability_grid.py --data-dir DIR --models revlstm,revlstm_bounded --layers 2 --seeds 1111
    python scripts/stability_grid.py --table docs/stability_grid.jsonl   # only print the table of saved rows

Every configuration starts from ``experiments/ptb_revlstm_small.yaml`` (the project's LSTM recipe:
SGD at lr 20, clip 0.25, randomised BPTT 70, light dropout), made ``--hidden`` units wide, and
overrides the learning rate, the clipping norm, DropConnect on the recurrent weights
(``model.wdrop``), the number of layers and the seed. It then trains ``--steps`` optimizer steps
through the same :class:`~revrnn_cli.tasks.lm.LMTask` and :class:`~revrnn_cli.training.loop.Trainer`
as ``revrnn train`` (no validation: the steps are a fraction of an epoch). Models:

* ``lstm``: the ordinary LSTM baseline (``nn.LSTM`` per layer);
* ``revlstm``: the RevLSTM as in the paper (``model.cell_update=paper``);
* ``revlstm_bounded``: the RevLSTM with convex updates (``model.cell_update=bounded``).

A run *diverged* when its loss became non-finite or a state left the fixed-point range (the run
stops), when its final training loss (the mean over the last ``--tail`` steps) is above the loss
of its first step (ln of the vocabulary size, about 9.2, for every model: no better than a uniform
guess), or when a state grew beyond ``--state-limit`` (100: an LSTM's h is bounded by 1). The
table also shows the worst single-step loss: a spike above the first step's loss that the run
recovers from (the LSTM has some) is not counted as divergence. Each row keeps the largest |state|
(h and c of every layer, at segment ends) and the fraction of forget gates quantised to exactly 1,
over the whole run and per logged interval of 10 steps.

Subnormal floats are flushed to zero (``torch.set_flush_denormal``): a diverging RevLSTM otherwise
runs several times slower. One JSON row per configuration is appended to ``--out``; rows already there are not trained again,
so an interrupted grid continues where it stopped. The Markdown table is printed at the end. One
intra-op thread, as everywhere in docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import math
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
from sweeplib import Recorder, floats, git_commit, ints, load_rows  # noqa: E402

SPEC = ROOT / "experiments" / "ptb_revlstm_small.yaml"
MODELS = {"lstm": ["model.cell=lstm"],
          "revlstm": ["model.cell=revlstm", "model.cell_update=paper"],
          "revlstm_bounded": ["model.cell=revlstm", "model.cell_update=bounded"]}
LABELS = {"lstm": "LSTM", "revlstm": "RevLSTM (paper)", "revlstm_bounded": "RevLSTM (bounded)"}
INTERVAL = 10  # steps per logged interval


def train_one(model: str, lr: float, clip: float, wdrop: float, layers: int, seed: int, hidden: int, steps: int,
              tail: int, data_dir: str | None, extra: list[str] = (), state_limit: float = 100.0) -> dict:
    overrides = [*MODELS[model], *extra, f"model.emb_size={hidden}", f"model.hidden_size={hidden}", f"model.layers={layers}",
                 f"model.wdrop={wdrop}", f"train.lr={lr}", f"train.clip={clip}", f"seed={seed}",
                 f"train.max_steps={steps}", f"train.log_interval={INTERVAL}", "train.epochs=100",
                 *([] if spec_is_reversible(model) else ["train.backprop=null"])]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    spec, config = load_spec(SPEC, overrides)
    deterministic_settings()
    seed_everything(spec.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    task = LMTask(spec, torch.device("cpu"))
    losses: list[float] = []
    base_step = task.train_step

    def step(batch):  # keep every step's loss (the Trainer logs interval means)
        out = base_step(batch)
        losses.append(float(out.loss_sum.detach()) / max(out.tokens, 1))
        return out

    task.train_step = step
    error = None
    with tempfile.TemporaryDirectory(prefix="stability_grid_") as run_dir, Recorder("train") as log:
        trainer = Trainer(spec.train, task, Path(run_dir), config, log, progress=False)
        try:
            trainer.fit()
        except (UserError, FixedPointError) as e:  # a non-finite loss or a state overflow ends the run
            error = f"{type(e).__name__}: {e}"
    finite = [v for v in losses if math.isfinite(v)]
    initial = finite[0] if finite else None
    final = sum(finite[-tail:]) / len(finite[-tail:]) if len(finite) >= tail and error is None else None
    spike = next((i + 1 for i, v in enumerate(losses) if not math.isfinite(v) or (initial and v > initial)), None)
    recs = log.records
    max_state = max((r.get("max_state", 0.0) for r in recs), default=None) if spec.model.reversible else None
    row = {"model": model, "cell": spec.model.cell, "cell_update": spec.model.cell_update if spec.model.reversible else None,
           "lr": lr, "clip": clip, "wdrop": wdrop, "layers": layers, "seed": seed, "hidden": hidden,
           "extra": list(extra), "steps_asked": steps, "steps": len(losses), "tail": tail,
           "parameters": sum(p.numel() for p in task.model.parameters()),
           "initial_loss": initial, "final_loss": final, "max_loss": max(finite, default=None),
           "first_step_above_initial": spike,
           "state_limit": state_limit, "max_state": max_state,
           "saturated_gates": (sum(r.get("saturated_gates", 0.0) for r in recs) / len(recs))
           if recs and spec.model.reversible else None,
           "peak_saturated_gates": max((r.get("saturated_gates", 0.0) for r in recs), default=None)
           if spec.model.reversible else None,
           "trace": [{k: r.get(k) for k in ("step", "loss", "grad_norm", "max_state", "saturated_gates") if k in r}
                     for r in recs],
           "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}
    if error:
        row["error"] = error[:300]
    row["diverged"] = diverged(row)
    return row


def diverged(row: dict) -> bool:
    """Non-finite or stopped, final loss above the first step's, or a state beyond the limit."""
    return (bool(row.get("error")) or row["final_loss"] is None or row["final_loss"] > row["initial_loss"]
            or (row["max_state"] is not None and row["max_state"] > row["state_limit"]))


def spec_is_reversible(model: str) -> bool:
    return "model.cell=lstm" not in MODELS[model]


def _key(row: dict) -> tuple:
    return (row["model"], row["lr"], row["clip"], row["wdrop"], row["layers"], row["seed"], row["hidden"],
            row["steps_asked"], tuple(row.get("extra", ())))


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _cell(r: dict) -> str:
    """A run's final training loss, in bold if it diverged, or the error that stopped it."""
    if r.get("error"):
        return f"**stopped** at step {r['steps']} ({r['error'].split(':')[0]})"
    text = _fmt(r["final_loss"], ".2f")
    return f"**{text}**" if diverged(r) else text


def label(extra) -> str:
    return f" ({', '.join(extra)})" if extra else ""


def table(rows: list[dict]) -> str:
    """Markdown: one row per model and recipe, the seeds aggregated."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["layers"], r["lr"], r["clip"], r["wdrop"], r["model"], tuple(r.get("extra", ()))),
                          []).append(r)
    order = list(MODELS)
    out = ["| layers | lr | clip | wdrop | model | diverged | final train loss (per seed) | worst step loss | "
           "max \\|state\\| | saturated gates (mean / peak) |",
           "|---:|---:|---:|---:|---|---:|---|---:|---:|---:|"]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], order.index(k[4]) if k[4] in order else 9, k[5])):
        rs = sorted(groups[key], key=lambda r: r["seed"])
        layers, lr, clip, wdrop, model, extra = key
        div = sum(diverged(r) for r in rs)
        worst = max((r["max_loss"] for r in rs if r["max_loss"] is not None), default=None)
        losses = " / ".join(_cell(r) for r in rs)
        ms = [r["max_state"] for r in rs if r["max_state"] is not None]
        sat = [r["saturated_gates"] for r in rs if r["saturated_gates"] is not None]
        peak = [r["peak_saturated_gates"] for r in rs if r["peak_saturated_gates"] is not None]
        mstate = f"{max(ms):.3g}" if ms else "-"
        satc = f"{sum(sat) / len(sat):.4f} / {max(peak):.3f}" if sat else "-"
        out.append(f"| {layers} | {lr:g} | {clip:g} | {wdrop:g} | {LABELS.get(model, model)}{label(extra)} | {div}/{len(rs)} | "
                   f"{losses} | {_fmt(worst, '.3g')} | {mstate} | {satc} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--lrs", default="20,40", type=floats)
    ap.add_argument("--clips", default="0.1,0.25", type=floats)
    ap.add_argument("--wdrops", default="0,0.5", type=floats)
    ap.add_argument("--layers", default="1,2", type=ints)
    ap.add_argument("--seeds", default="1111,1", type=ints)
    ap.add_argument("--hidden", default=200, type=int, help="embedding and hidden size of every layer")
    ap.add_argument("--steps", default=150, type=int, help="optimizer steps per configuration")
    ap.add_argument("--tail", default=30, type=int, help="steps whose mean is the final training loss")
    ap.add_argument("--state-limit", default=100.0, type=float, help="a larger |state| counts as diverged")
    ap.add_argument("--data-dir", default=None, help="where the PTB files are (data.data_dir)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="further spec overrides for every configuration (e.g. model.dropouti=0.4)")
    ap.add_argument("--out", default=ROOT / "docs" / "stability_grid.jsonl", type=Path)
    ap.add_argument("--table", type=Path, metavar="JSONL", help="only print the table of saved rows")
    args = ap.parse_args(argv)
    if args.table:
        print(table(load_rows(args.table)))
        return 0

    torch.set_num_threads(1)
    # A diverging RevLSTM drives gate pre-activations to about -88, where float32 sigmoid returns
    # subnormal numbers, which x86 CPUs compute about 150x slower; flushing them to zero changes
    # values below 1.2e-38 only (no quantised gate or update, so every pass stays bit-identical).
    torch.set_flush_denormal(True)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    done = {_key(r): r for r in load_rows(args.out)}
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
           "commit": git_commit()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    wanted = set()
    for layers in args.layers:
        for lr in args.lrs:
            for clip in args.clips:
                for wdrop in args.wdrops:
                    for seed in args.seeds:
                        for m in models:
                            key = (m, lr, clip, wdrop, layers, seed, args.hidden, args.steps, tuple(args.extra))
                            wanted.add(key)
                            if key in done:
                                continue
                            row = {**train_one(m, lr, clip, wdrop, layers, seed, args.hidden, args.steps, args.tail,
                                               args.data_dir, args.extra, args.state_limit), **env}
                            with args.out.open("a", encoding="utf-8") as f:
                                f.write(json.dumps(row) + "\n")
                            done[key] = row
                            print(f"{m:>15} L={layers} lr={lr:g} clip={clip:g} wdrop={wdrop:g} seed={seed:<5} "
                                  f"final={_fmt(row['final_loss'], '.3f'):>6} diverged={row['diverged']!s:<5} "
                                  f"max_state={_fmt(row['max_state'], '.3g'):>8} {row['seconds']:6.1f}s cpu {row['cpu_seconds']:6.1f}s "
                                  f"(total {time.perf_counter() - t_start:6.0f}s)", file=sys.stderr, flush=True)
    print(table([r for k, r in done.items() if k in wanted]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
