"""RevGRU / RevLSTM layer API: shapes, state carrying, modes, and loud errors."""

from __future__ import annotations

import contextlib

import pytest
import torch

from revrnn_cli.engine import NonFiniteError, RevGRU, RevLSTM, RevState, ReversibleRNN, StateOverflowError
from revrnn_cli.engine.fixed_point import HIDDEN_SCALE, STATE_BOUND, STATE_DTYPE, to_float

from .util import rel_diff

B, IN, H = 2, 4, 8
MODES = ["reverse", "store", "no_grad", "eval"]


def make(cls, layers=2, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(IN, H, layers, **kw)


def call(model, x, mode, state=None):
    """Run the model the way ``mode`` says: with autograd in reverse/store mode, or without it."""
    if mode in ("reverse", "store"):
        model.train()
        model.backprop = mode
        ctx = contextlib.nullcontext()
    elif mode == "no_grad":
        model.train()
        ctx = torch.no_grad()
    else:
        model.eval()
        ctx = contextlib.nullcontext()
    with ctx:
        return model(x, state)


# ---- shapes and state --------------------------------------------------------------------------

@pytest.mark.parametrize("cls,blocks", [(RevGRU, 2), (RevLSTM, 4)])
def test_output_and_state_shapes(cls, blocks):
    model = make(cls, 3, top_size=6)
    x = torch.randn(11, B, IN)
    y, state = model(x)
    assert y.shape == (11, B, 6) and y.dtype == torch.float32
    widths = [H, H, 6]
    assert [tuple(h.shape) for h in state.ints] == [(B, blocks * w // 2) for w in widths]
    assert all(h.dtype == STATE_DTYPE for h in state.ints)
    assert [tuple(f.shape) for f in state.floats] == [(B, blocks * w // 2) for w in widths]
    for h, f in zip(state.ints, state.floats):
        assert torch.equal(to_float(h), f.detach())
    # y is the top layer's [h1; h2] at every step, in float: its last step is the final state's h part
    assert torch.equal(y[-1].detach(), to_float(state.ints[-1][:, :6]))
    with torch.no_grad():
        y2, s2 = model(x)
    assert s2.floats is None
    assert torch.equal(y2, y.detach())


def test_initial_state_is_zero_and_default():
    model = make(RevLSTM)
    s0 = model.initial_state(B)
    assert all(torch.equal(h, torch.zeros(B, 2 * c.hidden_size, dtype=STATE_DTYPE)) for h, c in zip(s0.ints, model.cells))
    x = torch.randn(7, B, IN)
    with torch.no_grad():
        ya, sa = model(x)
        yb, sb = model(x, s0)
    assert torch.equal(ya, yb) and all(torch.equal(a, b) for a, b in zip(sa.ints, sb.ints))


def test_state_detach():
    model = make(RevGRU)
    y, state = model(torch.randn(5, B, IN))
    assert all(f.requires_grad for f in state.floats)
    d = state.detach()
    assert isinstance(d, RevState) and d.floats is None
    assert all(torch.equal(a, b) and not a.requires_grad for a, b in zip(d.ints, state.ints))
    # usable as the next call's initial state, and nothing flows back through it
    y2, _ = model(torch.randn(3, B, IN), d)
    y2.sum().backward()


@pytest.mark.parametrize("cls", [RevGRU, RevLSTM])
@pytest.mark.parametrize("forget", [False, True], ids=["NF", "forget"])
@pytest.mark.parametrize("mode", ["reverse", "store", "no_grad"])
@pytest.mark.parametrize("chunk,split", [(16, 32), (1, 29), (5, 15)])
def test_carrying_state_across_calls(cls, forget, mode, chunk, split):
    """Two calls with the state carried vs one call over the concatenated sequence (the split falls on a
    chunk boundary, so every gate sees the same matmuls).

    * The first call is always exactly the prefix of the single call.
    * No-forgetting cells (no buffer): the second call continues exactly, ints and outputs bit for bit,
      and the gradients flowing back through the carried state floats match the single call's.
    * Forgetting cells: each call starts a fresh information buffer (per segment, as in the paper), and
      the low digit of every exact multiplication Mul(h, Z) is popped from the buffer, so the second
      call's trajectory legitimately differs by the multiplication's rounding (< Z 2^-23 <= 2^-13 per
      half-update, accumulated like the quantisation noise in test_reference: ~1e-3 over 20 steps).
      It must stay that close, with gradients within 1e-2 (relative).
    """
    model = make(cls, 2, chunk=chunk, top_size=6, forget=forget)
    T = 50
    x = torch.randn(T, B, IN)
    model.zero_grad(set_to_none=True)
    y, s = call(model, x, mode)
    if mode != "no_grad":
        y.pow(2).sum().backward()
        g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    ya, sa = call(model, x[:split], mode)
    yb, sb = call(model, x[split:], mode, sa)
    assert torch.equal(ya.detach(), y[:split].detach())
    if not forget:
        assert torch.equal(yb.detach(), y[split:].detach())
        assert all(torch.equal(a, b) for a, b in zip(sb.ints, s.ints))
    else:
        assert float((yb.detach() - y[split:].detach()).abs().max()) < 5e-3
    if mode != "no_grad":
        (ya.pow(2).sum() + yb.pow(2).sum()).backward()
        for p, g in zip(model.parameters(), g1):
            assert rel_diff(p.grad, g) < (1e-5 if not forget else 1e-2)


def test_eval_mode_has_no_dropout_and_is_deterministic():
    model = make(RevLSTM, 3, dropout=0.5, weight_drop=0.5)
    plain = make(RevLSTM, 3)  # same parameters (same seed), no dropout at all
    x = torch.randn(20, B, IN)
    model.eval()
    y1, s1 = model(x)
    y2, s2 = model(x)
    assert torch.equal(y1, y2) and all(torch.equal(a, b) for a, b in zip(s1.ints, s2.ints))
    with torch.no_grad():
        y3, _ = plain(x)
    assert torch.equal(y1.detach(), y3)
    # training mode does apply the masks: two calls differ
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x)[0], model(x)[0])


@pytest.mark.parametrize("cls", [RevGRU, RevLSTM])
@pytest.mark.parametrize("grad_mode", ["reverse", "store"])
def test_no_grad_forward_equals_training_forward(cls, grad_mode):
    """Same masks (same seed): the exact forward without autograd gives the training forward's values,
    states and bit statistics."""
    model = make(cls, 2, dropout=0.3, weight_drop=0.3)
    x = torch.randn(25, B, IN)
    torch.manual_seed(7)
    y, s = call(model, x, grad_mode)
    stats = dict(model.last_stats)
    torch.manual_seed(7)
    yn, sn = call(model, x, "no_grad")
    assert torch.equal(y.detach(), yn)
    assert all(torch.equal(a, b) for a, b in zip(s.ints, sn.ints))
    assert model.last_stats == stats


# ---- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [RevGRU, RevLSTM])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_raises_non_finite_error(cls, mode, bad):
    """A NaN/inf input must raise NonFiniteError in every mode (the fixed-point conversion would otherwise
    turn it into a garbage integer), not some other error."""
    model = make(cls, 2)
    x = torch.randn(20, B, IN)
    x[17, 1, 2] = bad
    with pytest.raises(NonFiniteError):
        call(model, x, mode)


@pytest.mark.parametrize("mode", MODES)
def test_non_finite_weight_raises_non_finite_error(mode):
    model = make(RevGRU, 2)
    with torch.no_grad():
        model.cells[1].wh2[0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        call(model, torch.randn(10, B, IN), mode)


def saturating_lstm(forget: bool, max_forget_bits=3):
    """All gates saturated: i = o = g = 1 (and f = p = 1, i.e. Z = 1024): c and h grow by exactly 1 per step."""
    model = make(RevLSTM, 1, forget=forget, max_forget_bits=max_forget_bits)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.cells[0].bx.fill_(20.0)
    return model


@pytest.mark.parametrize("forget,k", [(False, 3), (True, 3), (True, None)], ids=["NF", "k3", "nolimit"])
@pytest.mark.parametrize("mode", MODES)
def test_lstm_state_overflow_is_loud(forget, k, mode):
    """c and h grow by exactly 1 per step. Started 200 below the int64 bound of 2^40, 150 steps are fine
    (exactly +150, no wrap) and 239 steps (beyond the bound less the guard's margin of one chunk of
    maximal updates) must raise rather than wrap."""
    model = saturating_lstm(forget, k)
    start = int((STATE_BOUND - 200) * HIDDEN_SCALE)
    s0 = RevState([torch.full((B, 2 * H), start, dtype=STATE_DTYPE)])
    y, s = call(model, torch.zeros(150, B, IN), mode, s0)
    assert torch.equal(s.ints[0] - start, torch.full_like(s.ints[0], 150 << 23))
    assert bool((y.detach()[-1] > 0.99 * STATE_BOUND).all())  # the float view: 2^40 in float32
    with pytest.raises(StateOverflowError, match="int64"):
        call(model, torch.zeros(239, B, IN), mode, s0)


@pytest.mark.parametrize("kw", [
    dict(cell="rnn"), dict(max_forget_bits=4), dict(max_forget_bits=0), dict(max_forget_bits=-1),
    dict(num_layers=0), dict(dropout=1.0), dict(dropout=-0.1), dict(weight_drop=1.0), dict(weight_drop=-0.5),
    dict(backprop="recompute"), dict(hidden_size=7), dict(top_size=5),
], ids=str)
def test_invalid_constructor_arguments(kw):
    args = dict(cell="revlstm", input_size=IN, hidden_size=H, num_layers=2)
    args.update(kw)
    cell, i, h, n = args.pop("cell"), args.pop("input_size"), args.pop("hidden_size"), args.pop("num_layers")
    with pytest.raises(ValueError):
        ReversibleRNN(cell, i, h, n, **args)


def test_invalid_backprop_assignment_and_input_shape():
    model = make(RevGRU)
    with pytest.raises(ValueError):
        model.backprop = "nope"
    with pytest.raises(ValueError):
        model(torch.randn(5, B, IN + 1))
    with pytest.raises(ValueError):
        model(torch.randn(5, IN))


def test_no_forgetting_ignores_max_forget_bits():
    RevGRU(IN, H, forget=False, max_forget_bits=4)  # the limit is meaningless without forgetting


@pytest.mark.parametrize("chunk", [0, -3])
def test_invalid_chunk_rejected_at_construction(chunk):
    with pytest.raises(ValueError):
        RevGRU(IN, H, chunk=chunk)


@pytest.mark.parametrize("chunk", [256, 1000])
@pytest.mark.parametrize("mode", ["reverse", "no_grad"])
def test_large_chunk_is_usable_or_rejected(chunk, mode):
    """A large chunk is either rejected at construction (ValueError) or works: a zero input must not
    trip the state-range guard (whose margin is chunk maximal updates)."""
    try:
        model = RevGRU(IN, H, chunk=chunk)
    except ValueError:
        return
    y, s = call(model, torch.zeros(20, B, IN), mode)
    assert y.shape == (20, B, H)
