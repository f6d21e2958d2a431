"""Time one training step of a reversible stack in `reverse` and `store` mode against nn.LSTM / nn.GRU.

    python scripts/bench_engine.py                      # 2-layer RevLSTM, 650 units, batch 20, 70 steps
    python scripts/bench_engine.py --cell revgru --json
    python scripts/bench_engine.py --kernels reference   # the eager cells instead of the fused operators
    python scripts/bench_engine.py --device cuda         # against cuDNN (one CUDA stream, synchronised)

One intra-op thread (on a busy 2-core machine two threads make timings swing up to 100x), every
variant timed in the same process, interleaved round by round, and the median of the rounds kept:
ratios measured this way are stable even when absolute times drift. A "training step" is forward
plus backward of the same loss on the same input (the loss on every output, as a language model's).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from revrnn_cli.engine import RevGRU, RevLSTM, deterministic_settings, native  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", choices=["revlstm", "revgru"], default="revlstm")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=650)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--steps", type=int, default=70)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=16, help="steps per batched input projection")
    ap.add_argument("--kernels", choices=native.MODES, default="auto", help="step path (REVRNN_KERNELS)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--gc-freeze", action="store_true", help="gc.freeze() before timing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    deterministic_settings()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    H, B, T = args.hidden, args.batch, args.steps
    rev = (RevLSTM if args.cell == "revlstm" else RevGRU)(H, H, args.layers, max_forget_bits=3, chunk=args.chunk)
    base = (torch.nn.LSTM if args.cell == "revlstm" else torch.nn.GRU)(H, H, args.layers)
    rev.to(dev)
    base.to(dev)
    x = torch.randn(T, B, H, device=dev)
    proj = torch.randn(H, device=dev)

    def rev_step(mode):
        def run():
            rev.backprop = mode
            rev.zero_grad(set_to_none=True)
            y, _ = rev(x.requires_grad_(False))
            (y @ proj).sum().backward()
        return run

    def base_step():
        base.zero_grad(set_to_none=True)
        y, _ = base(x)
        (y @ proj).sum().backward()

    variants = {"reverse": rev_step("reverse"), "store": rev_step("store"), "baseline": base_step}
    if args.gc_freeze:
        gc.freeze()  # what a training run does after building its model: the collector skips them
    with native.kernels(args.kernels):
        for fn in variants.values():  # warm-up: allocator, MKL packing, building the operators
            fn()
        times = {k: [] for k in variants}
        for _ in range(args.rounds):
            for k, fn in variants.items():
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[k].append(time.perf_counter() - t0)
        path = native.describe(dev)
    med = {k: statistics.median(v) for k, v in times.items()}
    baseline = "nn.LSTM" if args.cell == "revlstm" else "nn.GRU"
    result = {
        "config": f"{args.cell} {args.layers}x{H}, batch {B}, {T} steps, 1 thread, torch {torch.__version__}, "
                  f"{dev}, {path}",
        "kernels": path,
        "reverse_ms": 1e3 * med["reverse"],
        "store_ms": 1e3 * med["store"],
        f"{baseline}_ms": 1e3 * med["baseline"],
        "reverse_over_store": med["reverse"] / med["store"],
        f"reverse_over_{baseline}": med["reverse"] / med["baseline"],
        f"store_over_{baseline}": med["store"] / med["baseline"],
        "rounds": args.rounds,
    }
    if args.json:
        print(json.dumps(result))
        return
    print(result["config"])
    print(f"{'variant':<10} {'ms / training step (median)':>28}")
    for k, label in (("reverse", "reverse"), ("store", "store"), ("baseline", baseline)):
        print(f"{label:<10} {1e3 * med[k]:>28.1f}")
    print(f"reverse / store     {result['reverse_over_store']:.2f}x   (ideal about 4/3: one more forward)")
    print(f"reverse / {baseline:<9} {result[f'reverse_over_{baseline}']:.2f}x")
    print(f"store / {baseline:<11} {result[f'store_over_{baseline}']:.2f}x")


if __name__ == "__main__":
    main()
