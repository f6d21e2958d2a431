"""The forgetting trade-off at CPU scale: perplexity against activation memory, per max-forget bits.

    python scripts/sweep_forgetting.py --data-dir DIR                   # every row of the plan, in order
    python scripts/sweep_forgetting.py --data-dir DIR --groups ptb      # only the 1-layer PTB core rows
    python scripts/sweep_forgetting.py --list                           # the plan: rows, commands, done or not
    python scripts/sweep_forgetting.py --table docs/forgetting_sweep.jsonl            # only print the tables
    python scripts/sweep_forgetting.py --table docs/forgetting_sweep.jsonl --plot docs/forgetting_ptb.png

Each row is one ``*_small`` spec with ``--set`` overrides (the RevLSTM/RevGRU at max_forget_bits 1,
2, 3, 5 and no limit beside their LSTM/GRU baselines on Penn Treebank; 2-layer rows; WikiText-2
rows), trained exactly as a user would run it, one process after the other:

    python -m revrnn_cli train SPEC --set ... --data-dir DIR --run-dir RUNS/NAME --overwrite --json
    python -m revrnn_cli evaluate RUNS/NAME --split test --json          # best.pt

The rows are ordered so that an interrupted sweep has the most informative ones: the 3- and 2-bit
PTB rows and their baselines first, then 1, 5 and no limit, then 2 layers, then WikiText-2 (one epoch
of each model, then the specs' four).

One JSON row per run is appended to ``--out`` (``docs/forgetting_sweep.jsonl``); a row already there
is not run again. A training that was stopped (Ctrl-C, SIGTERM, or its worker killed outright)
continues from its ``last.pt`` with ``train --resume`` on the next invocation; one that finished but
was not yet evaluated is only evaluated. Two invocations with the same ``--out`` and ``--runs``
share the plan (each row is claimed by a lock file); the second starts a row only while the load
average is at most ``--max-load``. A row records what ran (spec, overrides, cell, layers, sizes,
bits, the commands), the validation perplexity after every epoch, the best, the test perplexity of
``best.pt``, the paper's memory ratios combined over the logged training intervals as ``revrnn
compare`` combines them (ratios of the summed bits), the mean training tokens/s, the largest
|state|, the fraction of forget gates quantised to exactly 1, wall and CPU seconds (all attempts,
training and evaluation) and whether it diverged: a non-finite loss or gradient (exit 4), a
fixed-point error (exit 5), or a last validation perplexity worse than the first epoch's. A diverged
row is kept and listed.

The Markdown tables are printed at the end (and alone with ``--table``); ``--plot`` draws validation
perplexity against memory saving (normal/used) for the 1-layer PTB rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

EXIT_NONFINITE, EXIT_NUMERIC = 4, 5
INTERRUPTED = (130, 143)
PAPER = "model.cell_update=paper"  # the paper's RevLSTM update, whatever the default becomes
DATASETS = {"ptb": "Penn Treebank", "wikitext2": "WikiText-2"}
CELL_NAMES = {"lstm": "LSTM", "gru": "GRU", "revlstm": "RevLSTM", "revgru": "RevGRU"}
BASELINE = {"revlstm": "lstm", "revgru": "gru"}
VOCAB = {"ptb": 10000, "wikitext2": 33278}  # a training loss above ln(V) is worse than guessing uniformly


@dataclass(frozen=True)
class Planned:
    group: str
    spec: str  # experiments/<spec>.yaml
    overrides: tuple[str, ...] = ()

    @property
    def key(self) -> tuple:
        return self.spec, self.overrides

    @property
    def name(self) -> str:
        """The run directory's name: the spec and the overrides without their section."""
        return self.spec + "".join("__" + o.split(".", 1)[-1] for o in self.overrides)


def _rev(spec: str, bits: str, *extra: str) -> tuple[str, ...]:
    """The overrides of a reversible row: ``extra``, the bits, and for a RevLSTM the paper's update."""
    return (*extra, f"model.max_forget_bits={bits}", *((PAPER,) if "revlstm" in spec else ()))


def plan() -> list[Planned]:
    """Every row, most informative first."""
    rows = [
        Planned("ptb", "ptb_revlstm_small", _rev("ptb_revlstm_small", "3")),
        Planned("ptb", "ptb_lstm_small"),
        Planned("ptb", "ptb_revlstm_small", _rev("ptb_revlstm_small", "2")),
        Planned("ptb", "ptb_gru_small"),
        Planned("ptb", "ptb_revgru_small", _rev("ptb_revgru_small", "3")),
        Planned("ptb", "ptb_revgru_small", _rev("ptb_revgru_small", "2")),
    ]
    for bits in ("1", "5", "none"):
        rows += [Planned("ptb-bits", "ptb_revlstm_small", _rev("ptb_revlstm_small", bits)),
                 Planned("ptb-bits", "ptb_revgru_small", _rev("ptb_revgru_small", bits))]
    rows += [Planned("ptb-2layer", "ptb_lstm_small", ("model.layers=2",)),
             Planned("ptb-2layer", "ptb_revlstm_small", _rev("ptb_revlstm_small", "3", "model.layers=2")),
             # the paper's update diverges with 2 layers (docs/results.md section 11); the bounded one
             Planned("ptb-2layer", "ptb_revlstm_small",
                     ("model.layers=2", "model.max_forget_bits=3", "model.cell_update=bounded"))]
    # WikiText-2 costs about 6x a PTB row per epoch (2.2x the tokens, a 3.3x larger softmax), so one epoch
    # of each comes first and the specs' own 4 epochs last
    for group, extra in (("wt2-1epoch", ("train.epochs=1",)), ("wt2", ())):
        rows += [Planned(group, "wt2_lstm_small", extra),
                 Planned(group, "wt2_revlstm_small", _rev("wt2_revlstm_small", "3", *extra)),
                 Planned(group, "wt2_gru_small", extra),
                 Planned(group, "wt2_revgru_small", _rev("wt2_revgru_small", "3", *extra))]
    return rows


GROUPS = ("ptb", "ptb-bits", "ptb-2layer", "wt2-1epoch", "wt2")


# ---- reading a run directory ---------------------------------------------------------------------
def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def diverged_reason(exit_code: int | None, valid_ppl: list) -> str | None:
    """Why a run counts as diverged, or None: exit 4 or 5, a non-finite validation perplexity, or a
    last validation perplexity worse than the first epoch's."""
    if exit_code == EXIT_NONFINITE:
        return "non-finite loss or gradient (exit 4)"
    if exit_code == EXIT_NUMERIC:
        return "fixed-point numerical error (exit 5)"
    if any(not _finite(v) for v in valid_ppl):
        return "non-finite validation perplexity"
    if len(valid_ppl) >= 2 and valid_ppl[-1] > valid_ppl[0]:
        return f"last validation perplexity {valid_ppl[-1]:.1f} worse than the first epoch's {valid_ppl[0]:.1f}"
    return None


def run_results(run_dir: Path) -> dict:
    """What the run directory says: spec values, the validation curve, memory ratios (as ``revrnn
    compare`` combines them), tokens/s and the state's health."""
    from revrnn_cli.compare.summary import summarize
    from revrnn_cli.training.metrics import read_metrics

    s = summarize(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    m = s.config.get("model", {})
    train = [r for r in records if r.get("event") == "train"]
    res = s.results
    ppl = [p["ppl"] for p in s.curve]
    out = {
        "dataset": s.config.get("data", {}).get("dataset"), "cell": m.get("cell"), "layers": m.get("layers"),
        "emb_size": m.get("emb_size"), "hidden_size": m.get("hidden_size"),
        "reversible": str(m.get("cell", "")).startswith("rev"),
        "seed": s.config.get("seed"), "epochs_planned": s.config.get("train", {}).get("epochs"),
        "epochs": res.get("epochs", 0), "parameters": res.get("parameters"),
        "valid_ppl_by_epoch": ppl, "best_valid_ppl": min((v for v in ppl if _finite(v)), default=None),
        "final_valid_ppl": ppl[-1] if ppl else None,
        "tokens_per_s": res.get("tokens_per_s"), "train_minutes": res.get("train_minutes"),
        "stopped": res.get("stopped"),
    }
    out["bits"] = ("none" if m.get("max_forget_bits") is None else m.get("max_forget_bits")) if out["reversible"] else None
    if out["cell"] == "revlstm":
        out["cell_update"] = m.get("cell_update", "paper")
    used, uo = res.get("ratio_used"), res.get("used_over_optimal")
    out["ratio_used"] = used  # normal / used
    out["used_over_optimal"] = uo
    out["ratio_optimal"] = used * uo if used and uo else None  # normal / optimal = n / sum(1 / r_optimal)
    states = [r["max_state"] for r in records if _finite(r.get("max_state"))]
    out["max_state"] = max(states) if states else None
    sat = [r["saturated_gates"] for r in train if _finite(r.get("saturated_gates"))]
    out["saturated_gates"] = sum(sat) / len(sat) if sat else None  # mean over the logged intervals
    out["saturated_gates_last"] = sat[-1] if sat else None
    start = next((r for r in records if r.get("event") == "start"), {})
    out["kernels"] = start.get("kernels")
    losses = [r for r in train if _finite(r.get("loss"))]
    worst = max(losses, key=lambda r: r["loss"], default=None)
    out["max_train_loss"] = worst["loss"] if worst else None  # of a logged interval (its mean over the interval)
    out["max_train_loss_epoch"] = worst.get("epoch") if worst else None
    norms = [r["grad_norm"] for r in train if _finite(r.get("grad_norm"))]
    out["max_grad_norm"] = max(norms) if norms else None  # interval mean, before clipping
    out["unstable"] = unstable_reason(out)
    return out


def unstable_reason(res: dict) -> str | None:
    """A run that recovered from a blow-up: some logged interval's training loss was worse than
    guessing uniformly over the vocabulary (the run is not called diverged for it)."""
    v, loss = VOCAB.get(res.get("dataset")), res.get("max_train_loss")
    if v is None or loss is None or loss <= math.log(v):
        return None
    return (f"training loss reached {loss:,.0f} nats/token in epoch {res.get('max_train_loss_epoch')} "
            f"(uniform guessing: {math.log(v):.1f})")


def build_row(p: Planned, run_dir: Path, attempts: list[dict], test: dict | None, commands: list[str]) -> dict:
    """The JSONL row of a planned run whose training is over (finished or diverged)."""
    res = run_results(run_dir)
    train_rc = next((a["rc"] for a in reversed(attempts) if a["step"] == "train"), None)
    reason = diverged_reason(train_rc, res["valid_ppl_by_epoch"])
    if reason is None and train_rc not in (0, None):
        reason = f"training exited {train_rc}"
    row = {"group": p.group, "spec": p.spec, "overrides": list(p.overrides), "run": p.name, **res,
           "test_ppl": test.get("ppl") if test else None, "test_loss": test.get("loss") if test else None,
           "test_epoch": test.get("epoch") if test else None,
           "exit_code": train_rc, "diverged": reason is not None, "diverged_reason": reason,
           "wall_s": round(sum(a["wall_s"] for a in attempts), 1),
           "cpu_s": round(sum(a["cpu_s"] for a in attempts), 1),
           "train_cpu_s": round(sum(a["cpu_s"] for a in attempts if a["step"] == "train"), 1),
           "attempts": len([a for a in attempts if a["step"] == "train"]), "commands": commands}
    return row


# ---- tables --------------------------------------------------------------------------------------
def _f(v, fmt: str = "{:.1f}", none: str = "-") -> str:
    return none if v is None else (fmt.format(v) if _finite(v) else str(v))


def label(r: dict) -> str:
    name = CELL_NAMES.get(r["cell"], r["cell"])
    if r.get("cell") == "revlstm" and r.get("cell_update") not in (None, "paper"):
        name += f" ({r['cell_update']} update)"
    return name


def _bits_order(r: dict) -> tuple:
    b = r.get("bits")
    return (0, 0) if b is None else ((1, 99) if b == "none" else (1, int(b)))


def section_key(r: dict) -> tuple:
    return r.get("dataset"), r.get("layers"), r.get("epochs_planned")


def _section_order(key: tuple) -> tuple:
    """PTB first, then by depth; the longer training of a data set and depth first."""
    return key[0] != "ptb", key[0] or "", key[1] or 0, -(key[2] or 0)


def section_title(key: tuple) -> str:
    ds, layers, epochs = key
    return (f"{DATASETS.get(ds, ds)}, {layers} layer{'s' if layers != 1 else ''}, "
            f"{epochs} epoch{'s' if epochs != 1 else ''}")


def baseline_of(r: dict, rows: list[dict]) -> dict | None:
    """The ordinary model of the same data set, depth and base cell."""
    want = BASELINE.get(r["cell"])
    return next((b for b in rows if b["cell"] == want and section_key(b) == section_key(r)), None)


def table(rows: list[dict]) -> str:
    """Markdown tables, one per data set and depth; cells in LSTM, RevLSTM, GRU, RevGRU order, bits ascending."""
    order = {"lstm": 0, "revlstm": 1, "gru": 2, "revgru": 3}
    out = []
    for key in sorted({section_key(r) for r in rows}, key=_section_order):
        sec = sorted((r for r in rows if section_key(r) == key), key=lambda r: (order.get(r["cell"], 9), _bits_order(r)))
        n_ep = max((len(r["valid_ppl_by_epoch"]) for r in sec), default=0)
        ep = " / ".join(str(i) for i in range(1, n_ep + 1))
        out += [f"**{section_title(key)}**", "",
                f"| model | bits | valid ppl after epoch {ep} | best valid | test | test vs baseline | normal/used "
                "| normal/optimal | used/optimal | tokens/s | max \\|state\\| | gates at 1 | CPU min | diverged |",
                "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in sec:
            base = baseline_of(r, rows) if r["reversible"] else None
            gap = (f"{100 * (r['test_ppl'] / base['test_ppl'] - 1):+.1f}%"
                   if base and _finite(r.get("test_ppl")) and _finite(base.get("test_ppl")) else "")
            curve = " / ".join(_f(v) for v in r["valid_ppl_by_epoch"])
            sat = _f(r.get("saturated_gates"), "{:.2%}") if r["reversible"] else "-"
            out.append(
                f"| {label(r)} | {r['bits'] if r['reversible'] else '-'} | {curve} | **{_f(r.get('best_valid_ppl'))}** "
                f"| {_f(r.get('test_ppl'))} | {gap} | {_f(r.get('ratio_used'), '{:.1f}×')} "
                f"| {_f(r.get('ratio_optimal'), '{:.1f}×')} | {_f(r.get('used_over_optimal'), '{:.3f}')} "
                f"| {_f(r.get('tokens_per_s'), '{:,.0f}')} | {_f(r.get('max_state'), '{:.3g}') if r['reversible'] else '-'} "
                f"| {sat} | {_f(r['cpu_s'] / 60, '{:.0f}')} | {_diverged_cell(r)} |")
        out.append("")
    return "\n".join(out).rstrip()


def _diverged_cell(r: dict) -> str:
    if r["diverged"]:
        return "**yes**: " + r["diverged_reason"]
    return f"no, but {r['unstable']}, then recovered" if r.get("unstable") else "no"


def summary(rows: list[dict], planned: list[Planned] | None = None) -> str:
    """Total CPU and wall time, the diverged rows, and the planned rows that are still missing."""
    cpu, wall = sum(r["cpu_s"] for r in rows), sum(r["wall_s"] for r in rows)
    lines = [f"{len(rows)} row{'' if len(rows) == 1 else 's'}; total CPU time {cpu / 3600:.2f} h ({cpu:,.0f} s), wall time {wall / 3600:.2f} h."]
    div = [r for r in rows if r["diverged"]]
    lines.append("Diverged: " + ("; ".join(f"{r['run']} ({r['diverged_reason']})" for r in div) if div else "none."))
    bad = [r for r in rows if not r["diverged"] and r.get("unstable")]
    if bad:
        lines.append("Unstable, then recovered: " + "; ".join(f"{r['run']} ({r['unstable']})" for r in bad))
    if planned is not None:
        have = {(r["spec"], tuple(r["overrides"])) for r in rows}
        missing = [p.name for p in planned if p.key not in have]
        lines.append("Missing: " + (", ".join(missing) if missing else "none."))
    return "\n".join(lines)


# ---- the figure ----------------------------------------------------------------------------------
def _bits_label(r: dict) -> str:
    return "no limit" if r["bits"] == "none" else f"{r['bits']} bit{'s' if r['bits'] != 1 else ''}"


def plot(rows: list[dict], path: Path, dataset: str = "ptb", layers: int = 1) -> Path:
    """Validation perplexity (best) against normal/used for one data set and depth: a line per
    reversible cell through its bits settings, the ordinary models as horizontal lines."""
    from revrnn_cli.plotting import require_matplotlib, save

    plt = require_matplotlib()
    sec = [r for r in rows if section_key(r)[:2] == (dataset, layers) and _finite(r.get("best_valid_ppl"))]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    colours = {"revlstm": "tab:blue", "revgru": "tab:orange", "lstm": "tab:blue", "gru": "tab:orange"}
    for cell in ("revlstm", "revgru"):
        pts = sorted((r for r in sec if r["cell"] == cell and _finite(r.get("ratio_used"))), key=_bits_order)
        if not pts:
            continue
        ax.plot([r["ratio_used"] for r in pts], [r["best_valid_ppl"] for r in pts], marker="o",
                color=colours[cell], label=CELL_NAMES[cell])
        for r in pts:  # slanted labels, so that points close in x stay legible
            ax.annotate(_bits_label(r) + (" (diverged)" if r["diverged"] else ""),
                        (r["ratio_used"], r["best_valid_ppl"]), textcoords="offset points",
                        xytext=(3, 5), fontsize=8, color=colours[cell], rotation=40)
    for cell in ("lstm", "gru"):
        for r in (r for r in sec if r["cell"] == cell):
            ax.axhline(r["best_valid_ppl"], color=colours[cell], linestyle="--", linewidth=1,
                       label=f"{CELL_NAMES[cell]} (stores every state)")
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.12)  # room for the last point's label
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.xaxis.set_major_locator(FixedLocator([5, 7, 10, 15, 20, 30, 40, 50, 70, 100, 150, 200]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("activation-memory saving, normal / used (log scale)")
    ax.set_ylabel("validation perplexity (best of the epochs)")
    epochs = sorted({r["epochs"] for r in sec})
    ax.set_title(f"{DATASETS.get(dataset, dataset)}, {layers} layer, {'/'.join(map(str, epochs))} epochs, one seed",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    lost = [r for r in rows if section_key(r)[:2] == (dataset, layers) and not _finite(r.get("best_valid_ppl"))]
    if lost:  # a diverged row has no point to draw; the figure says so rather than drop it
        names = ", ".join(f"{CELL_NAMES.get(r['cell'], r['cell'])} {_bits_label(r)}" for r in lost)
        ax.text(0.99, 0.55, f"not drawn (no finite perplexity): {names}", transform=ax.transAxes, fontsize=7,
                color="tab:red", ha="right", va="center")
    fig.tight_layout()
    return save(fig, path)


# ---- running -------------------------------------------------------------------------------------
def load_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _read_attempts(path: Path) -> list[dict]:
    return load_rows(path)


def _finished(run_dir: Path) -> bool:
    from revrnn_cli.training.metrics import read_metrics

    if not (run_dir / "metrics.jsonl").is_file():
        return False
    ends = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "end"]
    return bool(ends) and ends[-1].get("stopped") in ("finished", "max_steps")


@dataclass
class Runner:
    python: str
    runs: Path
    data_dir: str | None
    extra: list[str] = field(default_factory=list)
    child: subprocess.Popen | None = None
    stop: bool = False

    def commands(self, p: Planned) -> list[str]:
        run_dir = self.runs / p.name
        sets = [a for o in (*p.overrides, *self.extra) for a in ("--set", o)]
        data = ["--data-dir", self.data_dir] if self.data_dir else []
        return [shlex.join(["python", "-m", "revrnn_cli", "train", f"experiments/{p.spec}.yaml", *sets, *data,
                            "--run-dir", str(run_dir), "--overwrite", "--json"]),
                shlex.join(["python", "-m", "revrnn_cli", "evaluate", str(run_dir), "--split", "test", "--json"])]

    def _call(self, p: Planned, step: str, args: list[str]) -> tuple[int, str]:
        """Run ``python -m revrnn_cli ARGS``; record its wall and CPU seconds; return (exit code, stdout)."""
        out_path = self.runs / f"{p.name}.{step}.jsonl"
        t0 = time.time()
        with open(out_path, "ab") as out, open(self.runs / f"{p.name}.{step}.log", "ab") as err:
            start = out.tell()
            # its own session: a Ctrl-C reaches it once, forwarded by :meth:`forward`, not twice
            self.child = subprocess.Popen([self.python, "-m", "revrnn_cli", *args], stdout=out, stderr=err, cwd=ROOT,
                                          env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
            while True:
                try:
                    _, status, usage = os.wait4(self.child.pid, 0)
                    break
                except InterruptedError:
                    continue
            self.child = None
        rc = os.waitstatus_to_exitcode(status)
        with open(self.runs / f"{p.name}.attempts.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "rc": rc, "wall_s": round(time.time() - t0, 1),
                                "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "started": round(t0, 1),
                                "load": os.getloadavg()[0]}) + "\n")
        with open(out_path, "rb") as f:
            f.seek(start)
            return rc, f.read().decode("utf-8", "replace")

    def run(self, p: Planned) -> dict | None:
        """Train (or resume, or only evaluate) one planned row; its JSONL row, or None when stopped or failed."""
        run_dir = self.runs / p.name
        attempts = _read_attempts(self.runs / f"{p.name}.attempts.jsonl")
        last_train = next((a for a in reversed(attempts) if a["step"] == "train"), None)
        train_rc = last_train["rc"] if last_train else None
        if not (train_rc in (0, EXIT_NONFINITE, EXIT_NUMERIC) and _finished_or_diverged(run_dir, train_rc)):
            resume = should_resume(run_dir, train_rc)
            sets = [a for o in (*p.overrides, *self.extra) for a in ("--set", o)]
            data = ["--data-dir", self.data_dir] if self.data_dir else []
            args = (["train", "--resume", str(run_dir), *data, "--json"] if resume else
                    ["train", f"experiments/{p.spec}.yaml", *sets, *data, "--run-dir", str(run_dir), "--overwrite",
                     "--json"])
            print(f"[{time.strftime('%H:%M:%S')}] {'resume' if resume else 'train'} {p.name}", file=sys.stderr, flush=True)
            train_rc, _ = self._call(p, "train", args)
            attempts = _read_attempts(self.runs / f"{p.name}.attempts.jsonl")
            if train_rc in INTERRUPTED or self.stop:
                return None
            if train_rc not in (0, EXIT_NONFINITE, EXIT_NUMERIC):
                print(f"  {p.name}: training exited {train_rc} (see {self.runs / (p.name + '.train.log')}); no row",
                      file=sys.stderr, flush=True)
                return None
        test = None
        if (run_dir / "best.pt").is_file():
            data = ["--data-dir", self.data_dir] if self.data_dir else []
            rc, out = self._call(p, "evaluate", ["evaluate", str(run_dir), "--split", "test", *data, "--json"])
            attempts = _read_attempts(self.runs / f"{p.name}.attempts.jsonl")
            if rc in INTERRUPTED or self.stop:
                return None
            if rc != 0:
                print(f"  {p.name}: evaluate exited {rc}; row kept without a test perplexity", file=sys.stderr)
            else:
                test = json.loads([line for line in out.splitlines() if line.strip()][-1])
        return build_row(p, run_dir, attempts, test, self.commands(p))

    def forward(self, signum, _frame) -> None:
        """Ctrl-C / SIGTERM: let the running command save its checkpoint, then stop the sweep."""
        self.stop = True
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


def should_resume(run_dir: Path, train_rc: int | None) -> bool:
    """Continue from ``last.pt``, as `revrnn train --resume` does, after a training that was stopped or
    failed; also when no attempt was recorded at all (the worker itself was killed, e.g. SIGKILL at
    logout), since the checkpoint holds the epochs done. A finished or diverged run starts afresh."""
    return train_rc not in (0, EXIT_NONFINITE, EXIT_NUMERIC) and (run_dir / "last.pt").is_file()


def _finished_or_diverged(run_dir: Path, rc: int | None) -> bool:
    return rc in (EXIT_NONFINITE, EXIT_NUMERIC) or _finished(run_dir)


# ---- several workers on one plan ------------------------------------------------------------------
# Two invocations with the same --out and --runs share the plan: a row is claimed by a lock file
# (``RUNS/NAME.lock``, holding the worker's pid) and skipped by the other worker while that pid lives.
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def claim(runs: Path, p: Planned) -> bool:
    """Take the row's lock; False when a live worker holds it (a dead worker's lock is taken over)."""
    path = runs / f"{p.name}.lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = _lock_pid(path)
            if pid is not None and pid != os.getpid() and _alive(pid):
                return False
            path.unlink(missing_ok=True)  # stale
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release(runs: Path, p: Planned) -> None:
    path = runs / f"{p.name}.lock"
    if _lock_pid(path) == os.getpid():
        path.unlink(missing_ok=True)


def others_running(runs: Path) -> int:
    """How many rows other live workers are running now."""
    pids = [_lock_pid(f) for f in runs.glob("*.lock")]
    return sum(1 for pid in pids if pid and pid != os.getpid() and _alive(pid))


def wait_for_turn(runs: Path, max_load: float, runner: "Runner") -> None:
    """A second concurrent job starts only while the 1-minute load average is at most ``max_load``."""
    said = False
    while not runner.stop and others_running(runs) and os.getloadavg()[0] > max_load:
        if not said:
            print(f"[{time.strftime('%H:%M:%S')}] another worker is training and the load is "
                  f"{os.getloadavg()[0]:.2f} > {max_load}: waiting", file=sys.stderr, flush=True)
            said = True
        time.sleep(30)


def refresh(out: Path, runs: Path) -> int:
    """Rebuild the run-directory part of every row of ``out`` whose run is under ``runs``."""
    if others_running(runs):
        print(f"--refresh: a worker is running rows under {runs}; stop it first", file=sys.stderr)
        return 2
    rows, n = load_rows(out), 0
    for r in rows:
        run_dir = runs / r["run"]
        if (run_dir / "metrics.jsonl").is_file():
            r.update(run_results(run_dir))
            reason = diverged_reason(r.get("exit_code"), r["valid_ppl_by_epoch"])
            r["diverged"], r["diverged_reason"] = reason is not None, reason
            n += 1
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(out)
    print(f"refreshed {n} of {len(rows)} rows from {runs}", file=sys.stderr)
    return 0


def _env() -> dict:
    import platform

    import torch

    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs")  # the rows' own file aside
    return {"torch": torch.__version__, "python": platform.python_version(),
            "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=ROOT / "docs" / "forgetting_sweep.jsonl", type=Path, help="JSONL rows (appended)")
    ap.add_argument("--runs", default=ROOT / "runs" / "forgetting_sweep", type=Path, help="where the run directories go")
    ap.add_argument("--data-dir", help="passed to train and evaluate (default: the specs', $REVRNN_DATA_DIR, ./data)")
    ap.add_argument("--groups", default=",".join(GROUPS), help=f"which rows, in plan order: {', '.join(GROUPS)}")
    ap.add_argument("--max-rows", type=int, default=0, help="stop after this many new rows (0: all)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="a further override for every row (it is not part of the row's key)")
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="while another worker on the same --runs trains, start a row only at or below this "
                         "1-minute load average")
    ap.add_argument("--refresh", action="store_true",
                    help="re-read every row's run directory under --runs (after a change to what a row holds) and "
                         "rewrite --out; CPU times, test results and commands are kept")
    ap.add_argument("--list", action="store_true", help="print the plan and which rows --out holds, then exit")
    ap.add_argument("--table", type=Path, metavar="JSONL", help="only print the tables of saved rows")
    ap.add_argument("--plot", type=Path, metavar="PNG", help="draw PTB 1-layer perplexity against memory saving")
    args = ap.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    for g in groups:
        if g not in GROUPS:
            ap.error(f"--groups: unknown group {g!r} (choose from {', '.join(GROUPS)})")
    planned = [p for p in plan() if p.group in groups]
    if args.plot:
        from revrnn_cli.plotting import prepare_plot

        prepare_plot(args.plot)  # matplotlib and a writable file, before any work

    if args.refresh:
        return refresh(args.out, args.runs)
    if args.table:
        rows = load_rows(args.table)
        print(table(rows))
        print()
        print(summary(rows, plan()))
        if args.plot:
            plot(rows, args.plot)
        return 0

    done = {(r["spec"], tuple(r["overrides"])): r for r in load_rows(args.out)}
    runner = Runner(sys.executable, args.runs, args.data_dir, args.extra)
    if args.list:
        for p in planned:
            print(f"{'done' if p.key in done else 'todo'}  {p.group:<10} {runner.commands(p)[0]}")
        return 0
    for p in planned:
        if not (ROOT / "experiments" / f"{p.spec}.yaml").is_file():
            ap.error(f"no spec experiments/{p.spec}.yaml")
    args.runs.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGINT, runner.forward)
    signal.signal(signal.SIGTERM, runner.forward)
    env, new, failed = _env(), 0, 0
    for p in planned:
        done = {(r["spec"], tuple(r["overrides"])): r for r in load_rows(args.out)}  # another worker's rows too
        if p.key in done:
            continue
        if runner.stop or (args.max_rows and new >= args.max_rows):
            break
        wait_for_turn(args.runs, args.max_load, runner)
        if runner.stop:
            break
        if not claim(args.runs, p):
            continue  # another worker runs it
        try:
            row = runner.run(p)
        finally:
            release(args.runs, p)
        if row is None:
            if runner.stop:
                break
            failed += 1
            continue
        row.update(env)
        if args.extra:
            row["extra_overrides"] = list(args.extra)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        new += 1
        print(f"  {p.name}: best valid {_f(row['best_valid_ppl'])}, test {_f(row['test_ppl'])}, "
              f"normal/used {_f(row['ratio_used'])}, {row['cpu_s'] / 60:.0f} CPU min"
              + (f", DIVERGED ({row['diverged_reason']})" if row["diverged"] else ""), file=sys.stderr, flush=True)
    done = {(r["spec"], tuple(r["overrides"])): r for r in load_rows(args.out)}
    rows = [done[p.key] for p in plan() if p.key in done]
    print(table(rows))
    print()
    print(summary(rows, plan()))
    if args.plot:
        plot(rows, args.plot)
    if runner.stop:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    from revrnn_cli.errors import UserError

    try:
        sys.exit(main())
    except UserError as e:  # a usage mistake (no matplotlib, bad path): one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
