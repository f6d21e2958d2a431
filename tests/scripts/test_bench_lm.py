"""scripts/bench_lm.py on a tiny model: it times the three variants and reports consistent ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_lm_reports_every_variant():
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_lm.py"), "--set", "model.emb_size=8", "--set",
           "model.hidden_size=8", "--steps", "6", "--batch", "2", "--rounds", "1", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    tps = r["tokens_per_s"]
    assert set(tps) == {"reverse", "reverse, loss in forward", "baseline"}
    assert all(v > 0 for v in tps.values())
    assert r["reverse_over_baseline_tokens_per_s"] == tps["reverse"] / tps["baseline"]
    assert "vocabulary 10000" in r["config"]  # the data set's vocabulary, known without the corpus
