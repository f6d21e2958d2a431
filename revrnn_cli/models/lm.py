"""Word-level language model: embedding -> stacked RNN -> softmax tied to the embedding (AWD-LSTM).

The top layer is as wide as the embedding so that the softmax can share its matrix (reference
`language_modelling/rev_training/model.py`). Regularisation as in the paper's code (reference
`language_modelling/train.py`): word-level embedding dropout
(``dropoute``), locked dropout on the embedded input (``dropouti``), between layers
(``dropouth``) and on the output (``dropout``), DropConnect on the recurrent weights (``wdrop``).

A reversible stack runs one segment of the engine's primitive (:class:`_LMSegment`): its inputs are
embedded from the token ids chunk by chunk and its top outputs go straight into the tied softmax and
the loss. In ``reverse`` mode the forward pass keeps only the final state, the buffers, the token
ids and the per-segment masks; the backward pass reverses the stack and recomputes, chunk by chunk,
the embeddings and the softmax from the recovered outputs. So no tensor of size O(T) survives
between forward and backward, not even the logits. ``store`` mode, evaluation and the baselines
compute the loss over the same chunks in the same order, so every mode gives the same loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from ..engine.cells import parse_cell_update
from ..engine.fixed_point import parse_forget_bits
from ..engine.layers import RevState, ReversibleRNN
from ..engine.segment import Segment, step_blocks
from .baseline import BaselineRNN
from .dropout import embed, embed_grad, embedding_row_mask, locked_mask

IGNORE_INDEX = -100
REVERSIBLE = ("revgru", "revlstm")


class LMConfig(BaseModel):
    """The ``model:`` section of a language-model spec (defaults: the paper code's, reference
    `language_modelling/train.py`)."""

    model_config = ConfigDict(extra="forbid")

    cell: Literal["gru", "lstm", "revgru", "revlstm"] = "revlstm"
    emb_size: int = Field(650, ge=2)
    hidden_size: int = Field(1150, ge=2)
    layers: int = Field(1, ge=1, le=8)
    max_forget_bits: int | None = 3
    forget: bool = True  # False: the no-forgetting variants (NF-RevGRU / NF-RevLSTM)
    cell_update: str = "paper"  # RevLSTM update rule: paper | bounded (engine.cells.RevLSTMCell)
    dropout: float = Field(0.4, ge=0, lt=1)
    dropouth: float = Field(0.3, ge=0, lt=1)
    dropouti: float = Field(0.4, ge=0, lt=1)
    dropoute: float = Field(0.1, ge=0, lt=1)
    wdrop: float = Field(0.5, ge=0, lt=1)
    chunk: int = Field(16, ge=1)  # steps per batched input projection: see ReversibleRNN's ``chunk``

    @property
    def reversible(self) -> bool:
        return self.cell in REVERSIBLE

    @field_validator("max_forget_bits", mode="before")
    @classmethod
    def _bits(cls, v):
        return parse_forget_bits(v)

    @model_validator(mode="after")
    def _sizes(self):
        parse_cell_update(self.cell_update, self.cell, self.forget)
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
    correct: int | torch.Tensor
    state: object
    bits: dict = field(default_factory=dict)
    deferred: bool = False  # loss_sum and correct hold their values only after backward() (defer_loss)


def chunk_loss(Y, targets, weight, bias, out_mask, count: bool = True):
    """Summed cross-entropy of one chunk of outputs [K, B, E]; also the number of correct argmaxes
    (0 unless ``count``: reverse mode's recomputation needs only the loss). The softmax runs over
    blocks of whole steps (:func:`.segment.step_blocks`), so its transient memory stays bounded
    however long the chunk of the recurrence is."""
    loss, correct = 0.0, 0
    for a, b in step_blocks(Y.shape[0], Y.shape[1], weight.shape[0]):
        l, c = _block_loss(Y[a:b], targets[a:b], weight, bias, out_mask, count)
        loss, correct = loss + l, correct + c
    return loss, correct


def _block_loss(Y, targets, weight, bias, out_mask, count: bool):
    if out_mask is not None:
        Y = Y * out_mask
    logits = F.linear(Y, weight, bias).reshape(-1, weight.shape[0])
    flat = targets.reshape(-1)
    loss = F.cross_entropy(logits, flat, reduction="sum", ignore_index=IGNORE_INDEX)
    correct = 0
    if count:
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
                                     forget=cfg.forget, chunk=cfg.chunk, backprop=backprop,
                                     cell_update=cfg.cell_update, **common)
        else:
            self.rnn = BaselineRNN(cfg.cell, cfg.emb_size, cfg.hidden_size, cfg.layers, **common)

    def initial_state(self, batch: int, device=None):
        return self.rnn.initial_state(batch, device)

    def detach_state(self, state):
        return state.detach() if isinstance(state, RevState) else BaselineRNN.detach_state(state)

    def segment(self, tokens: torch.Tensor, targets: torch.Tensor, state=None, defer_loss: bool = False) -> SegmentResult:
        """Loss of one segment [T, B] of token ids against targets, carrying ``state``.

        ``defer_loss``: when the reversible stack trains in reverse mode, compute the loss only in
        the backward pass, where reversal recomputes the softmax anyway (``Segment.defer_loss``):
        one softmax over the vocabulary per step instead of two. ``loss_sum`` and ``correct`` then
        hold their values only after ``backward()`` (``SegmentResult.deferred`` says so)."""
        T, B = tokens.shape
        if state is None:
            state = self.initial_state(B, tokens.device)
        w = self.encoder.weight
        # masks drawn once per segment, always in this order (so every backprop mode sees the same ones)
        row_mask = embedding_row_mask(self.vocab_size, self.cfg.dropoute, w, self.training)
        in_mask = locked_mask(B, self.cfg.emb_size, self.cfg.dropouti, w, self.training)
        if self.cfg.reversible:
            masks = self.rnn.sample_masks(B, tokens.device)
            out_mask = locked_mask(B, self.cfg.emb_size, self.cfg.dropout, w, self.training)
            seg = _LMSegment(tokens, targets, w, self.decoder_bias, row_mask, in_mask, out_mask, self.cfg.chunk)
            seg.defer_loss = defer_loss
            out = self.rnn.run(seg, T, B, state, masks=masks)
            bits = dict(out.stats, kept_bytes=out.kept_bytes) if out.kept_bytes else dict(out.stats)
            new_state = RevState([torch.cat(b, 1) for b in out.hT], out.hT_floats)
            return SegmentResult(out.out, _count(targets), out.correct, new_state, bits, out.deferred)
        x = embed(tokens, w, row_mask, in_mask)
        y, state = self.rnn(x, state)
        out_mask = locked_mask(B, self.cfg.emb_size, self.cfg.dropout, w, self.training)
        loss, correct = 0.0, 0
        step = self.cfg.chunk
        for a in range(0, T, step):  # the same chunks as the reversible segment, so the sum is the same
            l, c = chunk_loss(y[a : a + step], targets[a : a + step], w, self.decoder_bias, out_mask)
            loss, correct = loss + l, correct + c
        return SegmentResult(loss, _count(targets), correct, state, {})


def _count(targets) -> int:
    return int((targets != IGNORE_INDEX).sum())


class _LMSegment(Segment):
    """The language model's ends of the stack: inputs embedded from token ids (rebuilt, not kept), and
    the tied softmax with its cross-entropy over the top outputs. Reverse mode keeps the token ids and
    the O(B x E) masks, nothing per step."""

    name = "language model"
    output = "loss"

    def __init__(self, tokens, targets, emb_w, dec_b, row_mask, in_mask, out_mask, chunk):
        self.tokens, self.targets, self.emb_w, self.dec_b = tokens, targets, emb_w, dec_b
        self.row_mask, self.in_mask, self.out_mask = row_mask, in_mask, out_mask

    def tensors(self):
        return [self.emb_w, self.dec_b]

    def kept_tensors(self):
        return [self.tokens, self.targets, self.row_mask, self.in_mask, self.out_mask]

    def inputs(self, a, b, t):
        return embed(self.tokens[a:b], t[0], self.row_mask, self.in_mask)

    def input_grad(self, a, b, dX, t, grads):
        if grads[0] is None:
            grads[0] = torch.zeros_like(t[0])
        embed_grad(self.tokens[a:b], dX, self.row_mask, self.in_mask, grads[0])

    def head_params(self, t):
        return t

    def head_loss(self, a, b, Y, params, count):
        return chunk_loss(Y, self.targets[a:b], params[0], params[1], self.out_mask, count)

    def head_blocks(self, a, b):
        return [(a + s, a + e) for s, e in step_blocks(b - a, self.targets.shape[1], self.emb_w.shape[0])]


__all__ = ["IGNORE_INDEX", "LMConfig", "RNNLanguageModel", "SegmentResult", "chunk_loss"]
