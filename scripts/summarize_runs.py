"""Summarise training runs from their metrics.jsonl as a Markdown table (for docs/results.md).

    python scripts/summarize_runs.py runs/ptb_*_small*

Per run: cell and max-forget bits (from config.yaml), epochs done, best and last validation
perplexity, mean training tokens/s, and for reversible models the activation-memory ratios summed
over all logged intervals (normal/used, normal/optimal, used/optimal; digest §4).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def summarize(run: Path) -> dict | None:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    train = [r for r in rows if r.get("event") == "train"]
    valid = [r for r in rows if r.get("event") == "valid"]
    starts = [r["time"] for r in rows if r.get("event") in ("start", "resume")]
    out = {
        "run": run.name,
        "cell": cfg["model"]["cell"],
        "bits": cfg["model"].get("max_forget_bits") if cfg["model"]["cell"].startswith("rev") else "-",
        "epochs": len(valid),
        "best_valid_ppl": min((r["ppl"] for r in valid), default=None),
        "last_valid_ppl": valid[-1]["ppl"] if valid else None,
        "tokens_per_s": sum(r["tokens_per_s"] for r in train) / len(train) if train else None,
        "wall_min": (rows[-1]["time"] - starts[0]) / 60 if starts else None,
        "finished": any(r.get("event") == "end" for r in rows),
    }
    ratios = [r for r in train if "ratio_used" in r]
    if ratios:
        out["ratio_used"] = sum(r["ratio_used"] for r in ratios) / len(ratios)
        out["ratio_optimal"] = sum(r["ratio_optimal"] for r in ratios) / len(ratios)
        out["used_over_optimal"] = sum(r["used_over_optimal"] for r in ratios) / len(ratios)
    return out


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def main(paths: list[str]) -> None:
    rows = [s for p in paths if (s := summarize(Path(p)))]
    cols = [("run", 0), ("cell", 0), ("bits", 0), ("epochs", 0), ("best_valid_ppl", 1), ("last_valid_ppl", 1),
            ("tokens_per_s", 0), ("ratio_used", 1), ("ratio_optimal", 1), ("used_over_optimal", 3),
            ("wall_min", 1), ("finished", 0)]
    print("| " + " | ".join(c for c, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c), nd) for c, nd in cols) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
