"""Backpropagation through a stack of reversible layers: `reverse` and `store` modes (paper §3.7).

``reverse``: the forward pass keeps only the final integer state, the information buffers (sealed)
and what is O(batch x hidden) per sequence (dropout masks). The backward pass walks time backwards
and *undoes* every step exactly (popping the buffers); from the gate activations that the inverse
has just recomputed it applies each step's local backward (:meth:`RevLSTMCell.backward`). States
are recovered bit-for-bit, so the gradients are those of ordinary backprop through the same
fixed-point cells, not of an approximate recomputation (the reference recomputes each step without
the buffer's low bits and loses up to 0.1 degree of gradient direction).

``store``: ordinary autograd through the same cells; the buffers still run, so both modes follow
the identical integer trajectory and give the same loss.

Time is processed in chunks of ``chunk`` steps, layer by layer within a chunk: the input part of
every gate is one matmul per chunk and layer (:meth:`project`), only the recurrent part runs per
step, and the weight gradients are one matmul per chunk. The chunks are the same in every pass,
which is what keeps the recomputed gates bit-identical (digest §9.3). The backward pass holds one
chunk's activations at a time: O(chunk x batch x hidden), independent of the sequence length.
Each layer has its own buffer, whose pushes and pops are LIFO over that layer's steps.

The weights enter the autograd Function as ordinary inputs and leave it as ordinary gradients, so
hooks (DistributedDataParallel's included) see them like any other gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .buffer import InformationBuffer
from .fixed_point import ReversalError, StateOverflowError, check_finite, check_state_range, to_float

Tensor = torch.Tensor
XChunk = Callable[[int, int], Tensor]

CHECK_EVERY = 16
"""Steps between state-range checks; the check's margin covers this many maximal updates, so it is
as safe as checking every step (:func:`~revrnn_cli.engine.fixed_point.check_state_range`)."""


def _check_range(blocks, name: str, layer: int, step: int, weights=()) -> None:
    try:
        for blk in blocks:
            check_state_range(blk, CHECK_EVERY, f"{name}, layer {layer}, step {step}")
    except StateOverflowError:
        # NaN or infinity turned into integers shows up as an out-of-range state: say what it is
        check_finite([(f"layer {layer} weight {i}", w) for i, w in enumerate(weights)], name)
        raise


@dataclass
class Plan:
    """One sequence's worth of everything the loops need, fixed before the forward pass.

    ``weights[l]`` is layer l's [wx, bx, *recurrent] as used in every pass (after DropConnect);
    ``masks[l]`` the locked-dropout mask (already scaled) on layer l's input, or None.
    ``active`` [T, B] (bool) marks the real steps of variable-length sequences: a padded step
    leaves state and buffer unchanged (:meth:`project`). ``restore(l, t)`` returns the saved
    values of layer l's units multiplied without the buffer (``cell.lossy_units``) before step t.
    """

    cells: list
    weights: list[list[Tensor]]
    masks: list[Tensor | None]
    buffers: list[InformationBuffer | None]
    chunk: int = 16
    name: str = "reversible stack"
    active: Tensor | None = None
    restore: Callable[[int, int], Tensor | None] | None = None

    def project(self, l: int, X: Tensor, a: int, b: int) -> Tensor:
        """Layer l's projected inputs for steps [a, b), padded steps replaced by identity steps."""
        cell = self.cells[l]
        XP = cell.project(X, self.weights[l][0], self.weights[l][1])
        if self.active is not None:
            XP = torch.where(self.active[a:b, :, None], XP, cell.pad_projection(XP))
        return XP

    def restored(self, l: int, t: int) -> Tensor | None:
        return None if self.restore is None else self.restore(l, t)

    def chunks(self, steps: int) -> list[tuple[int, int]]:
        return [(a, min(a + self.chunk, steps)) for a in range(0, steps, self.chunk)]

    def next_input(self, l: int, Y: Tensor) -> Tensor:
        """Layer l's outputs as layer l+1's inputs (locked dropout, same mask at every step)."""
        m = self.masks[l + 1]
        return Y if m is None else Y * m

    def seal(self) -> None:
        for b in self.buffers:
            if b is not None:
                b.seal()

    def unseal(self) -> None:
        for b in self.buffers:
            if b is not None:
                b.unseal()


def make_buffers(cells, batch: int, device, capacity_hint: int = 1 << 16,
                 track_optimal: bool = True) -> list[InformationBuffer | None]:
    """One buffer per layer that forgets (h1, h2, c1, c2 of the layer share it, digest §3.5)."""
    return [InformationBuffer((batch, c.half), device, c.max_forget_bits, capacity_hint, track_optimal)
            if c.forget else None for c in cells]


def effective_weights(cells, flat, weight_masks=None) -> list[list[Tensor]]:
    """Split the flat weight list per layer, applying DropConnect masks where given (AWD-LSTM)."""
    if weight_masks:
        flat = [w if m is None else w * m for w, m in zip(flat, weight_masks)]
    out, i = [], 0
    for cell in cells:
        n = len(cell.weights())
        out.append(list(flat[i : i + n]))
        i += n
    return out


def forward_steps(plan: Plan, state: list, steps: int, x_chunk: XChunk,
                  on_output: Callable[[int, int, Tensor], None] | None = None,
                  on_state: Callable[[int, int, list], None] | None = None) -> list:
    """Run ``steps`` steps without autograd; ``state`` is a list (per layer) of int32 blocks.

    ``x_chunk(a, b)`` gives layer 0's inputs for steps [a, b); ``on_output(a, b, Y)`` receives the
    top layer's outputs; ``on_state(l, t, blocks)`` sees layer l's state after step t.
    """
    top = len(plan.cells) - 1
    for a, b in plan.chunks(steps):
        X = x_chunk(a, b)
        for l, cell in enumerate(plan.cells):
            Wh = plan.weights[l][2:]
            XP = plan.project(l, X, a, b)
            Y = X.new_empty(b - a, X.shape[1], cell.hidden_size) if (l < top or on_output) else None
            for t in range(a, b):
                state[l] = cell.step(XP[t - a], state[l], Wh, plan.buffers[l])
                if Y is not None:
                    cell.output(state[l], out=Y[t - a])
                if on_state is not None:
                    on_state(l, t, state[l])
                if (t + 1) % CHECK_EVERY == 0 or t == b - 1:
                    _check_range(state[l], plan.name, l, t, plan.weights[l])
            if l < top:
                X = plan.next_input(l, Y)
        if on_output is not None:
            on_output(a, b, Y)
    return state


def reverse_steps(plan: Plan, state: list, steps: int, x_chunk: XChunk,
                  dstate: list | None = None, dy_chunk: Callable[[int, int, Tensor], Tensor | None] | None = None,
                  dx_chunk: Callable[[int, int, Tensor], None] | None = None, dW: list | None = None,
                  on_state: Callable[[int, int, list], None] | None = None) -> list:
    """Undo ``steps`` steps, newest first; with ``dstate`` also backpropagate through them.

    ``dstate[l]`` holds the gradient w.r.t. the float value of each of layer l's state blocks at
    the current time. ``dy_chunk(a, b, Y)`` returns the gradient w.r.t. the top layer's outputs Y
    over steps [a, b) (it may compute a loss from Y); ``dx_chunk(a, b, dX)`` receives the gradient
    w.r.t. layer 0's inputs; weight gradients accumulate into ``dW`` (nested like
    ``plan.weights``). ``on_state(l, t, blocks)`` sees layer l's recovered state *before* step t.
    """
    cells = plan.cells
    top = len(cells) - 1
    grads = dstate is not None
    for a, b in reversed(plan.chunks(steps)):
        X = x_chunk(a, b)
        inputs, saved = [], []
        for l, cell in enumerate(cells):  # reconstruct the chunk bottom-up
            Wh = plan.weights[l][2:]
            XP = plan.project(l, X, a, b)
            need_y = l < top or (grads and dy_chunk is not None and getattr(dy_chunk, "needs_outputs", True))
            Y = X.new_empty(b - a, X.shape[1], cell.hidden_size) if need_y else None
            sv = [None] * (b - a)
            for t in range(b - 1, a - 1, -1):
                if Y is not None:
                    cell.output(state[l], out=Y[t - a])  # layer l's output at step t, before undoing it
                state[l], sv[t - a] = cell.reverse_step(XP[t - a], state[l], Wh, plan.buffers[l], plan.restored(l, t))
                if on_state is not None:
                    on_state(l, t, state[l])
            inputs.append(X)
            saved.append(sv if grads else None)
            X = plan.next_input(l, Y) if l < top else Y
        if grads:
            _backward_chunk(plan, a, b, inputs, saved, X, dstate, dy_chunk, dx_chunk, dW)
    return state


def _backward_chunk(plan, a, b, inputs, saved, Y_top, dstate, dy_chunk, dx_chunk, dW) -> None:
    """Backpropagate through steps [a, b) of every layer, top layer first (layer-major is valid:
    a layer's gradient depends only on the layers above it within the chunk)."""
    cells = plan.cells
    dY = dy_chunk(a, b, Y_top) if dy_chunk is not None else None
    for l in range(len(cells) - 1, -1, -1):
        cell, (wx, _, *Wh), sv = cells[l], plan.weights[l], saved[l]
        h2 = cell.half
        dXP = inputs[l].new_empty(b - a, inputs[l].shape[1], wx.shape[1])
        for t in range(b - 1, a - 1, -1):
            if dY is not None:
                dstate[l][0] = dstate[l][0] + dY[t - a, :, :h2]
                dstate[l][1] = dstate[l][1] + dY[t - a, :, h2:]
            dstate[l] = cell.backward(sv[t - a], dstate[l], Wh, dXP[t - a])
        n = (b - a) * dXP.shape[1]
        flatP = dXP.view(n, -1)
        X = inputs[l].reshape(n, -1)
        dW[l][0].addmm_(X.t(), flatP)
        dW[l][1].add_(flatP.sum(0))
        for k, cols in enumerate(cell.recurrent_columns()):
            left = torch.cat([cell.recurrent_inputs(s)[k] for s in sv])
            dW[l][2 + k].addmm_(left.t(), flatP[:, cols])
        if l == 0 and dx_chunk is None:
            break  # nobody needs the input gradient: skip the matmul
        dX = flatP.mm(wx.t()).view(b - a, dXP.shape[1], -1)
        if l > 0:
            dY = dX if plan.masks[l] is None else dX * plan.masks[l]
        else:
            dx_chunk(a, b, dX)


def store_steps(plan: Plan, state: list, state_f: list, steps: int, x_chunk: XChunk,
                on_output: Callable[[int, int, Tensor], None]) -> tuple[list, list]:
    """``store`` mode: the same chunks and steps with autograd recording every activation."""
    top = len(plan.cells) - 1
    for a, b in plan.chunks(steps):
        X = x_chunk(a, b)
        for l, cell in enumerate(plan.cells):
            Wh = plan.weights[l][2:]
            XP = plan.project(l, X, a, b)
            outs = []
            for t in range(a, b):
                state[l], state_f[l] = cell.store_step(XP[t - a], state[l], state_f[l], Wh, plan.buffers[l])
                outs.append(torch.cat((state_f[l][0], state_f[l][1]), 1))
                if (t + 1) % CHECK_EVERY == 0 or t == b - 1:
                    _check_range(state[l], plan.name, l, t, plan.weights[l])
            Y = torch.stack(outs)
            X = plan.next_input(l, Y) if l < top else Y
        on_output(a, b, X)
    return state, state_f


@dataclass
class SequenceRun:
    """The non-tensor half of one call of :class:`ReverseSequence` (cells, masks, the int state)."""

    cells: list
    masks: list[Tensor | None]
    h0: list[list[Tensor]]
    weight_masks: list[Tensor | None] | None = None
    chunk: int = 16
    track_bits: bool = True
    verify: bool = True
    name: str = "reversible stack"
    stats: dict = field(default_factory=dict)
    hT: list | None = None
    kept_bytes: int = 0  # what the forward keeps outside autograd's saved tensors (buffers, state, masks)


class ReverseSequence(torch.autograd.Function):
    """y[0..T), hT = stack(x[0..T), h0) whose backward recomputes the states by reversal.

    Inputs: ``run`` (a :class:`SequenceRun`), x [T, B, in], then per layer the float view of h0
    [B, blocks*hidden/2] (their gradient is returned), then the flat list of raw weights.
    Outputs: y [T, B, H_top], then per layer the float view of hT. The exact int32 final state is
    left in ``run.hT``.
    """

    @staticmethod
    def forward(ctx, run: SequenceRun, x: Tensor, *tensors):
        L = len(run.cells)
        flat = tensors[L:]
        check_finite([("input", x)] + [(f"weight {i}", w) for i, w in enumerate(flat)], run.name)
        T, B = x.shape[0], x.shape[1]
        plan = _plan(run, flat, B, x.device)
        state = [list(blocks) for blocks in run.h0]
        y = x.new_empty(T, B, run.cells[-1].hidden_size)

        def write(a, b, Y):
            y[a:b] = Y

        forward_steps(plan, state, T, lambda a, b: x[a:b], on_output=write)
        run.stats.update(bit_stats(plan, run.cells, T, B))
        plan.seal()
        run.kept_bytes = kept_bytes(plan, state, run.masks, run.weight_masks or [])
        run.hT = state
        ctx.run, ctx.final, ctx.buffers = run, [list(s) for s in state], plan.buffers
        ctx.save_for_backward(x, *flat)
        return (y, *[to_float(torch.cat(s, 1)) for s in state])

    @staticmethod
    def backward(ctx, dy: Tensor, *dhT):
        run = ctx.run
        x, *flat = ctx.saved_tensors
        T, B = x.shape[0], x.shape[1]
        plan = _plan(run, flat, B, x.device, buffers=ctx.buffers)
        plan.unseal()
        dstate = []
        for cell, g in zip(run.cells, dhT):
            if g is None:
                dstate.append([x.new_zeros(B, cell.half) for _ in range(cell.n_blocks)])
            else:
                dstate.append(list(g.split(cell.half, 1)))
        dW = [[torch.zeros_like(w) for w in ws] for ws in plan.weights]
        dx = torch.zeros_like(x) if ctx.needs_input_grad[1] else None

        def put(a, b, g):
            dx[a:b] = g

        state = [list(s) for s in ctx.final]
        dy_chunk = None
        if dy is not None:
            def dy_chunk(a, b, Y):
                return dy[a:b]
            dy_chunk.needs_outputs = False  # the incoming gradient does not depend on the outputs
        reverse_steps(plan, state, T, lambda a, b: x[a:b], dstate=dstate, dy_chunk=dy_chunk,
                      dx_chunk=put if dx is not None else None, dW=dW)
        if run.verify:
            check_recovered(plan, state, run.h0, run.name)
        ctx.run = ctx.final = ctx.buffers = None
        return (None, dx, *[torch.cat(d, 1) for d in dstate], *raw_weight_grads(dW, run.weight_masks))


def build_plan(cells, flat, weight_masks, masks, batch, device, chunk=16, track_bits=True,
               name="reversible stack", buffers=None, active=None, restore=None) -> Plan:
    """The :class:`Plan` of one sequence: effective weights, and fresh buffers unless given."""
    weights = effective_weights(cells, flat, weight_masks)
    if buffers is None:
        buffers = make_buffers(cells, batch, device, track_optimal=track_bits)
    return Plan(cells, weights, masks, buffers, chunk, name, active, restore)


def _plan(run: SequenceRun, flat, batch, device, buffers=None) -> Plan:
    return build_plan(run.cells, flat, run.weight_masks, run.masks, batch, device, run.chunk, run.track_bits,
                      run.name, buffers)


def raw_weight_grads(dW: list[list[Tensor]], weight_masks=None) -> list[Tensor]:
    """Map gradients w.r.t. the effective (dropped) weights back to the raw ones: dW * mask."""
    flat = [g for ws in dW for g in ws]
    if weight_masks:
        flat = [g if m is None else g * m for g, m in zip(flat, weight_masks)]
    return flat


def kept_bytes(plan: Plan, state: list, *extra) -> int:
    """Bytes a reverse-mode forward keeps outside autograd's saved tensors: the buffers (as
    allocated), the final int state and per-sequence tensors such as dropout masks and token ids."""
    total = sum(b.allocated_bytes for b in plan.buffers if b is not None)
    total += sum(t.numel() * t.element_size() for blocks in state for t in blocks)
    for group in extra:
        for t in (group if isinstance(group, (list, tuple)) else [group]):
            if isinstance(t, Tensor):
                total += t.numel() * t.element_size()
    return total


def check_recovered(plan: Plan, state: list, h0: list, name: str) -> None:
    """Raise :class:`ReversalError` unless every buffer is empty and the initial state is back."""
    for b in plan.buffers:
        if b is not None:
            b.check_empty(name)
    for l, (got, want) in enumerate(zip(state, h0)):
        for g, w in zip(got, want):
            if not torch.equal(g, w):
                raise ReversalError(f"{name}: layer {l}'s initial state was not recovered exactly by reversal")


def bit_stats(plan: Plan, cells, steps: int, batch: int) -> dict:
    """The paper's accounting for this sequence (digest §4): normal, used and optimal bits."""
    from ..memory.accounting import normal_bits

    normal = normal_bits([c.hidden_size for c in cells], steps, batch, lstm=cells[0].n_blocks == 4)
    used = sum(b.used_bits for b in plan.buffers if b is not None)
    bufs = [b for b in plan.buffers if b is not None]
    optimal = sum(b.optimal_bits for b in bufs)
    return {"normal_bits": normal, "used_bits": used, "optimal_bits": optimal, "steps": steps}


__all__ = [
    "Plan",
    "ReverseSequence",
    "SequenceRun",
    "bit_stats",
    "build_plan",
    "check_recovered",
    "effective_weights",
    "forward_steps",
    "kept_bytes",
    "make_buffers",
    "raw_weight_grads",
    "reverse_steps",
    "store_steps",
]
