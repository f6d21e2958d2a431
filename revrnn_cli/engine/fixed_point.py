"""Fixed-point numbers for exactly reversible recurrences (the paper's finite-precision scheme; reference
`buffer.py`, `fixed_util.py`).

A reversible RNN can only undo its own updates if every update is exact. Floating point is not:
``(h * z) / z != h`` in general, and the error compounds backwards in time. So the *states*
(h, and c for the LSTM) live as integers with ``HIDDEN_FRAC_BITS`` fractional bits, while the gate
arithmetic (matmuls, sigmoid, tanh) stays in float32. Only the state update is integer:

    h_new = Mul(h, Z) + U        Z = round(1024 * z)        U = round(2**23 * update)

``Mul`` is the exact multiplication by Z/1024 of :mod:`revrnn_cli.engine.buffer`; ``U`` is recomputed
bit-identically during reversal, so subtracting it is exact.

The states are **int64** with 23 fractional bits: resolution 2^-23 and range |state| < 2^40
(about 1.1e12). The paper's code used int32, whose range of ±256 a RevLSTM can leave: its updates
h <- p h + o tanh(c) and c <- f c + i g grow |state| by up to 1 per step while p and f are
quantised to exactly 1, and the state is carried from segment to segment. In int64 the same growth
takes more than 10^12 steps to reach the bound. Every intermediate of the exact multiplication
stays inside int64 for any int64 state (the bounds are stated in :mod:`.buffer`).

This module holds the representation (conversions, gate quantisation, "max forgetting" squash) and
the guards that make misuse loud instead of silent: a state leaving the safe range raises
:class:`StateOverflowError`, a non-finite input raises :class:`NonFiniteError`.
"""

from __future__ import annotations

import torch

HIDDEN_FRAC_BITS = 23
"""Fractional bits of the fixed-point states (the reference's `hidden_radix = 23`): resolution 2^-23."""

FORGET_FRAC_BITS = 10
"""Forget gates are multiples of 2^-10 (the reference's `forget_radix = 10`)."""

FORGET_ONE = 1 << FORGET_FRAC_BITS
HIDDEN_SCALE = float(1 << HIDDEN_FRAC_BITS)
HIDDEN_UNIT = 1.0 / HIDDEN_SCALE
STATE_DTYPE = torch.int64
STATE_BITS = 64

STATE_INT_MAX = (1 << (STATE_BITS - 1)) - 1
STATE_BOUND = float(1 << (STATE_BITS - 1 - HIDDEN_FRAC_BITS))
"""|state| < 2^40: the largest value an int64 with 23 fractional bits holds."""

# Largest growth of |state| in one update, in integer units: |Mul(h, Z)| <= |h| + 1024 and
# |U| <= 2^23 (every additive term is a product of values in [-1, 1]).
MAX_STEP_GROWTH = (1 << HIDDEN_FRAC_BITS) + FORGET_ONE + 1

STATE_WARN = float(1 << 16)
"""|state| above which training warns once: a healthy state stays near 1 (an LSTM's h is bounded
by 1); 65536 means some units have integrated their input for thousands of steps, 2^24 times below
the bound, in time to change course."""

# 0-dim constants: a Python number in a tensor op is wrapped into a tensor on every call, which
# costs about 1 µs per op at the per-step tensor sizes; these are wrapped once. (A 0-dim CPU tensor
# acts as a scalar for CUDA operands too.)
_UNIT_T = torch.tensor(HIDDEN_UNIT, dtype=torch.float32)
_SCALE_T = torch.tensor(HIDDEN_SCALE, dtype=torch.float32)
_ONE_T = torch.tensor(float(FORGET_ONE), dtype=torch.float32)

ALLOWED_FORGET_BITS = (1, 2, 3, 5, None)
"""The "max forgetting" settings of the paper (the reference's `--max_forget`); None means no limit."""


class FixedPointError(ArithmeticError):
    """Base class of the engine's arithmetic errors."""


class StateOverflowError(FixedPointError):
    """A fixed-point state left the representable range (LSTM cells can grow by up to 1 per step)."""


class NonFiniteError(FixedPointError):
    """A NaN or infinity reached the fixed-point conversion, where it would become a garbage integer."""


class ReversalError(FixedPointError):
    """Reversal did not return the information buffer to its empty state."""


def parse_forget_bits(value):
    """The one validator of a max-forgetting setting (specs, the command line, the layers): 1, 2, 3,
    5 or none (the string "none" as well as None)."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    if value not in ALLOWED_FORGET_BITS or isinstance(value, bool):
        raise ValueError(f"must be one of 1, 2, 3, 5 or none, got {value!r}")
    return value


def forget_squash(max_forget_bits: int | None) -> float:
    """The paper's ``max_forget`` m = 1 - 2^-k: z = m*sigmoid(a) + (1 - m) lies in (2^-k, 1).

    Then at most k bits per unit per step are forgotten (the reference's `--max_forget`). ``None`` is "no limit" (m
    = 1).
    ``0`` is the no-forgetting limit (m = 0, z = 1): used by the NF variants. Takes a value that
    :func:`parse_forget_bits` (the one validator) has accepted.
    """
    if max_forget_bits is None:
        return 1.0
    return 1.0 - 2.0 ** (-max_forget_bits)


def max_growth_bits(max_forget_bits: int | None) -> int:
    """Upper bound on the bits one multiplication adds to a unit's buffer: log2(1024 / Z_min)."""
    return FORGET_FRAC_BITS if max_forget_bits is None else max_forget_bits


def to_fixed(x: torch.Tensor) -> torch.Tensor:
    """Float to fixed point: round(x * 2^23) as int64 (round half to even, like the reference)."""
    return torch.round(x * HIDDEN_SCALE).to(STATE_DTYPE)


def to_float(h: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed point to float: h * 2^-23 (correctly rounded; exact while |h| < 2^24 in float32)."""
    if dtype == torch.float32:
        return h * _UNIT_T  # one op: int64 * float32 scalar promotes to float32
    return h.to(dtype) * HIDDEN_UNIT


def quantize_gate(z: torch.Tensor, allow_zero_guard: bool) -> torch.Tensor:
    """Z = round(1024 z) as an integer of the state's type (the reference's `forget_radix = 10`).

    With a forgetting limit, z > 2^-k keeps Z >= 2^(10-k) >= 1 automatically. Without one
    (``allow_zero_guard``), Z may round to 0, which would destroy the state: it is replaced by 1,
    as the reference's ``EnsureNotForgetAll`` does, but only in that case (reference `fixed_util.py`). The
    effective cap without a limit is therefore 10 bits per step.
    """
    Z = (z * _ONE_T).round_().to(STATE_DTYPE)
    if allow_zero_guard:
        Z.clamp_(min=1)
    return Z


def quantize_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """U = round(2^23 a b) as an integer state, with one temporary (the common case a ⊙ b); |U| <= 2^23."""
    return torch.mul(a, b).mul_(_SCALE_T).round_().to(STATE_DTYPE)


def quantize_update(u: torch.Tensor) -> torch.Tensor:
    """U = round(2^23 u): the additive part of an update, recomputed exactly in reverse; |U| <= 2^23."""
    return (u * _SCALE_T).round_().to(STATE_DTYPE)


def state_limit(check_every: int) -> int:
    """Largest |state| (integer units) allowed at a check so that ``check_every`` more updates
    cannot wrap int64: no wrap can happen between two checks, so checking at chunk ends is as safe
    as checking every step."""
    return STATE_INT_MAX - check_every * MAX_STEP_GROWTH


def check_state_range(lo: int, hi: int, check_every: int, where: str) -> None:
    """Raise :class:`StateOverflowError` if the extremes ``lo``/``hi`` (integer units) seen at the
    checks exceed :func:`state_limit`. Two comparisons rather than ``abs``: abs(INT64_MIN) wraps."""
    limit = state_limit(check_every)
    if hi > limit or lo < -limit:
        worst = max(abs(hi), abs(lo)) * HIDDEN_UNIT
        raise StateOverflowError(
            f"{where}: a fixed-point state reached |{worst:.4g}|, beyond the safe range "
            f"±{limit * HIDDEN_UNIT:.4g} of int64 with {HIDDEN_FRAC_BITS} fractional bits "
            "(a RevLSTM state grows by up to 1 per step while its forget gates quantise to exactly 1)"
        )


def check_finite(tensors, where: str) -> None:
    """Raise :class:`NonFiniteError` when any tensor holds NaN or inf.

    A float64 sum is NaN or infinite exactly when some element is (float32 values cannot overflow
    it), and it is a single pass without the two temporaries of ``isfinite``. It is also 15 times
    slower than the tensor's own sum (measured: 4.8 against 0.33 ms for 650 x 3,250 float32, one
    thread), so that sum comes first: finite, and every element is; only a non-finite one (a bad
    element, or finite elements overflowing float32) is settled by the float64 sum.
    """
    for name, t in tensors:
        if not t.is_floating_point() or bool(torch.isfinite(t.sum())):
            continue
        if not bool(torch.isfinite(t.sum(dtype=torch.float64))):
            raise NonFiniteError(f"{where}: {name} contains NaN or infinity; the fixed-point state cannot represent it")


def bits_forgotten(z: torch.Tensor) -> torch.Tensor:
    """-log2 z summed over all elements: the information-theoretic cost of a forget gate (reference
    `language_modelling/train.py`)."""
    return -torch.log2(z.to(torch.float64)).sum()


def log2_ratio_bits(Z: torch.Tensor) -> torch.Tensor:
    """Σ log2(1024 / Z): what exact multiplication by the *quantised* gates must store."""
    return (FORGET_FRAC_BITS - torch.log2(Z.to(torch.float64))).sum()


__all__ = [
    "ALLOWED_FORGET_BITS",
    "FORGET_FRAC_BITS",
    "FORGET_ONE",
    "FixedPointError",
    "HIDDEN_FRAC_BITS",
    "HIDDEN_SCALE",
    "HIDDEN_UNIT",
    "NonFiniteError",
    "ReversalError",
    "STATE_BOUND",
    "STATE_DTYPE",
    "STATE_INT_MAX",
    "STATE_WARN",
    "StateOverflowError",
    "bits_forgotten",
    "check_finite",
    "check_state_range",
    "forget_squash",
    "log2_ratio_bits",
    "max_growth_bits",
    "parse_forget_bits",
    "quantize_gate",
    "quantize_product",
    "quantize_update",
    "to_fixed",
    "to_float",
]
