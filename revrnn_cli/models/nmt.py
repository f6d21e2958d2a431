"""Attention encoder-decoder for translation, reversible or ordinary (reference `nmt/revencoder.py`,
`nmt/revdecoder.py`, `nmt/train_scripts/*.sh`).

    revrnn train experiments/multi30k_revgru_small.yaml
    revrnn train experiments/multi30k_revgru.yaml --set model.context=emb+slice:20 --set model.enc_max_forget_bits=2

Encoder and decoder are stacks of the same cell; the decoder starts from the encoder's final state
(every layer) and has no input feeding, so its recurrence runs on the target embeddings alone and
the attention head (:mod:`.attention`) is applied to its outputs a chunk at a time.

What the attention looks at (``model.context``) is what decides the encoder's memory (reference
`nmt/revencoder.py`, `nmt/revdecoder.py`):

* ``hidden``       every top-layer state (the baselines; a reversible encoder then stores them all);
* ``emb``          the source embeddings after input dropout: rebuilt from token ids, free;
* ``slice:N``      the first N units of the top encoder layer's h1, stored explicitly (32 bits each)
                   and *left out of the buffer*: they are multiplied without storing their lost bits
                   and restored from the stored copy during reversal (``cell.lossy_units``);
* ``emb+slice:N``  both, concatenated ("Emb + 20H" in the paper's Multi30k table).

Padded source steps leave state and buffer unchanged (:meth:`~revrnn_cli.engine.reversible.Plan.project`),
so the decoder starts from each sentence's own final state. Padded target steps are run (there is no
decoder length mask in the reference) and only their loss weight is zero.

The reversible encoder and decoder are each one segment of the engine's primitive
(:mod:`.nmt_segments`), whatever the backprop mode; the baselines run the ordinary path below over
the same chunks, so every path sums the loss the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..engine.buffer import NullBuffer
from ..engine.cells import parse_cell_update
from ..engine.fixed_point import check_finite, parse_forget_bits
from ..engine.layers import RevState, ReversibleRNN
from ..engine.reversible import Plan, effective_weights, forward_steps
from .attention import IGNORE_INDEX, AttentionHead
from .dropout import embed, locked_mask
from .nmt_segments import DecoderSegment, EncoderSegment

REVERSIBLE = ("revgru", "revlstm")
_CONTEXT = re.compile(r"^(hidden|emb|slice:(\d+)|emb\+slice:(\d+))$")


class NMTConfig(BaseModel):
    """The ``model:`` section of a translation spec (defaults: the paper's Multi30k scripts, reference
    `nmt/train_scripts/*.sh`, `nmt/opts.py`)."""

    model_config = ConfigDict(extra="forbid")

    cell: Literal["gru", "lstm", "revgru", "revlstm"] = "revgru"
    emb_size: int = Field(300, ge=2)  # word embeddings = rnn_size in the reference (300 for Multi30k)
    hidden_size: int = Field(300, ge=2)
    layers: int = Field(1, ge=1, le=8)  # 1 encoder and 1 decoder layer for Multi30k
    context: str = "emb+slice:20"  # what the attention looks at (see the module docstring)
    enc_max_forget_bits: int | None = 3  # -enc_max_forget 0.875 (3 bits), the scripts' default
    dec_max_forget_bits: int | None = 3  # -dec_max_forget 0.875
    forget: bool = True  # False: the no-forgetting variants
    cell_update: str = "paper"  # RevLSTM update rule: paper | bounded (engine.cells.RevLSTMCell)
    dropouti: float = Field(0.4, ge=0, lt=1)  # locked dropout on the embedded inputs (both sides)
    dropouth: float = Field(0.4, ge=0, lt=1)  # locked dropout between layers
    dropouto: float = Field(0.4, ge=0, lt=1)  # locked dropout on the decoder's top outputs
    dropouts: float = Field(0.4, ge=0, lt=1)  # locked dropout on the attention slice
    param_init: float = Field(0.1, gt=0)  # every parameter U(-0.1, 0.1) (-param_init 0.1)
    chunk: int = Field(16, ge=1)

    @property
    def reversible(self) -> bool:
        return self.cell in REVERSIBLE

    @property
    def slice_units(self) -> int:
        m = _CONTEXT.match(self.context)
        return int(m.group(2) or m.group(3) or 0)

    @property
    def uses_emb(self) -> bool:
        return self.context.startswith("emb")

    @property
    def uses_hidden(self) -> bool:
        return self.context == "hidden"

    @property
    def context_size(self) -> int:
        return (self.emb_size if self.uses_emb else 0) + self.slice_units + (self.hidden_size if self.uses_hidden else 0)

    @field_validator("enc_max_forget_bits", "dec_max_forget_bits", mode="before")
    @classmethod
    def _bits(cls, v):
        return parse_forget_bits(v)

    @field_validator("context")
    @classmethod
    def _context(cls, v: str) -> str:
        if not _CONTEXT.match(v):
            raise ValueError(f"must be hidden, emb, slice:N or emb+slice:N, got {v!r}")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        parse_cell_update(self.cell_update, self.cell, self.forget)
        if self.reversible:
            for name in ("emb_size", "hidden_size"):
                if getattr(self, name) % 2:
                    raise ValueError(f"{name} must be even for a reversible cell (the state is split in halves), "
                                     f"got {getattr(self, name)}")
            n, half = self.slice_units, self.hidden_size // 2
            if self.context.startswith(("slice", "emb+slice")) and not 1 <= n <= half:
                raise ValueError(f"context slice:N takes the first N units of h1: N must be in 1..{half} "
                                 f"(hidden_size/2), got {n}; use context=hidden for the whole state")
        else:
            if self.context != "hidden":
                raise ValueError(f"the {self.cell} baseline attends over its full hidden state: context must be "
                                 f"hidden, got {self.context!r}")
            defaults = NMTConfig.model_fields
            for name in ("enc_max_forget_bits", "dec_max_forget_bits"):
                if getattr(self, name) != defaults[name].default:
                    raise ValueError(f"{name} applies to reversible cells (revgru, revlstm), not to {self.cell}")
            if not self.forget:
                raise ValueError(f"forget=false (no-forgetting variant) needs a reversible cell, not {self.cell}")
        return self


@dataclass
class Masks:
    """Every random mask of one batch, drawn once in a fixed order (so both backprop modes agree)."""

    in_src: torch.Tensor | None = None
    enc: list = field(default_factory=list)
    in_tgt: torch.Tensor | None = None
    dec: list = field(default_factory=list)
    slice: torch.Tensor | None = None
    out: torch.Tensor | None = None


@dataclass
class NMTResult:
    loss_sum: torch.Tensor
    tokens: int
    correct: int
    bits: dict = field(default_factory=dict)


@dataclass
class DecodeState:
    """What beam search carries per row: the decoder state, the context and its padding mask."""

    state: list
    ctx: torch.Tensor  # [S, N, C]
    pad: torch.Tensor  # [N, S]


_NULL = NullBuffer()


class Seq2Seq(nn.Module):
    def __init__(self, cfg: NMTConfig, src_vocab: int, tgt_vocab: int, backprop: str | None = None):
        super().__init__()
        self.cfg = cfg
        E, H = cfg.emb_size, cfg.hidden_size
        self.src_emb = nn.Embedding(src_vocab, E)
        self.tgt_emb = nn.Embedding(tgt_vocab, E)
        if cfg.reversible:
            common = dict(forget=cfg.forget, dropout=cfg.dropouth, chunk=cfg.chunk, backprop=backprop,
                          cell_update=cfg.cell_update)
            self.encoder = ReversibleRNN(cfg.cell, E, H, cfg.layers, max_forget_bits=cfg.enc_max_forget_bits, **common)
            self.decoder = ReversibleRNN(cfg.cell, E, H, cfg.layers, max_forget_bits=cfg.dec_max_forget_bits, **common)
            self.encoder.cells[-1].lossy_units = cfg.slice_units  # the slice is stored, not buffered
        else:
            rnn = nn.LSTM if cfg.cell == "lstm" else nn.GRU
            self.encoder = nn.ModuleList(rnn(E if l == 0 else H, H) for l in range(cfg.layers))
            self.decoder = nn.ModuleList(rnn(E if l == 0 else H, H) for l in range(cfg.layers))
        self.head = AttentionHead(H, cfg.context_size, tgt_vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -cfg.param_init, cfg.param_init)
        self.last_bits: dict = {}

    @property
    def backprop(self) -> str | None:
        return self.encoder.backprop if self.cfg.reversible else None

    # ---- shared pieces --------------------------------------------------------------------------
    def sample_masks(self, batch: int, device) -> Masks:
        cfg, w, train = self.cfg, self.src_emb.weight, self.training
        m = Masks(in_src=locked_mask(batch, cfg.emb_size, cfg.dropouti, w, train))
        m.enc = self._layer_masks(self.encoder, batch, device)
        m.in_tgt = locked_mask(batch, cfg.emb_size, cfg.dropouti, w, train)
        m.dec = self._layer_masks(self.decoder, batch, device)
        if cfg.slice_units:
            m.slice = locked_mask(batch, cfg.slice_units, cfg.dropouts, w, train)
        m.out = locked_mask(batch, cfg.hidden_size, cfg.dropouto, w, train)
        return m

    def _layer_masks(self, stack, batch, device) -> list:
        if self.cfg.reversible:
            return stack.sample_masks(batch, device)[0]
        return [None] + [locked_mask(batch, self.cfg.hidden_size, self.cfg.dropouth, self.src_emb.weight, self.training)
                         for _ in range(1, len(stack))]

    def context(self, x_src, enc_out, masks: Masks) -> torch.Tensor:
        """The attention context [S, B, C] from the embedded source and the encoder's kept outputs."""
        parts = []
        if self.cfg.uses_emb:
            parts.append(x_src)
        if self.cfg.slice_units:
            s = enc_out[..., : self.cfg.slice_units]
            parts.append(s if masks.slice is None else s * masks.slice)
        if self.cfg.uses_hidden:
            parts.append(enc_out)
        return torch.cat(parts, -1)

    @staticmethod
    def active(src_len: torch.Tensor, steps: int) -> torch.Tensor:
        """[S, B] True at the real (unpadded) source steps."""
        return torch.arange(steps, device=src_len.device)[:, None] < src_len[None, :]

    # ---- training and teacher-forced evaluation -------------------------------------------------
    def loss(self, batch) -> NMTResult:
        """Summed cross-entropy of a batch (a :class:`~revrnn_cli.data.TranslationBatch`)."""
        B = batch.src.shape[1]
        masks = self.sample_masks(B, batch.src.device)
        res = self._rev_loss(batch, masks) if self.cfg.reversible else self._base_loss(batch, masks)
        self.last_bits = dict(res.bits)
        return res

    def _rev_loss(self, batch, masks: Masks) -> NMTResult:
        """Encoder then decoder, each one segment of the engine (:mod:`.nmt_segments`): trained by
        reversal, by stored activations, or run without autograd, as the stacks' backprop says."""
        cfg = self.cfg
        src, src_len = batch.src, batch.src_len
        (S, B), T = src.shape, batch.tgt_in.shape[0]
        active = self.active(src_len, S)
        keep = cfg.hidden_size if cfg.uses_hidden else cfg.slice_units
        enc = self.encoder.run(EncoderSegment(src, self.src_emb.weight, masks.in_src, keep), S, B,
                               device=src.device, masks=(masks.enc, None), active=active)
        dec_seg = DecoderSegment(self.context, src, batch.tgt_in, batch.tgt_out, ~active.t(), masks,
                                 self.src_emb.weight, enc.out, self.tgt_emb.weight, self.head.params(), enc.kept,
                                 count_correct=not self.training)
        state = RevState([torch.cat(b, 1) for b in enc.hT], enc.hT_floats)
        dec = self.decoder.run(dec_seg, T, B, state, masks=(masks.dec, None))
        bits = {**{f"enc_{k}": v for k, v in enc.stats.items()}, **{f"dec_{k}": v for k, v in dec.stats.items()}}
        out = _combine(bits)
        if enc.kept_bytes or dec.kept_bytes:
            out.update(enc_kept_bytes=enc.kept_bytes, dec_kept_bytes=dec.kept_bytes)
        return NMTResult(dec.out, _count(batch.tgt_out), dec.correct, out)

    def _base_loss(self, batch, masks: Masks) -> NMTResult:
        """The ordinary GRU/LSTM baseline (packed sequences), scored over the same chunks."""
        cfg = self.cfg
        src, src_len = batch.src, batch.src_len
        S = src.shape[0]
        x_src = embed(src, self.src_emb.weight, None, masks.in_src)
        enc_out, base_state = self._base_encode(x_src, src_len, masks)
        ctx = self.context(x_src, enc_out, masks)
        pad = ~self.active(src_len, S).t()
        y_in = embed(batch.tgt_in, self.tgt_emb.weight, None, masks.in_tgt)
        Y = self._base_decode(y_in, base_state, masks)
        total, correct = 0.0, 0
        head = self.head.params()
        for a in range(0, Y.shape[0], cfg.chunk):
            loss, c = AttentionHead.chunk_loss(Y[a : a + cfg.chunk], batch.tgt_out[a : a + cfg.chunk], ctx, pad,
                                               masks.out, *head, count_correct=not self.training)
            total, correct = total + loss, correct + c
        return NMTResult(total, _count(batch.tgt_out), correct, {})

    def _search_plan(self, stack, B, device, active=None) -> Plan:
        """The plain fixed-point forward of search: no buffer, nothing is reversed at test time (the
        reference's ``forward_test``)."""
        flat = stack.weights()
        check_finite([(f"weight {i}", w) for i, w in enumerate(flat)], stack._name())
        return Plan(list(stack.cells), effective_weights(stack.cells, flat), [None] * len(stack.cells),
                    [_NULL] * len(stack.cells), self.cfg.chunk, stack._name(), active)

    def _base_encode(self, x, src_len, masks):
        S = x.shape[0]
        lengths = src_len.cpu()
        states = []
        for l, rnn in enumerate(self.encoder):
            if masks.enc[l] is not None:
                x = x * masks.enc[l]
            packed, s = rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
            x = pad_packed_sequence(packed, total_length=S)[0]
            states.append(s)
        return x, states

    def _base_decode(self, y, states, masks):
        for l, rnn in enumerate(self.decoder):
            if masks.dec[l] is not None:
                y = y * masks.dec[l]
            y, _ = rnn(y, states[l])
        return y

    # ---- decoding (the interface of :mod:`.search`) ---------------------------------------------
    @torch.no_grad()
    def start(self, src: torch.Tensor, src_len: torch.Tensor) -> DecodeState:
        """Run the encoder for search. Reversible stacks run the plain fixed-point forward with no
        buffer (nothing is reversed at test time, as in the reference's ``forward_test``)."""
        S, B = src.shape
        masks = Masks(enc=[None] * self.cfg.layers, dec=[None] * self.cfg.layers)
        x_src = embed(src, self.src_emb.weight, None, None)
        active = self.active(src_len, S)
        if self.cfg.reversible:
            enc = self.encoder
            plan = self._search_plan(enc, B, src.device, active)
            ints = [c.init_state(B, src.device) for c in enc.cells]
            outs = []
            forward_steps(plan, ints, S, lambda a, b: x_src[a:b], on_output=lambda a, b, Y: outs.append(Y))
            enc_out = torch.cat(outs)
            state = ints
        else:
            enc_out, state = self._base_encode(x_src, src_len, masks)
        return DecodeState(state, self.context(x_src, enc_out, masks), ~active.t())

    @torch.no_grad()
    def step(self, prev: torch.Tensor, st: DecodeState):
        x = self.tgt_emb(prev)
        if self.cfg.reversible:
            weights = effective_weights(self.decoder.cells, [w for c in self.decoder.cells for w in c.weights()])
            new = []
            for cell, (wx, bx, *Wh), blocks in zip(self.decoder.cells, weights, st.state):
                blocks = cell.step(cell.project(x[None], wx, bx)[0], blocks, Wh, _NULL)
                new.append(blocks)
                x = cell.output(blocks)
        else:
            new = []
            for rnn, s in zip(self.decoder, st.state):
                y, s = rnn(x[None], s)
                x = y[0]
                new.append(s)
        logp, attn = self.head.step(x, st.ctx, st.pad)
        return logp, attn, DecodeState(new, st.ctx, st.pad)

    @staticmethod
    def select(st: DecodeState, index: torch.Tensor) -> DecodeState:
        def pick(s):
            if isinstance(s, (list, tuple)):
                return type(s)(pick(t) for t in s)
            return s.index_select(0 if s.dim() == 2 else 1, index)  # int blocks [N, h]; nn states [1, N, H]
        return DecodeState(pick(st.state), st.ctx.index_select(1, index), st.pad.index_select(0, index))


def _combine(bits: dict) -> dict:
    """Add the totals (encoder + decoder) to the per-side accounting."""
    if not bits:
        return {}
    out = dict(bits)
    for k in ("normal_bits", "used_bits", "optimal_bits", "gates", "saturated_gates"):
        out[k] = bits.get(f"enc_{k}", 0) + bits.get(f"dec_{k}", 0)
    out["max_state"] = max(bits.get("enc_max_state", 0.0), bits.get("dec_max_state", 0.0))
    return out


def _count(targets) -> int:
    return int((targets != IGNORE_INDEX).sum())


__all__ = ["DecodeState", "Masks", "NMTConfig", "NMTResult", "Seq2Seq"]
