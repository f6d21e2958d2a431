"""Word-level language model: embedding -> stacked RNN -> softmax tied to the embedding (AWD-LSTM).

The top layer is as wide as the embedding so that the softmax can share its matrix (digest §1.3,
§9.9). Regularisation as in the paper's code (digest §7.1): word-level embedding dropout
(``dropoute``), locked dropout on the embedded input (``dropouti``), between layers
(``dropouth``) and on the output (``dropout``), DropConnect on the recurrent weights (``wdrop``).

With a reversible cell and ``backprop="reverse"``, one autograd function (:class:`_ReversibleLMLoss`)
runs the whole segment: the forward pass computes the loss chunk by chunk and keeps only the final
state, the buffers and the per-segment masks; the backward pass reverses the stack and recomputes,
chunk by chunk, the embeddings from the token ids and the softmax from the recovered outputs. So no
tensor of size O(T) survives between forward and backward, not even the logits. Every other case
(``store`` mode, the baselines, evaluation) runs the ordinary path, computing the loss over the same
chunks in the same order, so that the two modes give the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from ..engine.fixed_point import check_finite, parse_forget_bits
from ..engine.layers import RevState, ReversibleRNN
from ..engine.reversible import (bit_stats, build_plan, check_recovered, forward_steps, kept_bytes, raw_weight_grads,
                                 reverse_steps)
from .baseline import BaselineRNN
from .dropout import embed, embed_grad, embedding_row_mask, locked_mask

IGNORE_INDEX = -100
REVERSIBLE = ("revgru", "revlstm")


class LMConfig(BaseModel):
    """The ``model:`` section of a language-model spec (defaults: the paper code's, digest §7.1)."""

    model_config = ConfigDict(extra="forbid")

    cell: Literal["gru", "lstm", "revgru", "revlstm"] = "revlstm"
    emb_size: int = Field(650, ge=2)
    hidden_size: int = Field(1150, ge=2)
    layers: int = Field(1, ge=1, le=8)
    max_forget_bits: int | None = 3
    forget: bool = True  # False: the no-forgetting variants (NF-RevGRU / NF-RevLSTM)
    dropout: float = Field(0.4, ge=0, lt=1)
    dropouth: float = Field(0.3, ge=0, lt=1)
    dropouti: float = Field(0.4, ge=0, lt=1)
    dropoute: float = Field(0.1, ge=0, lt=1)
    wdrop: float = Field(0.5, ge=0, lt=1)
    chunk: int = Field(16, ge=1)

    @property
    def reversible(self) -> bool:
        return self.cell in REVERSIBLE

    @field_validator("max_forget_bits", mode="before")
    @classmethod
    def _bits(cls, v):
        return parse_forget_bits(v)

    @model_validator(mode="after")
    def _sizes(self):
        if self.reversible:
            for name in ("emb_size", "hidden_size"):
                if getattr(self, name) % 2:
                    raise ValueError(f"{name} must be even for a reversible cell (the state is split in halves), "
                                     f"got {getattr(self, name)}")
        else:
            if not self.forget:
                raise ValueError(f"forget=false (no-forgetting variant) needs a reversible cell, not {self.cell}")
            if self.max_forget_bits != LMConfig.model_fields["max_forget_bits"].default:
                raise ValueError(f"max_forget_bits applies to reversible cells (revgru, revlstm), not to {self.cell}")
        return self


@dataclass
class SegmentResult:
    loss_sum: torch.Tensor  # summed cross-entropy (a graph root when training)
    tokens: int  # predicted tokens (targets other than IGNORE_INDEX)
    correct: int
    state: object
    bits: dict = field(default_factory=dict)


def chunk_loss(Y, targets, weight, bias, out_mask):
    """Summed cross-entropy of one chunk of outputs [K, B, E]; also the number of correct argmaxes."""
    if out_mask is not None:
        Y = Y * out_mask
    logits = F.linear(Y, weight, bias).reshape(-1, weight.shape[0])
    flat = targets.reshape(-1)
    loss = F.cross_entropy(logits, flat, reduction="sum", ignore_index=IGNORE_INDEX)
    with torch.no_grad():
        correct = int(((logits.argmax(1) == flat) & (flat != IGNORE_INDEX)).sum())
    return loss, correct


class RNNLanguageModel(nn.Module):
    def __init__(self, cfg: LMConfig, vocab_size: int, backprop: str | None = None):
        super().__init__()
        self.cfg, self.vocab_size = cfg, vocab_size
        self.encoder = nn.Embedding(vocab_size, cfg.emb_size)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)  # AWD-LSTM / the paper code's init
        common = dict(top_size=cfg.emb_size, dropout=cfg.dropouth, weight_drop=cfg.wdrop)
        if cfg.reversible:
            self.rnn = ReversibleRNN(cfg.cell, cfg.emb_size, cfg.hidden_size, cfg.layers, max_forget_bits=cfg.max_forget_bits,
                                     forget=cfg.forget, chunk=cfg.chunk, backprop=backprop or "reverse", **common)
        else:
            self.rnn = BaselineRNN(cfg.cell, cfg.emb_size, cfg.hidden_size, cfg.layers, **common)

    def initial_state(self, batch: int, device=None):
        return self.rnn.initial_state(batch, device)

    def detach_state(self, state):
        return state.detach() if isinstance(state, RevState) else BaselineRNN.detach_state(state)

    def segment(self, tokens: torch.Tensor, targets: torch.Tensor, state=None) -> SegmentResult:
        """Loss of one segment [T, B] of token ids against targets, carrying ``state``."""
        T, B = tokens.shape
        if state is None:
            state = self.initial_state(B, tokens.device)
        w = self.encoder.weight
        # masks drawn once per segment, always in this order (so both backprop modes see the same ones)
        row_mask = embedding_row_mask(self.vocab_size, self.cfg.dropoute, w, self.training)
        in_mask = locked_mask(B, self.cfg.emb_size, self.cfg.dropouti, w, self.training)
        fused = (self.cfg.reversible and self.rnn.backprop == "reverse" and self.training and torch.is_grad_enabled())
        if fused:
            return self._reverse_segment(tokens, targets, state, row_mask, in_mask)
        x = embed(tokens, w, row_mask, in_mask)
        y, state = self.rnn(x, state)
        out_mask = locked_mask(B, self.cfg.emb_size, self.cfg.dropout, w, self.training)
        loss, correct = 0.0, 0
        step = self.cfg.chunk
        for a in range(0, T, step):  # the same chunks as the fused path, so the sum is the same
            l, c = chunk_loss(y[a : a + step], targets[a : a + step], w, self.decoder_bias, out_mask)
            loss, correct = loss + l, correct + c
        bits = dict(self.rnn.last_stats) if self.cfg.reversible else {}
        return SegmentResult(loss, _count(targets), correct, state, bits)

    def _reverse_segment(self, tokens, targets, state, row_mask, in_mask) -> SegmentResult:
        rnn = self.rnn
        masks, wmasks = rnn.sample_masks(tokens.shape[1], tokens.device)
        out_mask = locked_mask(tokens.shape[1], self.cfg.emb_size, self.cfg.dropout, self.encoder.weight, True)
        run = _LMRun(list(rnn.cells), masks, rnn._blocks(state), wmasks, rnn.chunk, tokens, targets,
                     row_mask, in_mask, out_mask)
        flat = [p for c in rnn.cells for p in c.weights()]
        loss = _ReversibleLMLoss.apply(run, self.encoder.weight, self.decoder_bias, *flat)
        new_state = RevState([torch.cat(b, 1) for b in run.hT])
        rnn.last_stats = dict(run.stats)
        return SegmentResult(loss, _count(targets), run.correct, new_state, dict(run.stats))


def _count(targets) -> int:
    return int((targets != IGNORE_INDEX).sum())


@dataclass
class _LMRun:
    cells: list
    masks: list
    h0: list
    weight_masks: list | None
    chunk: int
    tokens: torch.Tensor
    targets: torch.Tensor
    row_mask: torch.Tensor | None
    in_mask: torch.Tensor | None
    out_mask: torch.Tensor | None
    name: str = "language model"
    track_bits: bool = True
    stats: dict = field(default_factory=dict)
    hT: list | None = None
    correct: int = 0


class _ReversibleLMLoss(torch.autograd.Function):
    """Summed cross-entropy of a segment whose backward recomputes everything by reversal."""

    @staticmethod
    def forward(ctx, run: _LMRun, emb_w, dec_b, *flat):
        T, B = run.tokens.shape
        check_finite([("embedding", emb_w), ("decoder bias", dec_b)] + [(f"weight {i}", w) for i, w in enumerate(flat)],
                     run.name)
        plan = build_plan(run.cells, flat, run.weight_masks, run.masks, B, emb_w.device, run.chunk,
                          run.track_bits, run.name)
        total = 0.0  # summed in the same order and precision as the ordinary path

        def x_chunk(a, b):
            return embed(run.tokens[a:b], emb_w, run.row_mask, run.in_mask)

        def on_output(a, b, Y):
            nonlocal total
            loss, correct = chunk_loss(Y, run.targets[a:b], emb_w, dec_b, run.out_mask)
            total = total + loss
            run.correct += correct

        state = [list(s) for s in run.h0]
        forward_steps(plan, state, T, x_chunk, on_output=on_output)
        run.stats.update(bit_stats(plan, run.cells, T, B))
        plan.seal()
        run.stats["kept_bytes"] = kept_bytes(plan, state, run.masks, run.weight_masks or [], run.tokens, run.targets,
                                             run.row_mask, run.in_mask, run.out_mask)
        run.hT = state
        ctx.run, ctx.final, ctx.buffers = run, [list(s) for s in state], plan.buffers
        ctx.save_for_backward(emb_w, dec_b, *flat)
        return total.detach() if isinstance(total, torch.Tensor) else emb_w.new_tensor(total)

    @staticmethod
    def backward(ctx, g):
        run = ctx.run
        emb_w, dec_b, *flat = ctx.saved_tensors
        T, B = run.tokens.shape
        plan = build_plan(run.cells, flat, run.weight_masks, run.masks, B, emb_w.device, run.chunk, False,
                          run.name, buffers=ctx.buffers)
        plan.unseal()
        d_emb, d_bias = torch.zeros_like(emb_w), torch.zeros_like(dec_b)

        def x_chunk(a, b):
            return embed(run.tokens[a:b], emb_w, run.row_mask, run.in_mask)

        def dy_chunk(a, b, Y):
            # the softmax of this chunk, recomputed from the recovered outputs; dlogits by hand
            Yd = Y if run.out_mask is None else Y * run.out_mask
            flatY = Yd.reshape(-1, Yd.shape[-1])
            logits = torch.addmm(dec_b, flatY, emb_w.t())
            dlogits = logits.softmax(1)
            tgt = run.targets[a:b].reshape(-1)
            valid = tgt != IGNORE_INDEX
            rows = torch.arange(tgt.numel(), device=tgt.device)[valid]
            dlogits[rows, tgt[valid]] -= 1.0
            dlogits[~valid] = 0.0
            dlogits.mul_(g)
            d_bias.add_(dlogits.sum(0))
            d_emb.addmm_(dlogits.t(), flatY)
            dY = dlogits.mm(emb_w).view_as(Y)
            return dY if run.out_mask is None else dY * run.out_mask

        def dx_chunk(a, b, dX):
            embed_grad(run.tokens[a:b], dX, run.row_mask, run.in_mask, d_emb)

        dstate = [[emb_w.new_zeros(B, c.half) for _ in range(c.n_blocks)] for c in run.cells]
        dW = [[torch.zeros_like(w) for w in ws] for ws in plan.weights]
        state = [list(s) for s in ctx.final]
        reverse_steps(plan, state, T, x_chunk, dstate=dstate, dy_chunk=dy_chunk, dx_chunk=dx_chunk, dW=dW)
        check_recovered(plan, state, run.h0, run.name)
        ctx.run = ctx.final = ctx.buffers = None
        return (None, d_emb, d_bias, *raw_weight_grads(dW, run.weight_masks))


__all__ = ["IGNORE_INDEX", "LMConfig", "RNNLanguageModel", "SegmentResult", "chunk_loss"]
