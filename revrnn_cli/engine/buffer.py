"""The information buffer: exact multiplication by quantised forget gates (paper Algorithm 1).

Multiplying a fixed-point state by a gate Z/1024 < 1 destroys log2(1024/Z) bits. To undo it later
we keep exactly those bits. Per unit, the multiplication is (Maclaurin et al. 2015; paper's Algorithm 1)

    push the 10 low bits of h        B <- 1024 B + (h mod 1024);   h <- floor(h / 1024)
    pop a base-Z digit into h        h <- Z h + (B mod Z);         B <- floor(B / Z)

and the division runs it backwards. B is conceptually an unbounded integer per unit. The reference
implementation keeps it as int64 words whose overflow is synchronised across the whole tensor and
charges whole 64-bit words; it stores 1.37-1.49x the information-theoretic minimum.

Here B is stored the way an rANS entropy coder stores its state (Duda 2013): a small per-unit *head*
kept in [L, 2^8 L) with L = 2^10, and a byte stack shared by all units. Before a multiplication a
unit whose head would leave that interval emits its low byte to the stack; during division a unit
whose head dropped below L pulls its byte back. Whether a unit emits is decided from the head and Z
alone, and the division can recognise it from the head alone (it is below L exactly when a byte was
emitted), so no flags are stored and emission is per unit, never synchronised. Every stored byte
is full, so the stack holds the forgotten bits to within rounding.

Bounds of every intermediate, for any int64 state h (|h| <= 2^63) and 1 <= Z <= 1024:
X = 1024 B + (h mod 1024) < 2^28; q = floor(X / Z) <= X; |floor(h / 1024)| <= 2^53, so
|floor(h / 1024) Z| <= 2^63 and floor(h / 1024) Z + (X mod Z) stays in int64 (the product is a
multiple of Z, the remainder below Z). The division mirrors it: h mod Z < Z, Z B < 2^28, and a
correct reversal's floor(h / Z) is floor(h_old / 1024), whose product with 1024 is within 1024 of
h_old.

After the forward pass :meth:`InformationBuffer.seal` packs each head into 18 bits (it lies in
[2^10, 2^18)), so what stays in memory between forward and backward is the byte stack plus 18 bits
per unit: ``used_bits``. The division must see the heads again, so :meth:`unseal` restores them.

The byte stack is LIFO across all multiplications of a buffer, which is why several states (h1, h2,
c1, c2 of a layer, and layers of equal width) can share one buffer as long as their divisions run in
exactly the reverse order of their multiplications (reference `buffer.py`).
"""

from __future__ import annotations

import math

import torch

from .fixed_point import FORGET_FRAC_BITS, FORGET_ONE, STATE_DTYPE, ReversalError, max_growth_bits

WORD_BITS = 8
HEAD_FLOOR = FORGET_ONE  # L: heads live in [L, L << WORD_BITS); L must be a multiple of 1024
HEAD_BITS = FORGET_FRAC_BITS + WORD_BITS  # a sealed head: 18 bits

# 0-dim operands wrapped once (a Python int is re-wrapped into a tensor on every op, ~1 µs each)
_I64 = dict(dtype=STATE_DTYPE)
_SHIFT_W = torch.tensor(WORD_BITS, **_I64)
_SHIFT_F = torch.tensor(FORGET_FRAC_BITS, **_I64)
_LOW_F = torch.tensor(FORGET_ONE - 1, **_I64)
_FLOOR = torch.tensor(HEAD_FLOOR, **_I64)
_QH_LIMIT = 1 << (63 - FORGET_FRAC_BITS)  # |floor(h / 1024)| for any int64 h
_I64_MAX, _I64_MIN = (1 << 63) - 1, -(1 << 63)

# the layout of ``meta``, the buffer's counters on the device (shared with the native operators)
POS, SATURATED, QMIN, QMAX, UNDERFLOW, OVERFLOW = range(6)


class InformationBuffer:
    """Exact per-unit bit store for the states of one or more layers of equal width.

    ``shape`` is the shape of one state block, [batch, width]. ``max_forget_bits`` bounds the bits
    a single multiplication can add (k, or 10 without a limit), which fixes how many bytes a unit may
    have to emit at once (``rounds``).

    Nothing here reads a device value on the host inside a step: the stack position and the
    counters live in ``meta`` on the device, pushes and pops are placed by prefix sums, and the host
    keeps only an upper bound of the position, from which it reserves capacity
    (:meth:`reserve`, once per chunk in the step loops) and reads the true position only when that
    bound would run out.
    """

    def __init__(self, shape, device=None, max_forget_bits: int | None = 3, capacity_bytes: int = 1 << 16,
                 track_optimal: bool = True):
        self.shape = tuple(shape)
        self.numel = math.prod(self.shape)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.rounds = max(1, math.ceil(max_growth_bits(max_forget_bits) / WORD_BITS))
        self.head: torch.Tensor | None = torch.full(self.shape, HEAD_FLOOR, dtype=STATE_DTYPE, device=self.device)
        self.arena = torch.empty(max(capacity_bytes, 1), dtype=torch.uint8, device=self.device)
        self.meta = torch.tensor([0, 0, _I64_MAX, _I64_MIN, 0, 0], dtype=torch.int64, device=self.device)
        self._bound = 0  # host-side upper bound of meta[POS]
        self._sealed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.multiplications = 0
        self.zprod = torch.ones(self.shape, dtype=torch.float64, device=self.device) if track_optimal else None
        self.fmeta = torch.zeros(2, dtype=torch.float64, device=self.device)  # folded optimal bits, muls since
        self._since_fold = 0
        self.gates_seen = 0
        self._arange: torch.Tensor | None = None

    # ---- the byte stack -------------------------------------------------------------------------
    def reserve(self, nbytes: int) -> None:
        """Make room for ``nbytes`` more bytes (plus one multiplication's scratch) without any host
        read unless the bound says the stack might not fit: call once before a chunk of steps."""
        need = self._bound + nbytes + self.rounds * self.numel
        if need <= self.arena.numel():
            return
        self._bound = int(self.meta[POS])  # the one host read, only when capacity may be short
        need = self._bound + nbytes + self.rounds * self.numel
        if need > self.arena.numel():
            grown = torch.empty(max(need, 2 * self.arena.numel()), dtype=torch.uint8, device=self.device)
            grown[: self._bound] = self.arena[: self._bound]
            self.arena = grown

    def _units(self) -> torch.Tensor:
        if self._arange is None:
            self._arange = torch.arange(self.numel, dtype=torch.int64, device=self.device)
        return self._arange

    def _push(self, values: torch.Tensor, sel: torch.Tensor) -> None:
        """Push the low bytes of ``values`` where ``sel``, in unit order, at the top of the stack.

        Placed by a prefix sum: selected units go to pos + (selected before them); the others write
        their byte past the new top (into space :meth:`reserve` set aside), so every index is distinct
        and nothing has to know the count on the host."""
        sel = sel.reshape(-1)
        e = sel.to(torch.int64)
        before = torch.cumsum(e, 0).sub_(e)
        total = before[-1:] + e[-1:]
        pos = self.meta[POS : POS + 1]
        idx = torch.where(sel, before, total + self._units() - before).add_(pos)
        self.arena.index_copy_(0, idx, values.reshape(-1).to(torch.uint8))
        pos.add_(total)

    def _pop(self, head: torch.Tensor, need: torch.Tensor) -> torch.Tensor:
        """Pull a byte back into every head where ``need`` (the top bytes, in unit order)."""
        flat = need.reshape(-1)
        e = flat.to(torch.int64)
        before = torch.cumsum(e, 0).sub_(e)
        total = before[-1:] + e[-1:]
        pos = self.meta[POS : POS + 1]
        start = pos - total
        self.meta[UNDERFLOW : UNDERFLOW + 1].add_((start < 0).to(torch.int64))
        idx = (before + start).clamp_(0, self.arena.numel() - 1)  # units that pop nothing read anything
        byte = self.arena.index_select(0, idx).to(STATE_DTYPE).view(self.shape)
        pos.sub_(total).clamp_(min=0)
        return torch.where(need, (head << _SHIFT_W) + byte, head)

    # ---- exact multiply / divide ----------------------------------------------------------------
    def mul(self, h: torch.Tensor, Z: torch.Tensor, z: torch.Tensor | None = None, skip: int = 0) -> torch.Tensor:
        """Return h * Z / 1024 exactly invertibly, storing the lost bits (floor semantics, any sign).

        ``z`` (the unquantised gate) is only used to account the optimal bits, -log2 z. The first
        ``skip`` units are multiplied *without* storing their lost bits (:func:`floor_mul`): their
        values are kept elsewhere (the attention slice of an NMT encoder; reference `nmt/revencoder.py`), and the
        division leaves them for the caller to restore.
        """
        self.reserve(self.rounds * self.numel)
        self._bound += self.rounds * self.numel
        if self.zprod is not None:
            self.meta[SATURATED : SATURATED + 1].add_((Z == FORGET_ONE).sum())  # units that forget nothing
            self.gates_seen += Z.numel()
        if skip:
            Zb, zb = Z.clone(), None if z is None else z.clone()
            Zb[:, :skip] = FORGET_ONE  # multiplying by 1024/1024 stores nothing (and costs no bits)
            if zb is not None:
                zb[:, :skip] = 1.0
            out = self._mul(h, Zb, zb)
            out[:, :skip] = floor_mul(h[:, :skip], Z[:, :skip])
            return out
        return self._mul(h, Z, z)

    def _mul(self, h: torch.Tensor, Z: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        head = self.head
        bmax = Z << _SHIFT_W  # B_max(Z) = 2^(w-10) L Z = 256 Z: below it the result stays under 2^8 L
        if self.rounds == 1:
            emit = head >= bmax
            self._push(head, emit)
            head = torch.where(emit, head >> _SHIFT_W, head)
        else:
            head = self._emit_multi(head, bmax)
        X = torch.add(h & _LOW_F, head, alpha=FORGET_ONE)  # 1024 B + (h mod 1024), < 2^28
        q = torch.div(X, Z, rounding_mode="trunc")  # X >= 0, so trunc is floor
        self.head = q
        self.multiplications += 1
        if z is not None and self.zprod is not None:
            self._track(z)
        # (h >> 10) Z + (X mod Z): every intermediate fits int64 (|h >> 10| Z <= 2^63, q Z <= X < 2^28)
        return torch.addcmul(torch.addcmul(X, q, Z, value=-1), h >> _SHIFT_F, Z)

    def _track(self, z: torch.Tensor) -> None:
        """Accumulate prod z in float64 and fold -log2 of it every 32 multiplications (<= 320 bits,
        far from float64's underflow): one op per multiplication instead of a log and a sum."""
        self.zprod.mul_(z)
        self._since_fold += 1
        if self._since_fold == 32:
            self._fold()

    def _fold(self) -> None:
        self.fmeta[0:1].sub_(torch.log2(self.zprod).sum())
        self.zprod.fill_(1.0)
        self._since_fold = 0
        self.fmeta[1] = 0.0

    @property
    def saturated_gates(self) -> int:
        """How many of the gates multiplied so far were quantised to exactly 1 (Z = 1024)."""
        return int(self.meta[SATURATED])

    @property
    def optimal_bits(self) -> float:
        """Σ -log2 z over every multiplication so far (the information-theoretic minimum: the reference's optimal
        bits)."""
        if self.zprod is None:
            return float("nan")
        self._fold()
        return float(self.fmeta[0])

    def _emit_multi(self, head: torch.Tensor, bmax: torch.Tensor) -> torch.Tensor:
        """Emit up to ``rounds`` bytes per unit (only without a forgetting limit, when Z < 4).

        The division pulls the most recently emitted byte first for every unit that emitted at all,
        then the one before for units that emitted twice; so the bytes are written grouped that way:
        group j holds, for each unit with at least j emissions, its j-th most recent byte.
        """
        count = torch.zeros_like(head)
        rest = head
        for _ in range(self.rounds):
            e = rest >= bmax
            rest = torch.where(e, rest >> WORD_BITS, rest)
            count += e.to(count.dtype)
        for j in range(self.rounds, 0, -1):
            shift = (count - j).clamp_(min=0) * WORD_BITS
            self._push(head >> shift, count >= j)
        return rest

    def div(self, h: torch.Tensor, Z: torch.Tensor, skip: int = 0) -> torch.Tensor:
        """Inverse of :meth:`mul`: given h * Z / 1024 (as produced), return h and restore the bits.

        The first ``skip`` units come back unchanged (they stored nothing): the caller restores them.
        Popping more bytes than were stored is recorded on the device and reported by
        :meth:`check_empty` after the pass (an underflow means the reversal went wrong)."""
        if skip:
            Z = Z.clone()
            Z[:, :skip] = FORGET_ONE
        qh = torch.div(h, Z, rounding_mode="floor")
        X = torch.addcmul(h, qh, Z, value=-1).addcmul_(self.head, Z)  # Z B + (h mod Z)
        head = X >> _SHIFT_F
        for _ in range(self.rounds):
            head = self._pop(head, head < _FLOOR)
        self.head = head
        self.multiplications -= 1
        # A correct reversal has |qh| <= 2^53 (it is floor(h_old / 1024)). A corrupted one can leave
        # that range, where qh * 1024 would wrap and could even hide the corruption: track the
        # extremes (no sync) and let the final emptiness check report it.
        lo, hi = torch.aminmax(qh)
        torch.minimum(self.meta[QMIN], lo, out=self.meta[QMIN])
        torch.maximum(self.meta[QMAX], hi, out=self.meta[QMAX])
        return torch.add(X & _LOW_F, qh, alpha=FORGET_ONE)

    # ---- sealing the heads between forward and backward -----------------------------------------
    def seal(self) -> None:
        """Pack the heads (values in [2^10, 2^18)) into 18 bits per unit and drop the integer tensor.

        The stack's spare capacity (it grows by doubling) is released too, so what stays allocated
        between forward and backward is what ``used_bits`` counts, give or take the padding of the
        packed heads."""
        if self._sealed is not None:
            return
        self.trim()
        head = self.head.reshape(-1)
        low16 = torch.stack(((head & 0xFF), (head >> 8) & 0xFF)).to(torch.uint8)
        top = (head >> 16).to(torch.uint8)
        pad = (-top.numel()) % 4
        if pad:
            top = torch.cat((top, top.new_zeros(pad)))
        top = top.view(-1, 4)
        packed = top[:, 0] | (top[:, 1] << 2) | (top[:, 2] << 4) | (top[:, 3] << 6)
        self._sealed = (low16, packed)
        self.head = None

    def unseal(self) -> None:
        if self._sealed is None:
            return
        low16, packed = self._sealed
        top = torch.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], dim=1).reshape(-1)[: self.numel]
        head = low16[0].to(STATE_DTYPE) | (low16[1].to(STATE_DTYPE) << 8) | (top.to(STATE_DTYPE) << 16)
        self.head = head.view(self.shape)
        self._sealed = None

    # ---- accounting and checks --------------------------------------------------------------------
    @property
    def stored_bytes(self) -> int:
        """Bytes on the stack (the forgotten bits, in whole bytes); reads the device."""
        return int(self.meta[POS])

    @property
    def used_bits(self) -> int:
        """What the buffer keeps between forward and backward: the byte stack plus 18 bits per head."""
        return 8 * self.stored_bytes + HEAD_BITS * self.numel

    @property
    def allocated_bytes(self) -> int:
        """Bytes actually allocated (stack capacity, and the heads as integers unless sealed)."""
        heads = self.head.element_size() * self.numel if self._sealed is None else sum(t.numel() for t in self._sealed)
        return self.arena.numel() + heads

    def trim(self) -> None:
        """Release unused stack capacity (after a forward pass whose length was not known upfront)."""
        pos = self.stored_bytes
        self._bound = pos
        if self.arena.numel() > pos:
            self.arena = self.arena[: max(pos, 1)].clone()

    def is_empty(self) -> bool:
        """True when every bit has been given back: nothing stacked, no pop beyond the bottom, every
        head at its floor, and every division's quotient in range."""
        if self._sealed is not None:
            self.unseal()
        pos, _, qmin, qmax, under, over = (int(v) for v in self.meta.tolist())
        in_range = qmin >= -_QH_LIMIT and qmax < _QH_LIMIT
        return in_range and pos == 0 and not under and not over and bool((self.head == HEAD_FLOOR).all())

    def check_empty(self, where: str = "reversal") -> None:
        if not self.is_empty():
            under = " (more bytes were popped than pushed)" if int(self.meta[UNDERFLOW]) else ""
            raise ReversalError(
                f"{where}: the information buffer is not empty after reversal "
                f"({self.stored_bytes} bytes left on the stack){under}; the reverse pass did not retrace "
                "the forward pass exactly"
            )


def floor_mul(h: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """floor(h * Z / 1024) without overflow for any int64 h: the lossy multiplication, nothing stored."""
    return torch.addcmul(((h & _LOW_F) * Z) >> _SHIFT_F, h >> _SHIFT_F, Z)


class NullBuffer:
    """A buffer that stores nothing: the lossy forward used at test time (beam search), where
    nothing is reversed (the reference's ``forward_test``). Not invertible."""

    def mul(self, h: torch.Tensor, Z: torch.Tensor, z: torch.Tensor | None = None, skip: int = 0) -> torch.Tensor:
        return floor_mul(h, Z)

    def div(self, h, Z, skip=0):  # pragma: no cover - a programming error, not a user error
        raise ReversalError("a NullBuffer stores nothing and cannot be reversed")


__all__ = ["HEAD_BITS", "HEAD_FLOOR", "InformationBuffer", "NullBuffer", "WORD_BITS", "floor_mul"]
