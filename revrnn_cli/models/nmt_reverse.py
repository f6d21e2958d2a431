"""Reverse-mode training of the attention encoder-decoder (digest §5, "Reverse order").

Two autograd Functions, chained by ordinary autograd:

* :class:`_RevEncoder` runs the encoder without storing its states. It keeps the sealed buffer, the
  final state and the *context units* (the slice, or every top-layer state for ``hidden``) as int32,
  and outputs their float values. Its backward reverses the encoder, seeded by the gradient that
  reached the final state (from the decoder) and the one that reached each stored slice (from the
  attention), and restores the slice units, which were left out of the buffer, from their copy.
* :class:`_RevDecoderLoss` runs the decoder and the attention head, returning the summed loss. Its
  backward reverses the decoder and recomputes, chunk by chunk, the target embeddings and the head
  from the recovered outputs; the attention context is rebuilt from the source token ids and the
  encoder's stored units, so the decoder keeps nothing per step either.

The order of a training step is therefore: encoder forward, decoder forward, (loss.backward():)
decoder reversal, encoder reversal, exactly the reference's ``forward_and_backward``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine.fixed_point import STATE_DTYPE, check_finite, to_float
from ..engine.reversible import (bit_stats, build_plan, check_recovered, forward_steps, kept_bytes, raw_weight_grads,
                                 reverse_steps)
from .attention import AttentionHead, step_blocks
from .dropout import embed, embed_grad


@dataclass
class _EncRun:
    cells: list
    masks: list
    h0: list
    src: torch.Tensor
    src_len: torch.Tensor
    active: torch.Tensor
    in_mask: torch.Tensor | None
    kept_units: int  # top-layer units stored for attention (slice N, hidden H, emb 0)
    lossy_units: int  # of which left out of the buffer (the slice)
    chunk: int
    name: str = "encoder"
    kept: torch.Tensor | None = None  # [S, B, kept_units] int32
    hT: list | None = None
    stats: dict = field(default_factory=dict)


@dataclass
class _DecRun:
    model: object  # the Seq2Seq (for its context builder)
    enc: _EncRun
    cells: list
    masks: object  # the batch's Masks
    h0: list
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    pad: torch.Tensor
    chunk: int
    name: str = "decoder"
    stats: dict = field(default_factory=dict)
    correct: int = 0


def _restorer(run: _EncRun):
    """``restore(l, t)``: the slice units of the top layer before step t (digest §5)."""
    top, n = len(run.cells) - 1, run.lossy_units
    if not n:
        return None

    def restore(l, t):
        if l != top:
            return None
        return run.h0[top][0][:, :n] if t == 0 else run.kept[t - 1, :, :n]
    return restore


class _RevEncoder(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _EncRun, emb_w, *flat):
        S, B = run.src.shape
        check_finite([("source embedding", emb_w)] + [(f"weight {i}", w) for i, w in enumerate(flat)], run.name)
        plan = build_plan(run.cells, flat, None, run.masks, B, emb_w.device, run.chunk, True, run.name,
                          active=run.active)
        top, n, half = len(run.cells) - 1, run.kept_units, run.cells[-1].half
        kept = torch.empty(S, B, n, dtype=STATE_DTYPE, device=emb_w.device)

        def on_state(l, t, blocks):
            if l == top and n:
                kept[t, :, : min(n, half)] = blocks[0][:, : min(n, half)]
                if n > half:
                    kept[t, :, half:] = blocks[1][:, : n - half]

        state = [list(s) for s in run.h0]
        forward_steps(plan, state, S, lambda a, b: embed(run.src[a:b], emb_w, None, run.in_mask), on_state=on_state)
        from .nmt import encoder_bits

        run.stats.update(encoder_bits(plan, run.cells, run.src_len, S, B, n))
        plan.seal()
        run.kept, run.hT = kept, state
        run.stats["enc_kept_bytes"] = kept_bytes(plan, state, run.masks, kept, run.src, run.src_len, run.in_mask)
        ctx.run, ctx.buffers = run, plan.buffers
        ctx.final = [list(s) for s in state]
        ctx.save_for_backward(emb_w, *flat)
        return (to_float(kept), *[to_float(torch.cat(s, 1)) for s in state])

    @staticmethod
    def backward(ctx, d_kept, *dhT):
        run = ctx.run
        emb_w, *flat = ctx.saved_tensors
        S, B = run.src.shape
        plan = build_plan(run.cells, flat, None, run.masks, B, emb_w.device, run.chunk, False, run.name,
                          buffers=ctx.buffers, active=run.active, restore=_restorer(run))
        plan.unseal()
        dstate = [list(g.split(c.half, 1)) if g is not None else [emb_w.new_zeros(B, c.half) for _ in range(c.n_blocks)]
                  for c, g in zip(run.cells, dhT)]
        dW = [[torch.zeros_like(w) for w in ws] for ws in plan.weights]
        d_emb = torch.zeros_like(emb_w)
        n, H = run.kept_units, run.cells[-1].hidden_size

        dy_chunk = None
        if n and d_kept is not None:
            def dy_chunk(a, b, Y):
                dY = d_kept.new_zeros(b - a, B, H)
                dY[..., :n] = d_kept[a:b]
                return dY
            dy_chunk.needs_outputs = False

        def dx_chunk(a, b, dX):
            embed_grad(run.src[a:b], dX, None, run.in_mask, d_emb)

        state = [list(s) for s in ctx.final]
        reverse_steps(plan, state, S, lambda a, b: embed(run.src[a:b], emb_w, None, run.in_mask), dstate=dstate,
                      dy_chunk=dy_chunk, dx_chunk=dx_chunk, dW=dW)
        check_recovered(plan, state, run.h0, run.name)
        ctx.run = ctx.final = ctx.buffers = None
        return (None, d_emb, *raw_weight_grads(dW))


class _RevDecoderLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, run: _DecRun, src_w, kept_f, tgt_w, *rest):
        L = len(run.cells)
        n_flat = sum(len(c.weights()) for c in run.cells)
        flat, head = rest[L : L + n_flat], rest[L + n_flat :]
        T, B = run.tgt_in.shape
        check_finite([("target embedding", tgt_w)] + [(f"weight {i}", w) for i, w in enumerate(list(flat) + list(head))],
                     run.name)
        context = _context(run, src_w, kept_f)
        plan = build_plan(run.cells, flat, None, run.masks.dec, B, tgt_w.device, run.chunk, True, run.name)
        total = 0.0

        def on_output(a, b, Y):
            nonlocal total
            loss, c = AttentionHead.chunk_loss(Y, run.tgt_out[a:b], context, run.pad, run.masks.out, *head,
                                               count_correct=False)  # training only
            total = total + loss
            run.correct += c

        state = [list(s) for s in run.h0]
        forward_steps(plan, state, T, lambda a, b: embed(run.tgt_in[a:b], tgt_w, None, run.masks.in_tgt),
                      on_output=on_output)
        run.stats.update({f"dec_{k}": v for k, v in bit_stats(plan, run.cells, T, B).items() if k.endswith("_bits")})
        plan.seal()
        m = run.masks
        run.stats["dec_kept_bytes"] = kept_bytes(plan, state, m.dec, m.in_tgt, m.slice, m.out, run.tgt_in, run.tgt_out)
        ctx.run, ctx.buffers, ctx.final = run, plan.buffers, [list(s) for s in state]
        ctx.save_for_backward(src_w, tgt_w, *flat, *head)  # not the context: it is rebuilt from ids
        return total.detach()

    @staticmethod
    def backward(ctx, g):
        run = ctx.run
        src_w, tgt_w, *params = ctx.saved_tensors
        n_flat = sum(len(c.weights()) for c in run.cells)
        flat, head = params[:n_flat], params[n_flat:]
        T, B = run.tgt_in.shape
        plan = build_plan(run.cells, flat, None, run.masks.dec, B, tgt_w.device, run.chunk, False, run.name,
                          buffers=ctx.buffers)
        plan.unseal()
        # the context, rebuilt once from the source ids and the encoder's stored units
        with torch.enable_grad():
            src_leaf = src_w.detach().requires_grad_()
            kept_leaf = to_float(run.enc.kept).requires_grad_()
            context = _context(run, src_leaf, kept_leaf)
        ctx_leaf = context.detach().requires_grad_()
        d_ctx = torch.zeros_like(ctx_leaf)
        d_head = [torch.zeros_like(p) for p in head]
        d_tgt = torch.zeros_like(tgt_w)

        def dy_chunk(a, b, Y):
            # the head, recomputed block by block (the forward's blocks): one block's logits at a time
            dY = torch.empty_like(Y)
            tgt = run.tgt_out[a:b]
            for s, e in step_blocks(b - a, B, head[2].shape[0]):
                with torch.enable_grad():
                    Yl = Y[s:e].detach().requires_grad_()
                    hp = [p.detach().requires_grad_() for p in head]
                    loss, _ = AttentionHead.block_loss(Yl, tgt[s:e], ctx_leaf, run.pad, run.masks.out, *hp,
                                                       count_correct=False)
                    grads = torch.autograd.grad(loss * g, [Yl, ctx_leaf, *hp])
                dY[s:e] = grads[0]
                d_ctx.add_(grads[1])
                for acc, gr in zip(d_head, grads[2:]):
                    acc.add_(gr)
            return dY

        def dx_chunk(a, b, dX):
            embed_grad(run.tgt_in[a:b], dX, None, run.masks.in_tgt, d_tgt)

        dstate = [[tgt_w.new_zeros(B, c.half) for _ in range(c.n_blocks)] for c in run.cells]
        dW = [[torch.zeros_like(w) for w in ws] for ws in plan.weights]
        state = [list(s) for s in ctx.final]
        reverse_steps(plan, state, T, lambda a, b: embed(run.tgt_in[a:b], tgt_w, None, run.masks.in_tgt),
                      dstate=dstate, dy_chunk=dy_chunk, dx_chunk=dx_chunk, dW=dW)
        check_recovered(plan, state, run.h0, run.name)
        d_src, d_kept = torch.autograd.grad(context, [src_leaf, kept_leaf], d_ctx, allow_unused=True)
        d_src = torch.zeros_like(src_w) if d_src is None else d_src
        d_kept = torch.zeros_like(kept_leaf) if d_kept is None else d_kept
        ctx.run = ctx.final = ctx.buffers = None
        return (None, d_src, d_kept, d_tgt, *[torch.cat(d, 1) for d in dstate], *raw_weight_grads(dW), *d_head)


def _context(run: _DecRun, src_w, kept_f):
    m = run.masks
    x_src = embed(run.enc.src, src_w, None, m.in_src) if run.model.cfg.uses_emb else None
    return run.model.context(x_src, kept_f, m)


def reverse_loss(model, batch, masks):
    """One batch's loss through the two Functions; gradients by reversal of both stacks."""
    from .nmt import NMTResult, _combine, _count

    enc, dec = model.encoder, model.decoder
    src, src_len = batch.src, batch.src_len
    S, B = src.shape
    device = src.device
    cfg = model.cfg
    kept_units = cfg.hidden_size if cfg.uses_hidden else cfg.slice_units
    erun = _EncRun(list(enc.cells), masks.enc, [c.init_state(B, device) for c in enc.cells], src, src_len,
                   model.active(src_len, S), masks.in_src, kept_units, cfg.slice_units, cfg.chunk)
    enc_flat = [w for c in enc.cells for w in c.weights()]
    kept_f, *hT_f = _RevEncoder.apply(erun, model.src_emb.weight, *enc_flat)
    drun = _DecRun(model, erun, list(dec.cells), masks, [list(s) for s in erun.hT], batch.tgt_in, batch.tgt_out,
                   ~erun.active.t(), cfg.chunk)
    dec_flat = [w for c in dec.cells for w in c.weights()]
    loss = _RevDecoderLoss.apply(drun, model.src_emb.weight, kept_f, model.tgt_emb.weight, *hT_f, *dec_flat,
                                 *model.head.params())
    bits = {**erun.stats, **drun.stats}
    kept = {k: bits.pop(k) for k in ("enc_kept_bytes", "dec_kept_bytes")}
    out = _combine(bits)
    out.update(kept)
    return NMTResult(loss, _count(batch.tgt_out), drun.correct, out)


__all__ = ["reverse_loss"]
