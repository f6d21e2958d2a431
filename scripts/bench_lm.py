"""Time one training step of a whole language model: a reversible spec against its baseline spec.

    python scripts/bench_lm.py                                   # ptb_revlstm vs ptb_lstm, 2 layers (650/1150)
    python scripts/bench_lm.py --layers 1 --json
    python scripts/bench_lm.py --rev experiments/ptb_revgru.yaml --base experiments/ptb_gru.yaml
    python scripts/bench_lm.py --set model.hidden_size=650 --steps 35

A step is what `revrnn train` does per batch: the segment's loss over random tokens of the data
set's vocabulary (batch 20, 70 steps, the spec's dropouts), carrying the state, backward, gradient
clipping and the SGD update. Three variants, timed in one process, interleaved round by round, one
intra-op thread, median of the rounds (the way `scripts/bench_engine.py` times the stack alone):

- ``reverse``: reverse mode as training runs it, the loss computed once, during the backward pass
  (``Segment.defer_loss``);
- ``reverse, loss in forward``: the loss also computed in the forward pass, so the softmax runs
  twice (reversal recomputes it to differentiate it);
- the baseline spec (nn.LSTM / nn.GRU).

No corpus is needed: only the vocabulary size matters to the cost.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from revrnn_cli.engine import deterministic_settings, native  # noqa: E402
from revrnn_cli.memory.profile import vocab_size  # noqa: E402
from revrnn_cli.models.lm import RNNLanguageModel  # noqa: E402
from revrnn_cli.spec import load_spec  # noqa: E402


def make_step(model: RNNLanguageModel, tokens, targets, lr: float, clip: float, defer: bool):
    params = [p for p in model.parameters() if p.requires_grad]
    state = [None]

    def step():
        model.zero_grad(set_to_none=True)
        res = model.segment(tokens, targets, state[0], defer_loss=defer)
        (res.loss_sum / res.tokens).backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr)
        state[0] = model.detach_state(res.state)
        return float(res.loss_sum.detach())

    return step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=str(ROOT / "experiments" / "ptb_revlstm.yaml"))
    ap.add_argument("--base", default=str(ROOT / "experiments" / "ptb_lstm.yaml"))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--steps", type=int, default=70)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override both specs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    deterministic_settings()
    sets = [f"model.layers={args.layers}", *args.set]
    (rev_spec, _), (base_spec, _) = load_spec(args.rev, sets), load_spec(args.base, sets)
    vocab = vocab_size(rev_spec)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, vocab, (args.steps + 1, args.batch), generator=gen)
    tokens, targets = data[:-1], data[1:]
    variants = {}
    for name, spec, defer in (("reverse", rev_spec, True), ("reverse, loss in forward", rev_spec, False),
                              ("baseline", base_spec, False)):
        torch.manual_seed(spec.seed)
        model = RNNLanguageModel(spec.model, vocab, backprop=spec.train.backprop if spec.model.reversible else None)
        model.train()
        variants[name] = make_step(model, tokens, targets, spec.train.lr, spec.train.clip, defer)
    gc.freeze()  # as `revrnn train` does after building its model
    for fn in variants.values():  # warm-up: allocator, MKL packing, the fused operators' first build
        fn()
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: args.steps * args.batch / v for k, v in med.items()}
    result = {
        "config": f"{rev_spec.name} vs {base_spec.name}, {args.layers} layers, vocabulary {vocab}, batch {args.batch}, "
                  f"{args.steps} steps, 1 thread, torch {torch.__version__}, {native.describe(torch.device('cpu'))}",
        "tokens_per_s": tps,
        "reverse_over_baseline_tokens_per_s": tps["reverse"] / tps["baseline"],
        "loss_in_forward_over_baseline_tokens_per_s": tps["reverse, loss in forward"] / tps["baseline"],
        "rounds": args.rounds,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(result["config"])
    print(f"{'variant':<26} {'s / step (median)':>18} {'tokens/s':>10} {'vs baseline':>12}")
    for k in variants:
        label = base_spec.name if k == "baseline" else k
        print(f"{label:<26} {med[k]:>18.2f} {tps[k]:>10.0f} {tps[k] / tps['baseline']:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
