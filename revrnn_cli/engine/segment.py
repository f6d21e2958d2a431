"""The one autograd primitive of a reversible stack, and the one place that chooses how to backprop.

    out = run_segment(segment, cells, h0, mode=choose_mode(backprop, tensors), ...)

A *segment* is one pass of a reversible stack over T steps together with its two non-recurrent
ends: where layer 0's inputs come from (a tensor ``x``, or embeddings rebuilt from token ids) and
where the top layer's outputs go (returned, stored for attention, or into a loss). Every use in the
project is one :class:`Segment`: the layers of :mod:`.layers`, the language model's segment (inputs
rebuilt from token ids, tied softmax recomputed chunk by chunk), the translation encoder (outputs
kept for attention) and decoder (attention head and loss).

``reverse`` mode (:class:`ReversibleSegment`; reference `language_modelling/rev_training/model.py`):
the forward pass keeps the final integer state, the sealed buffers, what the segment itself keeps
O(B x hidden) (masks, token ids) and the units the segment asked to keep; nothing else of size O(T).
The backward pass reverses the stack chunk by chunk, rebuilds the inputs, recomputes the head from
the recovered outputs and differentiates it with autograd one block at a time, then hands the
gradients back (with :attr:`Segment.defer_loss` the forward pass skips the head, and the loss is
computed there, once). ``store`` mode runs the same chunks with ordinary autograd; without gradients
the plain exact forward runs. The three follow one integer trajectory, so they give the same loss bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import native
from .fixed_point import STATE_DTYPE, check_finite, to_float
from .reversible import (Plan, bit_stats, check_recovered, effective_weights, forward_steps, make_buffers,
                         raw_weight_grads, reverse_steps, store_steps)

Tensor = torch.Tensor

BACKPROP_MODES = ("reverse", "store")
DEFAULT_BACKPROP = "reverse"
"""Train by reversal unless asked otherwise: the point of a reversible stack."""

OUTPUTS = ("loss", "sequence", "kept")

BLOCK_LOGITS = 1 << 22
"""Logits computed at once (16 MiB in float32). A chunk of steps is scored in blocks of whole steps
below this size, so an output layer's transient memory does not grow with the vocabulary times the
chunk: with 18k German words and 64 sentences one chunk of 16 steps would be 75 MB per logits-sized
tensor, and in reverse mode that transient, not the recurrent states, sets the peak."""


def step_blocks(steps: int, batch: int, vocab: int) -> list[tuple[int, int]]:
    """[a, b) ranges of whole steps whose logits stay under :data:`BLOCK_LOGITS` elements."""
    n = max(1, BLOCK_LOGITS // max(batch * vocab, 1))
    return [(a, min(a + n, steps)) for a in range(0, steps, n)]


def resolve_backprop(mode: str | None) -> str:
    """The one validator and default of a backprop mode (None: :data:`DEFAULT_BACKPROP`)."""
    if mode is None:
        return DEFAULT_BACKPROP
    if mode not in BACKPROP_MODES:
        raise ValueError(f"backprop must be one of {', '.join(BACKPROP_MODES)}, got {mode!r}")
    return mode


def choose_mode(backprop: str | None, tensors) -> str:
    """``forward`` when no gradient can flow (evaluation, ``no_grad``), else the backprop mode."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in tensors):
        return "forward"
    return resolve_backprop(backprop)


class Segment:
    """The two ends of one pass; subclasses override what they use.

    ``output`` says what the primitive returns first: ``"loss"`` (the summed :meth:`head_loss`),
    ``"sequence"`` (the top layer's outputs [T, B, H]) or ``"kept"`` (the first ``keep_units`` units
    of the top layer's output, stored as integers at every step and returned as floats: the
    attention slice of an encoder). Its remaining outputs are the final states' float views.
    """

    name = "reversible stack"
    output = "loss"
    keep_units = 0
    defer_loss = False
    """Reverse mode with ``output == "loss"``: skip the head in the forward pass and compute the loss
    once, during the backward pass, where reversal recomputes the head anyway to differentiate it.
    The returned loss (and :attr:`SegmentOutput.correct`, then a 0-dim tensor) holds its value only
    after ``backward()``; before, it is NaN. This saves the head's whole forward computation per
    training step (for a language model, the softmax over the vocabulary: the one extra product of
    reverse mode over storing). The value is the same bit for bit when each chunk is one head block."""

    def tensors(self) -> list[Tensor]:
        """The segment's differentiable inputs (they receive gradients)."""
        return []

    def kept_tensors(self) -> list[Tensor]:
        """What the segment itself keeps for the backward pass besides its tensors (token ids, masks)."""
        return []

    def unsaved(self) -> frozenset[int]:
        """Indices of :meth:`tensors` that reverse mode need not keep: :meth:`begin_backward` rebuilds them."""
        return frozenset()

    def inputs(self, a: int, b: int, t: list[Tensor]) -> Tensor:
        """Layer 0's inputs for steps [a, b), from the segment's tensors ``t``."""
        raise NotImplementedError

    def input_grad(self, a: int, b: int, dX: Tensor, t: list[Tensor], grads: list) -> None:
        """Add what the gradient ``dX`` of steps [a, b)'s inputs contributes to ``grads`` (one per tensor)."""

    def head_params(self, t: list[Tensor]) -> list[Tensor]:
        """The tensors :meth:`head_loss` depends on besides the outputs."""
        return []

    def head_loss(self, a: int, b: int, Y: Tensor, params: list[Tensor], count: bool) -> tuple[Tensor, int]:
        """Summed loss of the top outputs ``Y`` of steps [a, b), and (if ``count``) correct predictions.
        Summed over :meth:`head_blocks` in order, from 0.0, as the backward pass sums a deferred loss."""
        raise NotImplementedError

    def head_blocks(self, a: int, b: int) -> list[tuple[int, int]]:
        """Step ranges within [a, b) whose head is differentiated at once (bounds its transient memory)."""
        return [(a, b)]

    def begin_backward(self, t: list) -> list:
        """Reverse mode, before reversal: return ``t`` with the unsaved tensors rebuilt."""
        return t

    def end_backward(self, t: list, head_grads: list, grads: list) -> None:
        """Reverse mode, after reversal: turn the head parameters' gradients into ``grads``."""
        for i, g in enumerate(head_grads):
            grads[i] = g if grads[i] is None else grads[i] + g


class KeptUnits:
    """The first n units of the top layer's output at every step, kept as integers.

    Attention reads them, and the first ``lossy`` of them were multiplied without the buffer
    (reference `nmt/revencoder.py`: the slice is stored explicitly), so reversal restores those from here. Between the
    forward and the backward pass they are held as int32 whenever they fit (one host read per pass),
    which is the paper's 32 bits per stored unit.
    """

    def __init__(self, n: int, lossy: int, steps: int, batch: int, cell, h0: list[Tensor], top: int):
        self.n, self.lossy, self.half, self.top, self.h0 = n, lossy, cell.half, top, h0
        self.ints = torch.empty(steps, batch, n, dtype=STATE_DTYPE, device=h0[0].device)

    def record(self, l: int, t: int, blocks: list[Tensor]) -> None:
        if l != self.top:
            return
        k = min(self.n, self.half)
        self.ints[t, :, :k] = blocks[0][:, :k]
        if self.n > self.half:
            self.ints[t, :, self.half :] = blocks[1][:, : self.n - self.half]

    def restore(self, l: int, t: int) -> Tensor | None:
        if l != self.top or not self.lossy:
            return None
        return self.h0[0][:, : self.lossy] if t == 0 else self.ints[t - 1, :, : self.lossy]

    def seal(self) -> None:
        if self.ints.numel() and self.ints.dtype != torch.int32:
            lo, hi = (int(v) for v in torch.stack(torch.aminmax(self.ints)).tolist())
            if -(1 << 31) <= lo and hi < (1 << 31):
                self.ints = self.ints.to(torch.int32)

    def unseal(self) -> None:
        self.ints = self.ints.to(STATE_DTYPE)

    @property
    def bits(self) -> int:
        return 8 * self.ints.element_size() * self.ints.numel()


@dataclass
class SegmentOutput:
    """What a pass returns: the primitive's first output, the exact final state (integer blocks per
    layer) and its float views (None without gradients), the paper's accounting and what reverse
    mode keeps between the passes."""

    out: Tensor | float
    hT: list[list[Tensor]]
    hT_floats: list[Tensor] | None
    stats: dict = field(default_factory=dict)
    kept: KeptUnits | None = None
    correct: int | Tensor = 0
    kept_bytes: int = 0  # reverse mode: bytes kept outside autograd's saved tensors until the backward pass
    deferred: bool = False  # out and correct are filled by the backward pass (Segment.defer_loss)


@dataclass
class _Job:
    """The non-tensor half of one reverse-mode call."""

    segment: Segment
    cells: list
    h0: list[list[Tensor]]
    masks: list
    weight_masks: list | None
    chunk: int
    steps: int
    batch: int
    active: Tensor | None
    name: str
    result: SegmentOutput | None = None
    kept: KeptUnits | None = None

    def plan(self, flat, buffers=None, track=True) -> Plan:
        if buffers is None:
            buffers = make_buffers(self.cells, self.batch, self.h0[0][0].device, track_optimal=track)
        restore = self.kept.restore if self.kept is not None and self.kept.lossy else None
        device = self.h0[0][0].device
        return Plan(self.cells, effective_weights(self.cells, flat, self.weight_masks), self.masks, buffers,
                    self.chunk, self.name, self.active, restore, native=native.enabled(device))


def run_segment(segment: Segment, cells, h0: list[list[Tensor]], h0_floats: list[Tensor] | None, flat: list[Tensor],
                *, masks: list, weight_masks: list | None, chunk: int, steps: int, batch: int, mode: str,
                active: Tensor | None = None) -> SegmentOutput:
    """One pass of ``segment`` over a stack of ``cells`` from the exact state ``h0``, in ``mode``
    (``reverse``, ``store`` or ``forward``; see :func:`choose_mode`)."""
    job = _Job(segment, list(cells), h0, masks, weight_masks, chunk, steps, batch, active, segment.name)
    if mode == "reverse":
        floats = h0_floats if h0_floats is not None else [to_float(torch.cat(b, 1)) for b in h0]
        out, *hT_f = ReversibleSegment.apply(job, *floats, *flat, *segment.tensors())
        job.result.out, job.result.hT_floats = out, list(hT_f)
        return job.result
    t = segment.tensors()
    check_finite([(f"weight {i}", w) for i, w in enumerate(flat)] + [(f"input {i}", x) for i, x in enumerate(t)],
                 job.name)
    plan = job.plan(flat)
    state = [list(b) for b in h0]
    total, correct, outs = 0.0, 0, []

    def on_output(a, b, Y):
        nonlocal total, correct
        if segment.output == "loss":
            loss, c = segment.head_loss(a, b, Y, segment.head_params(t), count=True)
            total, correct = total + loss, correct + c
        else:
            outs.append(Y if segment.output == "sequence" else Y[..., : segment.keep_units])

    if mode == "store":
        fl = h0_floats if h0_floats is not None else [to_float(torch.cat(b, 1)) for b in h0]
        state_f = [list(f.split(c.half, 1)) for f, c in zip(fl, cells)]
        state, state_f = store_steps(plan, state, state_f, steps, lambda a, b: segment.inputs(a, b, t), on_output)
        hT_f = [torch.cat(f, 1) for f in state_f]
    else:
        forward_steps(plan, state, steps, lambda a, b: segment.inputs(a, b, t), on_output=on_output)
        hT_f = None
    out = total if segment.output == "loss" else torch.cat(outs)
    return SegmentOutput(out, state, hT_f, _stats(job, plan), None, correct)


def _kept(job: _Job, segment: Segment) -> KeptUnits | None:
    if not segment.keep_units:
        return None
    lossy = job.cells[-1].lossy_units
    return KeptUnits(segment.keep_units, lossy, job.steps, job.batch, job.cells[-1], job.h0[-1], len(job.cells) - 1)


def _stats(job: _Job, plan: Plan) -> dict:
    """The pass's accounting; checks the state range (the one host read of the pass). Kept units
    count at the paper's 32 bits each (reference `language_modelling/train.py`)."""
    max_state = plan.check_range()
    real = int(job.active.sum()) if job.active is not None else None
    stored = 32 * job.segment.keep_units * job.steps * job.batch
    return bit_stats(plan, job.steps, job.batch, stored, real, max_state)


class ReversibleSegment(torch.autograd.Function):
    """The primitive: inputs are the job, the float views of h0 (one per layer), the flat raw
    weights and the segment's tensors; outputs the segment's output and the float views of hT."""

    @staticmethod
    def forward(ctx, job: _Job, *tensors):
        L, seg = len(job.cells), job.segment
        n_flat = len(tensors) - L - len(seg.tensors())
        flat, t = list(tensors[L : L + n_flat]), list(tensors[L + n_flat :])
        check_finite([(f"weight {i}", w) for i, w in enumerate(flat)] + [(f"input {i}", x) for i, x in enumerate(t)],
                     job.name)
        job.kept = _kept(job, seg)
        plan = job.plan(flat)
        state = [list(b) for b in job.h0]
        T, B = job.steps, job.batch
        total, correct = 0.0, 0
        defer = seg.output == "loss" and seg.defer_loss
        y = None
        if seg.output == "sequence":
            y = flat[0].new_empty(T, B, job.cells[-1].hidden_size)

        def on_output(a, b, Y):
            nonlocal total, correct
            if seg.output == "loss":
                loss, c = seg.head_loss(a, b, Y, seg.head_params(t), count=True)
                total, correct = total + loss, correct + c
            elif y is not None:
                y[a:b] = Y

        keep = job.kept
        forward_steps(plan, state, T, lambda a, b: seg.inputs(a, b, t),
                      on_output=on_output if seg.output != "kept" and not defer else None,
                      on_state=keep.record if keep is not None else None)
        stats = _stats(job, plan)
        plan.seal()
        if keep is not None:
            keep.seal()
        job.result = SegmentOutput(None, state, None, stats, keep, correct, _kept_bytes(plan, state, keep, job))
        ctx.job, ctx.buffers, ctx.final = job, plan.buffers, [list(s) for s in state]
        ctx.deferred = None
        skip = seg.unsaved()
        ctx.save_for_backward(*flat, *[None if i in skip else x for i, x in enumerate(t)])
        if defer:  # placeholders the backward pass fills (aliases, so the returned tensors see the values)
            out = flat[0].new_full((), float("nan"))
            job.result.correct = torch.zeros((), dtype=torch.int64)
            job.result.deferred = True
            ctx.deferred = (out.detach(), job.result.correct)
        elif seg.output == "loss":
            out = total.detach() if isinstance(total, Tensor) else flat[0].new_tensor(total)
        elif seg.output == "kept":
            out = to_float(keep.ints) if keep is not None else flat[0].new_zeros(T, B, 0)
        else:
            out = y
        return (out, *[to_float(torch.cat(s, 1)) for s in state])

    @staticmethod
    def backward(ctx, d_out, *dhT):
        job = ctx.job
        seg, L = job.segment, len(job.cells)
        saved = list(ctx.saved_tensors)
        n_flat = len(saved) - len(seg.tensors())
        flat, t = saved[:n_flat], saved[n_flat:]
        t = seg.begin_backward(t)
        plan = job.plan(flat, buffers=ctx.buffers, track=False)
        plan.unseal()
        if job.kept is not None:
            job.kept.unseal()
        B = job.batch
        dstate = [list(g.split(c.half, 1)) if g is not None else [flat[0].new_zeros(B, c.half) for _ in range(c.n_blocks)]
                  for c, g in zip(job.cells, dhT)]
        dW: list = [[None] * len(ws) for ws in plan.weights]  # None until a chunk adds its product
        grads: list = [None] * len(t)
        head_grads: list = []
        need_outputs = True
        if seg.output == "loss":
            hp = [p.detach().requires_grad_() for p in seg.head_params(t)]
            head_grads = [torch.zeros_like(p) for p in hp]
            losses: dict | None = {} if ctx.deferred is not None else None
            dy_chunk = _head_backward(seg, hp, head_grads, d_out, losses)
        elif d_out is None:
            dy_chunk, need_outputs = None, False
        else:
            dy_chunk, need_outputs = _output_grad(seg, d_out, job.cells[-1].hidden_size), False
        wants_x = any(ctx.needs_input_grad[1 + L + n_flat :])

        def dx_chunk(a, b, dX):
            seg.input_grad(a, b, dX, t, grads)

        state = [list(s) for s in ctx.final]
        reverse_steps(plan, state, job.steps, lambda a, b: seg.inputs(a, b, t), dstate=dstate, dy_chunk=dy_chunk,
                      dx_chunk=dx_chunk if wants_x else None, dW=dW, need_outputs=need_outputs)
        check_recovered(plan, state, job.h0, job.name)
        seg.end_backward(t, head_grads, grads)
        if ctx.deferred is not None:
            _fill_deferred(ctx.deferred, losses)
        ctx.job = ctx.final = ctx.buffers = ctx.deferred = None
        dW = [[g if g is not None else torch.zeros_like(w) for g, w in zip(gs, ws)] for gs, ws in zip(dW, plan.weights)]
        return (None, *[torch.cat(d, 1) for d in dstate], *raw_weight_grads(dW, job.weight_masks), *grads)


def _head_backward(seg: Segment, hp: list[Tensor], head_grads: list[Tensor], g: Tensor, losses: dict | None = None):
    """dL/dY of a chunk: the head recomputed from the recovered outputs and differentiated by
    autograd, one :meth:`Segment.head_blocks` block at a time. With ``losses`` (a deferred loss),
    each block's loss and correct count are recorded there, keyed by the chunk's and the block's
    first steps."""

    def dy_chunk(a, b, Y):
        dY = torch.empty_like(Y)
        for s, e in seg.head_blocks(a, b):
            with torch.enable_grad():
                Yl = Y[s - a : e - a].detach().requires_grad_()
                loss, correct = seg.head_loss(s, e, Yl, hp, count=losses is not None)
            got = torch.autograd.grad(loss, [Yl, *hp], g)
            dY[s - a : e - a] = got[0]
            for acc, gr in zip(head_grads, got[1:]):
                acc.add_(gr)
            if losses is not None:
                losses[(a, s)] = (loss.detach(), correct)
        return dY

    return dy_chunk


def _fill_deferred(cells: tuple[Tensor, Tensor], losses: dict) -> None:
    """Write a deferred loss into the forward pass's placeholders, summed as the forward pass sums
    it: each chunk's blocks in order (what :meth:`Segment.head_loss` returns for the chunk), then the
    chunks in order, so the value is the same bit for bit."""
    total, correct, chunk, chunk_total = 0.0, 0, None, 0.0
    for (a, _), (loss, c) in sorted(losses.items(), key=lambda kv: kv[0]):
        if a != chunk and chunk is not None:
            total = total + chunk_total
            chunk_total = 0.0
        chunk = a
        chunk_total, correct = chunk_total + loss, correct + c
    if chunk is not None:
        total = total + chunk_total
    with torch.no_grad():
        cells[0].copy_(total)
        cells[1].fill_(correct)


def _output_grad(seg: Segment, d_out: Tensor, width: int):
    """dL/dY of a chunk from the gradient of a returned output (zero beyond the kept units)."""
    if seg.output == "sequence":
        return lambda a, b, Y: d_out[a:b]
    n = seg.keep_units

    def dy_chunk(a, b, Y):
        dY = d_out.new_zeros(b - a, d_out.shape[1], width)
        dY[..., :n] = d_out[a:b]
        return dY

    return dy_chunk


def _kept_bytes(plan: Plan, state: list, keep: KeptUnits | None, job: _Job) -> int:
    """Bytes reverse mode keeps outside autograd's saved tensors: the buffers (as allocated), the
    final state, the kept units and the per-sequence tensors (masks, and the segment's own)."""
    total = sum(b.allocated_bytes for b in plan.buffers if b is not None)
    total += sum(x.numel() * x.element_size() for blocks in state for x in blocks)
    if keep is not None:
        total += keep.ints.numel() * keep.ints.element_size()
    extra = list(job.masks) + list(job.weight_masks or []) + job.segment.kept_tensors()
    return total + sum(x.numel() * x.element_size() for x in extra if x is not None)


__all__ = ["BACKPROP_MODES", "BLOCK_LOGITS", "DEFAULT_BACKPROP", "KeptUnits", "ReversibleSegment", "Segment",
           "SegmentOutput", "choose_mode", "resolve_backprop", "run_segment", "step_blocks"]
