"""Luong "general" attention and the output layer of the translation decoder (reference `nmt/revencoder.py`,
`nmt/revdecoder.py`).

Per decoder step, from the top decoder state h (after output dropout) and a context [S, B, C]:

    score_s = (W_a h) · ctx_s            W_a: H -> C, no bias ("general", Luong et al. 2015)
    a = softmax over the real source positions (padding masked out)
    c = Σ_s a_s ctx_s
    out = tanh(W_o [c; h])               W_o: C + H -> H, no bias
    logits = W_g out + b_g               the generator, H -> target vocabulary

There is no input feeding (the reference turns it off), so the attention never feeds back into
the recurrence: the decoder's RNN runs on the target embeddings alone and this head is applied to
its outputs afterwards, a chunk of steps at a time. That is what lets reverse mode recompute the
head chunk by chunk during reversal, exactly as the language model recomputes its softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.segment import step_blocks

IGNORE_INDEX = -100


class AttentionHead(nn.Module):
    def __init__(self, hidden_size: int, context_size: int, vocab_size: int):
        super().__init__()
        self.w_a = nn.Linear(hidden_size, context_size, bias=False)
        self.w_o = nn.Linear(context_size + hidden_size, hidden_size, bias=False)
        self.generator = nn.Linear(hidden_size, vocab_size)

    def params(self) -> list[torch.Tensor]:
        """The head's parameters in the order the reverse-mode autograd Function takes them."""
        return [self.w_a.weight, self.w_o.weight, self.generator.weight, self.generator.bias]

    @staticmethod
    def attend(H: torch.Tensor, ctx: torch.Tensor, pad: torch.Tensor, w_a, w_o) -> tuple[torch.Tensor, torch.Tensor]:
        """H [K, B, H] (K steps, or K = 1) -> (attentional output [K, B, H], weights [K, B, S]).

        ``ctx`` is [S, B, C] and ``pad`` [B, S] is True at padded source positions.
        """
        q = F.linear(H, w_a)  # [K, B, C]
        scores = torch.einsum("kbc,sbc->kbs", q, ctx)
        scores = scores.masked_fill(pad.unsqueeze(0), float("-inf"))
        a = scores.softmax(-1)
        c = torch.einsum("kbs,sbc->kbc", a, ctx)
        return torch.tanh(F.linear(torch.cat((c, H), -1), w_o)), a

    @staticmethod
    def chunk_loss(Y: torch.Tensor, targets: torch.Tensor, ctx, pad, out_mask, w_a, w_o, w_g, b_g,
                   count_correct: bool = True):
        """Summed cross-entropy (padding targets are IGNORE_INDEX) of one chunk of decoder outputs,
        and the number of correct argmax predictions (0 unless ``count_correct``: an argmax over
        the vocabulary costs a fifth of the step, so training skips it). Every path (reverse,
        store, baseline, evaluation) calls this on the same chunks, so they sum the loss identically."""
        loss, correct = 0.0, 0
        for a, b in step_blocks(Y.shape[0], Y.shape[1], w_g.shape[0]):
            l, c = AttentionHead.block_loss(Y[a:b], targets[a:b], ctx, pad, out_mask, w_a, w_o, w_g, b_g,
                                            count_correct)
            loss, correct = loss + l, correct + c
        return loss, correct

    @staticmethod
    def block_loss(Y, targets, ctx, pad, out_mask, w_a, w_o, w_g, b_g, count_correct: bool = True):
        """:meth:`chunk_loss` of one block of steps (see :func:`step_blocks`)."""
        if out_mask is not None:
            Y = Y * out_mask
        out, _ = AttentionHead.attend(Y, ctx, pad, w_a, w_o)
        logits = F.linear(out, w_g, b_g).reshape(-1, w_g.shape[0])
        flat = targets.reshape(-1)
        loss = F.cross_entropy(logits, flat, reduction="sum", ignore_index=IGNORE_INDEX)
        correct = 0
        if count_correct:
            with torch.no_grad():
                correct = int(((logits.argmax(1) == flat) & (flat != IGNORE_INDEX)).sum())
        return loss, correct

    def step(self, h: torch.Tensor, ctx, pad) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoding step for N rows: h [N, H] -> (log-probabilities [N, V], attention [N, S])."""
        out, a = self.attend(h.unsqueeze(0), ctx, pad, self.w_a.weight, self.w_o.weight)
        return F.log_softmax(self.generator(out[0]), -1), a[0]


__all__ = ["AttentionHead", "BLOCK_LOGITS", "IGNORE_INDEX", "step_blocks"]
