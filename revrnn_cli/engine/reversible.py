"""The step loops of a reversible stack: forward, reversal with backprop, and autograd (reference
`language_modelling/rev_training/model.py`).

``forward_steps`` runs the stack without autograd; ``reverse_steps`` *undoes* every step exactly,
newest first (popping the buffers), and from the gate activations the inverse has just recomputed
applies each step's local backward (:meth:`RevLSTMCell.backward`); ``store_steps`` is ordinary
autograd through the same cells. The buffers run in every mode, so all three follow the identical
integer trajectory. States are recovered bit-for-bit, so the gradients of reversal are those of
ordinary backprop through the same fixed-point cells, not of an approximate recomputation (the
reference recomputes each step without the buffer's low bits and loses up to 0.1 degree of
gradient direction).

Time is processed in chunks of ``chunk`` steps, layer by layer within a chunk: the input part of
every gate is one matmul per chunk and layer (:meth:`project`), only the recurrent part runs per
step, and the weight gradients are one matmul per chunk. The chunks are the same in every pass,
which is what keeps the recomputed gates bit-identical (same kernels,
same shapes). The backward pass holds one chunk's activations at a time:
O(chunk x batch x hidden), independent of the sequence length. Each layer has its own buffer,
whose pushes and pops are LIFO over that layer's steps.

No step reads a device value on the host: the state range is tracked on the device at the end of
every chunk and checked once, after the pass (:meth:`Plan.check_range`). These loops are driven by
the one autograd primitive of :mod:`.segment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from . import native
from .buffer import InformationBuffer
from .fixed_point import (HIDDEN_UNIT, ReversalError, StateOverflowError, check_finite, check_state_range,
                          state_limit)

Tensor = torch.Tensor
XChunk = Callable[[int, int], Tensor]


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
    native: bool = False  # run the fused operators (:mod:`.native`) instead of the eager cells
    ranges: list = field(default_factory=list)  # per layer: (lo, hi) on the device, or None
    _transposed: dict = field(default_factory=dict, repr=False)

    def project(self, l: int, X: Tensor, a: int, b: int) -> Tensor:
        """Layer l's projected inputs for steps [a, b), padded steps replaced by identity steps."""
        cell = self.cells[l]
        XP = cell.project(X, self.weights[l][0], self.weights[l][1])
        if self.active is not None:
            XP = torch.where(self.active[a:b, :, None], XP, cell.pad_projection(XP))
        return XP

    def restored(self, l: int, t: int) -> Tensor | None:
        return None if self.restore is None else self.restore(l, t)

    def restored_chunk(self, l: int, a: int, b: int) -> Tensor | None:
        """:meth:`restored` for steps [a, b) as one [b - a, B, units] tensor (the fused path)."""
        if self.restore is None or not self.cells[l].lossy_units:
            return None
        return torch.stack([self.restore(l, t) for t in range(a, b)])

    def recurrent_transposed(self, l: int) -> list[Tensor]:
        """Layer l's recurrent weights transposed and contiguous, made once per pass: the backward's
        per-step products with them run a third faster than with transposed views."""
        if l not in self._transposed:
            self._transposed[l] = [w.t().contiguous() for w in self.weights[l][2:]]
        return self._transposed[l]

    def reserve(self, l: int, steps: int) -> None:
        """Stack space for ``steps`` steps of layer l, checked once per chunk (no read inside a step)."""
        buf, cell = self.buffers[l], self.cells[l]
        if isinstance(buf, InformationBuffer) and cell.forget:
            buf.reserve(steps * cell.muls_per_step * buf.rounds * buf.numel)

    def chunks(self, steps: int) -> list[tuple[int, int]]:
        return [(a, min(a + self.chunk, steps)) for a in range(0, steps, self.chunk)]

    def next_input(self, l: int, Y: Tensor) -> Tensor:
        """Layer l's outputs as layer l+1's inputs (locked dropout, same mask at every step)."""
        m = self.masks[l + 1]
        return Y if m is None else Y * m

    # ---- state range: tracked on the device per chunk, read once per pass ------------------------
    def track(self, l: int, blocks: list[Tensor]) -> None:
        """Fold layer l's state at the end of a chunk into its running extremes (no host read)."""
        if not self.ranges:
            self.ranges = [None] * len(self.cells)
        lo, hi = torch.aminmax(torch.cat(blocks, 1))
        if self.ranges[l] is None:
            self.ranges[l] = [lo, hi]
        else:
            torch.minimum(self.ranges[l][0], lo, out=self.ranges[l][0])
            torch.maximum(self.ranges[l][1], hi, out=self.ranges[l][1])

    def check_range(self) -> float:
        """Raise :class:`StateOverflowError` if a chunk ended beyond :func:`state_limit`; returns the
        largest |state| seen at the chunk ends. Checked at chunk ends only: a chunk that starts within
        the limit cannot wrap int64, so the first chunk end beyond it is always seen intact."""
        worst = 0.0
        for l, r in enumerate(self.ranges):
            if r is None:
                continue
            lo, hi = (int(v) for v in torch.stack(r).tolist())
            try:
                check_state_range(lo, hi, self.chunk, f"{self.name}, layer {l}")
            except StateOverflowError:
                # NaN or infinity turned into integers shows up as an out-of-range state: say what it is
                check_finite([(f"layer {l} weight {i}", w) for i, w in enumerate(self.weights[l])], self.name)
                raise
            worst = max(worst, abs(lo) * HIDDEN_UNIT, abs(hi) * HIDDEN_UNIT)
        return worst

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
    """One buffer per layer that forgets (h1, h2, c1, c2 of the layer share it, as in the reference's `buffer.py`)."""
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


def raw_weight_grads(dW: list[list[Tensor]], weight_masks=None) -> list[Tensor]:
    """Map gradients w.r.t. the effective (dropped) weights back to the raw ones: dW * mask."""
    flat = [g for ws in dW for g in ws]
    if weight_masks:
        flat = [g if m is None else g * m for g, m in zip(flat, weight_masks)]
    return flat


def forward_steps(plan: Plan, state: list, steps: int, x_chunk: XChunk,
                  on_output: Callable[[int, int, Tensor], None] | None = None,
                  on_state: Callable[[int, int, list], None] | None = None) -> list:
    """Run ``steps`` steps without autograd; ``state`` is a list (per layer) of integer blocks.

    ``x_chunk(a, b)`` gives layer 0's inputs for steps [a, b); ``on_output(a, b, Y)`` receives the
    top layer's outputs; ``on_state(l, t, blocks)`` sees layer l's state after step t.
    """
    top = len(plan.cells) - 1
    for a, b in plan.chunks(steps):
        X = x_chunk(a, b)
        for l, cell in enumerate(plan.cells):
            Wh = plan.weights[l][2:]
            XP = plan.project(l, X, a, b)
            want_y = l < top or on_output is not None
            if plan.native:
                state[l], Y, states, _ = native.forward_chunk(cell, XP, state[l], Wh, plan.buffers[l], want_y,
                                                              on_state is not None)
                if on_state is not None:
                    for t in range(a, b):
                        on_state(l, t, list(states[t - a].unbind(0)))
            else:
                plan.reserve(l, b - a)
                Y = X.new_empty(b - a, X.shape[1], cell.hidden_size) if want_y else None
                for t in range(a, b):
                    state[l] = cell.step(XP[t - a], state[l], Wh, plan.buffers[l])
                    if Y is not None:
                        cell.output(state[l], out=Y[t - a])
                    if on_state is not None:
                        on_state(l, t, state[l])
            plan.track(l, state[l])
            if l < top:
                X = plan.next_input(l, Y)
        if on_output is not None:
            on_output(a, b, Y)
    return state


def reverse_steps(plan: Plan, state: list, steps: int, x_chunk: XChunk,
                  dstate: list | None = None, dy_chunk: Callable[[int, int, Tensor], Tensor | None] | None = None,
                  dx_chunk: Callable[[int, int, Tensor], None] | None = None, dW: list | None = None,
                  on_state: Callable[[int, int, list], None] | None = None, need_outputs: bool = True) -> list:
    """Undo ``steps`` steps, newest first; with ``dstate`` also backpropagate through them.

    ``dstate[l]`` holds the gradient w.r.t. the float value of each of layer l's state blocks at
    the current time. ``dy_chunk(a, b, Y)`` returns the gradient w.r.t. the top layer's outputs Y
    over steps [a, b) (it may compute a loss from Y; with ``need_outputs`` False it gets Y = None);
    ``dx_chunk(a, b, dX)`` receives the gradient w.r.t. layer 0's inputs; weight gradients
    accumulate into ``dW`` (nested like ``plan.weights``). ``on_state(l, t, blocks)`` sees layer
    l's recovered state *before* step t.
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
            need_y = l < top or (grads and dy_chunk is not None and need_outputs)
            if plan.native:
                state[l], Y, states, sv = native.reverse_chunk(cell, XP, state[l], Wh, plan.buffers[l],
                                                               plan.restored_chunk(l, a, b), need_y,
                                                               on_state is not None, grads)
                if on_state is not None:
                    for t in range(b - 1, a - 1, -1):
                        on_state(l, t, list(states[t - a].unbind(0)))
            else:
                Y = X.new_empty(b - a, X.shape[1], cell.hidden_size) if need_y else None
                sv = [None] * (b - a)
                for t in range(b - 1, a - 1, -1):
                    if Y is not None:
                        cell.output(state[l], out=Y[t - a])  # layer l's output at step t, before undoing it
                    state[l], sv[t - a] = cell.reverse_step(XP[t - a], state[l], Wh, plan.buffers[l],
                                                            plan.restored(l, t))
                    if on_state is not None:
                        on_state(l, t, state[l])
            inputs.append(X)
            saved.append(sv if grads else None)
            X = plan.next_input(l, Y) if l < top else Y
        if grads:
            _backward_chunk(plan, a, b, inputs, saved, X, dstate, dy_chunk, dx_chunk, dW)
    return state


def accumulate(acc: Tensor | None, g: Tensor) -> Tensor:
    """acc + g in place, or g itself while nothing has been accumulated: no zero-filled accumulator
    and no pass adding the first chunk to it (0 + g is g, up to the sign of a zero)."""
    return g if acc is None else acc.add_(g)


def accumulate_mm(acc: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """acc + a @ b as a product, then a sum, never ``acc.addmm_(a, b)``: with beta = 1 some BLAS
    builds (MKL on AVX-512 AMD CPUs, measured) fold ``acc`` into the product's partial sums, which
    rounds differently from ``acc + (a @ b)``, the order in which autograd accumulates a weight's
    gradient over chunks in ``store`` mode. Keeping the two orders equal is what makes reverse and
    store gradients agree bit for bit on every CPU."""
    return accumulate(acc, torch.mm(a, b))


def _backward_chunk(plan, a, b, inputs, saved, Y_top, dstate, dy_chunk, dx_chunk, dW) -> None:
    """Backpropagate through steps [a, b) of every layer, top layer first (layer-major is valid:
    a layer's gradient depends only on the layers above it within the chunk)."""
    cells = plan.cells
    dY = dy_chunk(a, b, Y_top) if dy_chunk is not None else None
    for l in range(len(cells) - 1, -1, -1):
        cell, wx, sv = cells[l], plan.weights[l][0], saved[l]
        h2 = cell.half
        WhT = plan.recurrent_transposed(l)
        if plan.native:
            dXP, dstate[l] = native.backward_chunk(cell, sv, dstate[l], dY, WhT)
        else:
            dXP = inputs[l].new_empty(b - a, inputs[l].shape[1], wx.shape[1])
            for t in range(b - 1, a - 1, -1):
                if dY is not None:
                    dstate[l][0] = dstate[l][0] + dY[t - a, :, :h2]
                    dstate[l][1] = dstate[l][1] + dY[t - a, :, h2:]
                dstate[l] = cell.backward(sv[t - a], dstate[l], WhT, dXP[t - a])
        n = (b - a) * dXP.shape[1]
        flatP = dXP.view(n, -1)
        X = inputs[l].reshape(n, -1)
        dW[l][0] = accumulate_mm(dW[l][0], X.t(), flatP)
        dW[l][1] = accumulate(dW[l][1], flatP.sum(0))
        if plan.native:
            for k, g in enumerate(native.recurrent_grads(cell, sv, dXP)):
                dW[l][2 + k] = accumulate(dW[l][2 + k], g)
        else:
            for k, cols in enumerate(cell.recurrent_columns()):
                left = torch.cat([cell.recurrent_inputs(s)[k] for s in sv])
                dW[l][2 + k] = accumulate_mm(dW[l][2 + k], left.t(), flatP[:, cols])
        if l == 0 and dx_chunk is None:
            break  # nobody needs the input gradient: skip the matmul
        dX = flatP.mm(wx.t()).view(b - a, dXP.shape[1], -1)
        if l > 0:
            dY = dX if plan.masks[l] is None else dX * plan.masks[l]
        else:
            dx_chunk(a, b, dX)


def store_steps(plan: Plan, state: list, state_f: list, steps: int, x_chunk: XChunk,
                on_output: Callable[[int, int, Tensor], None]) -> tuple[list, list]:
    """``store`` mode: the same chunks and steps with autograd recording every activation (on the
    fused path, one autograd node per chunk and layer)."""
    top = len(plan.cells) - 1
    for a, b in plan.chunks(steps):
        X = x_chunk(a, b)
        for l, cell in enumerate(plan.cells):
            Wh = plan.weights[l][2:]
            XP = plan.project(l, X, a, b)
            if plan.native:
                new_blocks: list = []
                Y, *floats = native.StoreChunk.apply(cell, plan.buffers[l], new_blocks,
                                                     partial(plan.recurrent_transposed, l), state[l], XP,
                                                     *state_f[l], *Wh)
                state[l], state_f[l] = new_blocks, floats
            else:
                plan.reserve(l, b - a)
                outs = []
                for t in range(a, b):
                    state[l], state_f[l] = cell.store_step(XP[t - a], state[l], state_f[l], Wh, plan.buffers[l])
                    outs.append(torch.cat((state_f[l][0], state_f[l][1]), 1))
                Y = torch.stack(outs)
            plan.track(l, state[l])
            X = plan.next_input(l, Y) if l < top else Y
        on_output(a, b, X)
    return state, state_f


def check_recovered(plan: Plan, state: list, h0: list, name: str) -> None:
    """Raise :class:`ReversalError` unless every buffer is empty and the initial state is back."""
    for b in plan.buffers:
        if b is not None:
            b.check_empty(name)
    for l, (got, want) in enumerate(zip(state, h0)):
        for g, w in zip(got, want):
            if not torch.equal(g, w):
                raise ReversalError(f"{name}: layer {l}'s initial state was not recovered exactly by reversal")


# ---- the paper's accounting (§4), in one place ----------------------------------------------------

def normal_bits(sizes: list[int], steps: int, batch: int, lstm: bool) -> int:
    """Bits ordinary BPTT keeps for the hidden states of layers of widths ``sizes`` over ``steps``
    (32 per unit and step, twice for an LSTM's h and c: the paper's baseline)."""
    return sum(32 * steps * batch * h * (2 if lstm else 1) for h in sizes)


def bit_stats(plan: Plan, steps: int, batch: int, stored_bits: int = 0, real_steps: int | None = None,
              max_state: float | None = None) -> dict:
    """The paper's accounting for one pass: normal, used and optimal bits (reference `language_modelling/train.py`).

    ``stored_bits`` (units kept outside the buffer, e.g. an attention slice) count as used and as
    optimal; ``real_steps`` (summed over the batch) replaces steps x batch in the normal bits when
    sequences are padded. Also the largest |state| at the chunk ends and how many forget gates were
    quantised to exactly 1 (units that forget nothing integrate their inputs)."""
    cells = plan.cells
    lstm = cells[0].n_blocks == 4
    sizes = [c.hidden_size for c in cells]
    normal = (normal_bits(sizes, steps, batch, lstm) if real_steps is None
              else normal_bits(sizes, real_steps, 1, lstm))
    bufs = [b for b in plan.buffers if b is not None]
    used = sum(b.used_bits for b in bufs) + stored_bits
    optimal = sum(b.optimal_bits for b in bufs) + stored_bits
    out = {"normal_bits": normal, "used_bits": used, "optimal_bits": optimal, "steps": steps,
           "saturated_gates": sum(b.saturated_gates for b in bufs), "gates": sum(b.gates_seen for b in bufs)}
    if max_state is not None:
        out["max_state"] = max_state
    return out


__all__ = [
    "Plan",
    "bit_stats",
    "check_recovered",
    "effective_weights",
    "forward_steps",
    "make_buffers",
    "normal_bits",
    "raw_weight_grads",
    "reverse_steps",
    "state_limit",
    "store_steps",
]
