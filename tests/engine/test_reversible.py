"""Whole-stack exact reversal (every intermediate state, bit for bit) and `reverse` vs `store` backprop."""

from __future__ import annotations

import pytest
import torch

from revrnn_cli.engine import RevGRU, RevLSTM, RevState, ReversalError, native
from revrnn_cli.engine.fixed_point import to_float
from revrnn_cli.engine.reversible import check_recovered

from .conftest import native_or_skip
from .util import build_plan, forward_record, random_int_state, rel_diff, reverse_check, scale_params

B, IN, H = 2, 4, 8


def make(cls, layers, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(IN, H, layers, **kw)


def exact_reversal(model, T, seed=0, x_scale=1.0):
    """Forward T steps recording every state of every layer, reverse, and compare each recovered state."""
    model.train()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    masks, wmasks = model.sample_masks(B, "cpu")
    if model.dropout > 0 and len(model.cells) > 1:
        assert all(m is not None and bool((m == 0).any()) for m in masks[1:])
    if model.weight_drop > 0:
        assert any(m is not None and bool((m == 0).any()) for m in wmasks)
    plan = build_plan(model, B, masks, wmasks)
    x = torch.randn(T, B, IN, generator=gen) * x_scale
    h0 = random_int_state(model, B, gen)
    final, hist, y = forward_record(plan, h0, T, x)
    # the states actually move, and the forgetting layers really stored bits
    assert not torch.equal(hist[-1][-1], torch.cat(h0[-1], 1))
    for b in plan.buffers:
        assert b is None or b.stored_bytes > 0
    plan.seal()
    plan.unseal()
    res = reverse_check(plan, final, h0, hist, T, x)
    assert res["checked"] == T * len(model.cells)
    assert res["mismatched"] == 0, f"first wrong recovered state (layer, step): {res['first_bad']}"
    for b in plan.buffers:
        assert b is None or b.is_empty()
    check_recovered(plan, res["recovered"], h0, "test")  # raises ReversalError otherwise
    return plan, hist, y


@pytest.mark.parametrize("cls", [RevGRU, RevLSTM])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_exact_reversal_all_depths(cls, layers, path):
    model = make(cls, layers, dropout=0.3, weight_drop=0.3, top_size=6, chunk=7)
    scale_params(model, 2.0)
    exact_reversal(model, 300, seed=layers)


@pytest.mark.parametrize("cls", [RevGRU, RevLSTM])
@pytest.mark.parametrize("kw", [dict(forget=False), dict(max_forget_bits=None), dict(max_forget_bits=1),
                                dict(max_forget_bits=5)], ids=str)
def test_exact_reversal_variants(cls, kw, path):
    """No-forgetting variants (no buffer) and the other forgetting limits, two layers."""
    model = make(cls, 2, dropout=0.2, weight_drop=0.2, **kw)
    scale_params(model, 3.0)
    plan, _, _ = exact_reversal(model, 200, seed=5, x_scale=1.0 if kw.get("forget", True) else 0.05)
    assert (plan.buffers[0] is None) == (not kw.get("forget", True))


def test_exact_reversal_gru_10k_steps(path):
    """10,000 steps, two layers, locked dropout + DropConnect, top layer narrower than the others."""
    model = make(RevGRU, 2, dropout=0.25, weight_drop=0.25, top_size=6, chunk=16)
    scale_params(model, 2.0)
    exact_reversal(model, 10_000, seed=11)


def test_exact_reversal_lstm_10k_steps(path):
    """10,000 steps of a RevLSTM with DropConnect (one layer: locked dropout acts between layers and is
    covered above) and saturating weights; a chunk that does not divide T."""
    model = make(RevLSTM, 1, weight_drop=0.3, chunk=13)
    scale_params(model, 2.0)
    exact_reversal(model, 10_000, seed=12)


@pytest.mark.parametrize("cls,layers,bits", [(RevLSTM, 1, 3), (RevLSTM, 3, 1), (RevGRU, 2, 3)],
                         ids=["lstm1", "lstm3-1bit", "gru2"])
def test_exact_reversal_saturated_20k_steps(cls, layers, bits):
    """Every gate bias +20: the forget gates quantise to exactly 1 and a RevLSTM's c and h grow by about
    1 per step, to ~20,000 (int32 states with 23 fractional bits hold 256). Every state comes back.
    On the fused path (20x faster here); test_native.py shows the reference path follows the same
    integer trajectory bit for bit, saturated gates included."""
    native_or_skip()
    with native.kernels("native"):
        _saturated(cls, layers, bits)


def _saturated(cls, layers, bits):
    T = 20_000
    model = make(cls, layers, max_forget_bits=bits)
    with torch.no_grad():
        for c in model.cells:
            c.bx.add_(20.0)
    plan = build_plan(model, B)
    x = torch.randn(T, B, IN, generator=torch.Generator().manual_seed(3))
    h0 = [c.init_state(B) for c in model.cells]
    final, hist, _ = forward_record(plan, h0, T, x)
    largest = plan.check_range()
    if cls is RevLSTM:
        assert largest > 0.5 * T  # far beyond the int32 range, nowhere near the int64 bound
        assert float(to_float(final[0][2], torch.float64).abs().max()) > 1000  # a cell state of layer 0 left ±256
    assert sum(b.saturated_gates for b in plan.buffers) > 0
    plan.seal()
    plan.unseal()
    res = reverse_check(plan, final, h0, hist, T, x)
    assert res["mismatched"] == 0, f"first wrong recovered state (layer, step): {res['first_bad']}"
    check_recovered(plan, res["recovered"], h0, "test")


def test_wrong_weights_in_reverse_are_detected(path):
    """A reverse pass whose recomputation differs from the forward (here layer 1's biases moved by
    1e-4, as a non-bit-identical matmul would) must end in ReversalError."""
    model = make(RevLSTM, 2, dropout=0.2)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    masks, _ = model.sample_masks(B, "cpu")
    plan = build_plan(model, B, masks)
    x = torch.randn(50, B, IN, generator=gen)
    h0 = random_int_state(model, B, gen)
    final, hist, _ = forward_record(plan, h0, 50, x)
    plan.weights[1][1] = plan.weights[1][1] + 1e-4
    with pytest.raises(ReversalError):  # from a buffer underflow, or from the final check
        res = reverse_check(plan, final, h0, hist, 50, x)
        assert res["mismatched"] > 0
        check_recovered(plan, res["recovered"], h0, "test")


def test_wrong_dropout_mask_in_reverse_is_detected(path):
    model = make(RevGRU, 2, dropout=0.5)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    masks, _ = model.sample_masks(B, "cpu")
    plan = build_plan(model, B, masks)
    x = torch.randn(40, B, IN, generator=gen)
    h0 = random_int_state(model, B, gen)
    final, hist, _ = forward_record(plan, h0, 40, x)
    plan.masks = [None, torch.ones_like(masks[1])]
    with pytest.raises(ReversalError):
        res = reverse_check(plan, final, h0, hist, 40, x)
        check_recovered(plan, res["recovered"], h0, "test")


# ---- reverse vs store ---------------------------------------------------------------------------------

def run_mode(model, mode, x, h0_ints, seed, loss_weights):
    """One forward + backward in ``mode`` with fresh leaves; returns (y, final ints, grads dict)."""
    model.backprop = mode
    model.zero_grad(set_to_none=True)
    xl = x.clone().requires_grad_()
    floats = [to_float(h).requires_grad_() for h in h0_ints]
    torch.manual_seed(seed)  # the same dropout / DropConnect masks in both modes
    y, state = model(xl, RevState([h.clone() for h in h0_ints], floats))
    Ry, Rs = loss_weights
    loss = (y * Ry).sum() + sum((f * r).sum() for f, r in zip(state.floats, Rs)) + (y ** 2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads["x"] = xl.grad.clone()
    for l, f in enumerate(floats):
        grads[f"h0_{l}"] = f.grad.clone()
    return y.detach(), [h.clone() for h in state.ints], grads, loss.detach(), dict(model.last_stats)


@pytest.mark.parametrize("cls", [RevGRU, RevLSTM])
@pytest.mark.parametrize("layers,T,chunk,kw", [
    (1, 37, 5, dict(weight_drop=0.3)),
    (2, 45, 16, dict(dropout=0.3, weight_drop=0.2, top_size=6)),
    (3, 23, 4, dict(dropout=0.4, weight_drop=0.4, max_forget_bits=None)),
    (2, 30, 7, dict(dropout=0.3, forget=False)),
], ids=["1L", "2L-top6", "3L-nolimit", "2L-NF"])
def test_reverse_and_store_agree(cls, layers, T, chunk, kw, path):
    """Same loss and states exactly; gradients of every parameter, x and h0 equal to float rounding."""
    model = make(cls, layers, chunk=chunk, **kw)
    scale_params(model, 1.5)
    model.train()
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(T, B, IN, generator=gen)
    h0 = [torch.cat(b, 1) for b in random_int_state(model, B, gen, 0.3)]
    Ry = torch.randn(T, B, model.top_size, generator=gen)
    Rs = [torch.randn(B, c.n_blocks * c.half, generator=gen) for c in model.cells]
    yr, sr, gr, lr, str_ = run_mode(model, "reverse", x, h0, 5, (Ry, Rs))
    ys, ss, gs, ls, sts = run_mode(model, "store", x, h0, 5, (Ry, Rs))
    assert torch.equal(yr, ys)
    assert all(torch.equal(a, b) for a, b in zip(sr, ss))
    assert torch.equal(lr, ls)
    assert str_ == sts
    assert gr.keys() == gs.keys()
    for name in gr:
        assert float(gs[name].norm()) > 0, name
        assert rel_diff(gr[name], gs[name]) < 1e-5, name
    # and the dropout masks were in effect: a different seed gives a different output
    if kw.get("dropout") or kw.get("weight_drop"):
        y2, *_ = run_mode(model, "store", x, h0, 6, (Ry, Rs))
        assert not torch.equal(y2, ys)


def test_reverse_mode_without_state_loss_or_input_grad(path):
    """Loss on y only, x without grad, default (zero) initial state: still matches store."""
    model = make(RevLSTM, 2, dropout=0.2, chunk=6)
    x = torch.randn(20, B, IN)
    out = {}
    for mode in ("reverse", "store"):
        model.backprop = mode
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        y, _ = model(x)
        y.pow(2).sum().backward()
        out[mode] = (y.detach(), [p.grad.clone() for p in model.parameters()])
    assert torch.equal(out["reverse"][0], out["store"][0])
    for a, b in zip(out["reverse"][1], out["store"][1]):
        assert rel_diff(a, b) < 1e-5


# ---- bit accounting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cls,blocks", [(RevGRU, 1), (RevLSTM, 2)])
def test_last_stats_long_sequence(cls, blocks):
    T = 1000
    model = make(cls, 2, top_size=6)
    x = torch.randn(T, B, IN)
    with torch.no_grad():
        model(x)
    s = model.last_stats
    assert set(s) == {"normal_bits", "used_bits", "optimal_bits", "steps", "max_state", "gates", "saturated_gates"}
    assert s["steps"] == T
    # every forget gate of both halves of both layers at every step (z for a GRU; f and p for an LSTM)
    assert s["gates"] == T * B * (H + 6) // 2 * 2 * blocks
    assert 0 <= s["saturated_gates"] < s["gates"]
    assert 0 < s["max_state"] < 1.0 + 1e-6 or cls is RevLSTM
    assert s["normal_bits"] == 32 * T * B * (H + 6) * blocks
    assert 1.0 <= s["used_bits"] / s["optimal_bits"] <= 1.05
    assert s["normal_bits"] / s["used_bits"] > 32 / 3  # at most 3 bits per unit per multiplication
