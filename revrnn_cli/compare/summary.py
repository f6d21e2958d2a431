"""What a finished (or stopped, or still running) run reached, read from its directory alone.

A run directory already holds everything a comparison needs: ``config.yaml`` (the merged spec)
and ``metrics.jsonl`` (every log line, with wall-clock ``time``). Nothing is loaded onto a device
and no data set is read, so comparing runs is instant and works on a machine without the corpora.

* **Validation curve**: the ``valid`` records, one per epoch (perplexity, and accuracy or BLEU
  when the records carry them), each placed on a training-time axis: minutes since the run
  started, with the gaps between a stop and its ``--resume`` left out.
* **Memory**: the paper's ratios (reference `language_modelling/train.py`) of the bits summed over the logged
training intervals.
  The logs carry each interval's ratios, not its bits; the intervals all have ``log_interval``
  steps, so their normal bits are taken as equal and the sums follow from the ratios:
  normal/used = n / Σ(1 / r_used), used/optimal = Σ(1 / r_used) / Σ(1 / r_optimal).
  An ordinary (non-reversible) model stores every state, so it has no ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import EXIT_DATA, UserError
from ..memory.accounting import SIDES
from ..training.metrics import read_metrics


@dataclass
class RunSummary:
    path: Path
    label: str
    config: dict
    results: dict = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)  # per validation: epoch, minutes, ppl (+ accuracy, bleu)

    @property
    def flat_config(self) -> dict:
        return dict(flatten(self.config))


def flatten(obj, prefix: str = ""):
    """Leaves of a nested mapping as (dotted key, value)."""
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from flatten(v, key + ".")
        else:
            yield key, v


def _read_config(run: Path) -> dict:
    path = run / "config.yaml"
    if not path.is_file():
        raise UserError(f"compare: {run}: not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read the run's spec: {str(e).splitlines()[0]}", exit_code=EXIT_DATA) from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a spec (a YAML mapping)", exit_code=EXIT_DATA)
    return config


def training_minutes(records: list[dict]) -> list[float | None]:
    """Per record, minutes of training before it: time since its session's start or resume plus the
    length of the earlier sessions (a resumed run does not count the time it was stopped)."""
    out: list[float | None] = []
    done, start, last = 0.0, None, None
    for r in records:
        t = r.get("time")
        if r.get("event") in ("start", "resume") and isinstance(t, (int, float)):
            if start is not None and last is not None:
                done += last - start
            start = last = t
        if not isinstance(t, (int, float)) or start is None:
            out.append(None)
            continue
        last = t
        out.append((done + t - start) / 60)
    return out


def summed_ratios(train: list[dict], prefix: str = "") -> dict:
    """normal/used and used/optimal of the bits summed over the intervals (see the module docstring)."""
    rows = [r for r in train if r.get(f"{prefix}ratio_used")]
    used = [r[f"{prefix}ratio_used"] for r in rows]
    opt = [r[f"{prefix}ratio_optimal"] for r in rows if r.get(f"{prefix}ratio_optimal")]
    if not used:
        return {}
    inv_used = sum(1 / v for v in used)
    out = {f"{prefix}ratio_used": len(used) / inv_used}
    if len(opt) == len(used):
        out[f"{prefix}used_over_optimal"] = inv_used / sum(1 / v for v in opt)
    return out


def summarize(run: Path, label: str | None = None) -> RunSummary:
    """The spec and results of the run directory ``run``."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"compare: {run}: no such run directory")
    config = _read_config(run)
    records = read_metrics(run / "metrics.jsonl")
    minutes = training_minutes(records)
    s = RunSummary(run, label or run.name, config)
    for r, m in zip(records, minutes):
        if r.get("event") == "valid":
            point = {"epoch": r.get("epoch"), "minutes": m, "ppl": r.get("ppl")}
            point.update({k: r[k] for k in ("accuracy", "bleu") if r.get(k) is not None})
            s.curve.append(point)
    train = [r for r in records if r.get("event") == "train"]
    res = s.results
    res["epochs"] = max((p["epoch"] for p in s.curve if p["epoch"] is not None), default=0)
    for key in ("ppl", "accuracy", "bleu"):
        values = [p[key] for p in s.curve if p.get(key) is not None]
        if values:
            better = min if key == "ppl" else max
            res[f"best_valid_{key}"], res[f"last_valid_{key}"] = better(values), values[-1]
    speeds = [r["tokens_per_s"] for r in train if r.get("tokens_per_s")]
    res["tokens_per_s"] = sum(speeds) / len(speeds) if speeds else None
    res["train_minutes"] = next((m for m in reversed(minutes) if m is not None), None)
    res.update(summed_ratios(train))
    for side in SIDES:
        res.update(summed_ratios(train, f"{side}_"))
    starts = [r for r in records if r.get("event") == "start"]
    res["parameters"] = starts[0].get("parameters") if starts else None
    ends = [r for r in records if r.get("event") == "end"]
    res["stopped"] = ends[-1].get("stopped") if ends else "running or killed"
    return s


def labels(paths: list[Path]) -> list[str]:
    """Short names for the runs: directory names, or the paths as given when names repeat."""
    names = [Path(p).name or str(p) for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def differing_keys(runs: list[RunSummary]) -> list[str]:
    """Spec keys (dotted) whose values are not the same in every run, in the first run's key order."""
    flats = [r.flat_config for r in runs]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    missing = object()
    return [k for k in keys if len({repr(f.get(k, missing)) for f in flats}) > 1]


def compare(paths: list[Path]) -> dict:
    """Every run's summary, and the spec keys on which they differ (JSON-ready)."""
    if not paths:
        raise UserError("compare: give at least one run directory")
    runs = [summarize(p, name) for p, name in zip(paths, labels(paths))]
    keys = differing_keys(runs)
    return {"differing_keys": keys, "runs": [
        {"run": str(r.path), "label": r.label, "spec": {k: r.flat_config.get(k) for k in keys},
         "results": r.results, "curve": r.curve} for r in runs]}


__all__ = ["RunSummary", "compare", "differing_keys", "flatten", "labels", "summarize", "summed_ratios",
           "training_minutes"]
