"""Render `revrnn memprofile --json` rows as a Markdown table (for docs/results.md).

    revrnn memprofile --seq-len 35,70,250 --json > rows.jsonl
    python scripts/memprofile_table.py rows.jsonl
"""

from __future__ import annotations

import json
import sys

sys.path.insert(0, __file__.rsplit("/scripts/", 1)[0])

from revrnn_cli.memory.profile import growth_per_step  # noqa: E402


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    done = [r for r in rows if not r.get("skipped")]
    print("| T | mode | normal/used | normal/optimal | used/optimal | kept for backward (MiB) | peak of the step (MiB) | step (s) | tokens/s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("skipped"):
            print(f"| {r['seq_len']} | {r['mode']} | skipped: predicted {r['predicted_saved_bytes'] / 2**30:.1f} GiB |||||||")
            continue

        def f(key, scale=1.0, nd=2):
            v = r.get(key)
            return "-" if v is None else f"{v / scale:.{nd}f}"

        print(f"| {r['seq_len']} | {r['mode']} | {f('ratio_used', nd=1)} | {f('ratio_optimal', nd=1)} | "
              f"{f('used_over_optimal', nd=3)} | {f('saved_bytes', 2**20)} | {f('peak_step_bytes', 2**20, 0)} | "
              f"{f('step_seconds')} | {f('tokens_per_s', nd=0)} |")
    print()
    for key, label in (("saved_bytes", "kept for backward"), ("peak_step_bytes", "peak of the step")):
        slopes = growth_per_step(done, key)
        parts = ", ".join(f"{m} {v / 1024:.1f} KiB" for m, v in sorted(slopes.items(), key=lambda kv: -kv[1]))
        print(f"Growth per extra time step ({label}, least squares over T): {parts}.")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
