"""RevGRU and RevLSTM cells: one step forward, its exact inverse, and its local backward (paper §3).

A layer's state is split into halves updated one after the other, each from the *other* half, so
each half's update can be undone once the other half is known (reference `revgru.py`, `revlstm.py`):

    RevGRU   [z1; r1] = σ(W1 [x; h2]),  g1 = tanh(V1 [x; r1 ⊙ h2]),  h1 <- z1 ⊙ h1 + (1 - z1) ⊙ g1
             then the same for h2 from the *new* h1.
    RevLSTM  [f1, g1, i1, o1, p1] = W1 [x; h2]   (never from c; five blocks in this order)
             c1 <- f1 ⊙ c1 + i1 ⊙ g1,  h1 <- p1 ⊙ h1 + o1 ⊙ tanh(c1)   (tanh of the *new* c1)
             then the same for (c2, h2) from the new h1.

The forget gates z, f, p are squashed into (2^-k, 1) ("max forgetting", the reference's `--max_forget`), quantised
to Z/1024,
and applied by the exact multiplication of :class:`~revrnn_cli.engine.buffer.InformationBuffer`;
the additive terms are quantised to 2^-23 and use the *unquantised* gate, as the reference does.
The inverse runs the halves in the opposite order: half 2 (h, then c), then half 1 (h, then c).

Bit-identical recomputation: :meth:`gates` is the one function that turns an input
and the other half into gate values. The forward step, the inverse step and the store-mode autograd
step all call it with the same operations on tensors of the same shapes, so Z and U come out
bit-for-bit the same in every pass. Do not specialise one pass (fusing, batching over time,
reordering a sum) without doing the same in the others.

Gradients are straight-through for the quantisation (as in the reference's `fixed_util.py`): the multiplication
contributes
dL/dh_old = g * Z/1024 and dL/dz = g * h_old, and the additive term is differentiated as a float.
:meth:`backward` implements exactly that by hand, from the activations the inverse step has just
computed, so that `reverse` mode needs no second forward per step (about 4/3 the cost of `store`).

The no-forgetting variants (``forget=False``, NF-RevGRU / NF-RevLSTM of paper §4) keep the
multiplier at exactly 1: h <- h + (1 - z) ⊙ g, and c <- c + i ⊙ g, h <- h + o ⊙ tanh(c). They are
reversible with no buffer at all, and must therefore remember everything.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .buffer import InformationBuffer
from .fixed_point import (
    FORGET_ONE,
    HIDDEN_UNIT,
    STATE_DTYPE,
    forget_squash,
    parse_forget_bits,
    quantize_gate,
    quantize_product,
    quantize_update,
    to_float,
)

_INV_FORGET_ONE = 1.0 / FORGET_ONE
PAD_GATE = 1e30
"""Gate pre-activation of a padded step: sigmoid(±1e30) is exactly 1 or 0 (and so is its
derivative's factor s(1 - s)), whatever the recurrent term adds; finite, so no inf - inf."""


class _StraightThrough(torch.autograd.Function):
    """Value of an exact fixed-point update, gradient of its real-valued counterpart (reference `fixed_util.py`).

    Forward returns float(new_int). Backward treats the update as h_new = (Z/1024) h_old + u, so
    dh_old = g Z/1024, dz = g h_old (Z's quantisation is straight-through to z), du = g.
    With ``Z`` None (no-forgetting cells) the multiplier is exactly 1 and z does not enter.
    """

    @staticmethod
    def forward(ctx, h_old, z, u, Z, new_int):
        ctx.save_for_backward(h_old, Z)
        return to_float(new_int)

    @staticmethod
    def backward(ctx, g):
        h_old, Z = ctx.saved_tensors
        if Z is None:
            return g, None, g, None, None
        return g * (Z * _INV_FORGET_ONE), g * h_old, g, None, None


def _init_uniform(t: torch.Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(t, -bound, bound)


class _RevCell(nn.Module):
    """Shared machinery: parameters per half, state blocks, squash constants, the buffer protocol."""

    n_blocks: int  # integer state blocks of width hidden/2: 2 (h1, h2) or 4 (h1, h2, c1, c2)

    def __init__(self, input_size: int, hidden_size: int, max_forget_bits: int | None = 3, forget: bool = True):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (the state is split in halves), got {hidden_size}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.half = hidden_size // 2
        self.forget = forget
        self.max_forget_bits = parse_forget_bits(max_forget_bits) if forget else 0
        self.m = forget_squash(self.max_forget_bits) if forget else 0.0
        self.one_minus_m = 1.0 - self.m
        self.zero_guard = forget and max_forget_bits is None
        # Units of h1 multiplied without the buffer because their values are stored elsewhere (the
        # first N units of an NMT encoder's top layer, its attention slice;
        # reference `nmt/revencoder.py`); 0 = none.
        self.lossy_units = 0
        self._pad_cache: torch.Tensor | None = None

    # The autograd Function passes parameters positionally: [wx, bx, *recurrent weights].
    def weights(self) -> list[torch.Tensor]:
        return [p for _, p in self.named_parameters(recurse=False)]

    def project(self, X: torch.Tensor, wx: torch.Tensor, bx: torch.Tensor) -> torch.Tensor:
        """Input part of every gate for a chunk of steps at once: [K, B, in] -> [K, B, 2 * block].

        One large matmul instead of K small ones. Every pass calls it on the same chunks, so the
        result is bit-identical between the forward pass, the reversal and store mode.
        """
        K, B = X.shape[0], X.shape[1]
        return torch.addmm(bx, X.reshape(K * B, X.shape[2]), wx).view(K, B, -1)

    def pad_projection(self, like: torch.Tensor) -> torch.Tensor:
        """The projected input of a padded step: a step that changes neither state nor buffer.

        Gates that multiply (z, f, p) are pushed to exactly 1 (Z = 1024: nothing is stored) and gates
        that add (i, o) to exactly 0, so the update is the identity and every gradient through the
        gates is exactly 0 (sigmoid' = 0 at both ends); see :meth:`_gate_signs`.
        """
        c = self._pad_cache
        if c is None or c.device != like.device or c.dtype != like.dtype:
            c = self._pad_cache = (self._gate_signs() * PAD_GATE).to(like.device, like.dtype)
        return c

    def init_state(self, batch: int, device=None) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.half, dtype=STATE_DTYPE, device=device) for _ in range(self.n_blocks)]

    def output(self, state: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
        """The float output passed upward: [h1; h2] (the LSTM's c blocks stay inside)."""
        if out is None:
            return to_float(torch.cat((state[0], state[1]), 1))
        torch.mul(state[0], HIDDEN_UNIT, out=out[:, : self.half])
        torch.mul(state[1], HIDDEN_UNIT, out=out[:, self.half :])
        return out

    def _quantise_z(self, z: torch.Tensor) -> torch.Tensor:
        return quantize_gate(z, self.zero_guard)

    def _mul(self, buf: InformationBuffer, h, z, Z=None, skip: int = 0):
        """Exact h * Z/1024 with the lost bits pushed to ``buf``; returns (new h, Z)."""
        if Z is None:
            Z = self._quantise_z(z)
        return buf.mul(h, Z, z, skip), Z

    @staticmethod
    def _restore(h_old, restore):
        """Put back the units that were multiplied without the buffer (their saved values)."""
        if restore is not None:
            h_old[:, : restore.shape[1]] = restore
        return h_old


class RevGRUCell(_RevCell):
    """Reversible GRU cell (reference `revgru.py`).

    Weights: ``wx`` [in, 3H] with bias ``bx`` maps the input to both halves' gate pre-activations,
    columns [z1 r1 | g1 | z2 r2 | g2]; ``wh_j`` [H/2, H] maps the other half to [z_j; r_j] and
    ``vh_j`` [H/2, H/2] maps r_j ⊙ h_other to g_j. Together they are the reference's four Linear
    maps over [x; h_other], with the input part split off so it can be batched over time.
    """

    n_blocks = 2
    kind = 0  # the fused operators' cell code (native/rev_ops_cpu.cpp)

    def __init__(self, input_size: int, hidden_size: int, max_forget_bits: int | None = 3, forget: bool = True):
        super().__init__(input_size, hidden_size, max_forget_bits, forget)
        self.muls_per_step = 2 if forget else 0  # buffer multiplications per step: h1, h2
        H, H2 = hidden_size, hidden_size // 2
        self.block = 3 * H2  # columns of the projected input per half
        self.register_parameter("wx", nn.Parameter(torch.empty(input_size, 2 * self.block)))
        self.register_parameter("bx", nn.Parameter(torch.empty(2 * self.block)))
        for j in (1, 2):
            self.register_parameter(f"wh{j}", nn.Parameter(torch.empty(H2, H)))
            self.register_parameter(f"vh{j}", nn.Parameter(torch.empty(H2, H2)))
        for p in self.parameters():
            _init_uniform(p, input_size + H2)  # nn.Linear's init over [x; h_other]

    def _gate_signs(self) -> torch.Tensor:
        H2 = self.half
        half = torch.zeros(self.block)
        half[:H2] = 1.0  # z -> 1: keep h; then (1 - z) g = 0
        return torch.cat((half, half))

    def recurrent_columns(self) -> list[slice]:
        """Columns of the projected-input gradient that belong to each recurrent weight."""
        b, H2 = self.block, self.half
        return [slice(0, 2 * H2), slice(2 * H2, b), slice(b, b + 2 * H2), slice(b + 2 * H2, 2 * b)]

    def gates(self, xp, hb_f, wh, vh):
        """Gate values of one half from its projected input and the other half (the bit-identical core)."""
        H2 = self.half
        s = torch.addmm(xp[:, : 2 * H2], hb_f, wh).sigmoid_()
        sz, r = s[:, :H2], s[:, H2:]
        z = sz * self.m + self.one_minus_m if self.forget else sz
        rh = r * hb_f
        g = torch.addmm(xp[:, 2 * H2 :], rh, vh).tanh_()
        return s, z, rh, g, (1.0 - z) * g

    # ---- forward (no autograd) ------------------------------------------------------------------
    def step(self, xp, state, Wh, buf):
        h1, h2 = state
        b = self.block
        h1 = self._half(xp[:, :b], to_float(h2), h1, Wh[0:2], buf, self.lossy_units)
        h2 = self._half(xp[:, b:], to_float(h1), h2, Wh[2:4], buf)
        return [h1, h2]

    def _half(self, xp, hb_f, ha, Wj, buf, skip=0):
        _, z, _, _, u = self.gates(xp, hb_f, *Wj)
        if self.forget:
            ha, _ = self._mul(buf, ha, z, skip=skip)
        return ha + quantize_update(u)

    # ---- inverse + local backward (reverse mode) ------------------------------------------------
    def reverse_step(self, xp, state, Wh, buf, restore=None):
        """Undo one step; returns the previous state and what :meth:`backward` needs.

        ``restore``: the saved values of h1's first :attr:`lossy_units` units before this step."""
        h1, h2 = state
        b = self.block
        h2_old, s2 = self._unhalf(xp[:, b:], to_float(h1), h2, Wh[2:4], buf)
        h1_old, s1 = self._unhalf(xp[:, :b], to_float(h2_old), h1, Wh[0:2], buf, self.lossy_units, restore)
        return [h1_old, h2_old], (s1, s2)

    def _unhalf(self, xp, hb_f, ha_new, Wj, buf, skip=0, restore=None):
        acts = self.gates(xp, hb_f, *Wj)
        ha_old = ha_new - quantize_update(acts[4])
        Z = None
        if self.forget:
            Z = self._quantise_z(acts[1])
            ha_old = self._restore(buf.div(ha_old, Z, skip), restore)
        return ha_old, (acts, hb_f, to_float(ha_old), Z)

    def backward(self, saved, dstate, Wh, dxp):
        """Gradients w.r.t. the previous state; the projected-input gradient is written into ``dxp``.

        ``Wh`` are the recurrent weights *transposed* and contiguous (made once per chunk: a product
        with a contiguous matrix is a third faster than with a transposed view)."""
        s1, s2 = saved
        dh1, dh2 = dstate
        b = self.block
        dh2_old, dh1 = self._backhalf(s2, dh2, dh1, Wh[2:4], dxp[:, b:])
        dh1_old, dh2_old = self._backhalf(s1, dh1, dh2_old, Wh[0:2], dxp[:, :b])
        return [dh1_old, dh2_old]

    def _backhalf(self, saved, dha, dhb, Wj, dxp):
        (s, z, rh, g, _), hb_f, ha_old_f, Z = saved
        wh, vh = Wj
        H2 = self.half
        dgp = dxp[:, 2 * H2 :]
        torch.mul(dha * (1.0 - z), 1.0 - g * g, out=dgp)
        drh = dgp.mm(vh)  # vh is given transposed (contiguous): see _backward_chunk
        sz, r = s[:, :H2], s[:, H2:]
        if Z is not None:
            dz = (dha * (ha_old_f - g)).mul_(self.m)  # the multiplication's share, then the update's
            dha = dha * (Z * _INV_FORGET_ONE)
        else:
            dz = -dha * g
        torch.mul(dz, sz * (1.0 - sz), out=dxp[:, :H2])
        torch.mul(drh * hb_f, r * (1.0 - r), out=dxp[:, H2 : 2 * H2])
        return dha, dhb + dxp[:, : 2 * H2].mm(wh) + drh * r

    def recurrent_inputs(self, saved) -> list[torch.Tensor]:
        """The left operands of each recurrent weight at this step (for batched weight gradients)."""
        s1, s2 = saved
        return [s1[1], s1[0][2], s2[1], s2[0][2]]

    # ---- store mode (ordinary autograd through the same fixed-point arithmetic) ------------------
    def store_step(self, xp, state, state_f, Wh, buf):
        h1, h2 = state
        h1f, h2f = state_f
        b = self.block
        h1, h1f = self._store_half(xp[:, :b], h2f, h1, h1f, Wh[0:2], buf, self.lossy_units)
        h2, h2f = self._store_half(xp[:, b:], h1f, h2, h2f, Wh[2:4], buf)
        return [h1, h2], [h1f, h2f]

    def _store_half(self, xp, hb_f, ha, ha_f, Wj, buf, skip=0):
        _, z, _, _, u = self.gates(xp, hb_f, *Wj)
        return _store_update(self, buf, ha, ha_f, z, u, skip=skip)


CELL_UPDATES = ("paper", "bounded")
"""The RevLSTM's update rules (see :class:`RevLSTMCell`)."""


def parse_cell_update(value, cell: str = "revlstm", forget: bool = True) -> str:
    """The one validator of the RevLSTM's update rule (specs, the layers, the cell): ``paper`` or
    ``bounded`` (see :class:`RevLSTMCell`). Only the RevLSTM with forget gates has a choice: the
    RevGRU's update is convex already, and the no-forgetting cell has no gate to weigh a convex
    combination with (its multiplier is exactly 1)."""
    if value not in CELL_UPDATES:
        raise ValueError(f"cell_update must be one of {', '.join(CELL_UPDATES)}, got {value!r}")
    if value != "paper" and (cell != "revlstm" or not forget):
        what = cell if forget else f"{cell} without forgetting (forget=false)"
        raise ValueError(f"cell_update={value} applies to revlstm with forget gates, not to {what}")
    return value


class RevLSTMCell(_RevCell):
    """Reversible LSTM cell (reference `revlstm.py`).

    Weights: ``wx`` [in, 5H] with bias ``bx`` gives both halves' gate pre-activations from the
    input; ``wh_j`` [H/2, 5H/2] adds the other half's h (never c). The paper's five blocks per half
    are f (forget c), g (candidate), i (input), o (output), p (forget h); they are stored here in
    the column order [f, p, i, o, g] so that the four sigmoids, the two squashes and the two gate
    quantisations each run as one operation. The no-forgetting cell has only [i, o, g].

    **Update rules** (``cell_update``). Per half, with the gates computed from [x; h_other] and
    F = round(1024 f), P = round(1024 p) the quantised forget gates, q_f = F/1024, q_p = P/1024,
    Mul(s, Q) the exact buffer multiplication (s Q/1024, lost bits stored) and [v] = round(2^23 v):

    ``paper`` (the paper's and the reference code's cell)::

        c' = Mul(c, F) + [i g]                      h' = Mul(h, P) + [o tanh(c')]

    Once F and P round to 1024 (f, p >= 1 - 2^-11) a unit adds up to 1 per step to c and h: an
    integrator; with p just below 1, |h| still settles near |o tanh(c')| / (1 - p), up to 1024.
    Gates read h, so a larger |h| saturates more gates: after one large update (lr 20, clip 0.25)
    the states grow by about 1 per step and training diverges (docs/stability.md).

    ``bounded`` (convex updates, as the GRU's; the additive term is weighed by the quantised gate)::

        c' = Mul(c, F) + [((1 - q_f) i) g]          h' = Mul(h, P) + [((1 - q_p) o) tanh(c')]

    (the products evaluated in float32 in that order; 1 - q is exact). Each update is a convex
    combination of the old state and a term in [-1, 1], up to Mul's low digit (< Q 2^-23) and the
    rounding (2^-24), so |c|, |h| <= 1 + 2^-3 for every step count (with Q <= 1023 the fixed point
    of M = (Q/1024) M + (1 - Q/1024) + Q 2^-23 + 2^-24 is below 1.125; Q = 1024 leaves the state
    unchanged). A gate at exactly 1 now *holds* the state instead of integrating, and |h| <= 1.125
    keeps the gates' pre-activations as bounded as an LSTM's.

    **Inverse** (both rules; half 2 first, then half 1; h before c, since h' used the new c'):
    recompute the gates from (x, h_other) and F, P, q from them, then
    h = Div(h' - U_h, P), c = Div(c' - U_c, F) with U_h, U_c recomputed bit for bit from the same
    formulas (they depend only on the gates, on c' and on P, F).

    **Gradients** (straight-through: the quantised gate's value, the gradient passed to the float
    gate, as in the reference's `fixed_util.py`). With a = i g, b = o tanh(c') and upstream gradients dc', dh' (dc'
    already includes
    h's share through tanh(c')):

        paper:    dh = q_p dh'       dp = dh' h          do = dh' tanh(c')          dc' += dh' o (1 - tanh²c')
                  dc = q_f dc'       df = dc' c          di = dc' g        dg = dc' i
        bounded:  dh = q_p dh'       dp = dh' (h - b)    do = dh' (1 - q_p) tanh(c')
                  dc' += dh' (1 - q_p) o (1 - tanh²c')
                  dc = q_f dc'       df = dc' (c - a)    di = dc' (1 - q_f) g   dg = dc' (1 - q_f) i

    then through the squash (x m), the sigmoids and tanh to the pre-activations; a and b are the
    float values. Reverse mode (:meth:`_backhalf`) and store mode (:meth:`_store_half`) implement the
    same formulas.
    """

    n_blocks = 4
    kind = 1

    def __init__(self, input_size: int, hidden_size: int, max_forget_bits: int | None = 3, forget: bool = True,
                 cell_update: str = "paper"):
        super().__init__(input_size, hidden_size, max_forget_bits, forget)
        self.muls_per_step = 4 if forget else 0  # c1, h1, c2, h2
        self.cell_update = parse_cell_update(cell_update, "revlstm", forget)
        self.bounded = self.cell_update == "bounded"
        self.kind = 2 if self.bounded else 1  # the fused operators' code of this update rule
        H2 = hidden_size // 2
        self.n_gates = 5 if forget else 3
        self.block = self.n_gates * H2
        self.register_parameter("wx", nn.Parameter(torch.empty(input_size, 2 * self.block)))
        self.register_parameter("bx", nn.Parameter(torch.empty(2 * self.block)))
        for j in (1, 2):
            self.register_parameter(f"wh{j}", nn.Parameter(torch.empty(H2, self.block)))
        for p in self.parameters():
            _init_uniform(p, input_size + H2)

    def _gate_signs(self) -> torch.Tensor:
        H2 = self.half
        # [f, p, i, o, g] (or [i, o, g]): f, p -> 1 keep c and h; i, o -> 0 add nothing
        signs = ([1.0, 1.0] if self.forget else []) + [-1.0, -1.0, 0.0]
        half = torch.tensor(signs).repeat_interleave(H2)
        return torch.cat((half, half))

    def recurrent_columns(self) -> list[slice]:
        return [slice(0, self.block), slice(self.block, 2 * self.block)]

    def gates(self, xp, hb_f, wh):
        """Returns (sigmoids [f p i o] or [i o], g, fp squashed or None): the bit-identical core."""
        H2, nf = self.half, self.n_gates - 1
        a = torch.addmm(xp, hb_f, wh)
        s = torch.sigmoid(a[:, : nf * H2])
        g = torch.tanh(a[:, nf * H2 :])
        fp = s[:, : 2 * H2].mul(self.m).add_(self.one_minus_m) if self.forget else None
        return s, g, fp

    def _io(self, s):
        o0 = 2 * self.half if self.forget else 0
        return s[:, o0 : o0 + self.half], s[:, o0 + self.half : o0 + 2 * self.half]

    def _weights(self, Z):
        """(1 - F/1024, 1 - P/1024), the weights of the convex updates' additive terms (exact in
        float32); (None, None) for the paper's update."""
        if Z is None or not self.bounded:
            return None, None
        W = (FORGET_ONE - Z).to(torch.float32).mul_(_INV_FORGET_ONE)
        return W[:, : self.half], W[:, self.half :]

    # The additive terms as integers: the one definition that every pass uses (bit-identical).
    @staticmethod
    def _uc(i, g, wc):
        return quantize_product(i if wc is None else wc * i, g)

    @staticmethod
    def _uh(o, tc, wh):
        return quantize_product(o if wh is None else wh * o, tc)

    # state blocks: [h1, h2, c1, c2]
    def step(self, xp, state, Wh, buf):
        h1, h2, c1, c2 = state
        b = self.block
        h1, c1 = self._half(xp[:, :b], to_float(h2), h1, c1, Wh[0], buf, self.lossy_units)
        h2, c2 = self._half(xp[:, b:], to_float(h1), h2, c2, Wh[1], buf)
        return [h1, h2, c1, c2]

    def _half(self, xp, hb_f, ha, ca, wh, buf, skip=0):
        s, g, fp = self.gates(xp, hb_f, wh)
        i, o = self._io(s)
        H2 = self.half
        Z = None
        if self.forget:
            Z = self._quantise_z(fp)
            ca = buf.mul(ca, Z[:, :H2], fp[:, :H2])
        wc, wh_ = self._weights(Z)
        ca = ca + self._uc(i, g, wc)
        if self.forget:
            ha = buf.mul(ha, Z[:, H2:], fp[:, H2:], skip)
        return ha + self._uh(o, torch.tanh(to_float(ca)), wh_), ca

    def reverse_step(self, xp, state, Wh, buf, restore=None):
        h1, h2, c1, c2 = state
        b = self.block
        h2_old, c2_old, s2 = self._unhalf(xp[:, b:], to_float(h1), h2, c2, Wh[1], buf)
        h1_old, c1_old, s1 = self._unhalf(xp[:, :b], to_float(h2_old), h1, c1, Wh[0], buf, self.lossy_units, restore)
        return [h1_old, h2_old, c1_old, c2_old], (s1, s2)

    def _unhalf(self, xp, hb_f, ha_new, ca_new, wh, buf, skip=0, restore=None):
        s, g, fp = self.gates(xp, hb_f, wh)
        i, o = self._io(s)
        H2 = self.half
        tc = torch.tanh(to_float(ca_new))
        Z = self._quantise_z(fp) if self.forget else None
        wc, wh_ = self._weights(Z)
        ha_old = ha_new - self._uh(o, tc, wh_)  # undo h first: it was updated last
        ca_old = ca_new - self._uc(i, g, wc)
        if self.forget:
            ha_old = self._restore(buf.div(ha_old, Z[:, H2:], skip), restore)
            ca_old = buf.div(ca_old, Z[:, :H2])
        return ha_old, ca_old, (s, g, tc, hb_f, to_float(ha_old), to_float(ca_old), Z, wc, wh_)

    def backward(self, saved, dstate, Wh, dxp):
        s1, s2 = saved
        dh1, dh2, dc1, dc2 = dstate
        b = self.block
        dh2_old, dc2_old, dh1 = self._backhalf(s2, dh2, dc2, dh1, Wh[1], dxp[:, b:])
        dh1_old, dc1_old, dh2_old = self._backhalf(s1, dh1, dc1, dh2_old, Wh[0], dxp[:, :b])
        return [dh1_old, dh2_old, dc1_old, dc2_old]

    def _backhalf(self, saved, dha, dca, dhb, wh, ds):
        s, g, tc, _, ha_old_f, ca_old_f, Z, wc, wh_ = saved
        H2, nf = self.half, self.n_gates - 1
        i, o = self._io(s)
        dhu = dha if wh_ is None else dha * wh_  # upstream of h's additive term
        dc = dca + (dhu * o).mul_(1.0 - tc * tc)
        dcu = dc if wc is None else dc * wc  # upstream of c's additive term
        o0 = 2 * H2 if self.forget else 0
        torch.mul(dcu, g, out=ds[:, o0 : o0 + H2])  # upstream of i
        torch.mul(dhu, tc, out=ds[:, o0 + H2 : o0 + 2 * H2])  # upstream of o
        if self.forget:  # upstream of f and p: through the multiplication (and the convex weight)
            torch.mul(dc, ca_old_f if wc is None else ca_old_f - i * g, out=ds[:, :H2])
            torch.mul(dha, ha_old_f if wh_ is None else ha_old_f - o * tc, out=ds[:, H2 : 2 * H2])
            ds[:, : 2 * H2].mul_(self.m)  # the squash
        ds[:, : nf * H2].mul_(s - s * s)  # sigmoid'
        torch.mul(dcu * i, 1.0 - g * g, out=ds[:, nf * H2 :])  # tanh' of the candidate
        if self.forget:
            zq = Z * _INV_FORGET_ONE
            dha, dc = dha * zq[:, H2:], dc * zq[:, :H2]
        return dha, dc, dhb + ds.mm(wh)

    def recurrent_inputs(self, saved) -> list[torch.Tensor]:
        return [saved[0][3], saved[1][3]]

    def store_step(self, xp, state, state_f, Wh, buf):
        h1, h2, c1, c2 = state
        h1f, h2f, c1f, c2f = state_f
        b = self.block
        h1, c1, h1f, c1f = self._store_half(xp[:, :b], h2f, h1, c1, h1f, c1f, Wh[0], buf, self.lossy_units)
        h2, c2, h2f, c2f = self._store_half(xp[:, b:], h1f, h2, c2, h2f, c2f, Wh[1], buf)
        return [h1, h2, c1, c2], [h1f, h2f, c1f, c2f]

    def _store_half(self, xp, hb_f, ha, ca, ha_f, ca_f, wh, buf, skip=0):
        s, g, fp = self.gates(xp, hb_f, wh)
        i, o = self._io(s)
        H2 = self.half
        f, p, Zc, Zh, Z = None, None, None, None, None
        if self.forget:
            Z = self._quantise_z(fp.detach())
            f, p, Zc, Zh = fp[:, :H2], fp[:, H2:], Z[:, :H2], Z[:, H2:]
        wc, wh_ = self._weights(Z)
        Uc = self._uc(i.detach(), g.detach(), wc)
        ca, ca_f = _store_update(self, buf, ca, ca_f, f, _convex_term(i * g, f, wc), Zc, U=Uc)
        tc = torch.tanh(ca_f)
        Uh = self._uh(o.detach(), tc.detach(), wh_)
        ha, ha_f = _store_update(self, buf, ha, ha_f, p, _convex_term(o * tc, p, wh_), Zh, skip, U=Uh)
        return ha, ca, ha_f, ca_f


def _convex_term(a, gate, w):
    """The autograd stand-in for an additive term (its value comes from the integers): ``a`` for
    the paper's update; for the convex one, gradient w = 1 - q to ``a`` and -a to the gate."""
    if w is None:
        return a
    return w * a - (gate - gate.detach()) * a.detach()


def _store_update(cell: _RevCell, buf, h, h_f, z, u, Z=None, skip=0, U=None):
    """One exact update h <- Mul(h, Z) + U with a straight-through autograd value (store mode).

    ``U`` is the integer update if the caller computed it, else round(2^23 u); ``u`` carries the
    gradient of the additive term."""
    if U is None:
        U = quantize_update(u.detach())
    if cell.forget:
        new, Z = cell._mul(buf, h, z.detach(), Z, skip)
        new = new + U
        return new, _StraightThrough.apply(h_f, z, u, Z, new)
    new = h + U
    return new, _StraightThrough.apply(h_f, None, u, None, new)


CELLS = {"revgru": RevGRUCell, "revlstm": RevLSTMCell}

__all__ = ["CELLS", "CELL_UPDATES", "HIDDEN_UNIT", "RevGRUCell", "RevLSTMCell", "parse_cell_update"]
