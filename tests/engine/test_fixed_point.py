"""Fixed-point representation, gate quantisation, range/finiteness guards, and why floats can't reverse."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revrnn_cli.engine import InformationBuffer, NonFiniteError, StateOverflowError
from revrnn_cli.engine.fixed_point import (
    FORGET_ONE,
    HIDDEN_SCALE,
    MAX_STEP_GROWTH,
    STATE_BOUND,
    STATE_DTYPE,
    STATE_INT_MAX,
    check_finite,
    check_state_range,
    forget_squash,
    log2_ratio_bits,
    parse_forget_bits,
    bits_forgotten,
    max_growth_bits,
    quantize_gate,
    quantize_update,
    state_limit,
    to_fixed,
    to_float,
)


def test_constants_match_the_paper():
    assert HIDDEN_SCALE == 2.0 ** 23 and FORGET_ONE == 1024
    # int64 carriers: |state| < 2^40, i.e. more than 10^12 steps of the worst-case growth of 1 per step
    assert STATE_DTYPE == torch.int64 and STATE_BOUND == 2.0 ** 40 and STATE_INT_MAX == 2**63 - 1
    assert STATE_BOUND / (MAX_STEP_GROWTH / HIDDEN_SCALE) > 1e12


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(st.integers(-(2**52), 2**52), min_size=1, max_size=50))
def test_to_float_is_exact_in_float64_and_to_fixed_inverts_it(ints):
    h = torch.tensor(ints, dtype=STATE_DTYPE)
    f64 = to_float(h, torch.float64)
    assert torch.equal(f64 * 2.0 ** 23, h.to(torch.float64))  # exact: 53-bit integers fit float64
    assert torch.equal(to_fixed(f64), h)
    # float32 conversion is the correctly rounded value of the exact one
    assert torch.equal(to_float(h), f64.to(torch.float32))


def test_to_fixed_rounds_half_to_even():
    u = 2.0 ** -23
    x = torch.tensor([0.5 * u, 1.5 * u, 2.5 * u, -0.5 * u, -1.5 * u, 0.49 * u], dtype=torch.float64)
    assert to_fixed(x).tolist() == [0, 2, 2, 0, -2, 0]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_squash_bounds_quantised_gates(k):
    """z = m sigmoid(a) + 1 - m with m = 1 - 2^-k: Z spans exactly [2^(10-k), 1024]."""
    m = forget_squash(k)
    assert m == 1.0 - 2.0 ** -k
    assert max_growth_bits(k) == k
    a = torch.tensor([-200.0, -20.0, -1.0, 0.0, 1.0, 20.0, 200.0])
    z = m * torch.sigmoid(a) + (1.0 - m)
    Z = quantize_gate(z, allow_zero_guard=False)
    assert Z.dtype == STATE_DTYPE
    assert int(Z.min()) == 1 << (10 - k) and int(Z.max()) == 1024
    assert bool((Z[1:] >= Z[:-1]).all())


def test_no_limit_and_no_forgetting_squash():
    assert forget_squash(None) == 1.0 and forget_squash(0) == 0.0
    assert max_growth_bits(None) == 10
    assert parse_forget_bits("None") is None and parse_forget_bits(5) == 5
    for bad in (-1, 0, 4, 11, 2.5, "3", True):
        with pytest.raises(ValueError):
            parse_forget_bits(bad)


def test_zero_guard_only_without_limit():
    z = torch.tensor([0.0, 1e-6, 0.4 / 1024, 0.6 / 1024, 0.5, 1.0])
    assert quantize_gate(z, allow_zero_guard=True).tolist() == [1, 1, 1, 1, 512, 1024]
    assert quantize_gate(z, allow_zero_guard=False).tolist() == [0, 0, 0, 1, 512, 1024]


def test_quantize_update():
    u = torch.tensor([1.0, -1.0, 0.25, 3 * 2.0 ** -24])
    assert quantize_update(u).tolist() == [1 << 23, -(1 << 23), 1 << 21, 2]


def test_bit_accounting_helpers():
    z = torch.tensor([0.5, 0.25, 1.0])
    assert float(bits_forgotten(z)) == pytest.approx(3.0)
    Z = torch.tensor([512, 128, 1024], dtype=torch.int32)
    assert float(log2_ratio_bits(Z)) == pytest.approx(4.0)


# ---- guards ------------------------------------------------------------------------------------

@pytest.mark.parametrize("every", [1, 16, 100])
def test_state_range_limit_and_check(every):
    limit = state_limit(every)
    assert limit == STATE_INT_MAX - every * MAX_STEP_GROWTH
    check_state_range(-limit, limit, every, "test")
    check_state_range(0, 12345, every, "test")
    for lo, hi in ((0, limit + 1), (-limit - 1, 0), (0, STATE_INT_MAX), (-STATE_INT_MAX - 1, 0)):
        with pytest.raises(StateOverflowError, match="int64"):
            check_state_range(lo, hi, every, "test")
    # the margin is enough: `every` worst-case updates from the limit cannot wrap int64
    assert limit + every * MAX_STEP_GROWTH <= STATE_INT_MAX


def test_check_finite():
    check_finite([("a", torch.zeros(3)), ("ints", torch.zeros(3, dtype=torch.int32))], "t")
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(NonFiniteError, match="x"):
            check_finite([("ok", torch.ones(2)), ("x", torch.tensor([0.0, bad]))], "t")
    # finite values whose float32 sum overflows are finite all the same (the float64 sum settles it)
    big = torch.full((4,), 3e38)
    assert not torch.isfinite(big.sum())
    check_finite([("big", big), ("mixed", torch.tensor([3e38, -3e38, 3e38, 3e38]))], "t")
    with pytest.raises(NonFiniteError, match="worse"):
        check_finite([("worse", torch.tensor([3e38, 3e38, float("nan")]))], "t")


# ---- negative control: floating point cannot reverse the GRU update ---------------------------------

def test_float_reversal_fails_where_fixed_point_succeeds():
    """h <- z h + (1-z) g in float32 and its algebraic inverse h <- (h - (1-z) g) / z do not recover h0
    after 100 steps (each inverse step amplifies the forward rounding errors by 1/z); the fixed-point
    update Mul(h, Z) + U with the information buffer recovers it bit for bit."""
    gen = torch.Generator().manual_seed(0)
    B, H, T = 4, 32, 100
    z = 0.875 * torch.rand(T, B, H, generator=gen) + 0.125
    g = torch.rand(T, B, H, generator=gen) * 2 - 1
    h0 = torch.rand(B, H, generator=gen) * 2 - 1

    h = h0.clone()
    for t in range(T):
        h = z[t] * h + (1 - z[t]) * g[t]
    h_fwd = h.clone()
    for t in range(T - 1, -1, -1):
        h = (h - (1 - z[t]) * g[t]) / z[t]
    assert not torch.equal(h, h0)
    assert float((h - h0).abs().max()) > 1e-3  # not a last-bit accident: the error has blown up

    buf = InformationBuffer((B, H), max_forget_bits=3)
    Z = quantize_gate(z, allow_zero_guard=False)
    U = quantize_update((1 - z) * g)
    hi0 = to_fixed(h0)
    hi = hi0.clone()
    for t in range(T):
        hi = buf.mul(hi, Z[t], z[t]) + U[t]
    # the same recurrence up to quantisation: per step |Z/1024 - z| |h| <= 2^-11 and the buffer's low digit
    # adds < Z 2^-23 <= 2^-13; the update is a contraction (z < 1), so the deviation stays below
    # T (2^-11 + 2^-13 + 2^-24) (and is far smaller in practice)
    assert float((to_float(hi) - h_fwd).abs().max()) < T * (2.0 ** -11 + 2.0 ** -13 + 2.0 ** -24)
    for t in range(T - 1, -1, -1):
        hi = buf.div(hi - U[t], Z[t])
    assert torch.equal(hi, hi0)
    assert buf.is_empty()
    assert math.isfinite(buf.optimal_bits) and buf.optimal_bits > 0
