"""InformationBuffer: exact multiply/divide by Z/1024, byte emission, sealing, loud corruption, economy.

Round trips alone cannot tell an exact multiplication from any other bijection, so every forward
multiplication is also checked against its arithmetic meaning: |1024 Mul(h, Z) - h Z| < 1024 Z,
i.e. Mul(h, Z) differs from h Z / 1024 by less than Z integer units (its low base-Z digit comes
from the buffer instead of from h).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revrnn_cli.engine import InformationBuffer, ReversalError
from revrnn_cli.engine.buffer import HEAD_BITS, HEAD_FLOOR
from revrnn_cli.engine.fixed_point import MAX_STEP_GROWTH, STATE_DTYPE, STATE_INT_MAX

KS = [1, 2, 3, 5, None]
# the largest |state| the engine ever multiplies: the range guard keeps states below this with chunk=1
STATE_MAX = STATE_INT_MAX - MAX_STEP_GROWTH


def z_min(k):
    return 1 if k is None else 1 << (10 - k)


def draw_Z(gen, shape, k, p_extreme=0.2):
    """Quantised gates over the whole allowed range, with exact hits on both ends (Z_min and 1024)."""
    lo = z_min(k)
    Z = torch.randint(lo, 1025, shape, generator=gen, dtype=STATE_DTYPE)
    u = torch.rand(shape, generator=gen)
    Z = torch.where(u < p_extreme / 2, torch.full_like(Z, lo), Z)
    Z = torch.where((u >= p_extreme / 2) & (u < p_extreme), torch.full_like(Z, 1024), Z)
    if k is None:  # also exactly 1, 2, 3: the double-emission range
        Z = torch.where((u >= p_extreme) & (u < 1.5 * p_extreme),
                        torch.randint(1, 4, shape, generator=gen, dtype=STATE_DTYPE), Z)
    return Z


def draw_states(gen, shape):
    """Signed int64 states: uniform over the full guarded range, near ±2^62, small (incl. -1, 0)."""
    n = math.prod(shape)
    kind = torch.randint(0, 4, (n,), generator=gen)
    full = torch.randint(-STATE_MAX, STATE_MAX + 1, (n,), generator=gen, dtype=torch.int64)
    near = (1 << 62) + torch.randint(-4096, 4097, (n,), generator=gen, dtype=torch.int64)
    near = near * (torch.randint(0, 2, (n,), generator=gen) * 2 - 1)
    small = torch.randint(-3000, 3000, (n,), generator=gen, dtype=torch.int64)
    unit = torch.randint(-(1 << 23), (1 << 23) + 1, (n,), generator=gen, dtype=torch.int64)
    out = torch.where(kind == 0, full, torch.where(kind == 1, near, torch.where(kind == 2, small, unit)))
    return out.view(shape)


def check_is_multiplication(h, Z, out):
    """|1024*out - h*Z| < 1024*Z exactly, i.e. out is h*Z/1024 up to a low base-Z digit. With int64
    states 1024*out overflows, so the difference is evaluated as 1024*d - (h mod 1024)*Z with
    d = out - floor(h/1024)*Z (an identity: h = 1024*floor(h/1024) + h mod 1024), every term small."""
    d = out - (h >> 10) * Z
    assert bool((d.abs() < (1 << 40)).all()), "mul is not a multiplication by Z/1024"
    err = d * 1024 - (h & 1023) * Z
    assert bool((err.abs() < 1024 * Z).all()), "mul is not a multiplication by Z/1024"


def round_trip(seed, k, steps, shape, n_states, seal_every, p_extreme=0.2, Zs=None):
    """Forward: h_s <- Mul(h_s, Z) then set to an arbitrary target (the product Mul is remembered, as
    a cell recomputes its additive update U = target - Mul); n_states states share the buffer (like
    h1, h2, c1, c2).
    Reverse in LIFO order and compare every intermediate state bit-exactly.

    Returns the buffer and the bytes pushed per multiplication.
    """
    gen = torch.Generator().manual_seed(seed)
    buf = InformationBuffer(shape, max_forget_bits=k, capacity_bytes=16)  # tiny: the stack must grow
    if Zs is None:
        Zs = draw_Z(gen, (steps, n_states, *shape), k, p_extreme)
    targets = draw_states(gen, (steps, n_states, *shape))
    seal_at = set(torch.randint(0, steps, (max(1, steps // max(seal_every, 1)),), generator=gen).tolist())
    h = [draws.to(STATE_DTYPE) for draws in draw_states(gen, (n_states, *shape))]
    h0 = [x.clone() for x in h]
    history, Us, pushed = [], [], []
    for t in range(steps):
        if t in seal_at:
            head = buf.head.clone()
            buf.seal()
            assert buf.head is None
            buf.unseal()
            assert torch.equal(buf.head, head)
        row = []
        for s in range(n_states):
            before = buf.stored_bytes
            out = buf.mul(h[s], Zs[t, s])
            pushed.append(buf.stored_bytes - before)
            check_is_multiplication(h[s], Zs[t, s], out)
            assert bool(((buf.head >= HEAD_FLOOR) & (buf.head < (1 << HEAD_BITS))).all())
            h[s] = targets[t, s].clone()
            row.append(out)  # a cell would recompute U = target - out and subtract it: the same integer
        Us.append(row)
        history.append([x.clone() for x in h])
    buf.seal()  # as between a forward and a backward pass
    buf.unseal()
    for t in range(steps - 1, -1, -1):
        assert all(torch.equal(a, b) for a, b in zip(h, history[t])), f"state after step {t} not recovered"
        if t in seal_at:
            buf.seal()
            buf.unseal()
        for s in range(n_states - 1, -1, -1):
            h[s] = buf.div(Us[t][s], Zs[t, s])
    for a, b in zip(h, h0):
        assert torch.equal(a, b), "initial state not recovered"
    assert buf.is_empty()
    assert buf.stored_bytes == 0 and buf.multiplications == 0
    return buf, pushed


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.sampled_from(KS),
    steps=st.integers(200, 2000),
    batch=st.integers(1, 3),
    width=st.integers(1, 7),
    n_states=st.sampled_from([1, 2, 4]),
    seal_every=st.integers(1, 200),
    p_extreme=st.floats(0.0, 0.9),
)
def test_round_trip_property(seed, k, steps, batch, width, n_states, seal_every, p_extreme):
    round_trip(seed, k, steps, (batch, width), n_states, seal_every, p_extreme)


@pytest.mark.parametrize("k", KS)
def test_round_trip_long_all_ranges(k):
    """A few thousand steps for every forgetting limit, both gate extremes hit often."""
    buf, pushed = round_trip(1234 + (k or 0), k, 3000, (2, 5), 2, seal_every=97, p_extreme=0.4)
    assert sum(pushed) > 0


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_constant_max_forgetting_emits_many_bytes(k):
    """Z = 2^(10-k) at every step: the head overflows its word every 8/k steps; count the bytes."""
    steps, shape = 1500, (2, 3)
    Zs = torch.full((steps, 1, *shape), z_min(k), dtype=STATE_DTYPE)
    buf, pushed = round_trip(7, k, steps, shape, 1, seal_every=50, Zs=Zs)
    n = math.prod(shape)
    total_bits = k * steps  # per unit: log2(1024 / Z) each step
    # per unit the conceptual integer is 2^10 * 2^(k*steps) up to rounding, stored as 8*bytes + head in [2^10, 2^18)
    assert n * (total_bits - 8 - 3) <= 8 * sum(pushed) <= n * (total_bits + 3)
    assert max(pushed) <= n  # at most one byte per unit per multiplication with a limit


def test_no_limit_double_emissions():
    """Without a limit Z = 1 adds 10 bits per step: some multiplications must emit two bytes per unit,
    and units emitting 0, 1 and 2 bytes in the same multiplication must be undone in the right order."""
    steps, shape = 1200, (3, 4)
    n = math.prod(shape)
    gen = torch.Generator().manual_seed(3)
    Zs = torch.ones((steps, 1, *shape), dtype=STATE_DTYPE)
    # every other step: a mix per unit of 1 (double emission), 2, 3 and 1024 (no emission)
    mix = torch.tensor([1, 2, 3, 1024], dtype=STATE_DTYPE)[torch.randint(0, 4, (steps, 1, *shape), generator=gen)]
    Zs[1::2] = mix[1::2]
    buf, pushed = round_trip(11, None, steps, shape, 1, seal_every=40, Zs=Zs)
    assert max(pushed) > n, "no multiplication emitted two bytes for some unit"
    assert max(pushed) <= 2 * n
    # pure Z = 1 throughout: every unit hits a double emission every 4 steps
    Zs1 = torch.ones((400, 1, *shape), dtype=STATE_DTYPE)
    _, pushed1 = round_trip(12, None, 400, shape, 1, seal_every=1000, Zs=Zs1)
    assert sum(p > n for p in pushed1) >= 400 // 5
    assert n * (10 * 400 - 8 - 3) <= 8 * sum(pushed1) <= n * (10 * 400 + 3)


def test_identity_gate_stores_nothing():
    """Z = 1024 forgets nothing: the state is unchanged and the buffer stays empty."""
    gen = torch.Generator().manual_seed(0)
    buf = InformationBuffer((4, 6), max_forget_bits=3)
    for _ in range(50):
        h = draw_states(gen, (4, 6)).to(STATE_DTYPE)
        out = buf.mul(h, torch.full((4, 6), 1024, dtype=STATE_DTYPE))
        assert torch.equal(out, h)
    assert buf.is_empty()


@pytest.mark.parametrize("k", [3, None])
def test_floor_semantics_on_negative_states(k):
    """Mul floors toward -inf for negative states too: for h = -1 and a fresh buffer, the low digit
    comes from the buffer head (2^10), so the result is Z*(-1) + (1024*1024 + 1023) mod Z."""
    buf = InformationBuffer((1, 3), max_forget_bits=k)
    Z = torch.tensor([[1024, 512, z_min(k)]], dtype=STATE_DTYPE)
    h = torch.full((1, 3), -1, dtype=STATE_DTYPE)
    out = buf.mul(h, Z)
    X = 1024 * HEAD_FLOOR + 1023
    want = torch.tensor([[-int(z) + X % int(z) for z in Z[0]]], dtype=STATE_DTYPE)
    assert torch.equal(out, want)
    assert torch.equal(buf.div(out, Z), h)
    assert buf.is_empty()


@settings(max_examples=50, deadline=None, database=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 4), width=st.integers(1, 9))
def test_seal_unseal_preserves_any_head(seed, batch, width):
    gen = torch.Generator().manual_seed(seed)
    buf = InformationBuffer((batch, width))
    heads = torch.randint(HEAD_FLOOR, 1 << HEAD_BITS, (batch, width), generator=gen, dtype=STATE_DTYPE)
    heads.view(-1)[0] = (1 << HEAD_BITS) - 1  # extremes of the 18-bit range
    heads.view(-1)[-1] = HEAD_FLOOR
    buf.head = heads.clone()
    buf.seal()
    buf.seal()  # idempotent
    buf.unseal()
    buf.unseal()
    assert torch.equal(buf.head, heads)


def test_is_empty_sees_a_single_changed_head():
    buf = InformationBuffer((2, 3))
    assert buf.is_empty()
    buf.head[1, 2] += 1
    assert not buf.is_empty()
    with pytest.raises(ReversalError):
        buf.check_empty()


def test_dividing_an_empty_buffer_is_an_underflow():
    """Undoing a multiplication that never happened must fail loudly, not invent bits. The division
    records the underflow on the device (no host read inside a step); the check after the pass says so."""
    buf = InformationBuffer((2, 3), max_forget_bits=3)
    buf.div(torch.zeros(2, 3, dtype=STATE_DTYPE), torch.full((2, 3), 128, dtype=STATE_DTYPE))
    assert not buf.is_empty()
    with pytest.raises(ReversalError, match="more bytes were popped than pushed"):
        buf.check_empty()


@pytest.mark.parametrize("k", KS)
def test_wrong_Z_in_reverse_is_detected(k):
    """One wrong quantised gate (off by one, one unit, one step) in the reverse pass must be loud.

    Each exact multiplication is a bijection of (state, buffer): a wrong division lands on a
    different (h, B), and correct divisions after it cannot bring it back to the true pair unless
    information is destroyed. A faithful reversal therefore ends with a non-empty buffer, a wrong
    initial state, or a ReversalError; it must never recover h0 and an empty buffer from a
    corrupted pass (that would hide the corrupted intermediate states, and the gradients built on
    them, from the end-of-reversal check).
    """
    silent = []
    for seed in range(8):
        gen = torch.Generator().manual_seed(100 + seed)
        shape, steps = (2, 4), 300
        buf = InformationBuffer(shape, max_forget_bits=k)
        Zs = draw_Z(gen, (steps, *shape), k)
        Us = torch.randint(-(1 << 23), 1 << 23, (steps, *shape), generator=gen, dtype=STATE_DTYPE)
        h0 = torch.randint(-(1 << 23), 1 << 23, shape, generator=gen, dtype=STATE_DTYPE)
        h = h0
        for t in range(steps):
            h = buf.mul(h, Zs[t]) + Us[t]
        t_bad = int(torch.randint(0, steps, (1,), generator=gen))
        unit = (int(torch.randint(0, shape[0], (1,), generator=gen)), int(torch.randint(0, shape[1], (1,), generator=gen)))
        Zbad = Zs.clone()
        z = int(Zbad[t_bad][unit])
        Zbad[t_bad][unit] = z + 1 if z < 1024 else z - 1
        try:
            for t in range(steps - 1, -1, -1):
                h = buf.div(h - Us[t], Zbad[t])
        except ReversalError:
            continue
        if buf.is_empty() and torch.equal(h, h0):
            silent.append((seed, t_bad, unit, z))
    assert not silent, f"wrong Z went undetected (seed, step, unit, true Z): {silent}"


# ---- economy ---------------------------------------------------------------------------------------

def log2_ratio(Z):
    return float((10 - torch.log2(Z.to(torch.float64))).sum())


@pytest.mark.parametrize("k,steps,spread", [(3, 1000, 2.0), (3, 3000, 1.0), (1, 1500, 3.0), (5, 1000, 2.0),
                                            (None, 1000, 2.0)])
def test_used_bits_close_to_information_bound(k, steps, spread):
    """used_bits is within rounding of Σ log2(1024/Z), and within 5 % of Σ -log2 z (optimal_bits).

    Per unit the stored integer is V_T = floor((1024 V + r) / Z) iterated from V_0 = 2^10; each step
    loses at most log2(1/(1-2^-10)) bits to the floor and gains at most that much from the +r, so
    |log2 V_T - 10 - S_u| <= n_mul * 1.41e-3 =: eps. It is stored as bytes + an 18-bit head in
    [2^10, 2^18): 8*bytes_u in (log2 V_T - 18, log2 V_T - 10]. Summing over units:
        S + (10 - eps) * n  <  used_bits  <=  S + (18 + eps) * n.
    """
    gen = torch.Generator().manual_seed(5)
    shape = (4, 8)
    n = math.prod(shape)
    m = 1.0 if k is None else 1.0 - 2.0 ** -k
    buf = InformationBuffer(shape, max_forget_bits=k)
    h = torch.randint(-(1 << 23), 1 << 23, shape, generator=gen, dtype=STATE_DTYPE)
    S = 0.0
    for t in range(steps):
        z = m * torch.sigmoid(spread * torch.randn(shape, generator=gen)) + (1 - m)
        Z = torch.round(z * 1024).to(STATE_DTYPE)
        if k is None:
            Z.clamp_(min=1)
        S += log2_ratio(Z)
        h = buf.mul(h, Z, z) + torch.randint(-(1 << 20), 1 << 20, shape, generator=gen, dtype=STATE_DTYPE)
    buf.seal()
    used, opt = buf.used_bits, buf.optimal_bits
    assert used == 8 * buf.stored_bytes + HEAD_BITS * n
    eps = steps * -math.log2(1 - 2.0 ** -10)
    assert S + (10 - eps) * n < used <= S + (18 + eps) * n
    assert used >= S - 8 * n  # the information bound cannot be beaten
    # optimal_bits is Σ -log2 z over unquantised gates
    assert opt > 0
    assert used / opt <= 1.05
    # Z = round(1024 z) differs from 1024 z by <= 1/2, i.e. |log2(1024 z / Z)| <= log2(1 + 1/(2 Z - 1)) per
    # multiplication: the only way used_bits may fall below optimal_bits.
    assert used / opt >= 0.99


def test_optimal_bits_accounting_matches_direct_sum():
    gen = torch.Generator().manual_seed(9)
    buf = InformationBuffer((3, 5), max_forget_bits=3)
    h = torch.zeros(3, 5, dtype=STATE_DTYPE)
    total = 0.0
    for _ in range(75):  # not a multiple of the internal fold period
        z = 0.875 * torch.rand(3, 5, generator=gen, dtype=torch.float64) + 0.125
        total += float(-torch.log2(z).sum())
        h = buf.mul(h, torch.round(z * 1024).to(STATE_DTYPE), z)
    assert buf.optimal_bits == pytest.approx(total, rel=1e-12)
    assert math.isnan(InformationBuffer((1, 1), track_optimal=False).optimal_bits)
