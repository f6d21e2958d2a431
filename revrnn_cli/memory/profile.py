"""What ``revrnn memprofile`` measures: one training step of the same language model, four ways.

    revrnn memprofile                                        # default: 2-layer RevLSTM LM, 650 units
    revrnn memprofile experiments/ptb_revlstm.yaml --seq-len 35,70,140,280 --batch 20 --json
    revrnn memprofile --modes reverse,bptt --seq-len 70,1000 --plot memory.png

Modes (the same sizes, dropouts and data; token ids are random, so no data files are needed):

* ``bptt``       the ordinary GRU/LSTM twin (``nn.GRU`` / ``nn.LSTM``) with plain autograd;
* ``checkpoint`` the same ordinary model under ``torch.utils.checkpoint`` over √T segments
                 (non-reentrant; each segment's embedding, RNN and softmax are recomputed);
* ``store``      the reversible model with ordinary autograd through its fixed-point cells;
* ``reverse``    the reversible model trained by reversal (nothing O(T) kept but the buffer).

For each, a row reports the paper's accounting (reference `language_modelling/train.py`), the bytes kept for
backward, the peak
memory of the step (:mod:`.measure`), and the step's time.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch.utils.checkpoint import checkpoint

from ..data.corpora import LM_CORPUS_SPECS
from ..data.synthetic import num_input_tokens
from ..models.lm import RNNLanguageModel, SegmentResult
from ..spec import ExperimentSpec
from .accounting import memory_ratios, normal_bits
from .measure import peak_step_bytes, saved_bytes

MODES = ("bptt", "checkpoint", "store", "reverse")


def vocab_size(spec: ExperimentSpec) -> int:
    """The model's vocabulary, known from the data set's published size (no files needed)."""
    if spec.data.synthetic:
        return num_input_tokens(spec.data.vocab_size)
    return LM_CORPUS_SPECS[spec.data.dataset].vocab_size


def build_model(mode: str, spec: ExperimentSpec, vocab: int, device) -> RNNLanguageModel:
    cfg = spec.model
    if mode in ("bptt", "checkpoint"):
        defaults = type(cfg)()
        cfg = cfg.model_copy(update={"cell": cfg.cell.removeprefix("rev"), "forget": True,
                                     "max_forget_bits": defaults.max_forget_bits})
        return RNNLanguageModel(cfg, vocab).to(device).train()
    if not cfg.reversible:
        raise ValueError(f"mode {mode!r} needs a reversible cell; the spec has {cfg.cell}")
    return RNNLanguageModel(cfg, vocab, backprop=mode).to(device).train()


def make_batch(vocab: int, steps: int, batch: int, seed: int, device):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (steps + 1, batch), generator=gen).to(device)
    return tokens[:-1], tokens[1:]


def forward(mode: str, model: RNNLanguageModel, tokens, targets) -> SegmentResult:
    if mode == "checkpoint":
        return _checkpointed(model, tokens, targets)
    return model.segment(tokens, targets, defer_loss=torch.is_grad_enabled())  # as `revrnn train` runs it


def training_step(mode: str, model, tokens, targets) -> SegmentResult:
    res = forward(mode, model, tokens, targets)
    (res.loss_sum / res.tokens).backward()
    return res


def _checkpointed(model: RNNLanguageModel, tokens, targets) -> SegmentResult:
    """The baseline over √T segments, each recomputed during backward; the state flows between them."""
    T, B = tokens.shape
    seg = max(1, round(math.sqrt(T)))
    state = model.initial_state(B, tokens.device)
    lstm = isinstance(state[0], tuple)
    flat = [t for s in state for t in (s if lstm else (s,))]
    total, kept = 0.0, []

    def run(tok, tgt, *flat_state):
        st = [tuple(flat_state[2 * i : 2 * i + 2]) for i in range(len(flat_state) // 2)] if lstm else list(flat_state)
        r = model.segment(tok, tgt, st)
        out_flat = [t for s in r.state for t in (s if lstm else (s,))]
        return (r.loss_sum, *out_flat)

    for a in range(0, T, seg):
        out = checkpoint(run, tokens[a : a + seg], targets[a : a + seg], *flat, use_reentrant=False)
        total, flat = total + out[0], list(out[1:])
        kept.extend(flat)  # each segment's input state stays alive for its recomputation
    res = SegmentResult(total, int(targets.numel()), 0, None)
    res.bits = {"checkpoint_inputs": kept}
    return res


def profile_row(mode: str, spec: ExperimentSpec, steps: int, batch: int, device, repeats: int = 1,
                measure_peak: bool = True) -> dict:
    if spec.task == "translation":
        from .profile_nmt import profile_row as nmt_row

        return nmt_row(mode, spec, steps, batch, device, repeats, measure_peak)
    vocab = vocab_size(spec)
    torch.manual_seed(spec.seed)
    model = build_model(mode, spec, vocab, device)
    tokens, targets = make_batch(vocab, steps, batch, spec.seed, device)
    params = list(model.parameters())

    def also(res):
        return res.bits.get("checkpoint_inputs", [])

    saved, res = saved_bytes(lambda: forward(mode, model, tokens, targets), params, also=also)
    kept = int(res.bits.get("kept_bytes", 0))
    (res.loss_sum / res.tokens).backward()
    sizes = [m.hidden_size for m in getattr(model.rnn, "cells", getattr(model.rnn, "layers", []))]
    lstm = spec.model.cell.endswith("lstm")
    row = {"mode": mode, "seq_len": steps, "batch": batch, "cell": spec.model.cell if mode in ("store", "reverse")
           else spec.model.cell.removeprefix("rev"), "normal_bits": normal_bits(sizes, steps, batch, lstm)}
    if mode in ("store", "reverse"):
        row.update(used_bits=res.bits["used_bits"], optimal_bits=res.bits["optimal_bits"])
        row.update(memory_ratios(res.bits))
    row["saved_bytes"] = saved + kept
    times = []
    for _ in range(max(1, repeats)):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        training_step(mode, model, tokens, targets)
        times.append(time.perf_counter() - t0)
    row["step_seconds"] = statistics.median(times)
    row["tokens_per_s"] = steps * batch / row["step_seconds"]
    if measure_peak:
        row.update(peak_step_bytes({"config": spec.model_dump(mode="json"), "mode": mode, "steps": steps,
                                    "batch": batch}, torch.device(device)))
    return row


def growth_per_step(rows: list[dict], key: str = "saved_bytes") -> dict[str, float]:
    """Least-squares slope of ``key`` against the sequence length, per mode (bytes per time step)."""
    out = {}
    for mode in {r["mode"] for r in rows}:
        pts = [(r["seq_len"], r[key]) for r in rows if r["mode"] == mode and r.get(key) is not None]
        if len(pts) < 2:
            continue
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        var = sum((x - mx) ** 2 for x, _ in pts)
        out[mode] = sum((x - mx) * (y - my) for x, y in pts) / var if var else float("nan")
    return out


def predict(rows: list[dict], mode: str, steps: int, key: str = "saved_bytes") -> float | None:
    """Linear extrapolation of ``key`` for ``mode`` to ``steps`` from the rows measured so far."""
    pts = sorted((r["seq_len"], r[key]) for r in rows if r["mode"] == mode and r.get(key) is not None)
    if len(pts) < 2:
        return None
    slope = growth_per_step([r for r in rows if r["mode"] == mode and r.get(key) is not None], key).get(mode)
    if slope is None or not math.isfinite(slope):
        return None
    x0, y0 = pts[-1]
    return y0 + slope * (steps - x0)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


__all__ = ["MODES", "available_memory_bytes", "predict", "build_model", "growth_per_step", "make_batch", "profile_row", "training_step", "vocab_size"]
