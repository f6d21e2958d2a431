"""The translation model's two uses of the engine's reversible primitive (reference `nmt/revencoder.py`,
`nmt/revdecoder.py`).

* :class:`EncoderSegment`: the source embeddings in (rebuilt from token ids), and out the *context
  units* the attention reads: the first N units of the top layer for ``slice:N``, every top-layer
  unit for ``hidden``, none for ``emb``. The engine stores them as integers at every step; the
  slice units are multiplied without the buffer and restored from that copy during reversal.
* :class:`DecoderSegment`: the target embeddings in, and the attention head with its loss on the
  top outputs. The attention context is built once from the source ids and the encoder's stored
  units, so in reverse mode the decoder keeps nothing per step either: its backward rebuilds the
  context with autograd, differentiates the head block by block, and sends the context's gradient
  back to the source embedding and to the encoder's units.

So a reverse-mode step runs: encoder forward, decoder forward, then (``loss.backward()``) decoder
reversal and encoder reversal, the order of the reference's ``forward_and_backward``. ``store`` mode
and evaluation run the same segments with ordinary autograd or none.
"""

from __future__ import annotations

import torch

from ..engine.fixed_point import to_float
from ..engine.segment import KeptUnits, Segment
from .attention import AttentionHead, step_blocks
from .dropout import embed, embed_grad


def _accumulate(grads: list, i: int, g: torch.Tensor | None) -> None:
    if g is not None:
        grads[i] = g if grads[i] is None else grads[i] + g


class EncoderSegment(Segment):
    """Source ids in, the attention's context units out (``output = "kept"``)."""

    name = "encoder"
    output = "kept"

    def __init__(self, src: torch.Tensor, src_w: torch.Tensor, in_mask: torch.Tensor | None, keep_units: int):
        self.src, self.src_w, self.in_mask, self.keep_units = src, src_w, in_mask, keep_units

    def tensors(self):
        return [self.src_w]

    def kept_tensors(self):
        return [self.src, self.in_mask]

    def inputs(self, a, b, t):
        return embed(self.src[a:b], t[0], None, self.in_mask)

    def input_grad(self, a, b, dX, t, grads):
        if grads[0] is None:
            grads[0] = torch.zeros_like(t[0])
        embed_grad(self.src[a:b], dX, None, self.in_mask, grads[0])


class DecoderSegment(Segment):
    """Target ids in, the attention head's summed cross-entropy out (``output = "loss"``).

    Tensors: the source embedding, the encoder's context units (as floats), the target embedding
    and the head's parameters. In reverse mode the context units are not kept twice: the backward
    pass reads them from the encoder's integer copy (``enc_kept``).
    """

    name = "decoder"
    output = "loss"

    def __init__(self, context_fn, src, tgt_in, tgt_out, pad, masks, src_w, kept_f, tgt_w, head: list,
                 enc_kept: KeptUnits | None, count_correct: bool):
        self.context_fn, self.src, self.tgt_in, self.tgt_out, self.pad, self.masks = \
            context_fn, src, tgt_in, tgt_out, pad, masks
        self._tensors = [src_w, kept_f, tgt_w, *head]
        self.enc_kept, self.count_correct = enc_kept, count_correct
        self._context: torch.Tensor | None = None
        self._leaves: list | None = None

    def tensors(self):
        return self._tensors

    def unsaved(self):
        return frozenset({1}) if self.enc_kept is not None else frozenset()

    def kept_tensors(self):
        m = self.masks
        return [self.tgt_in, self.tgt_out, m.in_tgt, m.slice, m.out, *m.dec]

    def inputs(self, a, b, t):
        return embed(self.tgt_in[a:b], t[2], None, self.masks.in_tgt)

    def input_grad(self, a, b, dX, t, grads):
        if grads[2] is None:
            grads[2] = torch.zeros_like(t[2])
        embed_grad(self.tgt_in[a:b], dX, None, self.masks.in_tgt, grads[2])

    def _x_src(self, src_w):
        return embed(self.src, src_w, None, self.masks.in_src)

    def head_params(self, t):
        if self._context is None:  # built once per pass (with autograd in store mode)
            self._context = self.context_fn(self._x_src(t[0]), t[1], self.masks)
        return [self._context, *t[3:]]

    def head_loss(self, a, b, Y, params, count):
        ctx, *head = params
        return AttentionHead.chunk_loss(Y, self.tgt_out[a:b], ctx, self.pad, self.masks.out, *head,
                                        count_correct=count and self.count_correct)

    def head_blocks(self, a, b):
        return [(a + s, a + e) for s, e in step_blocks(b - a, self.tgt_out.shape[1], self._tensors[-2].shape[0])]

    def begin_backward(self, t):
        """Rebuild the context with autograd, from leaves for the source embedding and the units."""
        t = list(t)
        kept = to_float(self.enc_kept.ints) if self.enc_kept is not None else t[1]
        with torch.enable_grad():
            self._leaves = [t[0].detach().requires_grad_(), kept.detach().requires_grad_()]
            self._context = self.context_fn(self._x_src(self._leaves[0]), self._leaves[1], self.masks)
        t[1] = kept
        return t

    def end_backward(self, t, head_grads, grads):
        d_ctx, *d_head = head_grads
        d_src, d_kept = torch.autograd.grad(self._context, self._leaves, d_ctx, allow_unused=True)
        _accumulate(grads, 0, d_src)
        grads[1] = d_kept if d_kept is not None else torch.zeros_like(t[1])
        for i, g in enumerate(d_head):
            _accumulate(grads, 3 + i, g)
        self._context = self._leaves = None


__all__ = ["DecoderSegment", "EncoderSegment"]
