"""Everything a CUDA machine should answer, in one run of a few minutes, ending with one JSON line.

    make gpu-check                      # = python scripts/gpu_check.py
    python scripts/gpu_check.py --out gpu_check.json

1. the fused CUDA operators against the reference path on this GPU, bit for bit (engine.selfcheck);
2. `revrnn verify-reversal --device cuda` on both cells, on both paths, and a saturated 20,000-step
   RevLSTM (states far beyond the int32 range);
3. the training step against cuDNN (scripts/bench_engine.py --device cuda), fused and reference;
4. `revrnn memprofile` with CUDA allocator peaks for T = 35 ... 560;
5. a short language-model training run on the GPU (experiments/quickstart.yaml).

Each part runs in its own process with a time limit; a part that fails is recorded with its error
and the others still run. The summary goes to stdout (and to --out); progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def run(name: str, cmd: list[str], timeout: int, env: dict | None = None) -> dict:
    """Run one part; its JSON lines (stdout) are the result."""
    print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                             env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    rows = []
    for line in res.stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    out = {"ok": res.returncode == 0, "exit_code": res.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "result": rows[0] if len(rows) == 1 else rows}
    if res.returncode != 0:
        out["stderr"] = res.stderr.strip().splitlines()[-5:]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="also write the summary here")
    args = ap.parse_args()
    import torch

    summary: dict = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        summary.update(ok=False, error="no CUDA device visible to torch")
        print(json.dumps(summary))
        return 1
    summary["gpu"] = torch.cuda.get_device_name(0)
    cli = [PY, "-m", "revrnn_cli"]
    parts = {
        "selfcheck": ([PY, "-c", "import json; from revrnn_cli.engine import native; "
                       "from revrnn_cli.engine.selfcheck import check_device; ok, why = check_device('cuda'); "
                       "print(json.dumps({'ok': ok, 'why': why, 'path': native.describe('cuda')}))"], 300, None),
        "verify_fused": (cli + ["verify-reversal", "--device", "cuda", "--steps", "2000", "--json"], 300,
                         {"REVRNN_KERNELS": "native"}),
        "verify_reference": (cli + ["verify-reversal", "--device", "cuda", "--steps", "2000", "--json"], 300,
                             {"REVRNN_KERNELS": "reference"}),
        "verify_saturated": (cli + ["verify-reversal", "--device", "cuda", "--cell", "revlstm", "--layers", "2",
                                    "--hidden", "64", "--steps", "20000", "--max-forget-bits", "1", "--no-grad-check",
                                    "--json"], 300, None),
        "bench_fused": ([PY, "scripts/bench_engine.py", "--device", "cuda", "--json"], 300, None),
        "bench_reference": ([PY, "scripts/bench_engine.py", "--device", "cuda", "--kernels", "reference", "--json"],
                            300, None),
        "bench_gru": ([PY, "scripts/bench_engine.py", "--device", "cuda", "--cell", "revgru", "--json"], 300, None),
        "memprofile": (cli + ["memprofile", "--set", "device=cuda", "--seq-len", "35,70,140,280,560", "--json"],
                       300, None),
    }
    with tempfile.TemporaryDirectory() as tmp:
        parts["train"] = (cli + ["train", "experiments/quickstart.yaml", "--set", "device=cuda", "--set",
                                 "train.epochs=1", "--run-dir", str(Path(tmp) / "run"), "--json"], 300, None)
        for name, (cmd, limit, env) in parts.items():
            summary[name] = run(name, cmd, limit, env)
    summary["ok"] = all(v.get("ok") for k, v in summary.items() if isinstance(v, dict))
    line = json.dumps(summary)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
