"""The fixed-point engine against an independent float64 reference of the same equations (no quantisation).

* The reference itself is checked with ``torch.autograd.gradcheck``.
* Local (teacher-forced) check: each half-update of the engine, started from the engine's own
  previous state, must agree with the reference's half-update within what the two quantisations
  explain. This bound is rigorous, and it pins down the equations (gate order, halves order, squash,
  tanh of the *new* c, no-forgetting multiplier 1): a wrong layout gives errors of order 0.1.
* Global check over T = 20 steps and gradient check: documented statistical bounds.
"""

from __future__ import annotations

import pytest
import torch

from revrnn_cli.engine import RevGRU, RevLSTM, RevState
from revrnn_cli.engine.fixed_point import to_float

from .reference import RefLayer, layers_from_model, ref_stack
from .util import build_plan, forward_record, random_int_state, scale_params

B, IN, H, TOP = 3, 4, 8, 6
# float32 slack: the engine computes pre-activations (fan-in <= IN + H/2 = 8 terms of magnitude
# <~ 3 with these weights and inputs), sigmoid/tanh and the gate products in float32, i.e. to a few
# 1e-7 absolute each; 1e-5 covers them with a wide margin while staying 12x below 2^-13.
F32_SLACK = 1e-5
Q_GATE = 2.0 ** -11  # |Z/1024 - z| <= 2^-11 (round to nearest)
Q_DIGIT = 2.0 ** -13  # Mul(h, Z) - h Z/1024 in (-Z, Z) units of 2^-23, and Z <= 1024
Q_UPDATE = 2.0 ** -24  # |U 2^-23 - u| <= 2^-24


CONFIGS = [
    (RevGRU, dict()),
    (RevGRU, dict(max_forget_bits=None)),
    (RevGRU, dict(max_forget_bits=1)),
    (RevGRU, dict(forget=False)),
    (RevLSTM, dict()),
    (RevLSTM, dict(max_forget_bits=5)),
    (RevLSTM, dict(max_forget_bits=None)),
    (RevLSTM, dict(forget=False)),
    (RevLSTM, dict(cell_update="bounded")),
    (RevLSTM, dict(cell_update="bounded", max_forget_bits=None)),
]
IDS = [f"{c.__name__}-{kw}" for c, kw in CONFIGS]


def make(cls, kw, layers=2, seed=0, scale=1.5):
    torch.manual_seed(seed)
    m = cls(IN, H, layers, top_size=TOP, **kw)
    scale_params(m, scale)
    return m


# ---- the reference is a correct differentiable function ------------------------------------------

@pytest.mark.parametrize("cls,kw", [(RevGRU, {}), (RevLSTM, {}), (RevLSTM, dict(forget=False)),
                                    (RevLSTM, dict(cell_update="bounded")),
                                    (RevGRU, dict(forget=False, max_forget_bits=None))], ids=str)
def test_reference_gradcheck(cls, kw):
    torch.manual_seed(0)
    model = cls(3, 4, 2, **kw)
    layers = layers_from_model(model, requires_grad=True)
    params = [p for L in layers for p in L.leaves()]
    n = len(params)
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = [(0.5 * torch.randn(2, c.n_blocks * c.half, dtype=torch.float64)).requires_grad_() for c in model.cells]

    def fn(x, *rest):
        ps, hs = rest[:n], rest[n:]
        i = 0
        for L in layers:
            for k in L.p:
                L.p[k] = ps[i]
                i += 1
        y, final, _ = ref_stack(layers, x, list(hs))
        return (y, *final)

    assert torch.autograd.gradcheck(fn, (x, *params, *h0), eps=1e-6, atol=1e-5, rtol=1e-4)


# ---- local, teacher-forced: rigorous per-half bounds -------------------------------------------------

def check_local(model, T=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    plan = build_plan(model, B)
    x = torch.randn(T, B, IN, generator=gen)
    h0 = random_int_state(model, B, gen, 0.5)
    _, hist, _ = forward_record(plan, h0, T, x)
    refs = layers_from_model(model)
    worst = 0.0
    for l, (cell, ref) in enumerate(zip(model.cells, refs)):
        H2 = cell.half
        prev_all = torch.stack([torch.cat(h0[l], 1)] + hist[l][:-1])  # [T, B, blocks*H2], state before step t
        new_all = torch.stack(hist[l])
        inp = x if l == 0 else to_float(torch.stack(hist[l - 1])[..., : model.cells[l - 1].hidden_size])
        # all steps at once: the reference is row-wise
        xin = inp.reshape(T * B, -1).double()
        P = to_float(prev_all.reshape(T * B, -1), torch.float64)
        N = to_float(new_all.reshape(T * B, -1), torch.float64)
        blk = lambda S, k: S[:, k * H2 : (k + 1) * H2]  # noqa: E731
        # the engine feeds the other half to the gates as float32 (to_float): use exactly those values
        P32 = to_float(prev_all.reshape(T * B, -1)).double()
        N32 = to_float(new_all.reshape(T * B, -1)).double()
        mult = Q_GATE + F32_SLACK if cell.forget else 0.0  # multiplier error per unit of |state|
        base = (Q_DIGIT if cell.forget else 0.0) + Q_UPDATE + F32_SLACK
        # a convex update weighs its additive term (|term| <= 1) by 1 - Z/1024 instead of 1 - z
        conv_c = conv_h = Q_GATE if getattr(cell, "bounded", False) else 0.0
        if ref.kind == "gru":
            halves = [(1, 0, blk(P32, 1)), (2, 1, blk(N32, 0))]  # half 1 from old h2, half 2 from new h1
            for j, k, hb in halves:
                want = ref.gru_half(j, xin, hb, blk(P, k))
                err = (blk(N, k) - want).abs()
                bound = mult * blk(P, k).abs() + base
                assert bool((err <= bound).all()), f"layer {l} half {j}: max excess {float((err - bound).max())}"
                worst = max(worst, float((err / bound).max()))
        else:
            halves = [(1, 0, 2, blk(P32, 1)), (2, 1, 3, blk(N32, 0))]
            for j, kh, kc, hb in halves:
                h_want, c_want = ref.lstm_half(j, xin, hb, blk(P, kh), blk(P, kc))
                errc = (blk(N, kc) - c_want).abs()
                bc = mult * blk(P, kc).abs() + base + conv_c
                assert bool((errc <= bc).all()), f"layer {l} c{j}: max excess {float((errc - bc).max())}"
                # h uses tanh of the new c: |tanh(c) - tanh(c')| <= |c - c'| and o <= 1
                errh = (blk(N, kh) - h_want).abs()
                bh = mult * blk(P, kh).abs() + base + conv_h + errc
                assert bool((errh <= bh).all()), f"layer {l} h{j}: max excess {float((errh - bh).max())}"
                worst = max(worst, float((errc / bc).max()), float((errh / bh).max()))
    return worst


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_each_half_update_matches_reference_within_quantisation(cls, kw):
    """Per element: |engine - reference| <= (2^-11 + f32)|state_old| + 2^-13 + 2^-24 + f32 (forgetting
    cells: gate rounding + the buffer's low digit + update rounding), and 2^-24 + f32 for the
    no-forgetting cells, whose multiplier must be exactly 1. The bounded RevLSTM weighs its additive
    term (at most 1 in size) by the quantised 1 - Z/1024: another 2^-11."""
    worst = check_local(make(cls, kw, scale=2.0))
    assert worst <= 1.0


def test_local_check_is_sharp():
    """The local check must catch a layout error: the reference with the halves' column blocks of the
    input projection swapped fails it (guards against a vacuous bound)."""
    model = make(RevGRU, {}, layers=1, scale=2.0)
    with torch.no_grad():
        wx = model.cells[0].wx
        b = model.cells[0].block
        swapped = torch.cat((wx[:, b:], wx[:, :b]), 1)
    refs_ok = layers_from_model(model)
    refs_bad = [RefLayer(r.kind, dict(r.p, wx=swapped.double()), r.hidden, r.m, r.forget) for r in refs_ok]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, B, IN, generator=gen, dtype=torch.float64)
    h0 = [torch.zeros(B, H, dtype=torch.float64)]
    y_ok, _, _ = ref_stack(refs_ok, x, h0)
    y_bad, _, _ = ref_stack(refs_bad, x, h0)
    with torch.no_grad():
        y_fx, _ = model(x.float())
    assert float((y_fx.double() - y_ok).abs().max()) < 5e-3
    assert float((y_fx.double() - y_bad).abs().max()) > 5e-2


# ---- global: outputs, final states and gradients over T = 20 steps -----------------------------------

def global_run(cls, kw, T=20, dropout=0.0, weight_drop=0.0, seed=0):
    model = make(cls, kw, scale=1.5, seed=seed)
    model.dropout, model.weight_drop = dropout, weight_drop
    model.train()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(T, B, IN, generator=gen)
    h0_int = [torch.cat(b, 1) for b in random_int_state(model, B, gen, 0.3)]
    Ry = torch.randn(T, B, TOP, generator=gen, dtype=torch.float64)
    Rs = [torch.randn(B, c.n_blocks * c.half, generator=gen, dtype=torch.float64) for c in model.cells]

    torch.manual_seed(99)
    masks, wmasks = model.sample_masks(B, "cpu")
    # engine (reverse mode)
    xl = x.clone().requires_grad_()
    floats = [to_float(h).requires_grad_() for h in h0_int]
    torch.manual_seed(99)  # the same masks as just sampled
    y, state = model(xl, RevState([h.clone() for h in h0_int], floats))
    loss = (y.double() * Ry).sum() + sum((f.double() * r).sum() for f, r in zip(state.floats, Rs))
    loss.backward()
    g_fx = [p.grad for p in model.parameters()] + [xl.grad] + [f.grad for f in floats]
    # reference
    refs = layers_from_model(model, wmasks, requires_grad=True)
    xr = x.double().requires_grad_()
    h0r = [to_float(h, torch.float64).requires_grad_() for h in h0_int]
    yr, final_r, _ = ref_stack(refs, xr, h0r, masks)
    loss_r = (yr * Ry).sum() + sum((f * r).sum() for f, r in zip(final_r, Rs))
    loss_r.backward()
    g_ref = [p.grad for L in refs for p in L.leaves()] + [xr.grad] + [h.grad for h in h0r]
    state_err = max(float((to_float(a, torch.float64) - b.detach()).abs().max()) for a, b in zip(state.ints, final_r))
    y_err = float((y.detach().double() - yr.detach()).abs().max())
    return y_err, state_err, torch.cat([g.flatten().double() for g in g_fx]), torch.cat([g.flatten() for g in g_ref])


@pytest.mark.parametrize("cls,kw", CONFIGS, ids=IDS)
def test_outputs_and_gradients_close_to_reference(cls, kw):
    """T = 20, two layers (top layer narrower), locked dropout and DropConnect on.

    Outputs/states: the per-half-update error is bounded (test above) by 2^-11|h| + 2^-13 + 2^-24 ≈ 6.1e-4
    for |h| <= 1, but it is zero-mean rounding noise (Z = round(1024 z); the low digit comes from the
    buffer) with a standard deviation of about 2^-10/√12·|h| + 2^-13/√3 ≈ 1.5e-4. With these weights the
    recurrence is not expansive (per-step gain ≈ z + small cross terms), so over at most 2·20 half-updates
    per unit (plus the lower layer's error entering through weights of norm < 1) the error behaves like a
    random walk: ≈ √40·1.5e-4 ≈ 1e-3. We allow 5e-3 (the worst case with every rounding aligned, 2.4e-2,
    is not reachable in practice). No-forgetting cells only round the update (2^-24) and float32 gates:
    40·(2^-24 + 1e-6) ≈ 5e-5, allowed 1e-4.

    Gradients: reverse mode gives the exact gradient of the real-valued recurrence evaluated along the
    quantised trajectory, with Z/1024 instead of z in ∂h_t/∂h_{t-1} (straight-through). The trajectory
    error (≲ 1e-3) perturbs each Jacobian by O(1e-3), and |Z/1024 - z|/z <= 2^-11/2^-3 = 4e-3 per factor
    for k = 3; accumulated over <= 20 steps with random signs that is ≈ √20·4e-3/2 ≈ 1e-2 at worst for a
    single component, less for the whole vector. We require a relative error < 3e-2 and a cosine > 0.999;
    no-forgetting cells (no gate quantisation) must match to 1e-4.
    """
    y_err, state_err, g_fx, g_ref = global_run(cls, kw, dropout=0.3, weight_drop=0.3)
    nf = kw.get("forget") is False
    tol = 1e-4 if nf else 5e-3
    assert y_err < tol and state_err < tol, (y_err, state_err)
    assert y_err > 0  # the engine really quantises (and is not secretly float)
    cos = float(torch.nn.functional.cosine_similarity(g_fx, g_ref, 0))
    rel = float((g_fx - g_ref).norm() / g_ref.norm())
    assert cos > 0.999 and rel < (1e-4 if nf else 3e-2), (cos, rel)
