"""The RevLSTM's bounded (convex) update rule next to the paper's (cells.RevLSTMCell, docs/stability.md).

* Exact reversal over long sequences with forget gates driven to saturation, 1-3 layers, and the
  bound |c|, |h| <= 1 + 2^-3 that the convex update promises (the paper's rule, on the same weights,
  integrates far past it: the test can tell the two apart).
* ``reverse`` and ``store`` backprop: bit-identical losses and states, gradients equal to float
  rounding.
* The hand-written local backward against autograd of the documented equations (float64, the
  quantised gates as constants with a straight-through gradient): each partial derivative of the
  cell docstring, to float32 rounding.
* The option is validated in one place and reaches the cells from the specs.
"""

from __future__ import annotations

import pytest
import torch

from revrnn_cli.engine import InformationBuffer, RevLSTM, RevLSTMCell
from revrnn_cli.engine.cells import parse_cell_update
from revrnn_cli.engine.fixed_point import FORGET_ONE, HIDDEN_SCALE, to_float
from revrnn_cli.models.lm import LMConfig
from revrnn_cli.models.nmt import NMTConfig

from .test_reversible import B, IN, H, exact_reversal, run_mode
from .util import build_plan, forward_record, random_int_state, rel_diff, scale_params

BOUND = 1.0 + 2.0 ** -3  # |state| bound of the convex update (RevLSTMCell docstring)


def saturating(layers: int, update: str, seed: int = 0, **kw) -> RevLSTM:
    """A stack whose forget gates f and p often quantise to exactly 1024/1024: large weights and
    forget-gate biases spread over 0..12 (the other units still forget, so the buffers hold bits)."""
    torch.manual_seed(seed)
    model = RevLSTM(IN, H, layers, cell_update=update, **kw)
    scale_params(model, 2.0)
    with torch.no_grad():
        for c in model.cells:
            H2 = c.half
            for j in (0, 1):  # both halves: columns [f, p] of each half's block
                c.bx[j * c.block : j * c.block + 2 * H2] += torch.linspace(0.0, 12.0, 2 * H2)
    return model


def max_abs_state(hist) -> float:
    return max(float(s.abs().max()) for layer in hist for s in layer) / HIDDEN_SCALE


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_bounded_update_reverses_exactly_and_stays_bounded(layers):
    """2,000 steps with saturating forget gates, locked dropout and DropConnect: every state recovered
    bit for bit, buffers empty, and every |c|, |h| <= 1.125; the paper's rule on the same weights
    leaves that bound by far (its saturated units integrate)."""
    T = 2000
    model = saturating(layers, "bounded", dropout=0.2, weight_drop=0.2, chunk=11)
    plan, hist, _ = exact_reversal(model, T, seed=layers)
    sat = sum(b.saturated_gates for b in plan.buffers) / sum(b.gates_seen for b in plan.buffers)
    assert sat > 0.2, sat  # the gates really saturate
    assert max_abs_state(hist) <= BOUND
    if layers == 1:
        paper = saturating(layers, "paper", dropout=0.2, weight_drop=0.2, chunk=11)
        gen = torch.Generator().manual_seed(0)
        plan_p = build_plan(paper, B)
        _, hist_p, _ = forward_record(plan_p, random_int_state(paper, B, gen), T, torch.randn(T, B, IN, generator=gen))
        assert max_abs_state(hist_p) > 50.0


def test_bounded_update_holds_a_saturated_state():
    """Z = 1024 multiplies by exactly 1 and the convex term's weight 1 - Z/1024 is exactly 0: the
    state is held unchanged (the paper's rule adds o tanh(c) to it instead)."""
    cell = RevLSTMCell(IN, H, cell_update="bounded")
    H2 = cell.half
    with torch.no_grad():
        for p in cell.parameters():
            p.zero_()
        for j in (0, 1):
            cell.bx[j * cell.block : j * cell.block + 2 * H2] = 40.0  # f = p = 1 exactly in float32
            cell.bx[j * cell.block + 2 * H2 : j * cell.block + 4 * H2] = 40.0  # i = o = 1
            cell.bx[j * cell.block + 4 * H2 :] = 1.0  # g = tanh(1)
    wx, bx, *Wh = [w.detach() for w in cell.weights()]
    gen = torch.Generator().manual_seed(0)
    XP = cell.project(torch.randn(5, B, IN, generator=gen), wx, bx)
    state = [torch.randint(-(1 << 23), 1 << 23, (B, H2), generator=gen) for _ in range(4)]
    buf = InformationBuffer((B, H2))
    s = list(state)
    for t in range(5):
        s = cell.step(XP[t], s, Wh, buf)
    assert all(torch.equal(a, b) for a, b in zip(s, state))
    paper = RevLSTMCell(IN, H)
    paper.load_state_dict(cell.state_dict())
    s = paper.step(XP[0], list(state), Wh, InformationBuffer((B, H2)))
    assert not torch.equal(s[2], state[2])


@pytest.mark.parametrize("layers,T,chunk,kw", [
    (1, 300, 16, dict(weight_drop=0.3)),
    (2, 120, 7, dict(dropout=0.3, weight_drop=0.2, top_size=6)),
    (3, 40, 4, dict(dropout=0.4, max_forget_bits=None)),
], ids=["1L-T300", "2L-top6", "3L-nolimit"])
def test_bounded_reverse_and_store_agree(layers, T, chunk, kw):
    """Losses, outputs and states bit for bit; every gradient (parameters, x, h0) to float rounding."""
    torch.manual_seed(layers)
    model = RevLSTM(IN, H, layers, chunk=chunk, cell_update="bounded", **kw)
    scale_params(model, 2.0)
    model.train()
    gen = torch.Generator().manual_seed(21)
    x = torch.randn(T, B, IN, generator=gen)
    h0 = [torch.randint(-(1 << 22), 1 << 22, (B, c.n_blocks * c.half), generator=gen) for c in model.cells]
    Ry = torch.randn(T, B, model.top_size, generator=gen)
    Rs = [torch.randn(B, c.n_blocks * c.half, generator=gen) for c in model.cells]
    yr, sr, gr, lr, str_ = run_mode(model, "reverse", x, h0, 5, (Ry, Rs))
    ys, ss, gs, ls, sts = run_mode(model, "store", x, h0, 5, (Ry, Rs))
    assert torch.equal(yr, ys) and torch.equal(lr, ls)
    assert all(torch.equal(a, b) for a, b in zip(sr, ss))
    assert str_ == sts
    for name in gr:
        assert float(gs[name].norm()) > 0, name
        assert rel_diff(gr[name], gs[name]) < 1e-5, name


# ---- the hand-written backward against the documented equations --------------------------------

def documented_half(cell: RevLSTMCell, wh, xp, hb, h, c, Z, c_engine):
    """One half-update in float64 as the cell docstring writes it: gates from (xp, hb); the quantised
    gates q = Z/1024 enter by value, with the straight-through gradient to the float gates. The
    pre-activations and the new c take the engine's values (so both sides see the same gates and the
    same tanh(c')); their gradients are float64."""
    H2, m = cell.half, cell.m
    a64 = xp + hb @ wh.double()
    a32 = torch.addmm(xp.detach().float(), hb.detach().float(), wh)  # the engine's pre-activations, by value
    a = a32.double() + (a64 - a64.detach())
    s = torch.sigmoid(a[:, : 4 * H2])
    g = torch.tanh(a[:, 4 * H2 :])
    fp = m * s[:, : 2 * H2] + (1 - m)
    q = fp + (Z.double() / FORGET_ONE - fp).detach()  # value Z/1024, gradient 1 to the float gate
    qf, qp = q[:, :H2], q[:, H2:]
    i, o = s[:, 2 * H2 : 3 * H2], s[:, 3 * H2 :]
    c_new = qf * c + ((1 - qf) * i * g if cell.bounded else i * g)
    c_new = c_engine + (c_new - c_new.detach())  # tanh sees the engine's new c (Mul's low digit differs)
    b = o * torch.tanh(c_new)
    h_new = qp * h + ((1 - qp) * b if cell.bounded else b)
    return h_new, c_new


@pytest.mark.parametrize("update", ["paper", "bounded"])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_hand_backward_is_the_documented_gradient(update, scale):
    """One half-update: ``_backhalf`` (reverse mode's hand-written gradient, fed by ``_unhalf``) equals
    autograd of :func:`documented_half` for dL/dh_old, dL/dc_old, dL/dh_other and every gate
    pre-activation, to float32 rounding (rel 1e-5). Large weights (scale 3) put Z at both ends."""
    torch.manual_seed(7)
    cell = RevLSTMCell(IN, H, cell_update=update)
    H2 = cell.half
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(scale)
        cell.bx[: 2 * H2] += torch.linspace(0.0, 4.0 * scale, 2 * H2)  # some f, p at exactly 1 when scale > 1
    gen = torch.Generator().manual_seed(3)
    Bn = 6
    wx, bx, wh1, _ = [w.detach() for w in cell.weights()]
    xp = cell.project(torch.randn(1, Bn, IN, generator=gen), wx[:, : cell.block], bx[: cell.block])[0]
    hb = to_float(torch.randint(-(1 << 23), 1 << 23, (Bn, H2), generator=gen))
    h0, c0 = (torch.randint(-(3 << 22), 3 << 22, (Bn, H2), generator=gen) for _ in range(2))
    buf = InformationBuffer((Bn, H2))
    h1, c1 = cell._half(xp, hb, h0, c0, wh1, buf)
    h_back, c_back, saved = cell._unhalf(xp, hb, h1, c1, wh1, buf)
    assert torch.equal(h_back, h0) and torch.equal(c_back, c0) and buf.is_empty()
    dh, dc = torch.randn(Bn, H2, generator=gen), torch.randn(Bn, H2, generator=gen)
    ds = torch.empty(Bn, cell.block)
    dh_old, dc_old, dhb = cell._backhalf(saved, dh.clone(), dc.clone(), torch.zeros(Bn, H2), wh1.t().contiguous(), ds)
    # autograd of the documented equations, at the engine's values
    Z = saved[6]
    if scale > 1:
        assert bool((Z == FORGET_ONE).any()) and bool((Z < FORGET_ONE).any())  # both kinds of gate
    xpd = xp.double().requires_grad_()
    hbd = hb.double().requires_grad_()
    hd, cd = to_float(h0, torch.float64).requires_grad_(), to_float(c0, torch.float64).requires_grad_()
    hn, cn = documented_half(cell, wh1, xpd, hbd, hd, cd, Z, to_float(c1, torch.float64))
    ((hn * dh.double()).sum() + (cn * dc.double()).sum()).backward()
    for got, want, name in ((dh_old, hd.grad, "h"), (dc_old, cd.grad, "c"), (dhb, hbd.grad, "h_other"),
                            (ds, xpd.grad, "pre-activations")):
        assert rel_diff(got, want) < 2e-6, (name, rel_diff(got, want))


# ---- the option -----------------------------------------------------------------------------------

def test_cell_update_validated_once_and_threaded_to_the_cells():
    assert parse_cell_update("bounded") == "bounded"
    for bad in (dict(value="convex"), dict(value="bounded", cell="revgru"), dict(value="bounded", forget=False)):
        with pytest.raises(ValueError):
            parse_cell_update(**bad)
    with pytest.raises(ValueError):
        RevLSTM(IN, H, 1, cell_update="bounded", forget=False)
    with pytest.raises(ValueError):
        LMConfig(cell="lstm", cell_update="bounded")
    with pytest.raises(ValueError):
        NMTConfig(cell="revgru", cell_update="bounded")
    cfg = LMConfig(cell="revlstm", cell_update="bounded", emb_size=8, hidden_size=8, layers=2)
    from revrnn_cli.models.lm import RNNLanguageModel

    lm = RNNLanguageModel(cfg, 20)
    assert [c.cell_update for c in lm.rnn.cells] == ["bounded", "bounded"]
    from revrnn_cli.models.nmt import Seq2Seq

    nmt = Seq2Seq(NMTConfig(cell="revlstm", cell_update="bounded", emb_size=8, hidden_size=8, context="emb"), 11, 13)
    assert all(c.cell_update == "bounded" for s in (nmt.encoder, nmt.decoder) for c in s.cells)
    assert RevLSTM(IN, H).cells[0].cell_update == "paper"  # the engine's default is the paper's cell
