"""``revrnn memprofile`` for a translation spec: one training step of the encoder-decoder, three ways.

    revrnn memprofile experiments/multi30k_revgru.yaml --seq-len 20,40,80 --batch 64 --json

Modes: ``bptt`` (the GRU/LSTM baseline of the same size, attending over its full hidden state),
``store`` and ``reverse`` (the spec's reversible model with its context). Source and target
sentences are random token ids of length T (no padding), so no data files are needed; the
vocabulary sizes are those of Multi30k after the paper's preprocessing. Rows report the paper's
accounting for the encoder and the decoder separately (as the reference's nmt code does: the encoder adds the stored
attention slice), the bytes kept for backward and the measured peak, as for language models.
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace

import torch

from ..data.translation import BOS, collate
from ..models.nmt import Seq2Seq
from .accounting import all_ratios
from .measure import peak_step_bytes, saved_bytes

MODES = ("bptt", "store", "reverse")
VOCAB = {"en": 9_799, "de": 17_998}
"""Multi30k word vocabularies after Moses tokenisation, lowercasing and the 50-token filter,
specials included (what :func:`~revrnn_cli.data.translation.load_parallel_corpus` builds)."""


def build_model(mode: str, spec, device) -> Seq2Seq:
    cfg = spec.model
    if mode == "bptt":
        defaults = type(cfg)()
        cfg = cfg.model_copy(update={"cell": cfg.cell.removeprefix("rev"), "context": "hidden", "forget": True,
                                     "enc_max_forget_bits": defaults.enc_max_forget_bits,
                                     "dec_max_forget_bits": defaults.dec_max_forget_bits})
    elif mode not in ("store", "reverse"):
        raise ValueError(f"memprofile of a translation spec supports the modes {', '.join(MODES)}, not {mode!r}")
    elif not cfg.reversible:
        raise ValueError(f"mode {mode!r} needs a reversible cell; the spec has {cfg.cell}")
    src_v, tgt_v = VOCAB[spec.data.src_lang], VOCAB[spec.data.tgt_lang]
    return Seq2Seq(cfg, src_v, tgt_v, backprop=None if mode == "bptt" else mode).to(device).train()


def make_batch(spec, steps: int, batch: int, seed: int, device):
    """Random sentence pairs: sources of ``steps`` tokens, targets of ``steps - 1`` (+ eos = steps)."""
    gen = torch.Generator().manual_seed(seed)
    src_v, tgt_v = VOCAB[spec.data.src_lang], VOCAB[spec.data.tgt_lang]

    pairs = SimpleNamespace(src=torch.randint(BOS + 2, src_v, (batch, steps), generator=gen).tolist(),
                            tgt=torch.randint(BOS + 2, tgt_v, (batch, max(steps - 1, 1)), generator=gen).tolist())
    return collate(pairs, list(range(batch))).to(device)


def training_step(model, batch):
    res = model.loss(batch)
    (res.loss_sum / batch.size).backward()
    return res


def profile_row(mode: str, spec, steps: int, batch: int, device, repeats: int = 1, measure_peak: bool = True) -> dict:
    torch.manual_seed(spec.seed)
    model = build_model(mode, spec, device)
    data = make_batch(spec, steps, batch, spec.seed, device)
    saved, res = saved_bytes(lambda: model.loss(data), list(model.parameters()))
    kept = int(res.bits.get("enc_kept_bytes", 0)) + int(res.bits.get("dec_kept_bytes", 0))
    (res.loss_sum / data.size).backward()
    row = {"mode": mode, "seq_len": steps, "batch": batch,
           "cell": spec.model.cell if mode != "bptt" else spec.model.cell.removeprefix("rev"),
           "context": spec.model.context if mode != "bptt" else "hidden"}
    if mode != "bptt":
        bits = res.bits
        row.update({k: bits[k] for k in bits if k.endswith("_bits")})
        row.update(all_ratios(bits))
    row["saved_bytes"] = saved + kept
    times = []
    for _ in range(max(1, repeats)):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        training_step(model, data)
        times.append(time.perf_counter() - t0)
    row["step_seconds"] = statistics.median(times)
    row["tokens_per_s"] = data.tokens / row["step_seconds"]
    if measure_peak:
        row.update(peak_step_bytes({"config": spec.model_dump(mode="json"), "mode": mode, "steps": steps,
                                    "batch": batch}, torch.device(device)))
    return row


__all__ = ["MODES", "VOCAB", "build_model", "make_batch", "profile_row", "training_step"]
