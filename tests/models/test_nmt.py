"""The attention encoder-decoder: reverse = store, exact reversal with padding and slices, decoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from revrnn_cli.data.translation import collate
from revrnn_cli.engine.buffer import InformationBuffer
from revrnn_cli.engine.fixed_point import ReversalError
from revrnn_cli.engine.reversible import Plan, check_recovered, effective_weights, forward_steps, make_buffers, reverse_steps
from revrnn_cli.models.nmt import NMTConfig, Seq2Seq
from revrnn_cli.models.search import beam_search, greedy

V_SRC, V_TGT = 23, 19


def make_batch(B=5, S=9, T=7, seed=0):
    """Pairs of varied lengths (so the source is padded), in collate's layout."""
    g = torch.Generator().manual_seed(seed)
    src_len = [S] + torch.randint(1, S + 1, (B - 1,), generator=g).tolist()
    tgt_len = torch.randint(1, T, (B,), generator=g).tolist()
    pairs = SimpleNamespace(src=[torch.randint(4, V_SRC, (n,), generator=g).tolist() for n in src_len],
                            tgt=[torch.randint(4, V_TGT, (n,), generator=g).tolist() for n in tgt_len])
    return collate(pairs, list(range(B)))


def model(cell="revgru", context="emb+slice:3", backprop="reverse", seed=0, **kw):
    cfg = NMTConfig(cell=cell, emb_size=8, hidden_size=12, context=context, chunk=4, **kw)
    torch.manual_seed(seed)
    return Seq2Seq(cfg, V_SRC, V_TGT, backprop=backprop)


def loss_and_grads(m, batch, seed=1):
    m.train()
    torch.manual_seed(seed)  # the same dropout masks in both modes
    res = m.loss(batch)
    m.zero_grad()
    res.loss_sum.backward()
    return res, {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize("cell", ["revgru", "revlstm", "revlstm-bounded"])
@pytest.mark.parametrize("context", ["emb+slice:3", "slice:6", "emb", "hidden"])
def test_reverse_matches_store(cell, context):
    """Same loss bit for bit; gradients equal to float rounding (reverse recomputes, store stores)."""
    batch = make_batch()
    cell, _, update = cell.partition("-")
    kw = dict(layers=2, cell_update=update or "paper")
    res_r, g_r = loss_and_grads(model(cell, context, "reverse", **kw), batch)
    res_s, g_s = loss_and_grads(model(cell, context, "store", **kw), batch)
    assert torch.equal(res_r.loss_sum.detach(), res_s.loss_sum.detach())
    assert res_r.correct == res_s.correct
    for name in g_s:
        scale = g_s[name].abs().max().clamp_min(1e-12)
        assert ((g_r[name] - g_s[name]).abs().max() / scale) < 1e-5, name
    assert any(g.abs().sum() > 0 for g in g_r.values())
    # the paper's accounting, separately per side (the encoder also pays for its stored units)
    for side in ("enc", "dec"):
        assert res_r.bits[f"{side}_used_bits"] > 0 and res_r.bits[f"{side}_normal_bits"] > 0
    assert {k: v for k, v in res_r.bits.items() if "kept" not in k} == res_s.bits


def test_gradient_comparison_can_fail():
    """A negative control for the comparison above: a different model gives different gradients."""
    batch = make_batch()
    _, g1 = loss_and_grads(model(seed=0), batch)
    _, g2 = loss_and_grads(model(seed=5), batch)
    assert not all(torch.allclose(g1[n], g2[n]) for n in g1)


def _encoder_plan(m, batch, restore=None, buffers=None):
    enc = m.encoder
    S, B = batch.src.shape
    cells = list(enc.cells)
    return Plan(cells, effective_weights(cells, enc.weights()), [None] * len(cells),
                buffers if buffers is not None else make_buffers(cells, B, "cpu"), 4, "encoder",
                m.active(batch.src_len, S), restore)


@pytest.mark.parametrize("cell", ["revgru", "revlstm", "revlstm-bounded"])
def test_encoder_reversal_exact_with_padding_and_slice(cell):
    """Every intermediate state comes back bit for bit; slice units from their stored copy only."""
    cell, _, update = cell.partition("-")
    m = model(cell, "emb+slice:4", layers=2, cell_update=update or "paper").eval()
    batch = make_batch(B=6, S=11)
    S, B = batch.src.shape
    x = m.src_emb(batch.src)
    h0 = [c.init_state(B) for c in m.encoder.cells]
    plan = _encoder_plan(m, batch)
    seen, slices = {}, []
    top = len(m.encoder.cells) - 1

    def record(l, t, blocks):
        seen[(l, t)] = [b.clone() for b in blocks]
        if l == top:
            slices.append(blocks[0][:, :4].clone())

    state = forward_steps(plan, [list(s) for s in h0], S, lambda a, b: x[a:b], on_state=record)
    plan.seal()

    def restore(l, t):
        if l != top:
            return None
        return h0[top][0][:, :4] if t == 0 else slices[t - 1]

    back = Plan(plan.cells, plan.weights, plan.masks, plan.buffers, 4, "encoder", plan.active, restore)
    back.unseal()

    def check(l, t, blocks):  # the state before step t must equal the state after step t - 1
        want = seen[(l, t - 1)] if t > 0 else h0[l]
        for got, exp in zip(blocks, want):
            assert torch.equal(got, exp), (l, t)

    state = reverse_steps(back, state, S, lambda a, b: x[a:b], on_state=check)
    check_recovered(back, state, h0, "encoder")


def test_slice_units_need_their_stored_copy():
    """Negative control: the slice is left out of the buffer, so without restoring it reversal fails."""
    m = model("revgru", "slice:5").eval()
    batch = make_batch()
    S, B = batch.src.shape
    x = m.src_emb(batch.src)
    h0 = [c.init_state(B) for c in m.encoder.cells]
    plan = _encoder_plan(m, batch)
    state = forward_steps(plan, [list(s) for s in h0], S, lambda a, b: x[a:b])
    with pytest.raises(ReversalError):
        reverse_steps(plan, state, S, lambda a, b: x[a:b])
        check_recovered(plan, state, h0, "encoder")


@pytest.mark.parametrize("cell", ["revgru", "revlstm", "revlstm-bounded"])
def test_padded_steps_change_neither_state_nor_buffer(cell):
    cell, _, update = cell.partition("-")
    m = model(cell, "emb+slice:3", cell_update=update or "paper").eval()
    batch = make_batch(B=6, S=10)
    S, B = batch.src.shape
    x = m.src_emb(batch.src)
    plan = _encoder_plan(m, batch)
    after, pushed = {}, {}
    buf: InformationBuffer = plan.buffers[0]

    def record(l, t, blocks):
        after[t] = torch.cat(blocks, 1).clone()
        pushed[t] = buf.stored_bytes

    forward_steps(plan, [c.init_state(B) for c in m.encoder.cells], S, lambda a, b: x[a:b], on_state=record)
    lengths = batch.src_len.tolist()
    assert min(lengths) < S  # the batch really is padded
    for b, n in enumerate(lengths):
        for t in range(n, S):
            assert torch.equal(after[t][b], after[n - 1][b]), (b, t)
    short = [b for b, n in enumerate(lengths) if n < S]
    # after every sentence has ended nothing more is stored (only the longest one still runs)
    assert short and pushed[S - 1] >= pushed[max(lengths[b] for b in short) - 1]


def test_baseline_packed_encoder_final_state_ignores_padding():
    m = model("gru", "hidden").eval()
    batch = make_batch(B=4, S=8)
    with torch.no_grad():
        st = m.start(batch.src, batch.src_len)
        for b, n in enumerate(batch.src_len.tolist()):
            alone = m.start(batch.src[:n, b : b + 1], batch.src_len[b : b + 1])
            torch.testing.assert_close(st.state[0][:, b], alone.state[0][:, 0])


@pytest.mark.parametrize("cell,context", [("revgru", "emb+slice:3"), ("revlstm", "hidden"), ("lstm", "hidden")])
def test_beam_one_is_greedy_on_the_model(cell, context):
    m = model(cell, context).eval()
    batch = make_batch(B=4)
    g = greedy(m, batch.src, batch.src_len, max_len=12)
    b1 = beam_search(m, batch.src, batch.src_len, beam=1, max_len=12)
    assert [h.tokens for h in g] == [h.tokens for h in b1]
    b4 = beam_search(m, batch.src, batch.src_len, beam=4, max_len=12)
    for hg, hb in zip(g, b4):
        assert hb.score >= hg.score - 1e-5


def test_config_errors():
    with pytest.raises(ValueError, match="context"):
        NMTConfig(context="slice")
    with pytest.raises(ValueError, match="must be in 1..150"):
        NMTConfig(context="emb+slice:151")
    with pytest.raises(ValueError, match="baseline"):
        NMTConfig(cell="gru", context="emb")
    assert NMTConfig(context="emb+slice:20").context_size == 320


def test_output_layer_in_blocks_gives_the_same_loss_and_gradients(monkeypatch):
    """Scoring a chunk in blocks of steps (to bound the logits' memory) changes nothing: reverse and
    store still agree bit for bit on the loss, and both equal the unblocked loss to rounding."""
    import revrnn_cli.engine.segment as segment

    batch = make_batch(B=5, T=7)
    whole, g_whole = loss_and_grads(model(layers=2), batch)
    monkeypatch.setattr(segment, "BLOCK_LOGITS", 2 * 5 * V_TGT)  # two steps per block
    assert len(segment.step_blocks(4, 5, V_TGT)) == 2
    res_r, g_r = loss_and_grads(model(layers=2, backprop="reverse"), batch)
    res_s, g_s = loss_and_grads(model(layers=2, backprop="store"), batch)
    assert torch.equal(res_r.loss_sum.detach(), res_s.loss_sum.detach())
    torch.testing.assert_close(res_r.loss_sum.detach(), whole.loss_sum.detach())
    for name in g_s:
        scale = g_s[name].abs().max().clamp_min(1e-12)
        assert ((g_r[name] - g_s[name]).abs().max() / scale) < 1e-5, name
        assert ((g_r[name] - g_whole[name]).abs().max() / scale) < 1e-5, name
