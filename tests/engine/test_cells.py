"""RevGRUCell / RevLSTMCell: parameter layout, one-step exact inverse, store path, hand-written backward."""

from __future__ import annotations

import pytest
import torch

from revrnn_cli.engine import InformationBuffer, RevGRUCell, RevLSTMCell
from revrnn_cli.engine.fixed_point import STATE_DTYPE, to_float

CONFIGS = [
    (RevGRUCell, dict(max_forget_bits=3)),
    (RevGRUCell, dict(max_forget_bits=1)),
    (RevGRUCell, dict(max_forget_bits=None)),
    (RevGRUCell, dict(forget=False)),
    (RevLSTMCell, dict(max_forget_bits=3)),
    (RevLSTMCell, dict(max_forget_bits=5)),
    (RevLSTMCell, dict(max_forget_bits=None)),
    (RevLSTMCell, dict(forget=False)),
    (RevLSTMCell, dict(cell_update="bounded")),
    (RevLSTMCell, dict(cell_update="bounded", max_forget_bits=None)),
]
IDS = [f"{c.__name__}-{kw}" for c, kw in CONFIGS]


def make_cell(cls, kw, inp=5, hidden=8, scale=1.0, seed=0):
    torch.manual_seed(seed)
    cell = cls(inp, hidden, **kw)
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(scale)
    return cell


def rand_state(cell, batch, gen, scale=2.0):
    lim = int(scale * (1 << 23))
    return [torch.randint(-lim, lim + 1, (batch, cell.half), generator=gen, dtype=STATE_DTYPE)
            for _ in range(cell.n_blocks)]


def test_parameter_layout_and_counts():
    """Shapes from the docstrings; weight counts from the reference's `revgru.py` / `revlstm.py` (RevGRU 3 H in +
    1.5 H^2, RevLSTM
    5 H in + 2.5 H^2, plus biases on the input projection)."""
    i, H = 5, 8
    g = RevGRUCell(i, H)
    shapes = {n: tuple(p.shape) for n, p in g.named_parameters()}
    assert shapes == {"wx": (i, 3 * H), "bx": (3 * H,), "wh1": (H // 2, H), "vh1": (H // 2, H // 2),
                      "wh2": (H // 2, H), "vh2": (H // 2, H // 2)}
    assert sum(p.numel() for n, p in g.named_parameters() if n != "bx") == 3 * H * i + 1.5 * H * H
    l = RevLSTMCell(i, H)
    shapes = {n: tuple(p.shape) for n, p in l.named_parameters()}
    assert shapes == {"wx": (i, 5 * H), "bx": (5 * H,), "wh1": (H // 2, 5 * H // 2), "wh2": (H // 2, 5 * H // 2)}
    assert sum(p.numel() for n, p in l.named_parameters() if n != "bx") == 5 * H * i + 2.5 * H * H
    nf = RevLSTMCell(i, H, forget=False)
    assert tuple(nf.wx.shape) == (i, 3 * H) and tuple(nf.wh1.shape) == (H // 2, 3 * H // 2)
    assert g.n_blocks == 2 and l.n_blocks == 4


def test_odd_hidden_size_rejected():
    for cls in (RevGRUCell, RevLSTMCell):
        with pytest.raises(ValueError):
            cls(3, 7)


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_step_then_reverse_step_is_identity(cls, kw, scale):
    """From random (not only reachable) states: many steps forward, then reverse, bit-exact at every step.
    Large weights saturate the gates so that Z hits both ends of its range."""
    cell = make_cell(cls, kw, scale=scale)
    gen = torch.Generator().manual_seed(1)
    B, T = 3, 60
    x = torch.randn(T, B, cell.input_size, generator=gen) * scale
    wx, bx, *Wh = [w.detach() for w in cell.weights()]
    with torch.no_grad():
        XP = cell.project(x, wx, bx)
        buf = InformationBuffer((B, cell.half), max_forget_bits=cell.max_forget_bits) if cell.forget else None
        state = rand_state(cell, B, gen)
        hist = [state]
        for t in range(T):
            state = cell.step(XP[t], state, Wh, buf)
            hist.append(state)
        if buf is not None:
            assert not buf.is_empty()
            buf.seal()
            buf.unseal()
        for t in range(T - 1, -1, -1):
            state, _ = cell.reverse_step(XP[t], state, Wh, buf)
            assert all(torch.equal(a, b) for a, b in zip(state, hist[t])), f"step {t}"
        if buf is not None:
            assert buf.is_empty()
    # the state actually moved (a cell that did nothing would pass the round trip trivially)
    assert not all(torch.equal(a, b) for a, b in zip(hist[0], hist[-1]))


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_store_step_matches_step_and_its_floats(cls, kw):
    """The autograd path follows the identical integer trajectory; its float values are the int values."""
    cell = make_cell(cls, kw)
    gen = torch.Generator().manual_seed(2)
    B, T = 2, 20
    x = torch.randn(T, B, cell.input_size, generator=gen)
    wx, bx, *Wh = [w.detach() for w in cell.weights()]
    XP = cell.project(x, wx, bx)
    mk = lambda: InformationBuffer((B, cell.half), max_forget_bits=cell.max_forget_bits) if cell.forget else None  # noqa: E731
    b1, b2 = mk(), mk()
    s = rand_state(cell, B, gen, 0.5)
    s1, s2, f2 = list(s), list(s), [to_float(h) for h in s]
    for t in range(T):
        s1 = cell.step(XP[t], s1, Wh, b1)
        s2, f2 = cell.store_step(XP[t], s2, f2, Wh, b2)
        assert all(torch.equal(a, b) for a, b in zip(s1, s2))
        assert all(torch.equal(to_float(a), f) for a, f in zip(s2, f2))
        assert torch.equal(cell.output(s1), to_float(torch.cat((s1[0], s1[1]), 1)))
    if b1 is not None:
        assert b1.stored_bytes == b2.stored_bytes and torch.equal(b1.head, b2.head)


@pytest.mark.parametrize("cls", [RevGRUCell, RevLSTMCell])
def test_no_forgetting_cells_need_no_buffer(cls):
    """NF cells (multiplier exactly 1) reverse with no buffer at all (passing None would fail otherwise)."""
    cell = make_cell(cls, dict(forget=False))
    gen = torch.Generator().manual_seed(3)
    wx, bx, *Wh = [w.detach() for w in cell.weights()]
    XP = cell.project(torch.randn(5, 2, cell.input_size, generator=gen), wx, bx)
    s0 = rand_state(cell, 2, gen)
    s = s0
    for t in range(5):
        s = cell.step(XP[t], s, Wh, None)
    for t in range(4, -1, -1):
        s, _ = cell.reverse_step(XP[t], s, Wh, None)
    assert all(torch.equal(a, b) for a, b in zip(s, s0))


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_hand_backward_matches_autograd_of_store_step(cls, kw):
    """One step: the reverse-mode local backward (from the inverse's recomputed activations) equals
    autograd through store_step, for the previous state and the projected input."""
    cell = make_cell(cls, kw, scale=2.0)
    gen = torch.Generator().manual_seed(4)
    B = 3
    x = torch.randn(1, B, cell.input_size, generator=gen)
    wx, bx, *Wh = [w.detach() for w in cell.weights()]
    XP = cell.project(x, wx, bx)[0]
    mk = lambda: InformationBuffer((B, cell.half), max_forget_bits=cell.max_forget_bits) if cell.forget else None  # noqa: E731
    s0 = rand_state(cell, B, gen, 0.8)
    # autograd
    xp = XP.clone().requires_grad_()
    f0 = [to_float(h).requires_grad_() for h in s0]
    new, newf = cell.store_step(xp, list(s0), list(f0), Wh, mk())
    R = [torch.randn(B, cell.half, generator=gen) for _ in newf]
    loss = sum((f * r).sum() for f, r in zip(newf, R))
    loss.backward()
    # hand-written
    buf = mk()
    s1 = cell.step(XP, list(s0), Wh, buf)
    assert all(torch.equal(a, b) for a, b in zip(s1, new))
    back, saved = cell.reverse_step(XP, s1, Wh, buf)
    assert all(torch.equal(a, b) for a, b in zip(back, s0))
    dxp = torch.empty_like(XP)
    dprev = cell.backward(saved, [r.clone() for r in R], [w.t().contiguous() for w in Wh], dxp)
    for got, f in zip(dprev, f0):
        torch.testing.assert_close(got, f.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dxp, xp.grad, rtol=1e-5, atol=1e-6)
