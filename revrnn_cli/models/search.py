"""Decoding for sequence-to-sequence models: greedy and batched beam search, and ``replace_unk``.

Both searches drive a model through the small :class:`StepModel` interface,
so they know nothing about the network: ``start`` runs the encoder,
``step`` advances the decoder by one token for ``N`` rows, and ``select``
keeps / repeats rows of the decoder state (how beams are forked).

The paper's test-time settings (the reference's OpenNMT ``translate.py``): beam
size 5, at most 100 decoding steps, no length or coverage penalty, best
hypothesis = the highest *summed* log-probability among finished ones, then
``-replace_unk``.

Beam search here (all sentences and beams in one ``[B*K, ...]`` batch, no
Python loop over sentences inside a step):

* At each step, each sentence keeps the ``K`` best continuations of its
  ``K`` live hypotheses (``topk`` over ``K*V`` candidates; at step 0 only
  one live hypothesis exists). As in OpenNMT's ``Beam``, a candidate that is
  ``eos`` takes its slot, becomes a finished hypothesis and gets no children
  (its live score becomes ``-inf``).
* Stopping rule, per sentence: stop when the best finished score is at least
  the best live score. Scores are sums of log-probabilities, so they can only
  fall as a hypothesis grows: once this holds no live hypothesis can overtake
  the best finished one. This gives the same result as OpenNMT's rule with
  ``n_best = 1`` ("stop when the top of the beam is ``eos``"), just sometimes
  a step earlier. The search ends when every sentence has stopped or after
  ``max_len`` steps; a sentence with no finished hypothesis by then returns
  its best live one (``max_len`` tokens, no ``eos``), as OpenNMT does.
* Finished sentences stay in the batch until all are done (their rows are
  ignored), which keeps the bookkeeping a few tensor ops per step.

``max_len`` counts decoder steps, ``eos`` included: a hypothesis has at
most ``max_len`` tokens, exactly ``max_len`` only if it never finished.
Ties are broken towards lower token ids / earlier beams (``topk`` order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DecodeConfig", "Hypothesis", "StepModel", "beam_search", "greedy", "replace_unk"]


class DecodeConfig(BaseModel):
    """The ``decode:`` section of a translation spec (OpenNMT ``translate.py`` defaults, as in the reference's nmt
    code)."""

    model_config = ConfigDict(extra="forbid")

    beam_size: int = Field(5, ge=1)  # -beam_size 5
    max_len: int = Field(100, ge=1)  # -max_length 100
    replace_unk: bool = True  # -replace_unk: an <unk> becomes the most attended source word
    batch_size: int = Field(32, ge=1)  # sentences decoded together (speed only)


class StepModel(Protocol):
    """What a model must offer to be decoded. ``state`` is opaque to the search."""

    def start(self, src: torch.Tensor, src_len: torch.Tensor) -> Any:
        """Run the encoder on ``src`` [S, B] (lengths [B]); return the decoder state for B rows."""

    def step(self, prev: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Feed ``prev`` [N]; return log-probabilities [N, V], attention over the source [N, S], new state."""

    def select(self, state: Any, index: torch.Tensor) -> Any:
        """Rows ``index`` [N'] of ``state`` (rows may repeat)."""


@dataclass
class Hypothesis:
    """A decoded sentence: ``tokens`` without bos/eos; ``score`` = summed log-probability of the emitted
    tokens, ``eos`` included when it was emitted; ``attn`` [len(tokens), src_len] = the attention used to
    emit each token, cut to the sentence's own source length."""

    tokens: list[int]
    score: float
    attn: torch.Tensor


def _as_int_list(x: torch.Tensor) -> list[int]:
    return [int(v) for v in x.tolist()]


@torch.no_grad()
def greedy(
    model: StepModel, src: torch.Tensor, src_len: torch.Tensor, max_len: int, bos: int = 2, eos: int = 3
) -> list[Hypothesis]:
    """Pick the most likely token at every step, for all B sentences at once. Returns B hypotheses."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    B = src.size(1)
    lens = _as_int_list(src_len)
    state = model.start(src, src_len)
    prev = torch.full((B,), bos, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    score = None
    toks, attns = [], []
    for _ in range(max_len):
        logp, attn, state = model.step(prev, state)
        lp, tok = logp.max(dim=1)
        if score is None:
            score = torch.zeros(B, dtype=logp.dtype, device=logp.device)
        score = score + torch.where(done, torch.zeros_like(lp), lp)
        toks.append(tok)
        attns.append(attn)
        done = done | (tok == eos)
        prev = tok
        if bool(done.all()):
            break
    tok_mat = torch.stack(toks, 1).cpu()  # [B, steps]
    attn_mat = torch.stack(attns, 1).float().cpu()  # [B, steps, S]
    out = []
    for b in range(B):
        row = _as_int_list(tok_mat[b])
        n = row.index(eos) if eos in row else len(row)
        out.append(Hypothesis(tokens=row[:n], score=float(score[b]), attn=attn_mat[b, :n, : lens[b]]))
    return out


@torch.no_grad()
def beam_search(
    model: StepModel,
    src: torch.Tensor,
    src_len: torch.Tensor,
    beam: int = 5,
    max_len: int = 100,
    bos: int = 2,
    eos: int = 3,
) -> list[Hypothesis]:
    """Batched beam search (see the module docstring for the exact rules). Returns B hypotheses."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    B, K = src.size(1), beam
    device = src.device
    lens = _as_int_list(src_len)
    state = model.start(src, src_len)
    state = model.select(state, torch.arange(B, device=device).repeat_interleave(K))
    prev = torch.full((B * K,), bos, dtype=torch.long, device=device)
    row_base = (torch.arange(B, device=device) * K).unsqueeze(1)  # [B, 1]

    live = None  # [B, K] summed log-probs of the live hypotheses (-inf = empty slot / finished)
    best_fin = best_t = best_k = None  # per sentence: best finished score, its step and slot
    done = torch.zeros(B, dtype=torch.bool, device=device)
    hist_tok, hist_back, hist_attn = [], [], []  # per step: [B, K] tokens, [B, K] parent slot, [B, K, S]

    for t in range(max_len):
        logp, attn, state = model.step(prev, state)
        V = logp.size(1)
        if live is None:
            live = torch.full((B, K), float("-inf"), dtype=logp.dtype, device=device)
            live[:, 0] = 0.0
            best_fin = torch.full((B,), float("-inf"), dtype=logp.dtype, device=device)
            best_t = torch.zeros(B, dtype=torch.long, device=device)
            best_k = torch.zeros(B, dtype=torch.long, device=device)
        cand = (live.unsqueeze(2) + logp.view(B, K, V)).view(B, K * V)
        top, flat = cand.topk(K, dim=1)  # [B, K], sorted descending
        parent = torch.div(flat, V, rounding_mode="floor")
        tok = flat - parent * V
        hist_tok.append(tok)
        hist_back.append(parent)
        hist_attn.append(attn.view(B, K, -1))

        is_eos = (tok == eos) & torch.isfinite(top)
        fin_scores = torch.where(is_eos, top, torch.full_like(top, float("-inf")))
        step_best, step_k = fin_scores.max(dim=1)
        better = (step_best > best_fin) & ~done
        best_fin = torch.where(better, step_best, best_fin)
        best_t = torch.where(better, torch.full_like(best_t, t), best_t)
        best_k = torch.where(better, step_k, best_k)

        live = torch.where(is_eos, torch.full_like(top, float("-inf")), top)
        done = done | (best_fin >= live.max(dim=1).values)
        if bool(done.all()):
            break
        state = model.select(state, (row_base + parent).view(-1))
        prev = tok.view(-1)

    steps = len(hist_tok)
    # Sentences that never finished: their best live hypothesis after the last step.
    unfinished = torch.isinf(best_fin) & (best_fin < 0)
    last_best, last_k = live.max(dim=1)
    best_t = torch.where(unfinished, torch.full_like(best_t, steps - 1), best_t)
    best_k = torch.where(unfinished, last_k, best_k)
    final_score = torch.where(unfinished, last_best, best_fin)

    tok_h = torch.stack(hist_tok).cpu()  # [steps, B, K]
    back_h = torch.stack(hist_back).cpu()
    attn_h = torch.stack(hist_attn).float().cpu()  # [steps, B, K, S]
    t_end, k_end = _as_int_list(best_t), _as_int_list(best_k)
    unf = _as_int_list(unfinished)
    out = []
    for b in range(B):
        tokens, rows = [], []
        k = k_end[b]
        for s in range(t_end[b], -1, -1):
            p = int(back_h[s, b, k])
            tokens.append(int(tok_h[s, b, k]))
            rows.append(attn_h[s, b, p, : lens[b]])
            k = p
        tokens.reverse()
        rows.reverse()
        if not unf[b]:  # drop the final eos
            tokens, rows = tokens[:-1], rows[:-1]
        attn_b = torch.stack(rows) if rows else attn_h.new_zeros(0, lens[b])
        out.append(Hypothesis(tokens=tokens, score=float(final_score[b]), attn=attn_b))
    return out


def replace_unk(tokens: Sequence[str], attn: torch.Tensor, src_tok: Sequence[str], unk: str = "<unk>") -> list[str]:
    """Replace each ``unk`` in ``tokens`` by the source token with the highest attention (``-replace_unk`` in the
    reference's nmt/train_scripts).

    ``attn`` [len(tokens), S'] holds, row ``i``, the attention used to emit
    token ``i``; only its first ``len(src_tok)`` columns are considered.
    """
    out = list(tokens)
    if unk not in out:
        return out
    if attn.dim() != 2 or attn.size(0) < len(out):
        raise ValueError(f"attn must be [len(tokens)={len(out)}, S], got {tuple(attn.shape)}")
    n_src = min(len(src_tok), attn.size(1))
    if n_src == 0:
        return out
    best = attn[:, :n_src].argmax(dim=1)
    for i, w in enumerate(out):
        if w == unk:
            out[i] = src_tok[int(best[i])]
    return out
